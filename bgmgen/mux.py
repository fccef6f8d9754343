"""Put the music on the video: the last stage, and the only one that writes the user's output.

`check_output_path` refuses bad output paths before any heavy work. `mux` copies the first video
stream as it is where the output container takes its codec (a table below, no trial run), else
re-encodes it; encodes the music (mixed over the original sound with `keep_audio`) in the
container's usual audio codec; cuts everything to the video's duration; and writes through a
hidden temp file in the output folder that is renamed over the output only when ffmpeg succeeded.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ffmpeg

from bgmgen.errors import InputError, OutputError, ToolError
from bgmgen.files import new_partial

log = logging.getLogger("bgmgen")

MUSIC_SAMPLE_RATE = 44100  # Hz; the original sound is resampled to it before mixing
MIX_CEILING = 0.891  # linear (-1 dBFS): the limiter after the mix keeps music + original under it
STDERR_TAIL_LINES = 8  # lines of ffmpeg's stderr carried by a ToolError

# Audio encoders per output container: codec options for the music track.
AAC = {"c:a": "aac", "b:a": "192k", "ar": MUSIC_SAMPLE_RATE}
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
    ".ts": Container(frozenset({"h264", "hevc", "mpeg2video", "mpeg1video"}), AAC, X264 | VFR),
}


@dataclass(frozen=True)
class MuxOptions:
    """How to combine the video and the music."""

    keep_audio: bool = False  # mix the original sound under the music
    original_gain_db: float = -12.0  # level of the original under the music when keep_audio, dB
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


def mux(
    video_path: Path,
    music_wav: Path,
    output_path: Path,
    duration: float,
    has_audio: bool,
    options: MuxOptions = MuxOptions(),
    progress: Callable[[float], None] | None = None,
) -> Path:
    """Write `output_path`: the first video stream of `video_path` with `music_wav` as its sound.

    `duration` is the video's length in seconds; the output is cut to it. With
    `options.keep_audio` and `has_audio`, the original sound is mixed under the music at
    `options.original_gain_db`. `progress`, if given, is called with the fraction done (0..1).
    Returns `output_path`. Raises OutputError (see check_output_path), InputError (no video
    stream) and ToolError (ffmpeg failed; the message carries its stderr).
    """
    video_path, music_wav, output_path = Path(video_path), Path(music_wav), Path(output_path)
    check_output_path(video_path, output_path, options.force)
    container = CONTAINERS[output_path.suffix.lower()]
    video, audio_index = _pick_streams(video_path)
    original_audio = audio_index if options.keep_audio and has_audio else None
    rotation = _rotation(video)
    # ffmpeg (5.1) writes the display matrix only to MP4/MOV; elsewhere a copied phone video would
    # play sideways, while re-encoding applies the rotation to the pixels (autorotate).
    copy = video["codec_name"] in container.video_copy and (rotation == 0 or container.keeps_rotation)

    tmp = new_partial(output_path)
    build = functools.partial(_build, video_path, music_wav, tmp, duration, video, original_audio, options, container)
    try:
        try:
            _run(build(copy=copy), duration, progress)
        except ToolError as e:
            if not copy:
                raise
            # A codec the table allows can still be refused (an odd profile or codec tag).
            log.warning("copying the %s video failed, re-encoding it: %s", video["codec_name"], e)
            _run(build(copy=False), duration, progress)
        if options.force or not output_path.exists():
            os.replace(tmp, output_path)
        else:
            raise OutputError(f"output appeared while writing it (use --force to overwrite): {output_path}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output_path


def _pick_streams(video_path: Path) -> tuple[dict, int | None]:
    """The first real video stream (no cover art) and the index of the first audio stream."""
    try:
        streams = ffmpeg.probe(str(video_path.resolve()), v="error")["streams"]
    except ffmpeg.Error as e:
        raise InputError(f"cannot read {video_path}: {_tail(e.stderr)}") from e
    videos = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    if not videos:
        raise InputError(f"no video stream in {video_path}")
    audios = [s["index"] for s in streams if s.get("codec_type") == "audio"]
    return videos[0], (audios[0] if audios else None)


def _rotation(stream: dict) -> int:
    """The display rotation of a probed video stream in degrees (0 when none)."""
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    return int(stream.get("tags", {}).get("rotate", 0)) % 360  # ffmpeg < 5 reported it as a tag


def _build(
    video_path: Path,
    music_wav: Path,
    out: Path,
    duration: float,
    video: dict,
    original_audio: int | None,
    options: MuxOptions,
    container: Container,
    copy: bool,
) -> list[str]:
    """The ffmpeg argument list for one try (copy or re-encode), built with ffmpeg-python."""
    # Absolute paths, so a name like "-x.mp4" or "http:x.mp4" is never read as an option or protocol.
    # genpts: MPEG-PS packets may lack timestamps, which Matroska and MP4 refuse in a stream copy.
    source = ffmpeg.input(str(video_path.resolve()), fflags="+genpts")
    music = ffmpeg.input(str(music_wav.resolve())).audio
    v = source[str(video["index"])]
    if copy:
        vopts: dict = {"c:v": "copy"}
        if video["codec_name"] == "hevc" and out.suffix.lower() in (".mp4", ".m4v", ".mov"):
            vopts["tag:v"] = "hvc1"  # the tag Apple players require for HEVC
    else:
        # 4:2:0 needs even sizes; rotation is applied by ffmpeg's autorotate before this.
        v = v.filter("scale", "trunc(iw/2)*2", "trunc(ih/2)*2")
        vopts = dict(container.video_encode)
        log.info("re-encoding the %s video for %s", video["codec_name"], out.suffix)

    if original_audio is not None:
        original = (
            source[str(original_audio)]
            # Pad/stretch to the stream's timestamps from 0, so the original stays in sync.
            .filter("aresample", MUSIC_SAMPLE_RATE, **{"async": 1, "first_pts": 0})
            .filter("aformat", channel_layouts="stereo")
            .filter("volume", f"{options.original_gain_db}dB")
        )
        mixed = ffmpeg.filter([music, original], "amix", inputs=2, duration="first", dropout_transition=0, normalize=0)
        a = mixed.filter("alimiter", limit=MIX_CEILING, level=0, latency=1)  # no clipping where both peak
    else:
        a = music

    out_opts = {**vopts, **container.audio, "ac": 2, "t": f"{duration:.6f}", **container.muxer}
    stream = ffmpeg.output(v, a, str(out.resolve()), **out_opts)
    return ffmpeg.compile(stream, cmd="ffmpeg", overwrite_output=True)


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
