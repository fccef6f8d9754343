"""Tests for the --keep-audio mix: the music ducks under the original's sound, the mix meets its loudness.

The original sound is silent for the first half and a loud 1 kHz tone for the second; the "music" is a
steady 300 Hz tone, so a spectrum over each half tells how loud the music is there.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from bgmgen.sound.loudness import integrated_loudness
from bgmgen.sound.mux import MuxOptions, mux

SECONDS = 4.0
LOUD_FROM = 2.0  # the original is silent before this time and loud after it
RATE = 44100
MUSIC_HZ = 300
ORIGINAL_HZ = 1000


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ducking")
    t = np.arange(int(SECONDS * RATE)) / RATE
    music = 0.3 * np.sin(2 * np.pi * MUSIC_HZ * t)
    wavfile.write(d / "music.wav", RATE, (np.stack([music, music], axis=1) * 32767).astype(np.int16))
    video = d / "talk.mp4"
    original = f"aevalsrc='if(gte(t,{LOUD_FROM}),0.5*sin(2*PI*{ORIGINAL_HZ}*t),0)':s=48000:d={SECONDS}"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s=160x90:r=25:d={SECONDS}",
         "-f", "lavfi", "-i", original, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-t", str(SECONDS), str(video)],
        check=True,
    )  # fmt: skip
    return {"music": d / "music.wav", "video": video}


def decode_stereo(path: Path) -> np.ndarray:
    """The first audio track as float (frames, 2) at 44.1 kHz."""
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-ac", "2",
         "-ar", str(RATE), "-f", "f32le", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(out, dtype=np.float32).reshape(-1, 2).astype(np.float64)


def tone_db(audio: np.ndarray, hz: float, start: float, end: float) -> float:
    """Amplitude (dB) of the `hz` tone between `start` and `end` seconds of a stereo signal."""
    x = audio[int(start * RATE) : int(end * RATE)].mean(axis=1)
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * window)) * 2 / window.sum()
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(20 * np.log10(spectrum[np.abs(freqs - hz) < 15].max() + 1e-12))


def test_music_ducks_where_the_original_has_sound(media, tmp_path):
    out = mux(media["video"], media["music"], tmp_path / "ducked.mp4", SECONDS, has_audio=True,
              options=MuxOptions(keep_audio=True))  # fmt: skip
    audio = decode_stereo(out)
    quiet_part = tone_db(audio, MUSIC_HZ, 0.3, LOUD_FROM - 0.1)
    loud_part = tone_db(audio, MUSIC_HZ, LOUD_FROM + 0.4, SECONDS - 0.1)  # after the compressor's attack
    assert quiet_part - loud_part >= 6.0, (quiet_part, loud_part)
    # The original is there, and louder than the ducked music.
    assert tone_db(audio, ORIGINAL_HZ, LOUD_FROM + 0.4, SECONDS - 0.1) > loud_part


def test_without_ducking_the_music_keeps_its_level(media, tmp_path):
    out = mux(media["video"], media["music"], tmp_path / "flat.mp4", SECONDS, has_audio=True,
              options=MuxOptions(keep_audio=True, duck=False))  # fmt: skip
    audio = decode_stereo(out)
    quiet_part = tone_db(audio, MUSIC_HZ, 0.3, LOUD_FROM - 0.1)
    loud_part = tone_db(audio, MUSIC_HZ, LOUD_FROM + 0.4, SECONDS - 0.1)
    assert abs(quiet_part - loud_part) < 1.5, (quiet_part, loud_part)


@pytest.mark.parametrize("target", [-16.0, -23.0])
def test_mix_meets_the_loudness_target(media, tmp_path, target):
    out = mux(media["video"], media["music"], tmp_path / f"mix{target}.mp4", SECONDS, has_audio=True,
              options=MuxOptions(keep_audio=True, loudness=target))  # fmt: skip
    audio = decode_stereo(out)
    assert integrated_loudness(audio, RATE) == pytest.approx(target, abs=1.0)
    assert np.abs(audio).max() <= 0.95  # the limiter holds peaks near -1 dBFS (AAC may overshoot a little)
