"""Roll -> MIDI: timing from the plan's tempo, velocity from its energy, the ending, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

pretty_midi = pytest.importorskip("pretty_midi")

from bgmgen.music.arrange import BEAT_ACCENT, MAX_VELOCITY, MIN_VELOCITY, step_velocities  # noqa: E402
from bgmgen.music.midi import roll_to_midi, write_midi  # noqa: E402
from bgmgen.music.plan import Plan, Segment  # noqa: E402
from bgmgen.music.roll import STEPS_PER_BAR, Note, notes_to_roll  # noqa: E402

TEMPO = 90.0
STEP = 60.0 / TEMPO / 4  # seconds per sixteenth
DURATION = 10.0  # 4 bars of 2.667 s cover it; the last bar is cut at 10 s (step 60)


def make_plan(energy=(0.2, 0.9, 0.5, 0.5), duration=DURATION, tempo=TEMPO, n_bars=4) -> Plan:
    plan = Plan(
        duration=duration, tempo=tempo, n_bars=n_bars, key="C major", segments=[Segment(0, n_bars)],
        chords=["C:maj"] * (2 * n_bars), density=[0.5] * n_bars, energy=list(energy), cuts=[],
        cut_alignment_error=0.0, mood={}, seed=0,
    )
    plan.validate()
    return plan


NOTES = [
    Note(0, 4, 60),  # bar 0, beat 1
    Note(5, 6, 62),  # bar 0, off the beat
    Note(16, 18, 64),  # bar 1, beat 1 (louder bar)
    Note(40, 64, 48),  # bar 2, held past the video's end
    Note(48, 50, 67),  # final bar, last onset of its pitch: rings to the end
    Note(52, 53, 72),  # final bar, struck again later: keeps its own end
    Note(56, 57, 72),
    Note(60, 62, 76),  # starts at the video's end: dropped
]


def midi_notes(midi) -> dict[tuple[int, int], object]:
    """Notes of the only instrument by (pitch, start step)."""
    assert len(midi.instruments) == 1
    return {(n.pitch, round(n.start / STEP)): n for n in midi.instruments[0].notes}


def test_timing_follows_the_plan_tempo():
    midi = roll_to_midi(notes_to_roll(NOTES, 4 * STEPS_PER_BAR), make_plan())
    notes = midi_notes(midi)
    assert midi.instruments[0].program == 0 and not midi.instruments[0].is_drum
    assert notes[(60, 0)].start == pytest.approx(0.0) and notes[(60, 0)].end == pytest.approx(4 * STEP)
    assert notes[(62, 5)].start == pytest.approx(5 * STEP) and notes[(62, 5)].end == pytest.approx(6 * STEP)
    assert notes[(64, 16)].start == pytest.approx(16 * STEP) and notes[(64, 16)].end == pytest.approx(18 * STEP)
    _, tempi = midi.get_tempo_changes()
    assert tempi.tolist() == pytest.approx([TEMPO])


def test_notes_are_cut_at_the_end_and_the_final_bar_rings():
    notes = midi_notes(roll_to_midi(notes_to_roll(NOTES, 4 * STEPS_PER_BAR), make_plan()))
    assert set(notes) == {(60, 0), (62, 5), (64, 16), (48, 40), (67, 48), (72, 52), (72, 56)}  # (76, 60) dropped
    assert notes[(48, 40)].end == pytest.approx(DURATION)  # cut at the end of the video
    assert notes[(67, 48)].end == pytest.approx(DURATION)  # rings on from 50 * STEP
    assert notes[(72, 52)].end == pytest.approx(53 * STEP)  # re-struck: not extended
    assert notes[(72, 56)].end == pytest.approx(DURATION)
    assert max(n.end for n in notes.values()) <= DURATION + 1e-9


def test_velocity_follows_energy_with_beat_accents():
    plan = make_plan(energy=(0.0, 1.0, 0.5, 0.5))
    velocity = step_velocities(plan, 4 * STEPS_PER_BAR + 5)
    assert velocity[1] == MIN_VELOCITY  # no energy, no accent
    assert velocity[0] == MIN_VELOCITY + BEAT_ACCENT[0]
    assert velocity[8] == MIN_VELOCITY + BEAT_ACCENT[2]
    assert velocity[STEPS_PER_BAR] == MAX_VELOCITY  # full energy on beat 1
    assert velocity[STEPS_PER_BAR + 1] == MAX_VELOCITY - BEAT_ACCENT[0]
    assert (velocity[4 * STEPS_PER_BAR :] == velocity[3 * STEPS_PER_BAR : 3 * STEPS_PER_BAR + 5]).all()  # past the plan: last bar
    notes = midi_notes(roll_to_midi(notes_to_roll(NOTES, 4 * STEPS_PER_BAR), make_plan()))
    assert notes[(64, 16)].velocity > notes[(60, 0)].velocity + 30  # energy 0.9 vs 0.2, both on beat 1
    assert notes[(60, 0)].velocity > notes[(62, 5)].velocity  # accent
    assert all(1 <= n.velocity <= 127 for n in notes.values())


def test_write_midi_is_readable_and_atomic(tmp_path):
    plan = make_plan()
    roll = notes_to_roll(NOTES, 4 * STEPS_PER_BAR)
    path = tmp_path / "music.mid"
    path.write_bytes(b"old")  # replaced, not appended to
    assert write_midi(roll, plan, path) == path
    assert [p.name for p in tmp_path.iterdir()] == ["music.mid"]  # no .partial left
    back = pretty_midi.PrettyMIDI(str(path))
    want = sorted((n.pitch, n.start, n.end, n.velocity) for n in roll_to_midi(roll, plan).instruments[0].notes)
    got = sorted((n.pitch, n.start, n.end, n.velocity) for n in back.instruments[0].notes)
    assert len(got) == len(want) == 7
    for (p1, s1, e1, v1), (p2, s2, e2, v2) in zip(got, want):
        assert (p1, v1) == (p2, v2)
        assert s1 == pytest.approx(s2, abs=2e-3) and e1 == pytest.approx(e2, abs=2e-3)
    assert back.get_end_time() == pytest.approx(DURATION, abs=2e-3)


def test_empty_roll_gives_an_empty_track(tmp_path):
    midi = roll_to_midi(np.zeros((2, 32, 88), dtype=np.float32), make_plan(n_bars=2, energy=(0.5, 0.5), duration=5.0))
    assert midi.instruments[0].notes == []
    write_midi(np.zeros((2, 32, 88), dtype=np.float32), make_plan(n_bars=2, energy=(0.5, 0.5), duration=5.0), tmp_path / "e.mid")
    back = pretty_midi.PrettyMIDI(str(tmp_path / "e.mid"))  # a track without notes is not read back
    assert sum(len(i.notes) for i in back.instruments) == 0


def test_top_line_is_played_over_the_accompaniment():
    from bgmgen.music.midi import ACCOMPANIMENT_CUT, MELODY_ACCENT, balance_voices
    from bgmgen.music.roll import Note

    notes = [Note(0, 8, 48, 80), Note(0, 8, 64, 80), Note(0, 4, 72, 80), Note(4, 8, 67, 80), Note(8, 9, 55, 80)]
    velocity = {(n.start, n.pitch): n.velocity for n in balance_voices(notes)}
    assert velocity[(0, 72)] == 80 + MELODY_ACCENT  # the highest note when it starts: the tune
    assert velocity[(4, 67)] == 80 + MELODY_ACCENT  # the next tune note, above the held chord
    assert velocity[(0, 64)] == velocity[(0, 48)] == 80 - ACCOMPANIMENT_CUT
    assert velocity[(8, 55)] == 80 - ACCOMPANIMENT_CUT  # alone but below middle C: not a tune
    assert balance_voices([]) == []
