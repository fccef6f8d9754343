"""Tests for bgmgen.sound.mux on small videos generated with ffmpeg's lavfi sources."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from scipy.io import wavfile

from bgmgen.errors import InputError, OutputError, ToolError
from bgmgen.sound.mux import CONTAINERS, MuxOptions, check_output_path, mux

SECONDS = 3.0
FPS = 25
FRAME_S = 1.0 / FPS
MUSIC_HZ = 300  # the "music" is a 300 Hz tone ...
ORIGINAL_HZ = 1000  # ... and the original sound a 1 kHz tone, so a spectrum tells them apart


def lavfi(out: Path, video_opts: list[str], audio: bool = True, size: str = "320x240", seconds: float = SECONDS):
    """Make a test video: testsrc2 at FPS, with a 1 kHz mono tone at 48 kHz if `audio`."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=s={size}:r={FPS}:d={seconds}"]  # fmt: skip
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=f={ORIGINAL_HZ}:r=48000:d={seconds}"]
    subprocess.run([*args, *video_opts, "-t", str(seconds), str(out)], check=True)
    return out


def probe(path: Path) -> dict:
    """Streams (with packet counts) and format of a file."""
    return ffmpeg.probe(str(path), count_packets=None)


def video_of(info: dict) -> dict:
    return next(s for s in info["streams"] if s["codec_type"] == "video")


def rotation_of(stream: dict) -> int:
    return next((int(sd["rotation"]) for sd in stream.get("side_data_list", []) if "rotation" in sd), 0)


def decode_audio(path: Path) -> np.ndarray:
    """The first audio track, mixed to mono float32 at 44.1 kHz."""
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
         "-ac", "1", "-ar", "44100", "-f", "f32le", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(out, dtype=np.float32)


def tone_level_db(audio: np.ndarray, hz: float) -> float:
    """Level of the strongest bin within 20 Hz of `hz`, in dB of spectrum magnitude."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / 44100)
    band = (freqs > hz - 20) & (freqs < hz + 20)
    return 20 * np.log10(spectrum[band].max() + 1e-12)


def rotate_mp4(path: Path) -> Path:
    """Give an MP4's video track a 90-degree display matrix (ffmpeg 5.1 cannot set one itself)."""
    data = bytearray(path.read_bytes())
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    rotated = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    at = data.index(identity, data.index(b"tkhd"))
    data[at : at + 36] = rotated
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Source videos and a music WAV, made once for this module."""
    d = tmp_path_factory.mktemp("media")
    music = 0.3 * np.sin(2 * np.pi * MUSIC_HZ * np.arange(int(SECONDS * 44100)) / 44100)
    wavfile.write(d / "music.wav", 44100, (np.stack([music, music], axis=1) * 32767).astype(np.int16))
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    return {
        "music": d / "music.wav",
        "mp4": lavfi(d / "h264.mp4", h264),
        "avi": lavfi(d / "mjpeg.avi", ["-c:v", "mjpeg", "-q:v", "5", "-c:a", "pcm_s16le"]),
        "silent_mp4": lavfi(d / "noaudio.mp4", h264[:-2], audio=False),
        "rotated": rotate_mp4(lavfi(d / "rot.mp4", h264[:-2], audio=False, size="160x96", seconds=1.0)),
    }


def assert_good_output(out: Path, source: Path, copied: bool, seconds: float = SECONDS) -> dict:
    """Shared checks: same codec and frames when copied, duration within a frame, audible music."""
    src, info = probe(source), probe(out)
    v_in, v_out = video_of(src), video_of(info)
    if copied:
        assert v_out["codec_name"] == v_in["codec_name"]
    assert int(v_out["nb_read_packets"]) == int(v_in["nb_read_packets"])
    assert abs(float(info["format"]["duration"]) - seconds) <= FRAME_S
    kinds = [s["codec_type"] for s in info["streams"]]
    assert kinds.count("video") == 1 and kinds.count("audio") == 1, kinds
    audio = decode_audio(out)
    assert np.sqrt(np.mean(audio**2)) > 0.05  # the music is there
    return info


def test_mp4_h264_is_copied_with_music(media, tmp_path):
    out = mux(media["mp4"], media["music"], tmp_path / "out.mp4", SECONDS, has_audio=True)
    info = assert_good_output(out, media["mp4"], copied=True)
    audio_stream = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert (audio_stream["codec_name"], audio_stream["sample_rate"], audio_stream["channels"]) == ("aac", "44100", 2)
    audio = decode_audio(out)
    # Music only: the original's 1 kHz tone is gone.
    assert tone_level_db(audio, ORIGINAL_HZ) < tone_level_db(audio, MUSIC_HZ) - 40
    assert not list(tmp_path.glob(".*partial*"))


def test_the_callers_probe_spares_a_second_one(media, tmp_path, monkeypatch):
    from bgmgen.video.decode import probe

    info = probe(media["mp4"])

    def no_probe(*args, **kwargs):
        raise AssertionError("probed again")

    with monkeypatch.context() as patched:
        patched.setattr("bgmgen.sound.mux.ffmpeg.probe", no_probe)
        out = mux(media["mp4"], media["music"], tmp_path / "out.mp4", SECONDS, has_audio=True, info=info,
                  options=MuxOptions(keep_audio=True))  # fmt: skip
    assert_good_output(out, media["mp4"], copied=True)
    audio = decode_audio(out)
    assert tone_level_db(audio, ORIGINAL_HZ) > tone_level_db(audio, MUSIC_HZ) - 30  # its audio stream was found


def test_keep_audio_mixes_original_under_music(media, tmp_path):
    levels = {}
    for gain in (-6.0, -18.0):
        out = mux(media["mp4"], media["music"], tmp_path / f"mix{gain}.mp4", SECONDS, has_audio=True,
                  options=MuxOptions(keep_audio=True, original_gain_db=gain))  # fmt: skip
        assert_good_output(out, media["mp4"], copied=True)
        audio = decode_audio(out)
        levels[gain] = tone_level_db(audio, ORIGINAL_HZ) - tone_level_db(audio, MUSIC_HZ)
        assert levels[gain] > -30  # the original's tone is clearly present
    assert levels[-6.0] - levels[-18.0] == pytest.approx(12.0, abs=1.0)  # at the gain asked for


def test_keep_audio_without_original_sound(media, tmp_path):
    out = mux(media["silent_mp4"], media["music"], tmp_path / "out.mp4", SECONDS, has_audio=False,
              options=MuxOptions(keep_audio=True))  # fmt: skip
    assert_good_output(out, media["silent_mp4"], copied=True)


@pytest.mark.parametrize("ext, copied", [(".avi", True), (".mkv", True), (".mp4", False)])
def test_mjpeg_avi_copied_where_possible(media, tmp_path, ext, copied):
    out = mux(media["avi"], media["music"], tmp_path / f"out{ext}", SECONDS, has_audio=True,
              options=MuxOptions(keep_audio=True))  # fmt: skip
    info = assert_good_output(out, media["avi"], copied=copied)
    assert video_of(info)["codec_name"] == ("mjpeg" if copied else "h264")  # MP4 takes no MJPEG


def test_rotation_survives(media, tmp_path):
    src = video_of(probe(media["rotated"]))
    assert rotation_of(src) in (90, -90) and (src["width"], src["height"]) == (160, 96)
    out = mux(media["rotated"], media["music"], tmp_path / "out.mp4", 1.0, has_audio=False)
    copied = video_of(probe(out))
    assert copied["codec_name"] == "h264" and rotation_of(copied) == rotation_of(src)
    # Matroska keeps no display matrix here: the frames themselves get turned upright.
    out = mux(media["rotated"], media["music"], tmp_path / "out.mkv", 1.0, has_audio=False)
    turned = video_of(probe(out))
    assert rotation_of(turned) == 0 and (turned["width"], turned["height"]) == (96, 160)


def test_only_first_video_stream_is_kept(media, tmp_path):
    # An MP4 with cover art (an attached picture), subtitles and the original sound.
    cover, srt, busy = tmp_path / "cover.png", tmp_path / "subs.srt", tmp_path / "busy.mp4"
    srt.write_text("1\n00:00:00,000 --> 00:00:02,000\nhello\n")
    quiet = ["ffmpeg", "-hide_banner", "-loglevel", "error"]
    subprocess.run([*quiet, "-f", "lavfi", "-i", "color=red:s=64x48", "-frames:v", "1", str(cover)], check=True)
    subprocess.run(
        [*quiet, "-i", str(cover), "-i", str(media["mp4"]), "-i", str(srt),
         "-map", "0", "-map", "1:v", "-map", "1:a", "-map", "2", "-c:v:0", "png", "-c:v:1", "copy",
         "-c:a", "copy", "-c:s", "mov_text", "-disposition:v:0", "attached_pic", str(busy)],
        check=True,
    )  # fmt: skip
    assert [s["codec_type"] for s in probe(busy)["streams"]].count("video") == 2
    out = mux(busy, media["music"], tmp_path / "out.mp4", SECONDS, has_audio=True)
    info = assert_good_output(out, media["mp4"], copied=True)  # one video, one audio stream
    assert (video_of(info)["width"], video_of(info)["height"]) == (320, 240)


def test_cover_art_before_the_video_is_skipped(monkeypatch, tmp_path):
    from bgmgen.video.decode import probe

    streams = [
        {"index": 0, "codec_type": "video", "codec_name": "mjpeg", "disposition": {"attached_pic": 1}},
        {"index": 1, "codec_type": "data", "codec_name": "bin_data"},
        {"index": 2, "codec_type": "audio", "codec_name": "aac"},
        {"index": 3, "codec_type": "video", "codec_name": "h264", "disposition": {"attached_pic": 0},
         "width": 320, "height": 240, "avg_frame_rate": "25/1", "duration": "3.0"},
    ]  # fmt: skip
    fake = {"format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "3.0"}, "streams": streams}
    monkeypatch.setattr("bgmgen.video.decode.ffmpeg.probe", lambda path, **kwargs: fake)
    (tmp_path / "any.mp4").write_bytes(b"x")
    info = probe(tmp_path / "any.mp4")  # what mux reads its streams from
    assert info.stream_index == 3 and info.audio_index == 2


def test_odd_file_names_and_unreadable_input(media, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(media["mp4"], "-in.mp4")  # would read as an option
    shutil.copy(media["music"], "http:music.wav")  # would read as a protocol
    out = mux(Path("-in.mp4"), Path("http:music.wav"), Path("-out.mp4"), SECONDS, has_audio=True)
    assert_good_output(tmp_path / out, media["mp4"], copied=True)
    Path("junk.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="junk.mp4"):
        mux(Path("junk.mp4"), Path("http:music.wav"), Path("out.mp4"), SECONDS, has_audio=True)
    assert not Path("out.mp4").exists()


def test_progress_is_reported(media, tmp_path):
    seen: list[float] = []
    mux(media["mp4"], media["music"], tmp_path / "out.mp4", SECONDS, has_audio=True, progress=seen.append)
    assert seen and seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)


def test_force_overwrites(media, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match="exists"):
        mux(media["mp4"], media["music"], out, SECONDS, has_audio=True)
    assert out.read_bytes() == b"old"
    mux(media["mp4"], media["music"], out, SECONDS, has_audio=True, options=MuxOptions(force=True))
    assert video_of(probe(out))["codec_name"] == "h264"


def test_failed_mux_leaves_nothing(media, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ToolError, match="ffmpeg failed"):
        mux(media["mp4"], corrupt, out_dir / "out.mp4", SECONDS, has_audio=True)
    assert list(out_dir.iterdir()) == []


def test_interrupted_mux_leaves_nothing(media, tmp_path):
    def interrupt(fraction: float) -> None:
        raise KeyboardInterrupt  # as Ctrl-C would, while ffmpeg runs or just after

    with pytest.raises(KeyboardInterrupt):
        mux(media["mp4"], media["music"], tmp_path / "out.mp4", SECONDS, has_audio=True, progress=interrupt)
    assert list(tmp_path.iterdir()) == []


# ---- check_output_path ---------------------------------------------------------------------


def test_check_output_path_accepts_a_new_file(tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes(b"video")
    check_output_path(src, tmp_path / "out.mp4", force=False)
    (tmp_path / "out.mp4").write_bytes(b"old")
    check_output_path(src, tmp_path / "out.mp4", force=True)


@pytest.mark.parametrize(
    "case, match",
    [
        ("same", "overwrite the input"),
        ("symlink", "overwrite the input"),
        ("hardlink", "overwrite the input"),
        ("dotted", "overwrite the input"),
        ("exists", "exists"),
        ("folder", "folder"),
        ("no_folder", "does not exist"),
        ("parent_is_file", "does not exist"),
        ("extension", "cannot write"),
    ],
)
def test_check_output_path_refuses(tmp_path, case, match):
    src = tmp_path / "in.mp4"
    src.write_bytes(b"video")
    out = {
        "same": src,
        "symlink": tmp_path / "link.mp4",
        "hardlink": tmp_path / "hard.mp4",
        "dotted": tmp_path / "sub" / ".." / "in.mp4",
        "exists": tmp_path / "old.mp4",
        "folder": tmp_path / "dir.mp4",
        "no_folder": tmp_path / "missing" / "out.mp4",
        "parent_is_file": src / "out.mp4",
        "extension": tmp_path / "out.gif",
    }[case]
    if case == "symlink":
        out.symlink_to(src)
    elif case == "hardlink":
        os.link(src, out)
    elif case == "dotted":
        (tmp_path / "sub").mkdir()
    elif case == "exists":
        out.write_bytes(b"old")
    elif case == "folder":
        out.mkdir()
    with pytest.raises(OutputError, match=match):
        check_output_path(src, out, force=case == "hardlink")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_path_refuses_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            check_output_path(tmp_path / "in.mp4", folder / "out.mp4", force=False)
    finally:
        folder.chmod(0o755)


# ---- every container (slow: some re-encode) ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_every_container(media, tmp_path, ext):
    out = mux(media["mp4"], media["music"], tmp_path / f"out{ext}", SECONDS, has_audio=True,
              options=MuxOptions(keep_audio=True))  # fmt: skip
    copied = "h264" in CONTAINERS[ext].video_copy
    assert_good_output(out, media["mp4"], copied=copied)
