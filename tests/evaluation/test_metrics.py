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
