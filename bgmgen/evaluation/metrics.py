"""Objective measures of generated music: harmony (chord tones, chord accuracy, key) and rhythm.

All functions take binary rolls ``[2, steps, 88]`` (numpy) on the 16-steps-per-bar grid.
PCHE and GPS follow the definitions used by Diff-BGM (see docs); chord accuracy recognises a chord
per half bar from the sounding notes and compares it with the conditioning chord.
"""

from __future__ import annotations

import numpy as np

from bgmgen.music.harmony import Chord, chord_from_pitch_classes
from bgmgen.music.roll import ONSET, PITCH_LOW, STEPS_PER_BAR

_PC = (np.arange(88) + PITCH_LOW) % 12
_MINOR_FAMILY = {"min", "min7", "min6", "minmaj7", "min9", "dim", "dim7", "hdim7"}


def pitch_class_weights(roll: np.ndarray, start: int, end: int) -> np.ndarray:
    """How long each pitch class sounds in steps ``[start, end)``, onsets counted twice."""
    sounding = roll[:, start:end].sum(axis=(0, 1))  # onset + sustain cells per pitch
    weights = np.zeros(12)
    np.add.at(weights, _PC, sounding)
    return weights


def bass_weights(roll: np.ndarray, start: int, end: int) -> np.ndarray:
    """How many steps in ``[start, end)`` each pitch class is the lowest sounding note."""
    sounding = roll[:, start:end].max(axis=0) > 0  # [steps, 88]
    has_note = sounding.any(axis=1)
    lowest = sounding.argmax(axis=1)[has_note]
    return np.bincount(_PC[lowest], minlength=12).astype(float)


def chord_tone_ratio(roll: np.ndarray, chroma: np.ndarray) -> float:
    """Share of note onsets whose pitch class is in the chord sounding at that step (chords only)."""
    steps, cols = np.nonzero(roll[ONSET])
    has_chord = chroma[steps].sum(axis=1) > 0
    if not has_chord.any():
        return float("nan")
    hits = chroma[steps[has_chord], _PC[cols[has_chord]]]
    return float(hits.mean())


def chord_accuracy(roll: np.ndarray, chords: list[Chord], steps_per_chord: int = STEPS_PER_BAR // 2) -> float:
    """Share of chord spans (half bars) whose recognised chord has the wanted root and major/minor colour.

    The chord is recognised from how long each pitch class sounds, with the bass line settling chords
    that share their tones (C6 / Am7). Spans with no wanted chord or no notes are skipped.
    """
    correct = total = 0
    for i, wanted in enumerate(chords):
        weights = pitch_class_weights(roll, i * steps_per_chord, (i + 1) * steps_per_chord)
        if wanted.is_none or weights.sum() == 0:
            continue
        found = chord_from_pitch_classes(list(weights), list(bass_weights(roll, i * steps_per_chord, (i + 1) * steps_per_chord)))
        total += 1
        correct += found.root == wanted.root and ((found.quality in _MINOR_FAMILY) == (wanted.quality in _MINOR_FAMILY))
    return correct / total if total else float("nan")


def in_key_ratio(roll: np.ndarray, scale: tuple[int, ...]) -> float:
    """Share of note onsets whose pitch class is in ``scale``."""
    _, cols = np.nonzero(roll[ONSET])
    if len(cols) == 0:
        return float("nan")
    return float(np.isin(_PC[cols], scale).mean())


def pitch_class_histogram_entropy(roll: np.ndarray, window_bars: int = 8) -> float:
    """PCHE: mean over windows of the entropy (bits) of the onset pitch-class histogram."""
    steps, cols = np.nonzero(roll[ONSET])
    window = window_bars * STEPS_PER_BAR
    values = []
    for start in range(0, roll.shape[1], window):
        in_window = (steps >= start) & (steps < start + window)
        if not in_window.any():
            continue
        hist = np.bincount(_PC[cols[in_window]], minlength=12).astype(float)
        p = hist / hist.sum()
        values.append(float(-(p * np.log2(p + 1e-6)).sum()))
    return float(np.mean(values)) if values else float("nan")


def grooving_pattern_similarity(roll: np.ndarray) -> float:
    """GPS: mean over bar pairs of 1 - (differing onset positions) / 16."""
    n_bars = roll.shape[1] // STEPS_PER_BAR
    grooves = roll[ONSET, : n_bars * STEPS_PER_BAR].reshape(n_bars, STEPS_PER_BAR, -1).max(axis=2) > 0
    if n_bars < 2:
        return float("nan")
    diff = (grooves[:, None, :] != grooves[None, :, :]).mean(axis=2)
    i, j = np.triu_indices(n_bars, k=1)
    return float((1 - diff[i, j]).mean())


def onset_counts_per_bar(roll: np.ndarray) -> np.ndarray:
    n_bars = roll.shape[1] // STEPS_PER_BAR
    return roll[ONSET, : n_bars * STEPS_PER_BAR].reshape(n_bars, -1).sum(axis=1)


# ----------------------------------------------------------------------------- one melody line

MELODY_METRICS = ("stepwise", "leaps", "range", "strong_chord_tones", "empty_bars", "pche")
STEP_SEMITONES = 2  # a move of at most a whole tone (repeated notes included) is a step
LEAP_SEMITONES = 7  # a move over a fifth is a leap
_EXTENSIONS = {1, 2, 5}  # 9ths and 11ths: chord tones in a label, not triad or seventh (unless sus)


def melody_line(roll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Onset steps and pitches of a melody roll read as one voice (the highest onset of each step)."""
    steps, cols = np.nonzero(roll[ONSET])
    if len(steps) == 0:
        return steps, cols
    order = np.lexsort((-cols, steps))  # by step, highest first
    steps, cols = steps[order], cols[order]
    first = np.concatenate([[True], steps[1:] != steps[:-1]])
    return steps[first], cols[first] + PITCH_LOW


def triad_and_seventh(chroma: np.ndarray, root: np.ndarray) -> np.ndarray:
    """``chroma`` [steps, 12] cut to each chord's triad and seventh: 9ths and 11ths dropped, except
    that a chord without a third (sus2, sus4) keeps its 2nd or 4th, which stands in for the third."""
    out = chroma.astype(bool).copy()
    for step in np.flatnonzero(root >= 0):
        intervals = (np.arange(12) - root[step]) % 12
        has_third = out[step, (root[step] + 3) % 12] or out[step, (root[step] + 4) % 12]
        if has_third:
            out[step, np.isin(intervals, list(_EXTENSIONS))] = False
    return out


def melody_statistics(roll: np.ndarray, chroma: np.ndarray, root: np.ndarray) -> dict[str, float]:
    """How a melody moves, on one window: share of steps (<= 2 semitones) and of leaps (> 7) among
    consecutive onsets, range in semitones, share of onsets on beats 1 and 3 that are chord tones
    (triad and seventh), share of bars where nothing sounds, and PCHE."""
    steps, pitches = melody_line(roll)
    moves = np.abs(np.diff(pitches))
    n_bars = roll.shape[1] // STEPS_PER_BAR
    sounding = roll[:, : n_bars * STEPS_PER_BAR].max(axis=0).reshape(n_bars, -1).max(axis=1) > 0
    strong = (steps % (STEPS_PER_BAR // 2) == 0) & (root[steps] >= 0) if len(steps) else np.zeros(0, bool)
    tones = triad_and_seventh(chroma, root)
    nan = float("nan")
    return {
        "stepwise": float((moves <= STEP_SEMITONES).mean()) if len(moves) else nan,
        "leaps": float((moves > LEAP_SEMITONES).mean()) if len(moves) else nan,
        "range": float(pitches.max() - pitches.min()) if len(pitches) else nan,
        "strong_chord_tones": float(tones[steps[strong], pitches[strong] % 12].mean()) if strong.any() else nan,
        "empty_bars": float(1 - sounding.mean()) if n_bars else nan,
        "pche": pitch_class_histogram_entropy(roll),
    }
