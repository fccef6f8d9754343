"""Tests for the structure indicator: each step on inputs whose structure is known, the dynamic
programming against a brute-force search, and SI on rendered rolls (repeated, transposed, random)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from bgmgen.errors import InputError
from bgmgen.evaluation import structure as st
from bgmgen.music.roll import STEPS_PER_BAR, notes_to_roll

TEMPO = 120.0  # BPM: a 4-bar phrase lasts 8 s, 24 bars 48 s
PHRASE_BARS = 4
REPEATS = 6


# --- synthetic music -----------------------------------------------------------------------------


def _bars(rng: np.random.Generator, n_bars: int) -> np.ndarray:
    """Random piano music, rows (start, end, pitch, velocity): a melody on eighths and a triad per bar."""
    notes = []
    for bar in range(n_bars):
        base = bar * STEPS_PER_BAR
        for step in range(0, STEPS_PER_BAR, 2):
            if rng.random() < 0.7:
                notes.append((base + step, base + step + int(rng.integers(1, 5)), int(rng.integers(55, 80)), 80))
        root = int(rng.integers(36, 48))
        for pitch in (root, root + 7, root + 16):
            notes.append((base, base + STEPS_PER_BAR, pitch, 70))
    return np.array(notes)


def _repeated_roll(seed: int, transpose_every_other: int = 0) -> np.ndarray:
    """A 4-bar phrase played 6 times; every second copy transposed by ``transpose_every_other``."""
    phrase = _bars(np.random.default_rng(seed), PHRASE_BARS)
    span = PHRASE_BARS * STEPS_PER_BAR
    copies = []
    for i in range(REPEATS):
        copy = phrase.copy()
        copy[:, :2] += i * span
        if i % 2:
            copy[:, 2] += transpose_every_other
        copies.append(copy)
    return notes_to_roll(np.concatenate(copies), REPEATS * span)


def _random_roll(seed: int) -> np.ndarray:
    """24 bars of the same kind of music with nothing repeated on purpose."""
    n_bars = PHRASE_BARS * REPEATS
    return notes_to_roll(_bars(np.random.default_rng(seed), n_bars), n_bars * STEPS_PER_BAR)


@functools.cache
def _rendered_si(kind: str) -> dict:
    """All three SIs of a rendered synthetic roll, computed once per test session."""
    roll = {
        "repeated": lambda: _repeated_roll(0),
        "transposed": lambda: _repeated_roll(0, transpose_every_other=2),
        "random": lambda: _random_roll(1),
    }[kind]()
    audio = st.roll_to_audio(roll, TEMPO)
    assert len(audio) == pytest.approx(48.0 * st.SAMPLE_RATE, abs=1)
    return st.structure_indicators(audio, st.SAMPLE_RATE)


def _unit_chroma(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.random((st.N_CHROMA, n)) ** 4  # peaky, like real chroma
    return x / np.linalg.norm(x, axis=0)


# --- steps ---------------------------------------------------------------------------------------


def test_chroma_features_rate_norm_and_pitch_class():
    sr = 44100  # not the analysis rate: exercises the resampling
    t = np.arange(10 * sr) / sr
    audio = np.stack([np.sin(2 * np.pi * 440.0 * t)] * 2, axis=1)  # stereo A4
    chroma = st.chroma_features(audio, sr)
    assert chroma.shape == (12, 21)  # 10 s at 2 Hz, frames centred from 0 s to 10 s
    assert np.allclose(np.linalg.norm(chroma, axis=0), 1.0)
    assert (chroma.argmax(axis=0) == 9).all()  # pitch class A (C = 0)


def test_chroma_features_silence_is_flat_and_empty_audio_fails():
    chroma = st.chroma_features(np.zeros(5 * st.SAMPLE_RATE), st.SAMPLE_RATE)
    assert np.allclose(chroma, 1.0 / np.sqrt(12))
    with pytest.raises(InputError):
        st.chroma_features(np.zeros(0), st.SAMPLE_RATE)


def test_self_similarity_shift_undoes_transposition():
    chroma = _unit_chroma(np.random.default_rng(0), 10)
    up2 = np.roll(chroma, 2, axis=0)  # the same music two semitones higher
    cross = chroma.T @ up2
    assert not np.allclose(np.diag(cross), 1.0)
    # Rolling the second copy's chroma down 2 (up 10) lines it up with the first.
    assert np.allclose(np.diag(st.self_similarity(np.hstack([chroma, up2]), 10)[:10, 10:]), 1.0)


def test_path_enhanced_ssm_is_transposition_invariant():
    chroma = _unit_chroma(np.random.default_rng(1), 20)
    both = np.hstack([chroma, np.roll(chroma, 2, axis=0)])  # a passage, then the passage up 2 semitones
    ssm = st.path_enhanced_ssm(both)
    assert ssm.shape == (40, 40)
    assert np.allclose(np.diag(ssm), 1.0) and ssm.max() <= 1.0 + 1e-9
    assert np.allclose(np.diag(ssm[:20, 20:]), 1.0)  # the repeat is found despite the transposition
    no_shift = st.path_enhanced_ssm(both, shifts=(0,))
    assert np.diag(no_shift[:20, 20:]).mean() < 0.9


def test_threshold_ssm_keeps_top_quarter_scaled_and_penalises_the_rest():
    rng = np.random.default_rng(2)
    ssm = rng.random((40, 40))
    ssm = (ssm + ssm.T) / 2
    out = st.threshold_ssm(ssm)
    kept = out != st.PENALTY
    assert 0.24 <= kept.mean() <= 0.27  # top 25 % (plus the diagonal)
    assert out[kept].min() >= 0.0 and out[kept].max() == 1.0
    assert np.allclose(np.diag(out), 1.0)
    off = ~np.eye(40, dtype=bool)
    # Order is kept among the kept cells, and every kept cell was larger than every dropped one.
    assert ssm[kept & off].min() >= ssm[~kept].max()
    order = np.argsort(ssm[kept & off])
    assert (np.diff(out[kept & off][order]) >= 0).all()


# --- fitness -------------------------------------------------------------------------------------


def _brute_force_family(ssm: np.ndarray, start: int, length: int) -> tuple[float, int, int]:
    """(score, cells, rows covered) of the best path family, by searching every path explicitly."""
    n = len(ssm)
    seg = ssm[:, start : start + length]

    def paths_from(row: int, col: int):
        """Every path from (row, col) to the last column: (score, cells, last row)."""
        here = seg[row, col]
        if col == length - 1:
            yield here, 1, row
            return
        for dr, dc in ((1, 1), (2, 1), (1, 2)):
            if row + dr < n and col + dc < length:
                for score, cells, last in paths_from(row + dr, col + dc):
                    yield here + score, cells + 1, last

    @functools.cache
    def best(row: int) -> tuple[float, int, int]:
        if row >= n:
            return 0.0, 0, 0
        options = [best(row + 1)]  # no path starts on this row
        for score, cells, last in paths_from(row, 0):
            rest = best(last + 1)
            options.append((score + rest[0], cells + rest[1], last - row + 1 + rest[2]))
        return max(options, key=lambda o: o[0])

    return best(0)


def test_vectorised_path_family_matches_brute_force():
    rng = np.random.default_rng(3)
    n = 11
    ssm = rng.uniform(-1.0, 1.0, (n, n))  # continuous values: no ties between families
    for length in (1, 2, 3, 5):
        fitness = st.segment_fitness(ssm, length)
        assert fitness.shape == (n - length + 1,)
        for start in range(n - length + 1):
            score, cells, covered = _brute_force_family(ssm, start, length)
            a, b = (score - length) / cells, (covered - length) / n
            expected = 2 * a * b / (a + b) if a > 0 and b > 0 else 0.0
            assert fitness[start] == pytest.approx(expected), (length, start)


def test_repeating_segment_is_fitter_than_a_non_repeating_one():
    rng = np.random.default_rng(4)
    motif, other = _unit_chroma(rng, 16), _unit_chroma(rng, 16)
    ssm = st.threshold_ssm(st.path_enhanced_ssm(np.hstack([motif, motif, motif, other])))
    plot = st.fitness_scape_plot(ssm)
    assert plot.shape == (64, 64)
    # The motif explains 3 of 4 parts exactly: score (3M - M) / 3M = 2/3, coverage (3M - M) / 4M = 1/2.
    assert plot[15, 0] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert plot[15, 0] > plot[15, 48] + 0.15  # the part heard once
    assert np.all(plot[15, 49:] == 0)  # segments running past the end
    assert plot.min() >= 0.0 and plot.max() <= 1.0


def test_scape_plot_range_only_computes_requested_durations():
    rng = np.random.default_rng(5)
    ssm = st.threshold_ssm(st.path_enhanced_ssm(_unit_chroma(rng, 30)))
    full = st.fitness_scape_plot(ssm)
    part = st.fitness_scape_plot(ssm, 6, 16)
    assert np.array_equal(part[5:16], full[5:16])
    assert not part[:5].any() and not part[16:].any()


# --- SI ------------------------------------------------------------------------------------------


def test_si_bounds_and_short_audio():
    rng = np.random.default_rng(6)
    audio = rng.standard_normal(10 * st.SAMPLE_RATE)
    si = st.structure_indicators(audio, st.SAMPLE_RATE)
    assert set(si) == set(st.SI_BOUNDS)
    assert all(0.0 <= v <= 1.0 for v in si.values())
    assert si[(15.0, None)] == 0.0  # 10 s of audio has no segment of 15 s or more
    assert st.structure_indicator(audio, st.SAMPLE_RATE) == si[(3.0, 8.0)]
    with pytest.raises(ValueError):
        st.structure_indicator(audio, st.SAMPLE_RATE, low=8, high=3)
    with pytest.raises(ValueError):
        st.structure_indicator(audio, st.SAMPLE_RATE, low=0)


def test_repeated_phrase_scores_far_above_random_notes():
    repeated, random = _rendered_si("repeated"), _rendered_si("random")
    assert all(0.0 <= v <= 1.0 for v in [*repeated.values(), *random.values()])
    assert repeated[(3.0, 8.0)] > 0.7
    assert repeated[(3.0, 8.0)] > random[(3.0, 8.0)] + 0.3
    assert repeated[(8.0, 15.0)] > random[(8.0, 15.0)] + 0.4
    assert repeated[(15.0, None)] > random[(15.0, None)] + 0.4


def test_transposed_repeats_still_score_high():
    transposed, random = _rendered_si("transposed"), _rendered_si("random")
    assert transposed[(3.0, 8.0)] > random[(3.0, 8.0)] + 0.2
    assert transposed[(8.0, 15.0)] > 0.5 > random[(8.0, 15.0)] + 0.2
    assert transposed[(15.0, None)] > 0.5


def test_structure_indicator_from_roll_matches_rendering_by_hand():
    roll = _repeated_roll(7)[:, : 4 * STEPS_PER_BAR]  # 8 s: one copy of the phrase
    by_hand = st.structure_indicator(st.roll_to_audio(roll, TEMPO), st.SAMPLE_RATE, 3, 8)
    assert st.structure_indicator_from_roll(roll, TEMPO) == pytest.approx(by_hand)
    assert st.roll_to_audio(np.zeros_like(roll), TEMPO).any() == False  # noqa: E712 (silence, no FluidSynth)
