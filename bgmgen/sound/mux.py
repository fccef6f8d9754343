"""Put the music on the video: the last stage, and the only one that writes the user's output.

`check_output_path` refuses bad output paths before any heavy work. `mux` copies the first video
stream as it is where the output container takes its codec (a table below, no trial run), else
re-encodes it; encodes the music (mixed with the original sound with `keep_audio`) in the
container's usual audio codec; cuts everything to the video's duration; and writes through a
hidden temp file in the output folder that is renamed over the output only when ffmpeg succeeded.

With `keep_audio` the music is ducked: a sidechain compressor keyed by the original sound lowers
the music wherever the original has speech or other sound (and lets it back up in the quiet
parts), so the original stays intelligible. The mix is then measured (EBU R128, ffmpeg's
`ebur128` in an audio-only first pass) and brought to `MuxOptions.loudness` by one static gain
before the peak limiter. Without `keep_audio` the music track is used as rendered (`audio.render`
already brought it to its loudness target).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
import ffmpeg

from bgmgen.errors import OutputError, ToolError
from bgmgen.files import new_partial
from bgmgen.video.decode import VideoInfo, probe

log = logging.getLogger("bgmgen")

MUSIC_SAMPLE_RATE = 44100  # Hz; the original sound is resampled to it before mixing
MIX_CEILING = 0.891  # linear (-1 dBFS): the limiter after the mix keeps music + original under it
# Ducking (sidechain compression of the music, keyed by the original sound). The detector is RMS.
# Speech at an ordinary recording level (~-25 dBFS RMS) is ~13 dB over the threshold and ducks the
# music by ~11 dB; quiet room tone (under -38 dBFS) leaves it alone; the key is first held under
# DUCK_KEY_CEILING, so even a very loud original ducks the music by ~15 dB at most.
DUCK_THRESHOLD = 0.0126  # linear key level (-38 dBFS) above which the music is lowered
DUCK_KEY_CEILING = 0.1  # linear (-20 dBFS): the key is compressed (20:1) above this level
DUCK_RATIO = 6.0  # dB of key level over the threshold per dB the music stays over it
DUCK_ATTACK_MS = 40.0  # how fast the music goes down when the original starts
DUCK_RELEASE_MS = 600.0  # how fast it comes back: slow enough not to pump between words
MAX_MIX_GAIN_DB = 30.0  # loudness normalisation never raises a near-silent mix more than this
STDERR_TAIL_LINES = 8  # lines of ffmpeg's stderr carried by a ToolError

# Audio encoders per output container: codec options for the music track.
# ffmpeg's AAC encoder searches less at 256 kb/s than at 192: 1.09 -> 0.95 s a minute of music, and the
# 95th percentile of the spectral error (bins within 50 dB of each frame's peak) 2.6 -> 1.4 dB.
AAC = {"c:a": "aac", "b:a": "256k", "ar": MUSIC_SAMPLE_RATE}
OPUS = {"c:a": "libopus", "b:a": "160k", "ar": 48000}  # Opus runs at 48 kHz only
VORBIS = {"c:a": "libvorbis", "q:a": 6, "ar": MUSIC_SAMPLE_RATE}
MP2 = {"c:a": "mp2", "b:a": "224k", "ar": MUSIC_SAMPLE_RATE}
# AVI's headers misstate the length of compressed audio (MP3 reads ~0.1 s long): PCM is exact.
PCM = {"c:a": "pcm_s16le", "ar": MUSIC_SAMPLE_RATE}

# Video encoders for when the container cannot take the input's codec as it is.
X264 = {"c:v": "libx264", "crf": 18, "preset": "veryfast", "pix_fmt": "yuv420p"}
VP9 = {"c:v": "libvpx-vp9", "crf": 32, "b:v": 0, "deadline": "realtime", "cpu-used": 8, "row-mt": 1,
       "pix_fmt": "yuv420p"}  # fmt: skip
THEORA = {"c:v": "libtheora", "q:v": 7, "pix_fmt": "yuv420p"}
MPEG2 = {"c:v": "mpeg2video", "q:v": 3, "pix_fmt": "yuv420p"}
# Keep each frame's own timestamp (no duplicates for variable frame rate input) where the
# container stores timestamps; `-vsync` still works on ffmpeg 4.x, `-fps_mode` would not.
VFR = {"vsync": "vfr"}

MP4_VIDEO = frozenset({"h264", "hevc", "mpeg4", "av1", "vp9"})
MKV_VIDEO = frozenset({
    "h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg1video", "mpeg2video", "mjpeg", "theora",
    "prores", "ffv1", "dnxhd", "msmpeg4v2", "msmpeg4v3", "huffyuv", "utvideo", "rawvideo",
})  # fmt: skip
MOV_VIDEO = MP4_VIDEO | {"prores", "mjpeg", "dnxhd", "png", "qtrle"}
AVI_VIDEO = frozenset({
    "h264", "mpeg4", "mjpeg", "msmpeg4v2", "msmpeg4v3", "cinepak", "vp8", "vp9", "ffv1", "huffyuv", "rawvideo",
    "mpeg2video",
})  # fmt: skip
MPEG_VIDEO = frozenset({"mpeg1video", "mpeg2video"})
OGG_VIDEO = frozenset({"theora", "vp8"})


@dataclass(frozen=True)
class Container:
    """What one output container takes: video codecs it stores as they are, and what to encode."""

    video_copy: frozenset[str]  # ffprobe codec names the container stores without re-encoding
    audio: dict  # ffmpeg options for the music track
    video_encode: dict  # ffmpeg options when the video must be re-encoded
    muxer: dict = field(default_factory=dict)  # extra output options for this container
    keeps_rotation: bool = False  # copies the display matrix; else a rotated video is re-encoded
    # Samples per audio frame where the container stores no encoder delay (MPEG-TS): AAC's priming
    # frame and the padded last frame would run the sound past the video, so whole frames are cut.
    audio_frame: int = 0


_MOV_MUXER = {"movflags": "+faststart"}  # index first, so players can start before the end
# Keep the AAC priming before 0 instead of shifting the video 23 ms late, so the file is not
# longer than the video (Matroska stores negative timestamps, as WebM does for Opus).
_MKV_MUXER = {"avoid_negative_ts": "disabled"}
CONTAINERS: dict[str, Container] = {
    ".mp4": Container(MP4_VIDEO, AAC, X264 | VFR, _MOV_MUXER, keeps_rotation=True),
    ".m4v": Container(MP4_VIDEO, AAC, X264 | VFR, _MOV_MUXER, keeps_rotation=True),
    ".mov": Container(MOV_VIDEO, AAC, X264 | VFR, _MOV_MUXER, keeps_rotation=True),
    ".mkv": Container(MKV_VIDEO, AAC, X264 | VFR, _MKV_MUXER),
    ".webm": Container(frozenset({"vp8", "vp9", "av1"}), OPUS, VP9 | VFR),
    ".ogv": Container(OGG_VIDEO, VORBIS, THEORA),
    ".ogg": Container(OGG_VIDEO, VORBIS, THEORA),
    ".avi": Container(AVI_VIDEO, PCM, X264),
    ".mpg": Container(MPEG_VIDEO, MP2, MPEG2),
    ".mpeg": Container(MPEG_VIDEO, MP2, MPEG2),
    ".ts": Container(frozenset({"h264", "hevc", "mpeg2video", "mpeg1video"}), AAC, X264 | VFR, audio_frame=1024),
}


@dataclass(frozen=True)
class MuxOptions:
    """How to combine the video and the music."""

    keep_audio: bool = False  # mix the original sound with the music, ducking the music under it
    original_gain_db: float = 0.0  # gain on the original sound in the mix when keep_audio, dB
    duck: bool = True  # with keep_audio: lower the music where the original has sound
    loudness: float = -16.0  # integrated loudness of the mix (EBU R128, LUFS) when keep_audio
    force: bool = False  # overwrite an existing output


def check_output_path(input_path: Path, output_path: Path, force: bool, video: bool = True) -> None:
    """Refuse an output path that must not be written; call it before any heavy work.

    Raises OutputError if the output is the input (also through links), exists and `force` is
    off, is a folder, has a container we cannot write (only checked when `video`: MIDI and plan
    files pass `video=False`), or its folder is missing or not writable.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.resolve() == input_path.resolve() or (
        output_path.exists() and input_path.exists() and os.path.samefile(output_path, input_path)
    ):
        raise OutputError(f"output would overwrite the input: {output_path}")
    if video and output_path.suffix.lower() not in CONTAINERS:
        known = ", ".join(sorted(CONTAINERS))
        raise OutputError(f"cannot write a {output_path.suffix or 'extension-less'} file; use one of: {known}")
    if output_path.is_dir():
        raise OutputError(f"output is a folder: {output_path}")
    if output_path.exists() and not force:
        raise OutputError(f"output exists (use --force to overwrite): {output_path}")
    folder = output_path.parent
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {folder}")
    try:
        # os.access says yes to root everywhere, and to folders that refuse files (sysfs, some mounts):
        # creating the hidden temp file the output will be written through is the real test.
        new_partial(output_path).unlink()
    except OSError as e:
        raise OutputError(f"output folder is not writable: {folder} ({e.strerror or e})") from None
    except OutputError:
        raise OutputError(f"output folder is not writable: {folder}") from None


def mux(
    video_path: Path,
    music_wav: Path,
    output_path: Path,
    duration: float,
    has_audio: bool,
    options: MuxOptions = MuxOptions(),
    progress: Callable[[float], None] | None = None,
    info: VideoInfo | None = None,
) -> Path:
    """Write `output_path`: the first video stream of `video_path` with `music_wav` as its sound.

    `duration` is the video's length in seconds; the output is cut to it. With
    `options.keep_audio` and `has_audio`, the original sound is mixed in at
    `options.original_gain_db`, the music is ducked under it (`options.duck`) and the mix is
    brought to `options.loudness` LUFS. `progress`, if given, is called with the fraction done (0..1).
    `info`: `video.decode.probe(video_path)` where the caller has it (else it is probed here); the video
    stream and the original sound are the ones it names. Returns `output_path`. Raises OutputError (see
    check_output_path), InputError (see `probe`) and ToolError (ffmpeg failed; the message carries its stderr).
    """
    video_path, music_wav, output_path = Path(video_path), Path(music_wav), Path(output_path)
    check_output_path(video_path, output_path, options.force)
    container = CONTAINERS[output_path.suffix.lower()]
    video = info if info is not None else probe(video_path)
    original_audio = video.audio_index if options.keep_audio and has_audio else None
    # ffmpeg (5.1) writes the display matrix only to MP4/MOV; elsewhere a copied phone video would
    # play sideways, while re-encoding applies the rotation to the pixels (autorotate).
    copy = video.video_codec in container.video_copy and (video.rotation == 0 or container.keeps_rotation)

    gain_db = 0.0
    if original_audio is not None:
        measured = measure_loudness(_mix_graph(video_path, music_wav, original_audio, options), duration)
        gain_db = min(options.loudness - measured, MAX_MIX_GAIN_DB) if math.isfinite(measured) else 0.0
        log.info("mix loudness %.1f LUFS, gain %+.1f dB towards %.1f LUFS", measured, gain_db, options.loudness)

    tmp = new_partial(output_path)
    build = functools.partial(
        _build, video_path, music_wav, tmp, duration, video, original_audio, gain_db, options, container
    )
    try:
        try:
            _run(build(copy=copy), duration, progress)
        except ToolError as e:
            if not copy:
                raise
            # A codec the table allows can still be refused (an odd profile or codec tag).
            log.warning("copying the %s video failed, re-encoding it: %s", video.video_codec, e)
            _run(build(copy=False), duration, progress)
        if options.force or not output_path.exists():
            os.replace(tmp, output_path)
        else:
            raise OutputError(f"output appeared while writing it (use --force to overwrite): {output_path}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output_path


def _build(
    video_path: Path,
    music_wav: Path,
    out: Path,
    duration: float,
    video: VideoInfo,
    original_audio: int | None,
    gain_db: float,
    options: MuxOptions,
    container: Container,
    copy: bool,
) -> list[str]:
    """The ffmpeg argument list for one try (copy or re-encode), built with ffmpeg-python."""
    # Absolute paths, so a name like "-x.mp4" or "http:x.mp4" is never read as an option or protocol.
    # genpts: MPEG-PS packets may lack timestamps, which Matroska and MP4 refuse in a stream copy.
    source = ffmpeg.input(str(video_path.resolve()), fflags="+genpts")
    v = source[str(video.stream_index)]
    if copy:
        vopts: dict = {"c:v": "copy"}
        if video.video_codec == "hevc" and out.suffix.lower() in (".mp4", ".m4v", ".mov"):
            vopts["tag:v"] = "hvc1"  # the tag Apple players require for HEVC
    else:
        # 4:2:0 needs even sizes; rotation is applied by ffmpeg's autorotate before this.
        v = v.filter("scale", "trunc(iw/2)*2", "trunc(ih/2)*2")
        vopts = dict(container.video_encode)
        log.info("re-encoding the %s video for %s", video.video_codec, out.suffix)

    if original_audio is not None:
        mixed = _mix_graph(video_path, music_wav, original_audio, options, source=source)
        a = mixed.filter("volume", f"{gain_db:.2f}dB").filter("alimiter", limit=MIX_CEILING, level=0, latency=1)
        # Sample-exact end: after the compressors the frames are large, and `-t` cuts only between frames.
        a = a.filter("atrim", duration=f"{duration:.6f}")
    else:
        a = ffmpeg.input(str(music_wav.resolve())).audio
    if container.audio_frame:
        # Whole frames, one of them the encoder's priming, that end at or before the video's end.
        frame, rate = container.audio_frame, container.audio["ar"]
        samples = max(frame, (int(duration * rate) + frame) // frame * frame - frame)
        a = a.filter("atrim", end_sample=samples)

    out_opts = {**vopts, **container.audio, "ac": 2, "t": f"{duration:.6f}", **container.muxer}
    stream = ffmpeg.output(v, a, str(out.resolve()), **out_opts)
    return ffmpeg.compile(stream, cmd="ffmpeg", overwrite_output=True)


def _mix_graph(video_path: Path, music_wav: Path, original_audio: int, options: MuxOptions, source=None):
    """The audio filter graph of music + original (ducked, not yet levelled), as an ffmpeg-python stream."""
    source = source if source is not None else ffmpeg.input(str(video_path.resolve()), fflags="+genpts")
    music = ffmpeg.input(str(music_wav.resolve())).audio
    original = (
        source[str(original_audio)]
        # Pad/stretch to the stream's timestamps from 0, so the original stays in sync.
        .filter("aresample", MUSIC_SAMPLE_RATE, **{"async": 1, "first_pts": 0})
        .filter("aformat", channel_layouts="stereo")
    )
    if options.duck:
        # The key is the original before its mix gain: how much the music ducks does not depend on it.
        split = original.filter_multi_output("asplit", 2)
        key, original = split[0], split[1]
        key = key.filter("acompressor", threshold=DUCK_KEY_CEILING, ratio=20, attack=5, release=100)
        music = ffmpeg.filter(
            [music, key], "sidechaincompress", threshold=DUCK_THRESHOLD, ratio=DUCK_RATIO,
            attack=DUCK_ATTACK_MS, release=DUCK_RELEASE_MS,
        )  # fmt: skip
    original = original.filter("volume", f"{options.original_gain_db}dB")
    return ffmpeg.filter([music, original], "amix", inputs=2, duration="first", dropout_transition=0, normalize=0)


def measure_loudness(audio, duration: float) -> float:
    """Integrated loudness (EBU R128, LUFS) of an ffmpeg-python audio stream's first `duration` s.

    Runs ffmpeg once with the `ebur128` meter and no output file. Returns -inf for silence;
    raises ToolError if ffmpeg fails or prints no summary.
    """
    stream = ffmpeg.output(audio.filter("ebur128", framelog="verbose"), "-", format="null", t=f"{duration:.6f}")
    args = ffmpeg.compile(stream, cmd="ffmpeg")
    # The meter's summary is logged at the info level, on stderr; its per-frame lines go to verbose.
    args = [args[0], "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", *args[1:]]
    log.debug("running %s", " ".join(args))
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
    except OSError as e:
        raise ToolError(f"could not run ffmpeg (install it with: apt-get install ffmpeg): {e}") from e
    if proc.returncode != 0:
        raise ToolError(f"ffmpeg failed to measure the loudness (exit code {proc.returncode}): {_tail(proc.stderr)}")
    found = re.findall(rb"\bI:\s+(-?[\d.]+|-inf|nan) LUFS", proc.stderr)
    if not found:
        raise ToolError(f"ffmpeg printed no loudness summary: {_tail(proc.stderr)}")
    value = float(found[-1])
    # The meter reports -70 LUFS (its gate) for silence.
    return value if value > -70.0 else float("-inf")


def _run(args: list[str], duration: float, progress: Callable[[float], None] | None) -> None:
    """Run ffmpeg, reporting progress from `-progress`; raise ToolError with its stderr on failure."""
    args = [args[0], "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1", *args[1:]]
    log.debug("running %s", " ".join(args))
    # stderr goes to a file, so a chatty ffmpeg cannot block on a full pipe while we read stdout.
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        except OSError as e:
            raise ToolError(f"could not run ffmpeg (install it with: apt-get install ffmpeg): {e}") from e
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if progress is not None and line.startswith(b"out_time_us=") and duration > 0:
                    done = line.split(b"=", 1)[1].strip()
                    if done.isdigit():
                        progress(min(1.0, int(done) / 1e6 / duration))
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        raise ToolError(f"ffmpeg failed (exit code {proc.returncode}): {_tail(stderr)}")
    if progress is not None:
        progress(1.0)


def _tail(stderr: bytes | None) -> str:
    """The last lines of a tool's stderr, joined on one line."""
    lines = (stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return " | ".join(lines[-STDERR_TAIL_LINES:]) or "no error output"



def default_output_path(video_path: Path, video_codec: str) -> Path:
    """``clip.mp4`` -> ``clip.scored.mp4`` beside the input, in a container that can copy the video.

    Keeps the input's container when it copies this codec, else MP4, else Matroska, else MP4 with
    re-encoding.
    """
    video_path = Path(video_path)
    suffix = video_path.suffix.lower()
    for candidate in (suffix, ".mp4", ".mkv"):
        container = CONTAINERS.get(candidate)
        if container is not None and video_codec in container.video_copy:
            return video_path.with_name(f"{video_path.stem}.scored{candidate}")
    return video_path.with_name(f"{video_path.stem}.scored.mp4")
