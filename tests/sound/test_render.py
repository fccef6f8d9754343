"""Tests for bgmgen.sound.render: SoundFont choice, FluidSynth rendering, loudness and limiting."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from bgmgen.errors import InputError, ToolError
from bgmgen.sound.loudness import _k_weighting, integrated_loudness, limit_peaks, normalise
from bgmgen.sound.render import RenderOptions, apply_fade_out, find_soundfont, render

from conftest import REPO_DIR

SR = 44100
SHIPPED = REPO_DIR / "soundfonts" / "TimGM6mb.sf2"
needs_fluidsynth = pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")


def write_midi(path: Path, seconds: float, notes_per_s: float = 4.0, seed: int = 0) -> Path:
    """A piano MIDI of random notes in the middle register, `notes_per_s` onsets a second."""
    import pretty_midi

    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    for start in np.arange(0.0, seconds, 1.0 / notes_per_s):
        end = min(start + rng.uniform(0.2, 0.6), seconds)
        piano.notes.append(pretty_midi.Note(int(rng.integers(60, 110)), int(rng.integers(48, 84)), start, end))
    pm.instruments.append(piano)
    pm.write(str(path))
    return path


def read_float(path: Path) -> tuple[int, np.ndarray]:
    sr, data = wavfile.read(path)
    return sr, data


def fake_soundfont(path: Path, size: int = 100) -> Path:
    """A file with a SoundFont's RIFF/sfbk header, padded to `size` bytes."""
    path.write_bytes(b"RIFF" + (size - 8).to_bytes(4, "little") + b"sfbk" + bytes(size - 12))
    return path


# ---- find_soundfont ---------------------------------------------------------------------------


def test_shipped_soundfont_is_valid_and_licensed():
    assert SHIPPED.is_file() and SHIPPED.stat().st_size < 8 * 2**20
    assert SHIPPED.read_bytes()[:12].endswith(b"sfbk")
    assert (SHIPPED.parent / "LICENSE-TimGM6mb.txt").is_file()


def test_explicit_soundfont_is_used(tmp_path):
    sf = fake_soundfont(tmp_path / "mine.sf2")
    assert find_soundfont(sf) == sf


@pytest.mark.parametrize(
    "name, content",
    [("missing.sf2", None), ("notes.txt", b"RIFF\0\0\0\0sfbk"), ("garbage.sf2", b"not a soundfont at all")],
)
def test_explicit_soundfont_refused(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError):
        find_soundfont(path)


def test_system_soundfont_preference(tmp_path):
    sf2, sf3 = tmp_path / "sf2", tmp_path / "sf3"
    sf2.mkdir()
    sf3.mkdir()
    big = fake_soundfont(sf2 / "Big.sf2", 5000)
    fake_soundfont(sf2 / "Small.sf2", 200)
    (sf2 / "Broken.sf2").write_bytes(b"x" * 10_000)  # largest, but not a SoundFont
    assert find_soundfont(None, (sf2, sf3)) == big  # no known name: the largest valid one

    muse = fake_soundfont(sf3 / "MuseScore_General.sf3", 300)
    assert find_soundfont(None, (sf2, sf3)) == muse

    fluid = fake_soundfont(sf3 / "FluidR3_GM.sf2", 400)
    assert find_soundfont(None, (sf2, sf3)) == fluid


def test_falls_back_to_shipped_soundfont(tmp_path):
    assert find_soundfont(None, (tmp_path / "none", tmp_path)).resolve() == SHIPPED


# ---- loudness, fade, limiter (numpy only) ------------------------------------------------------


def test_k_weighting_matches_bs1770_table_at_48k():
    (shelf_b, shelf_a), (hp_b, hp_a) = _k_weighting(48000)
    np.testing.assert_allclose(shelf_b, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-9)
    np.testing.assert_allclose(shelf_a, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-9)
    np.testing.assert_allclose(hp_b, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(hp_a, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-9)


@pytest.mark.parametrize("sr", [44100, 48000])
def test_loudness_of_sine_follows_bs1770(sr):
    # BS.1770: a 1 kHz sine at 0 dBFS in one channel reads -3.01 LUFS, in both 0 LUFS.
    t = np.arange(3 * sr) / sr
    sine = 0.1 * np.sin(2 * np.pi * 997 * t)
    assert integrated_loudness(np.stack([sine, sine], axis=1), sr) == pytest.approx(-20.0, abs=0.1)
    assert integrated_loudness(np.stack([sine, 0 * sine], axis=1), sr) == pytest.approx(-23.01, abs=0.1)
    assert integrated_loudness(np.zeros((sr, 2)), sr) == float("-inf")


def test_relative_gate_ignores_quiet_parts():
    t = np.arange(4 * SR) / SR
    sine = 0.1 * np.sin(2 * np.pi * 997 * t)
    sine[2 * SR :] *= 0.01  # -60 LUFS: above the absolute gate (-70), below the relative one (-30)
    # 17 loud 400 ms blocks, 3 straddling the step (3/4, 1/2, 1/4 loud) pass the gate; the quiet
    # blocks do not (with them the mean would be ~3 dB lower).
    expected = -20.0 + 10 * np.log10((17 + 0.75 + 0.5 + 0.25) / 20)
    assert integrated_loudness(np.stack([sine, sine], axis=1), SR) == pytest.approx(expected, abs=0.05)


def test_fade_out_ramps_to_silence():
    audio = np.ones((SR, 2))
    faded = apply_fade_out(audio, SR, 0.5)
    assert np.all(faded[: SR // 2] == 1.0)
    assert faded[-1, 0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(faded[SR // 2 :, 0]) <= 0)  # monotonic
    assert np.abs(faded[-int(0.05 * SR) :]).max() < 0.03


def test_limiter_holds_ceiling_and_leaves_the_rest():
    rng = np.random.default_rng(1)
    audio = 0.2 * rng.standard_normal((2 * SR, 2)).clip(-3, 3) / 3
    audio[SR, 0] = 1.5  # one peak far over the ceiling
    out = limit_peaks(audio, SR, 0.5)
    assert np.abs(out).max() <= 0.5
    np.testing.assert_array_equal(out[: SR // 2], audio[: SR // 2])  # far from the peak: untouched


def test_normalise_reaches_target_and_keeps_silence():
    rng = np.random.default_rng(2)
    noise = 0.01 * rng.standard_normal((3 * SR, 2))
    out = normalise(noise, SR, -16.0, -1.0)
    assert integrated_loudness(out, SR) == pytest.approx(-16.0, abs=0.5)
    assert np.abs(out).max() <= 10 ** (-1 / 20)
    silent = np.zeros((SR, 2))
    np.testing.assert_array_equal(normalise(silent, SR, -16.0, -1.0), silent)


# ---- render (real FluidSynth) ----------------------------------------------------------------


@needs_fluidsynth
def test_render_exact_length_level_and_fade(tmp_path):
    midi = write_midi(tmp_path / "in.mid", 3.0)
    out = tmp_path / "music.wav"
    options = RenderOptions(soundfont=SHIPPED)
    assert render(midi, out, 2.5, options) == out

    sr, data = read_float(out)
    assert sr == 44100 and data.dtype == np.int16 and data.shape[1] == 2
    assert abs(len(data) - 2.5 * SR) <= 0.001 * SR  # FluidSynth's ~3 s release tail is cut
    audio = data / 32768.0
    assert np.sqrt(np.mean(audio**2)) > 0.01  # not silent
    assert np.abs(audio).max() <= 10 ** (options.peak_db / 20) + 1 / 32768
    assert integrated_loudness(audio, SR) == pytest.approx(options.target_lufs, abs=1.5)
    assert np.abs(audio[-int(0.05 * SR) :]).max() < 0.01  # the fade silences the last 50 ms
    assert not list(tmp_path.glob(".*partial*"))


@needs_fluidsynth
def test_render_pads_to_duration_and_agrees_with_ffmpeg(tmp_path):
    midi = write_midi(tmp_path / "in.mid", 1.0)
    out = render(midi, tmp_path / "music.wav", 6.0, RenderOptions(soundfont=SHIPPED, target_lufs=-20.0))
    _, data = read_float(out)
    assert len(data) == 6 * SR
    assert np.abs(data[-SR:]).max() == 0  # padded silence after the release tail
    # ffmpeg's own EBU R128 meter agrees with ours.
    proc = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(out), "-af", "ebur128", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    measured = float(re.findall(r"I:\s+(-?[\d.]+) LUFS", proc.stderr)[-1])
    assert measured == pytest.approx(-20.0, abs=0.3)


@needs_fluidsynth
def test_render_errors(tmp_path, monkeypatch):
    out = tmp_path / "music.wav"
    with pytest.raises(InputError):
        render(tmp_path / "missing.mid", out, 2.0, RenderOptions(soundfont=SHIPPED))
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"this is not MIDI")
    with pytest.raises(ToolError, match="fluidsynth"):
        render(bad, out, 2.0, RenderOptions(soundfont=SHIPPED))
    midi = write_midi(tmp_path / "in.mid", 1.0)
    with pytest.raises(InputError):
        render(midi, out, 0.0, RenderOptions(soundfont=SHIPPED))
    monkeypatch.setattr("bgmgen.sound.render.shutil.which", lambda name: None)
    with pytest.raises(ToolError, match="apt-get install fluidsynth"):
        render(midi, out, 2.0, RenderOptions(soundfont=SHIPPED))
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


@pytest.mark.slow
@needs_fluidsynth
def test_render_busy_minute_is_fast(tmp_path):
    midi = write_midi(tmp_path / "busy.mid", 60.0, notes_per_s=8.0)
    start = time.perf_counter()
    out = render(midi, tmp_path / "music.wav", 60.0, RenderOptions(soundfont=SHIPPED))
    assert time.perf_counter() - start < 20.0  # ~1 s on a quiet 2-core machine
    _, data = read_float(out)
    assert len(data) == 60 * SR
    assert integrated_loudness(data / 32768.0, SR) == pytest.approx(-16.0, abs=0.5)
