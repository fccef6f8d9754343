"""Objective music measures on hand-made rolls whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bgmgen.evaluation.metrics import (
    chord_accuracy,
    chord_tone_ratio,
    grooving_pattern_similarity,
    in_key_ratio,
    onset_counts_per_bar,
    pitch_class_histogram_entropy,
    pitch_class_weights,
)
from bgmgen.music.harmony import Chord, Key
from bgmgen.music.roll import STEPS_PER_BAR, Note, notes_to_roll

C, D, E, F, G, A, B = 60, 62, 64, 65, 67, 69, 71  # middle-octave MIDI pitches


def roll_of(notes, bars=2):
    return notes_to_roll(notes, bars * STEPS_PER_BAR)


def test_pche_of_one_pitch_class_is_zero():
    # C in three octaves, over and over: one pitch class.
    roll = roll_of([Note(s, s + 1, p) for s in range(0, 32, 2) for p in (48, 60, 72)])
    assert pitch_class_histogram_entropy(roll) == pytest.approx(0.0, abs=1e-4)


def test_pche_of_all_twelve_pitch_classes_evenly_is_log2_12():
    roll = roll_of([Note(s, s + 1, 60 + (s % 12)) for s in range(24)])
    assert pitch_class_histogram_entropy(roll) == pytest.approx(math.log2(12), abs=1e-3)
    two = roll_of([Note(s, s + 1, 60 + 7 * (s % 2)) for s in range(16)])  # C and G alternating
    assert pitch_class_histogram_entropy(two) == pytest.approx(1.0, abs=1e-4)


def test_pche_averages_over_8_bar_windows_and_skips_empty_ones():
    # Window 1 (bars 0-7): one pitch class; window 2: silent; window 3: two classes evenly.
    notes = [Note(0, 1, C)] + [Note(16 * 16 + s, 16 * 16 + s + 1, C + 7 * (s % 2)) for s in range(8)]
    roll = roll_of(notes, bars=24)
    assert pitch_class_histogram_entropy(roll) == pytest.approx(0.5, abs=1e-4)
    assert math.isnan(pitch_class_histogram_entropy(roll_of([])))


def test_gps_of_identical_bars_is_one():
    groove = [0, 4, 6, 8, 12]
    roll = roll_of([Note(b * 16 + s, b * 16 + s + 1, C + b) for b in range(4) for s in groove], bars=4)
    assert grooving_pattern_similarity(roll) == pytest.approx(1.0)


def test_gps_counts_differing_onset_positions():
    # Bar 0: onsets on all 16 steps; bar 1: none -> nothing in common. Then half the positions.
    full_and_empty = roll_of([Note(s, s + 1, C) for s in range(16)])
    assert grooving_pattern_similarity(full_and_empty) == pytest.approx(0.0)
    half = roll_of([Note(s, s + 1, C) for s in range(16)] + [Note(16 + s, 17 + s, E) for s in range(0, 16, 2)])
    assert grooving_pattern_similarity(half) == pytest.approx(0.5)
    assert math.isnan(grooving_pattern_similarity(roll_of([Note(0, 1, C)], bars=1)))


def test_chord_tone_ratio_counts_onsets_on_chord_tones():
    chroma = np.zeros((32, 12))
    chroma[:16] = Chord.parse("C:maj").chroma
    chroma[16:24] = Chord.parse("A:min").chroma  # steps 24.. have no chord
    notes = [Note(0, 4, C), Note(0, 4, E), Note(2, 3, D), Note(4, 5, G + 12),  # 3 of 4 in C major
             Note(16, 17, A), Note(17, 18, B),  # 1 of 2 in A minor
             Note(24, 25, 61), Note(25, 26, 66)]  # no chord: ignored
    assert chord_tone_ratio(roll_of(notes), chroma) == pytest.approx(4 / 6)
    assert math.isnan(chord_tone_ratio(roll_of([Note(24, 25, C)]), chroma))


def test_in_key_ratio():
    scale = Key.parse("C major").scale
    assert in_key_ratio(roll_of([Note(0, 1, C), Note(1, 2, D), Note(2, 3, 66)]), scale) == pytest.approx(2 / 3)
    assert in_key_ratio(roll_of([Note(0, 1, 66), Note(1, 2, 70)]), Key.parse("F#m").scale) == 0.5  # F# in, A# out
    assert math.isnan(in_key_ratio(roll_of([]), scale))


def test_pitch_class_weights_count_sounding_steps():
    roll = roll_of([Note(0, 4, C), Note(2, 3, C + 12), Note(8, 10, E)])
    weights = pitch_class_weights(roll, 0, 8)
    assert weights[0] == 5 and weights[4] == 0  # 4 steps + 1 step of C; E starts after the span
    assert pitch_class_weights(roll, 8, 16)[4] == 2


def test_chord_accuracy_per_half_bar():
    # Half bars: C major triad, A minor triad, C minor triad, silence.
    notes = [Note(0, 8, p) for p in (C, E, G)] + [Note(8, 16, p) for p in (A, C + 12, E)] + [Note(16, 24, p) for p in (C, 63, G)]
    roll = roll_of(notes)
    wanted = [Chord.parse(label) for label in ("C:maj", "A:min7", "C:maj", "G:maj")]
    # C ok; A:min7 is minor-family like the A minor triad: ok; C minor heard for C major: wrong; silent: skipped.
    assert chord_accuracy(roll, wanted) == pytest.approx(2 / 3)
    assert chord_accuracy(roll, [Chord.parse(x) for x in ("C:maj", "A:min", "C:min", "N")]) == 1.0
    assert chord_accuracy(roll, [Chord.parse(x) for x in ("F:maj", "D:min", "Eb:maj", "C:maj")]) == 0.0
    assert math.isnan(chord_accuracy(roll, [Chord.parse("N")] * 4))


def test_onset_counts_per_bar():
    roll = roll_of([Note(0, 4, C), Note(0, 4, E), Note(3, 4, G), Note(20, 21, C)], bars=3)
    assert onset_counts_per_bar(roll).tolist() == [3, 1, 0]


def test_chord_accuracy_hears_the_bass():
    from bgmgen.music.roll import Note, notes_to_roll

    # C E G with an A in the melody over a C bass: a C chord with an added sixth, not A minor 7.
    notes = [Note(0, 8, 48, 80), Note(0, 8, 64, 80), Note(0, 8, 67, 80), Note(0, 8, 69, 80)]
    roll = notes_to_roll(notes, 8)
    assert chord_accuracy(roll, [Chord.parse("C:maj")]) == 1.0
    assert chord_accuracy(roll, [Chord.parse("A:min")]) == 0.0


def _melody_roll(notes, n_steps=128):
    """Onsets (step, MIDI pitch, length) drawn into a [2, steps, 88] roll."""
    from bgmgen.music.roll import Note, notes_to_roll

    return notes_to_roll([Note(s, s + n, p) for s, p, n in notes], n_steps)


def test_melody_statistics_of_a_known_line():
    from bgmgen.evaluation.metrics import melody_statistics

    # Bars 0-1 only (six empty bars of eight). Moves: +2, -1, +9 (leap), 0, -12 (leap).
    line = [(0, 60, 4), (4, 62, 4), (8, 61, 4), (16, 70, 4), (20, 70, 4), (24, 58, 8)]
    roll = _melody_roll(line)
    chroma = np.zeros((128, 12))
    root = np.full(128, -1)
    chroma[:, [0, 4, 7, 2]] = 1  # C:maj(add9): the 9th (D) is no triad or seventh tone
    root[:] = 0
    stats = melody_statistics(roll, chroma, root)
    assert stats["stepwise"] == pytest.approx(3 / 5)  # +2, -1 and the repeated note
    assert stats["leaps"] == pytest.approx(2 / 5)
    assert stats["range"] == 70 - 58
    # Onsets on beats 1 and 3 (steps 0, 8, 16, 24): C (yes), C# (no), A# (no), A# (no).
    assert stats["strong_chord_tones"] == pytest.approx(1 / 4)
    assert stats["empty_bars"] == pytest.approx(6 / 8)
    # A D on a strong beat is not counted as a chord tone: only triad and seventh are.
    stats = melody_statistics(_melody_roll([(0, 62, 4)]), chroma, root)
    assert stats["strong_chord_tones"] == 0.0 and np.isnan(stats["stepwise"])


def test_sus_chords_keep_their_fourth():
    from bgmgen.evaluation.metrics import triad_and_seventh

    chroma = np.zeros((2, 12))
    chroma[:, [0, 5, 7]] = 1  # C:sus4
    tones = triad_and_seventh(chroma, np.zeros(2, dtype=int))
    assert tones[0, 5] and tones[0, 0] and tones[0, 7]


def test_melody_line_takes_the_highest_onset_of_a_step():
    from bgmgen.evaluation.metrics import melody_line

    steps, pitches = melody_line(_melody_roll([(0, 60, 2), (0, 67, 2), (4, 64, 2)]))
    assert steps.tolist() == [0, 4] and pitches.tolist() == [67, 64]
