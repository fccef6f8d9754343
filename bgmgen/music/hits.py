"""Hits: a musical event exactly on each hard cut, for an arrangement that has only the piano.

``accent_hits(notes, plan)`` puts an accented chord on each of the plan's hit steps: a low bass note
and the chord's tones struck together, loud, and any note of the same pitch sounding through the hit
re-struck (the other notes sounding through it stop), so the cut is heard as an attack and as a new
texture, not as a held note. Arrangements with drums and bass
put a crash and a bass note on the same steps (``Plan.hits``).
"""

from __future__ import annotations

from bgmgen.music.harmony import Chord
from bgmgen.music.plan import Plan
from bgmgen.music.roll import STEPS_PER_BAR, STEPS_PER_BEAT, Note

HIT_VELOCITY = 127  # MIDI velocity of a hit's notes (the loudest ordinary notes are ~110)
HIT_BASS_LOW = 31  # G1: the hit's bass note is the lowest of its pitch class from here
HIT_CHORD_LOW = 52  # E3: the chord tones are the lowest of their pitch classes from here
HIT_STEPS = 2 * STEPS_PER_BEAT  # a hit rings for two beats (or to the next hit)
STEPS_PER_CHORD = STEPS_PER_BAR // 2  # one chord per half bar


def hit_voicing(chord: Chord) -> list[int]:
    """MIDI pitches of a hit on ``chord``: its bass in octaves low, its tones in two middle octaves; [] for no chord."""
    if chord.is_none:
        return []
    bass = chord.bass if chord.bass is not None else chord.root
    low = HIT_BASS_LOW + (bass - HIT_BASS_LOW) % 12
    tones = [HIT_CHORD_LOW + (pc - HIT_CHORD_LOW) % 12 for pc in chord.pitch_classes]
    # Bass in octaves and the chord in two octaves: a full-keyboard attack, like a tutti chord.
    return sorted({low, low + 12, *tones, *(t + 12 for t in tones)})


def accent_hits(notes: list[Note], plan: Plan, hit_steps: list[int] | None = None) -> list[Note]:
    """``notes`` with an accented chord struck on every step of ``hit_steps`` (default: ``plan.hits``)."""
    hit_steps = plan.hits if hit_steps is None else hit_steps
    if not hit_steps:
        return notes
    chords = plan.chord_objects()
    n_steps = plan.n_bars * STEPS_PER_BAR
    hits = sorted(h for h in set(hit_steps) if 0 <= h < n_steps)
    out = list(notes)
    for index, hit in enumerate(hits):
        end = min(hit + HIT_STEPS, hits[index + 1] if index + 1 < len(hits) else n_steps, n_steps)
        pitches = set(hit_voicing(chords[min(hit // STEPS_PER_CHORD, len(chords) - 1)]))
        struck = []
        for note in out:
            if note.start == hit:  # already an onset on the hit: make it part of the accent
                struck.append(Note(note.start, note.end, note.pitch, max(note.velocity, HIT_VELOCITY)))
                pitches.discard(note.pitch)
            elif note.start < hit < note.end and note.pitch in pitches:  # sounding through: re-strike it
                struck.append(Note(note.start, hit, note.pitch, note.velocity))
                struck.append(Note(hit, note.end, note.pitch, HIT_VELOCITY))
                pitches.discard(note.pitch)
            elif note.start < hit < note.end:  # anything else sounding through stops: the hit starts clean
                struck.append(Note(note.start, hit, note.pitch, note.velocity))
            else:
                struck.append(note)
        added = []
        for pitch in sorted(pitches):
            # Stop before the next onset of the same pitch, so no two notes of one key overlap.
            stop = min([end] + [n.start for n in struck if n.pitch == pitch and hit < n.start < end])
            added.append(Note(hit, stop, pitch, HIT_VELOCITY))
        out = struck + added
    out.sort(key=lambda n: (n.start, n.pitch))
    return out
