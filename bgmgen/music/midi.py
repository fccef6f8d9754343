"""From a generated piano roll to a MIDI file the synthesiser can play.

Timing comes from the plan's tempo (16 steps per 4/4 bar); velocity follows the plan's per-bar
energy with a light accent on strong beats, and the top line is played over the accompaniment
(listening found the tune buried in the chords when every note had the same weight); notes are cut at the video's end, and the notes of the
final bar ring on to it so the piece ends on its cadence instead of stopping mid-phrase.

``arrangement_to_midi`` writes a whole band (``bgmgen.music.arrange``): one named track per role
(``melody``, ``accompaniment``, ``bass``, ``drums`` on the GM percussion channel 10, ``pad``), each
with its program, level (CC7), pan (CC10), reverb (CC91) and chorus (CC93) sends, plus tempo, key and
time-signature meta events so it opens cleanly in a DAW. Timing and velocity get a small seeded
humanisation (a few milliseconds, a few velocity steps); swung styles delay the off-beat sixteenths.
``expression`` automates a role's CC11 (the melody stepping back under speech).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bgmgen.files import atomic_output
from bgmgen.music.arrange import ACCOMPANIMENT_CUT, MELODY_ACCENT, Arrangement, Part, step_velocities
from bgmgen.music.hits import accent_hits
from bgmgen.music.plan import Plan
from bgmgen.music.roll import MELODY_FLOOR, STEPS_PER_BAR, Note, roll_to_notes
from bgmgen.music.styles import ROLES

PIANO_PROGRAM = 0  # General MIDI Acoustic Grand Piano
TIMING_SPREAD = 0.004  # s, standard deviation of the humanised onset times (cut at twice that)
VELOCITY_SPREAD = 3.0  # standard deviation of the humanised velocities (cut at twice that)
MIN_NOTE = 0.02  # s: shorter notes (cut by the video's end) are dropped
CC_VOLUME, CC_PAN, CC_EXPRESSION, CC_REVERB, CC_CHORUS = 7, 10, 11, 91, 93


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

    notes = accent_hits(balance_voices(roll_to_notes(roll, velocity=step_velocities(plan, roll.shape[1]))), plan)
    final_bar_start = (plan.n_bars - 1) * STEPS_PER_BAR
    midi = pretty_midi.PrettyMIDI(initial_tempo=plan.tempo)
    write_tempo_map(midi, plan)
    piano = pretty_midi.Instrument(program=program, name="bgmgen piano")
    sounding = plan.step_sounds(np.array([n.start for n in notes], dtype=int))
    for note, sounds in zip(notes, sounding):
        start = plan.step_time(note.start)
        if start >= plan.duration or not sounds:
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
    """Give ``midi`` (a fresh ``pretty_midi.PrettyMIDI``) the plan's tempo changes on their bar lines and
    its time signatures (4/4, a short bar's 2/4 or 3/4 and back), so the written file's beats and downbeats
    are the plan's (notes are placed in seconds, through these)."""
    import pretty_midi

    bar_ticks = np.concatenate([[0], np.cumsum(plan.bar_beats() * midi.resolution)]).astype(int)
    midi._tick_scales = [(0, 60.0 / (plan.tempo * midi.resolution))] + [
        (int(bar_ticks[change.bar]), 60.0 / (change.tempo * midi.resolution)) for change in plan.tempo_map
    ]
    midi._update_tick_to_time(int(bar_ticks[-1]))
    meters = [(0, 4)]
    for short in plan.short_bars:
        meters += [(short.bar, short.beats), (short.bar + 1, 4)]
    signatures: dict[int, int] = {}
    for bar, beats in meters:
        if bar < plan.n_bars:
            signatures[bar] = beats  # a short bar right after another overrides its "back to 4/4"
    midi.time_signature_changes = [pretty_midi.TimeSignature(beats, 4, float(plan.bar_start(bar)))
                                   for bar, beats in sorted(signatures.items())]  # fmt: skip


def _is_last_onset_of_pitch(note: Note, notes: list[Note]) -> bool:
    return not any(n.pitch == note.pitch and n.start > note.start for n in notes)


def write_midi(roll: np.ndarray, plan: Plan, path: Path) -> Path:
    """Write the MIDI atomically (temporary file, then rename)."""
    midi = roll_to_midi(roll, plan)
    with atomic_output(path) as tmp:
        midi.write(str(tmp))
    return path


def arrangement_to_midi(
    arrangement: Arrangement, plan: Plan, seed: int = 0, roles: list[str] | None = None,
    expression: dict[str, list[tuple[float, int]]] | None = None,
):
    """A ``pretty_midi.PrettyMIDI`` with one named track per role of ``arrangement`` (or only ``roles``).

    Every track is written, also one with no notes (the drums of a calm style), so each role has its
    place in a DAW. ``expression`` maps a role to CC11 changes ``(time s, value 0..127)``. The
    humanisation is drawn from ``seed`` and each role's own stream, so leaving roles out (stems) changes
    nothing in the others.
    """
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(initial_tempo=plan.tempo)
    write_tempo_map(midi, plan)
    key = plan.key_object()
    midi.key_signature_changes.append(pretty_midi.KeySignature(key.tonic + (12 if key.mode == "minor" else 0), 0.0))
    final_bar_start = (plan.n_bars - 1) * STEPS_PER_BAR
    style = arrangement.style
    for index, role in enumerate(ROLES):
        part = arrangement.parts.get(role)
        if part is None or (roles is not None and role not in roles):
            continue
        rng = np.random.default_rng([seed, 20, index])
        track = pretty_midi.Instrument(program=part.program, is_drum=part.is_drum, name=role)
        mix = style.mix_of(role)
        for number, value in ((CC_VOLUME, mix.level), (CC_PAN, mix.pan), (CC_REVERB, mix.reverb),
                              (CC_CHORUS, mix.chorus), (CC_EXPRESSION, 127)):  # fmt: skip
            track.control_changes.append(pretty_midi.ControlChange(number, int(value), 0.0))
        for time, value in (expression or {}).get(role, []):
            track.control_changes.append(pretty_midi.ControlChange(CC_EXPRESSION, int(np.clip(value, 0, 127)), float(time)))
        track.notes.extend(_timed_notes(part, plan, style.swing, final_bar_start, rng))
        midi.instruments.append(track)
    return midi


def _timed_notes(part: Part, plan: Plan, swing: float, final_bar_start: int, rng: np.random.Generator) -> list:
    """The part's notes in seconds: swung, humanised, cut at the video's end; the last chord rings on.
    Notes that start on steps a short bar leaves out are not played; those held into them end with it."""
    import pretty_midi

    notes = part.notes
    jitter = np.clip(rng.normal(0.0, TIMING_SPREAD, len(notes)), -2 * TIMING_SPREAD, 2 * TIMING_SPREAD)
    push = np.clip(rng.normal(0.0, VELOCITY_SPREAD, len(notes)), -2 * VELOCITY_SPREAD, 2 * VELOCITY_SPREAD)
    last_onset: dict[int, int] = {}
    for n in notes:
        last_onset[n.pitch] = max(last_onset.get(n.pitch, -1), n.start)
    sounding = plan.step_sounds(np.array([n.start for n in notes], dtype=int))
    timed = []
    for n, dt, dv, sounds in zip(notes, jitter, push, sounding):
        start = _swung_time(plan, n.start, swing) + (float(dt) if n.start > 0 else 0.0)
        if start >= plan.duration or not sounds:
            continue
        end = _swung_time(plan, n.end, swing) if not part.is_drum else start + 0.1
        if not part.is_drum and n.start >= final_bar_start and last_onset[n.pitch] == n.start:
            end = plan.duration  # let the closing chord ring to the end
        end = min(end, plan.duration)
        if end - start < MIN_NOTE:
            continue
        velocity = int(np.clip(round(n.velocity + float(dv)), 1, 127))
        timed.append(pretty_midi.Note(velocity=velocity, pitch=n.pitch, start=max(0.0, start), end=end))
    return timed


def _swung_time(plan: Plan, step: int, swing: float) -> float:
    """Seconds of ``step``; with swing the odd sixteenths move up to a third of a step later (triplet feel)."""
    time = float(plan.step_time(step))
    if swing and step % 2 == 1:
        time += swing * (float(plan.step_time(step + 1)) - time) / 3.0
    return time


def write_arrangement(
    arrangement: Arrangement, plan: Plan, path: Path, seed: int = 0, roles: list[str] | None = None,
    expression: dict[str, list[tuple[float, int]]] | None = None,
) -> Path:
    """Write the arrangement's MIDI (all roles, or only ``roles``) atomically."""
    midi = arrangement_to_midi(arrangement, plan, seed, roles, expression)
    with atomic_output(path) as tmp:
        midi.write(str(tmp))
    return path
