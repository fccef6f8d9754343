"""Piano-roll drawing and reading: onsets, sustains, re-struck notes, clipping, pitch range."""

from __future__ import annotations

import numpy as np

from bgmgen.music.roll import N_PITCHES, ONSET, PITCH_LOW, SUSTAIN, Note, notes_to_roll, roll_to_notes


def col(pitch: int) -> int:
    return pitch - PITCH_LOW


def test_a_note_draws_one_onset_then_sustains_until_its_end():
    roll = notes_to_roll([Note(2, 6, 60)], 8)
    assert roll.shape == (2, 8, N_PITCHES)
    assert np.flatnonzero(roll[ONSET, :, col(60)]).tolist() == [2]
    assert np.flatnonzero(roll[SUSTAIN, :, col(60)]).tolist() == [3, 4, 5]
    assert roll.sum() == 4  # nothing on other pitches


def test_a_one_step_note_has_no_sustain():
    roll = notes_to_roll([Note(0, 1, 64)], 4)
    assert roll[ONSET, 0, col(64)] == 1
    assert roll[SUSTAIN].sum() == 0


def test_round_trip_keeps_onsets_durations_pitches_and_order():
    notes = [Note(0, 4, 60), Note(0, 8, 64), Note(3, 5, 72), Note(8, 16, 48), Note(15, 16, 108), Note(1, 2, 21)]
    back = roll_to_notes(notes_to_roll(notes, 16))
    assert back == sorted(notes, key=lambda n: (n.start, n.pitch))


def test_re_struck_notes_of_one_pitch_stay_separate():
    # Back to back, and struck again while the first is still sounding.
    notes = [Note(0, 4, 60), Note(4, 6, 60), Note(10, 12, 60)]
    back = roll_to_notes(notes_to_roll(notes, 16))
    assert [(n.start, n.end) for n in back] == [(0, 4), (4, 6), (10, 12)]
    overlapping = roll_to_notes(notes_to_roll([Note(0, 8, 62), Note(4, 8, 62)], 8))
    assert [(n.start, n.end) for n in overlapping] == [(0, 4), (4, 8)]


def test_notes_running_past_the_end_are_clipped():
    roll = notes_to_roll([Note(10, 40, 60)], 12)
    assert roll[SUSTAIN, 11, col(60)] == 1
    assert roll_to_notes(roll) == [Note(10, 12, 60)]


def test_out_of_range_pitches_and_times_are_dropped():
    notes = [Note(0, 2, 20), Note(0, 2, 109), Note(0, 2, 21), Note(0, 2, 108), Note(-3, 2, 60), Note(16, 18, 60)]
    back = roll_to_notes(notes_to_roll(notes, 16))
    assert [n.pitch for n in back] == [21, 108]


def test_offset_places_notes_relative_to_the_rolls_first_step():
    notes = [Note(30, 34, 60), Note(20, 40, 67), Note(50, 52, 70)]
    roll = notes_to_roll(notes, 16, offset=32)
    # The note starting before the roll is dropped (its onset is not in it); 50 is past the end.
    assert roll_to_notes(roll) == []
    roll = notes_to_roll(notes, 16, offset=30)
    assert roll_to_notes(roll) == [Note(0, 4, 60)]


def test_array_input_matches_note_objects():
    notes = [Note(0, 4, 60, 90), Note(2, 3, 65, 50)]
    arr = np.array([(n.start, n.end, n.pitch, n.velocity) for n in notes])
    assert np.array_equal(notes_to_roll(arr, 8), notes_to_roll(notes, 8))
    assert notes_to_roll(np.zeros((0, 4), dtype=int), 8).sum() == 0
    assert notes_to_roll([], 8).shape == (2, 8, N_PITCHES)


def test_velocity_per_step_and_threshold():
    roll = notes_to_roll([Note(0, 2, 60), Note(3, 4, 62)], 4)
    back = roll_to_notes(roll, velocity=np.array([10, 20, 30, 40]))
    assert [n.velocity for n in back] == [10, 40]
    assert [n.velocity for n in roll_to_notes(roll, velocity=77)] == [77, 77]
    soft = roll * 0.4
    assert roll_to_notes(soft, threshold=0.5) == []
    assert len(roll_to_notes(soft, threshold=0.3)) == 2


def test_split_top_line_keeps_one_voice_on_top():
    from bgmgen.music.roll import split_top_line

    chord = [Note(0, 16, 48, 80), Note(0, 16, 52, 80), Note(0, 16, 55, 80)]  # C major under the tune
    tune = [Note(0, 8, 67, 80), Note(4, 8, 72, 80), Note(8, 16, 64, 80)]  # 72 starts while 67 still sounds
    low_top = [Note(16, 20, 50, 80)]  # the highest note, but below middle C: not melody
    parts = split_top_line(notes_to_roll(chord + tune + low_top, 24))
    melody = roll_to_notes(parts.melody)
    assert [(n.start, n.end, n.pitch) for n in melody] == [(0, 4, 67), (4, 8, 72), (8, 16, 64)]
    assert {n.pitch for n in roll_to_notes(parts.accompaniment)} == {48, 52, 55, 50}
    # One voice: never two melody notes at once.
    assert (parts.melody[ONSET] + parts.melody[SUSTAIN]).sum(axis=1).max() == 1
    np.testing.assert_array_equal(parts.combined()[ONSET] > 0, notes_to_roll(chord + tune + low_top, 24)[ONSET] > 0)
