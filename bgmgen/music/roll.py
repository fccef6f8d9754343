"""The piano-roll representation the music model works in.

A roll is a float array ``[2, steps, N_PITCHES]``: channel 0 marks note onsets, channel 1 marks the
steps a note keeps sounding after its onset. Time runs on a sixteenth-note grid in 4/4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEPS_PER_BEAT = 4  # sixteenth-note grid
BEATS_PER_BAR = 4  # 4/4 only
STEPS_PER_BAR = STEPS_PER_BEAT * BEATS_PER_BAR
BARS_PER_WINDOW = 8  # one diffusion window, as in Diff-BGM
WINDOW_STEPS = STEPS_PER_BAR * BARS_PER_WINDOW
PITCH_LOW = 21  # A0: the 88 piano keys
N_PITCHES = 88
ONSET, SUSTAIN = 0, 1
MELODY_FLOOR = 60  # middle C: a top note below it is bass or chord, not a tune


@dataclass(frozen=True)
class Note:
    """A note on the step grid: sounds from ``start`` (inclusive) to ``end`` (exclusive) steps."""

    start: int
    end: int
    pitch: int  # MIDI pitch
    velocity: int = 80


def notes_to_roll(notes: list[Note] | np.ndarray, n_steps: int, offset: int = 0) -> np.ndarray:
    """Draw notes into a ``[2, n_steps, N_PITCHES]`` roll; ``offset`` is the roll's first step.

    ``notes`` may be Note objects or an int array with columns (start, end, pitch, velocity).
    Notes outside the pitch range or the time span are dropped; sustains are cut at the roll's end.
    """
    roll = np.zeros((2, n_steps, N_PITCHES), dtype=np.float32)
    arr = _as_array(notes)
    if len(arr) == 0:
        return roll
    start = arr[:, 0] - offset
    end = np.minimum(arr[:, 1] - offset, n_steps)
    col = arr[:, 2] - PITCH_LOW
    keep = (start >= 0) & (start < n_steps) & (col >= 0) & (col < N_PITCHES)
    for s, e, c in zip(start[keep], end[keep], col[keep]):
        roll[ONSET, s, c] = 1.0
        if e > s + 1:
            roll[SUSTAIN, s + 1 : e, c] = 1.0
    return roll


def roll_to_notes(roll: np.ndarray, velocity: int | np.ndarray = 80, threshold: float = 0.0) -> list[Note]:
    """Read notes back from a roll whose cells are above ``threshold`` where set.

    A note starts at each onset cell and lasts while the following sustain cells of its pitch are set
    (and no new onset of that pitch starts). ``velocity`` may be one value or one per step.
    """
    onsets = roll[ONSET] > threshold
    sustains = roll[SUSTAIN] > threshold
    n_steps = roll.shape[1]
    notes = []
    for step, col in zip(*np.nonzero(onsets)):
        end = step + 1
        while end < n_steps and sustains[end, col] and not onsets[end, col]:
            end += 1
        vel = int(velocity if np.isscalar(velocity) else velocity[step])
        notes.append(Note(int(step), int(end), int(col) + PITCH_LOW, vel))
    notes.sort(key=lambda n: (n.start, n.pitch))
    return notes


def _as_array(notes: list[Note] | np.ndarray) -> np.ndarray:
    if isinstance(notes, np.ndarray):
        return notes.astype(np.int64, copy=False)
    return np.array([(n.start, n.end, n.pitch, n.velocity) for n in notes], dtype=np.int64).reshape(-1, 4)


@dataclass
class GeneratedParts:
    """The music by part, each a roll ``[2, steps, N_PITCHES]`` on the same grid."""

    melody: np.ndarray  # one voice: the tune
    accompaniment: np.ndarray  # everything under it

    def combined(self) -> np.ndarray:
        """Both parts in one roll (a cell set in either part is set)."""
        return np.maximum(self.melody, self.accompaniment)


def split_top_line(roll: np.ndarray, floor: int = MELODY_FLOOR) -> GeneratedParts:
    """Take the top line of a single-part roll as its melody: a note that is the highest sounding one
    when it starts (and at least ``floor``) is melody, cut where the next melody note starts so the
    line stays one voice; every other note is accompaniment. For models that write one part only."""
    notes = roll_to_notes(roll)
    n_steps = roll.shape[1]
    highest = np.full(n_steps + 1, -1)
    for n in notes:
        highest[n.start : n.end] = np.maximum(highest[n.start : n.end], n.pitch)
    tops = [n for n in notes if n.pitch >= floor and n.pitch == highest[n.start]]
    tops = list({n.start: n for n in tops}.values())  # one note per onset step: the highest
    rest = [n for n in notes if n not in set(tops)]
    melody = [Note(n.start, min(n.end, nxt.start), n.pitch, n.velocity) for n, nxt in zip(tops, tops[1:])]
    melody += tops[-1:]
    return GeneratedParts(notes_to_roll(melody, n_steps), notes_to_roll(rest, n_steps))
