"""probe and iter_frames on synthetic clips with known properties, and on broken inputs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from bgmgen.errors import InputError
from bgmgen.video import decode

from conftest import make_clip


def _all_frames(info: decode.VideoInfo, **kwargs) -> np.ndarray:
    return np.concatenate(list(decode.iter_frames(info, **kwargs)))


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True)


def test_probe_describes_clip_with_audio(tmp_path):
    path = make_clip(tmp_path, duration=2.0, size=(64, 36), fps=25, audio=True)
    info = decode.probe(path)
    assert info.path == path
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.fps == pytest.approx(25.0)
    assert (info.width, info.height, info.rotation) == (64, 36, 0)
    assert info.has_audio
    assert (info.stream_index, info.audio_index) == (0, 1)
    assert info.video_codec == "h264"
    assert "mp4" in info.container
    assert info.frame_count == 50


def test_probe_clip_without_audio_and_other_container(tmp_path):
    info = decode.probe(make_clip(tmp_path, "clip.webm", duration=1.0, fps=30))
    assert not info.has_audio and info.audio_index is None
    assert info.video_codec == "vp8"
    assert "webm" in info.container
    assert info.fps == pytest.approx(30.0)
    assert info.duration == pytest.approx(1.0, abs=0.05)


def test_rotation_swaps_display_size_and_frames_come_upright(tmp_path):
    # A red square in the stored picture's top-left corner shows where the picture was turned.
    marker = dict(sources=["color=c=black"], vf="drawbox=x=0:y=0:w=16:h=12:c=red:t=fill", size=(64, 36))
    plain = make_clip(tmp_path, "plain.mp4", pix_fmt="yuv444p", **marker)
    rotated = tmp_path / "rot.mp4"
    # ffmpeg 5.1 keeps the rotate tag (as a display matrix) when copying the stream, not when encoding.
    _ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v", "rotate=90", str(rotated))
    info = decode.probe(rotated)
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (36, 64)
    stored = _all_frames(decode.probe(plain), size=(64, 36))[0]
    shown = _all_frames(info, size=(36, 64))[0]
    # rotation counts counter-clockwise turns, like np.rot90.
    expected = np.rot90(stored, k=info.rotation // 90)
    assert np.array_equal(shown[..., 0] > 128, expected[..., 0] > 128)


def test_variable_frame_rate_is_resampled_by_timestamp(tmp_path):
    # 30 fps for the first second, then every third frame (10 fps); red turns blue at 2.0 s.
    path = make_clip(
        tmp_path,
        "vfr.mp4",
        duration=4.0,
        fps=30,
        cuts=[2.0],
        sources=["color=c=red", "color=c=blue"],
        vf="select='lt(t,1)+not(mod(n,3))'",
        output_args=["-fps_mode", "vfr"],
    )
    info = decode.probe(path)
    assert info.frame_count == 30 + 30  # 30 frames in the first second, 10 per second after
    assert info.fps < 20  # the average rate, not the nominal 30
    frames = _all_frames(info, fps=25.0)
    assert len(frames) == pytest.approx(100, abs=2)
    red = frames[..., 0].mean(axis=(1, 2)) > 128
    assert red[:50].all() and not red[50:].any()  # frame i shows time i / 25


def test_frame_times_match_cut_in_constant_rate_clip(tmp_path):
    path = make_clip(tmp_path, fps=30, duration=2.0, cuts=[1.0], sources=["color=c=white", "color=c=black"])
    frames = _all_frames(decode.probe(path), fps=25.0)
    white = frames.mean(axis=(1, 2, 3)) > 128
    assert len(frames) == 50
    assert white[:25].all() and not white[25:].any()


def test_iter_frames_chunks_shape_and_dtype(tmp_path):
    info = decode.probe(make_clip(tmp_path, duration=2.0, size=(160, 90)))
    chunks = list(decode.iter_frames(info, fps=25.0, size=(48, 27), chunk=16))
    assert all(c.dtype == np.uint8 and c.shape[1:] == (27, 48, 3) and 0 < len(c) <= 16 for c in chunks)
    assert sum(len(c) for c in chunks) == 50
    assert chunks[0].flags.writeable


def test_tiny_frames_skip_the_deblocking_filter_and_keep_the_picture(tmp_path):
    path = make_clip(tmp_path, fps=25, duration=1.0, size=(640, 360), cuts=[0.5], sources=["testsrc2", "color=c=white"])
    info = decode.probe(path)
    assert "-skip_loop_filter" in decode._frame_command(info, 25.0, (48, 27), None)  # 1/13 of the width
    assert "-skip_loop_filter" not in decode._frame_command(info, 25.0, (224, 126), None)  # CLIP-sized: full quality
    frames = _all_frames(info, fps=25.0)
    assert frames[:12].std() > 40 and frames[13:].min() > 240  # the test picture, then white after the cut


@pytest.mark.parametrize("duration, fps", [(0.3, 25), (0.04, 25), (0.01, 100)])
def test_very_short_clips_give_frames(tmp_path, duration, fps):
    info = decode.probe(make_clip(tmp_path, duration=duration, fps=fps))
    assert info.duration == pytest.approx(duration, abs=0.05)
    frames = _all_frames(info)
    assert len(frames) == max(1, round(info.duration * 25))


def test_odd_tiny_size(tmp_path):
    path = make_clip(tmp_path, size=(3, 2), duration=0.5, sources=["color=c=red"], pix_fmt="yuv444p")
    info = decode.probe(path)
    assert (info.width, info.height) == (3, 2)
    frames = _all_frames(info)
    assert frames.shape[1:] == (27, 48, 3)
    assert frames[..., 0].mean() > 200 and frames[..., 2].mean() < 60


def test_path_with_spaces_and_non_ascii_letters(tmp_path):
    folder = tmp_path / "my clips ü 日本"
    folder.mkdir()
    path = make_clip(folder, "vidéo clip ñ.mp4", duration=1.0)
    info = decode.probe(path)
    assert len(_all_frames(info)) == 25


def test_closing_the_generator_stops_ffmpeg(tmp_path, monkeypatch):
    started = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc)
        return proc

    info = decode.probe(make_clip(tmp_path, duration=10.0, size=(320, 180), sources=["mandelbrot"]))
    monkeypatch.setattr(decode.subprocess, "Popen", recording_popen)
    frames = decode.iter_frames(info, chunk=1)
    assert len(next(frames)) == 1
    frames.close()
    assert len(started) == 1 and started[0].returncode is not None  # killed and reaped


def test_ffmpeg_failure_mid_stream_raises_input_error(tmp_path, monkeypatch):
    info = decode.probe(make_clip(tmp_path, duration=1.0))
    # Stand in for a decoder failure: an ffmpeg command that exits non-zero.
    monkeypatch.setattr(decode, "_frame_command", lambda *a: ["ffmpeg", "-nostdin", "-i", str(tmp_path / "gone.mp4")])
    with pytest.raises(InputError, match="ffmpeg failed while decoding.*gone.mp4"):
        list(decode.iter_frames(info))


# --- broken inputs -----------------------------------------------------------------------------------------


def _text_as_mp4(tmp_path: Path) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n")
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.mp4"
    path.touch()
    return path


def _truncated(tmp_path: Path) -> Path:
    # Without faststart the index (moov) is at the end, so half a file has none.
    whole = make_clip(tmp_path, "whole.mp4", duration=2.0).read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _audio_only(tmp_path: Path) -> Path:
    path = tmp_path / "tone.m4a"
    _ffmpeg("-f", "lavfi", "-i", "sine=d=1", str(path))
    return path


def _still_png(tmp_path: Path) -> Path:
    path = tmp_path / "still.png"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x36", "-frames:v", "1", str(path))
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "missing.mp4", "no such file"),
        (_empty, "empty"),
        (_text_as_mp4, "not a readable video"),
        (_truncated, "not a readable video"),
        (_audio_only, "no video stream"),
        (_still_png, "still image"),
    ],
    ids=["missing", "empty", "text", "truncated", "audio-only", "png"],
)
def test_broken_inputs_raise_one_line_input_error(tmp_path, make, message):
    with pytest.raises(InputError, match=message) as caught:
        decode.probe(make(tmp_path))
    assert "\n" not in str(caught.value)


def test_truncated_file_with_index_first_fails_while_decoding(tmp_path):
    whole = make_clip(tmp_path, "fast.mp4", duration=4.0, size=(160, 90), output_args=["-movflags", "+faststart"])
    path = tmp_path / "half.mp4"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    info = decode.probe(path)  # the header is intact and still claims 4 s
    with pytest.raises(InputError, match="could be decoded"):
        list(decode.iter_frames(info))


def test_the_frame_pipe_holds_a_whole_chunk(tmp_path, monkeypatch):
    # ffmpeg runs a chunk ahead of its reader (busy importing torch) instead of stopping every 64 KiB.
    sizes = []
    real = decode._widen_pipe
    monkeypatch.setattr(decode, "_widen_pipe", lambda pipe, size: sizes.append(real(pipe, size) or _pipe_size(pipe)))
    info = decode.probe(make_clip(tmp_path, duration=1.0, size=(160, 90)))
    assert sum(len(c) for c in decode.iter_frames(info, fps=25.0, size=(48, 27), chunk=256)) == 25
    assert sizes and sizes[0] >= 48 * 27 * 3 * 256  # 1 MiB at most (Linux's cap for a pipe), 995 KB needed


def _pipe_size(pipe) -> int:
    import fcntl

    return fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ)
