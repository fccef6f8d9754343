"""Reading videos: ``probe`` checks a file and describes it, ``iter_frames`` streams small RGB frames.

Both go through ffprobe/ffmpeg (ffmpeg-python builds the argument lists; no shell is involved). Frames are
resampled to a constant rate by timestamp, so frame ``i`` of the stream shows time ``i / fps`` whatever the
source's frame rate (variable frame rates included), and ffmpeg's autorotation gives the display orientation.
"""

from __future__ import annotations

import logging
import math
import subprocess
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ffmpeg
import numpy as np

from bgmgen.errors import InputError

log = logging.getLogger("bgmgen")

# ffprobe format names of single-image demuxers (png_pipe, jpeg_pipe, webp_pipe, ... and image2).
_IMAGE_FORMATS = ("image2", "image2pipe")
# Codecs that, with no duration or a single frame, mean a still picture rather than a video.
_IMAGE_CODECS = {"png", "mjpeg", "jpeg2000", "bmp", "tiff", "webp", "gif", "jpegls", "ppm", "pgm", "qoi"}
# Decoding less than this share of the probed duration means the file is cut short.
_MIN_DECODED_SHARE = 0.75
_STDERR_TAIL_LINES = 5


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` found out about a video file."""

    path: Path
    duration: float  # seconds (video stream; container duration as a fallback)
    fps: float  # average frame rate of the video stream
    width: int  # display width, after rotation
    height: int  # display height, after rotation
    rotation: int  # degrees counter-clockwise the player turns the stored picture (0, 90, 180, 270)
    has_audio: bool
    video_codec: str
    container: str  # ffprobe format_name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    frame_count: int | None  # from the container header when it says so
    stream_index: int = 0  # index of the video stream used (cover-art streams are skipped)
    audio_index: int | None = None  # index of the first audio stream; None when there is none


def _ratio(text: str | None) -> float:
    """'30000/1001' -> 29.97; '0/0', '' or None -> 0.0."""
    if not text:
        return 0.0
    num, _, den = text.partition("/")
    try:
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def _seconds(text: str | None) -> float:
    """ffprobe duration ('8.090000') or Matroska DURATION tag ('00:00:08.090000000') -> seconds; 0.0 if unknown."""
    if not text or text == "N/A":
        return 0.0
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return 0.0
    value = 0.0
    for part in parts:
        value = value * 60.0 + part
    return value if math.isfinite(value) and value > 0 else 0.0


def _rotation(stream: dict) -> int:
    """Display rotation in degrees counter-clockwise, from the display matrix or the legacy 'rotate' tag."""
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    tag = stream.get("tags", {}).get("rotate")
    if tag is not None:
        try:
            return -int(round(float(tag))) % 360  # the tag counts clockwise
        except ValueError:
            return 0
    return 0


def _last_line(stderr: bytes | str | None) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else (stderr or "")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def probe(path: Path) -> VideoInfo:
    """Check that ``path`` is a readable video and describe it.

    Returns a VideoInfo. Raises InputError (one line) if the file is missing or empty, is not a media
    file, has no video stream, is a still image, or is damaged so that ffprobe fails or the duration is unknown.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        meta = ffmpeg.probe(str(path.resolve()))  # absolute: a name like "-x.mp4" is not read as an option
    except ffmpeg.Error as exc:
        raise InputError(f"{path}: not a readable video ({_last_line(exc.stderr)})") from None
    except FileNotFoundError:
        raise InputError("ffprobe was not found: install ffmpeg (e.g. apt install ffmpeg)") from None

    fmt = meta.get("format", {})
    container = fmt.get("format_name", "unknown")
    streams = meta.get("streams", [])
    # Cover art in audio files shows up as a one-picture video stream: it is not a video.
    videos = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    if not videos:
        raise InputError(f"{path}: has no video stream")
    video = videos[0]
    codec = video.get("codec_name", "unknown")

    duration = _seconds(video.get("duration")) or _seconds(video.get("tags", {}).get("DURATION"))
    duration = duration or _seconds(fmt.get("duration"))
    nb_frames = int(video["nb_frames"]) if str(video.get("nb_frames", "")).isdigit() else None
    is_image_format = container in _IMAGE_FORMATS or container.endswith("_pipe")
    if is_image_format or (codec in _IMAGE_CODECS and (duration < 1e-3 or nb_frames == 1)):
        raise InputError(f"{path}: is a still image, not a video")
    if duration <= 0:
        raise InputError(f"{path}: duration unknown (the file may be truncated or damaged)")

    fps = _ratio(video.get("avg_frame_rate")) or _ratio(video.get("r_frame_rate"))
    if not fps and nb_frames:
        fps = nb_frames / duration
    if not fps:
        raise InputError(f"{path}: frame rate unknown (the file may be damaged)")

    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width <= 0 or height <= 0:
        raise InputError(f"{path}: video stream has no picture size (the file may be damaged)")
    rotation = _rotation(video)
    if rotation in (90, 270):
        width, height = height, width
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)

    return VideoInfo(
        path=path,
        duration=duration,
        fps=fps,
        width=width,
        height=height,
        rotation=rotation,
        has_audio=audio is not None,
        video_codec=codec,
        container=container,
        frame_count=nb_frames,
        stream_index=int(video.get("index", 0)),
        audio_index=None if audio is None else int(audio["index"]),
    )


_DRAFT_AREA_RATIO = 64  # source pixels per output pixel from which the deblocking filter is skipped


def _frame_command(info: VideoInfo, fps: float | None, size: tuple[int, int], max_frames: int | None) -> list[str]:
    """ffmpeg arguments that write the video stream as raw RGB24 frames of ``size`` to stdout.

    With ``fps`` the frames are resampled to that constant rate; without, they come as decoded. Frames at
    most 1/8 of the source's width and height (the 48x27 analysis frames) are decoded without the codec's
    deblocking filter, whose effect the downscale averages away: 19 % less decode time over the project's
    clips, pixels within 3/255 on average and TransNetV2's cuts unchanged (docs/benchmarks.md).
    """
    tiny = size[0] * size[1] * _DRAFT_AREA_RATIO <= info.width * info.height
    stream = ffmpeg.input(str(info.path), **({"skip_loop_filter": "all"} if tiny else {}))[str(info.stream_index)]
    if fps is not None:
        # fps resamples by timestamp (duplicating/dropping frames), which also regularises variable rates.
        stream = stream.filter("fps", fps=fps)
    # Area averaging: the right filter for large downscales, and cheaper than the default bicubic.
    stream = stream.filter("scale", size[0], size[1], flags="area")
    kwargs = {"format": "rawvideo", "pix_fmt": "rgb24"}
    if max_frames is not None:
        kwargs["frames:v"] = max_frames
    out = stream.output("pipe:", **kwargs).global_args("-nostdin", "-hide_banner", "-loglevel", "error")
    return out.compile()


def _stderr_tail(err_file) -> str:
    err_file.seek(0)
    lines = err_file.read().decode(errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in lines[-_STDERR_TAIL_LINES:]) or "no error message"


_MAX_PIPE_BYTES = 1 << 20  # Linux's default cap for unprivileged processes (/proc/sys/fs/pipe-max-size)


def _widen_pipe(pipe, size: int) -> None:
    """Let ``pipe`` hold ``size`` bytes (at most 1 MiB): ffmpeg then decodes a chunk ahead while this process
    is busy elsewhere (importing torch in a thread), instead of stopping every 64 KiB (16 small frames)."""
    try:
        import fcntl
    except ImportError:
        return  # Windows: the default buffer works, only slower
    if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux only
        try:
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, min(size, _MAX_PIPE_BYTES))
        except OSError:
            pass  # a lower cap set by the administrator: as above


def _stream_frames(
    info: VideoInfo, fps: float | None, size: tuple[int, int], chunk: int, max_frames: int | None = None
) -> Iterator[np.ndarray]:
    """Run one ffmpeg pipe and yield its frames in chunks; raise InputError if ffmpeg fails."""
    width, height = size
    frame_bytes = width * height * 3
    cmd = _frame_command(info, fps, size, max_frames)
    # stderr goes to a temporary file, not a pipe: a damaged file can log more than a pipe buffer holds,
    # which would block ffmpeg while we only read stdout.
    with tempfile.TemporaryFile() as err_file:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_file)
        except FileNotFoundError:
            raise InputError("ffmpeg was not found: install ffmpeg (e.g. apt install ffmpeg)") from None
        _widen_pipe(proc.stdout, frame_bytes * chunk)
        try:
            while True:
                buf = bytearray(frame_bytes * chunk)
                view, got = memoryview(buf), 0
                while got < len(buf):
                    n = proc.stdout.readinto(view[got:])
                    if not n:
                        break
                    got += n
                n_frames = got // frame_bytes
                if n_frames:
                    yield np.frombuffer(buf, np.uint8, n_frames * frame_bytes).reshape(n_frames, height, width, 3)
                if got < len(buf):
                    break
            if proc.wait() != 0:
                raise InputError(f"{info.path}: ffmpeg failed while decoding ({_stderr_tail(err_file)})")
        finally:
            # Reached on normal end, on errors and when the consumer closes the generator early.
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


def iter_frames(
    info: VideoInfo, fps: float = 25.0, size: tuple[int, int] = (48, 27), chunk: int = 256
) -> Iterator[np.ndarray]:
    """Stream the video as uint8 RGB arrays of shape [n <= chunk, height, width, 3].

    Frames are resampled to the constant rate ``fps`` (frame i of the concatenated stream shows time
    i / fps), scaled to ``size`` = (width, height) and turned upright. Only one chunk is in memory at a time.
    A clip shorter than one frame interval still yields one frame. Raises InputError if ffmpeg fails or
    the file ends well before its stated duration (after the frames it could decode were yielded).
    """
    if fps <= 0 or size[0] <= 0 or size[1] <= 0 or chunk <= 0:
        raise ValueError(f"bad frame stream request: fps={fps}, size={size}, chunk={chunk}")
    total = 0
    # closing(): if our consumer stops early, the ffmpeg behind the inner generator is stopped at once.
    with closing(_stream_frames(info, fps, size, chunk)) as stream:
        for frames in stream:
            total += len(frames)
            yield frames
    if total == 0:
        # The fps filter can drop the only frame of a very short clip; take the first decoded frame instead.
        with closing(_stream_frames(info, None, size, 1, max_frames=1)) as stream:
            for frames in stream:
                total += len(frames)
                yield frames
        if total == 0:
            raise InputError(f"{info.path}: no frame could be decoded (the file may be damaged)")
    decoded = total / fps
    if decoded < _MIN_DECODED_SHARE * info.duration and info.duration - decoded > 0.5:
        raise InputError(
            f"{info.path}: only {decoded:.1f} s of {info.duration:.1f} s could be decoded (truncated or damaged?)"
        )
    if info.duration - decoded > 2.0 / fps:
        log.warning("%s: decoded %.2f s of video, the header says %.2f s", info.path, decoded, info.duration)
