"""From a generated piano roll to a MIDI file the synthesiser can play.

Timing comes from the plan's tempo (16 steps per 4/4 bar); velocity follows the plan's per-bar
energy with a light accent on strong beats, and the top line is played over the accompaniment
(listening found the tune buried in the chords when every note had the same weight); notes are cut at the video's end, and the notes of the
final bar ring on to it so the piece ends on its cadence instead of stopping mid-phrase.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bgmgen.files import atomic_output
from bgmgen.music.hits import accent_hits
from bgmgen.music.plan import Plan
from bgmgen.music.roll import MELODY_FLOOR, STEPS_PER_BAR, STEPS_PER_BEAT, Note, roll_to_notes

PIANO_PROGRAM = 0  # General MIDI Acoustic Grand Piano
MIN_VELOCITY, MAX_VELOCITY = 40, 110
BEAT_ACCENT = {0: 8, 2: 4}  # extra velocity on beat 1 and beat 3 of a bar
MELODY_ACCENT, ACCOMPANIMENT_CUT = 10, 4  # top line louder, the notes under it softer


def note_velocities(plan: Plan, n_steps: int) -> np.ndarray:
    """Velocity for a note starting at each step."""
    step = np.arange(n_steps)
    bar = np.minimum(step // STEPS_PER_BAR, plan.n_bars - 1)
    energy = np.asarray(plan.energy)[bar]
    velocity = MIN_VELOCITY + energy * (MAX_VELOCITY - MIN_VELOCITY - max(BEAT_ACCENT.values()))
    in_bar = step % STEPS_PER_BAR
    for beat, accent in BEAT_ACCENT.items():
        velocity[in_bar == beat * STEPS_PER_BEAT] += accent
    return np.clip(np.round(velocity), 1, 127).astype(int)


def balance_voices(notes: list[Note]) -> list[Note]:
    """Bring out the top line: a note that is the highest sounding one when it starts (and at least
    ``MELODY_FLOOR``) gets ``MELODY_ACCENT`` more velocity, every other note ``ACCOMPANIMENT_CUT`` less."""
    if not notes:
        return notes
    n_steps = max(n.end for n in notes)
    highest = np.full(n_steps, -1)
    for n in notes:
        highest[n.start : n.end] = np.maximum(highest[n.start : n.end], n.pitch)
    balanced = []
    for n in notes:
        on_top = n.pitch >= MELODY_FLOOR and n.pitch == highest[n.start]
        velocity = n.velocity + MELODY_ACCENT if on_top else n.velocity - ACCOMPANIMENT_CUT
        balanced.append(Note(n.start, n.end, n.pitch, int(np.clip(velocity, 1, 127))))
    return balanced


def roll_to_midi(roll: np.ndarray, plan: Plan, program: int = PIANO_PROGRAM):
    """A ``pretty_midi.PrettyMIDI`` with one piano track playing ``roll`` at the plan's tempo."""
    import pretty_midi

    notes = accent_hits(balance_voices(roll_to_notes(roll, velocity=note_velocities(plan, roll.shape[1]))), plan)
    final_bar_start = (plan.n_bars - 1) * STEPS_PER_BAR
    midi = pretty_midi.PrettyMIDI(initial_tempo=plan.tempo)
    write_tempo_map(midi, plan)
    piano = pretty_midi.Instrument(program=program, name="bgmgen piano")
    for note in notes:
        start = plan.step_time(note.start)
        if start >= plan.duration:
            continue
        end = plan.step_time(note.end)
        if note.start >= final_bar_start and _is_last_onset_of_pitch(note, notes):
            end = plan.duration  # let the closing chord ring to the end
        end = min(end, plan.duration)
        if end - start < 0.02:
            continue
        piano.notes.append(pretty_midi.Note(velocity=note.velocity, pitch=note.pitch, start=start, end=end))
    midi.instruments.append(piano)
    return midi


def write_tempo_map(midi, plan: Plan) -> None:
    """Give ``midi`` (a fresh ``pretty_midi.PrettyMIDI``) the plan's tempo changes on their bar lines, so
    the written file's beats and downbeats are the plan's (notes are placed in seconds, through these)."""
    ticks_per_bar = 4 * midi.resolution  # 4/4
    midi._tick_scales = [(0, 60.0 / (plan.tempo * midi.resolution))] + [
        (change.bar * ticks_per_bar, 60.0 / (change.tempo * midi.resolution)) for change in plan.tempo_map
    ]
    midi._update_tick_to_time(plan.n_bars * ticks_per_bar)


def _is_last_onset_of_pitch(note: Note, notes: list[Note]) -> bool:
    return not any(n.pitch == note.pitch and n.start > note.start for n in notes)


def write_midi(roll: np.ndarray, plan: Plan, path: Path) -> Path:
    """Write the MIDI atomically (temporary file, then rename)."""
    midi = roll_to_midi(roll, plan)
    with atomic_output(path) as tmp:
        midi.write(str(tmp))
    return path
