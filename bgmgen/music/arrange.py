"""From the generated parts to a band: melody, accompaniment, bass, drums and pad, each a list of notes.

``arrange(plan, parts, style, seed, hit_steps)`` keeps the model's melody and accompaniment (with
velocities from the plan's per-bar energy) and writes the rest from the plan: a bass line on the
chords' bass notes in the style's groove, drums from the pattern library (``bgmgen.music.patterns``)
chosen per bar by energy, with variants inside a phrase, a fill into each new segment and a crash on
its first beat, and a pad holding each chord. ``hit_steps`` (steps of hard cuts) get a crash and a
bass root. Everything stays on the 16-step grid; ``bgmgen.music.midi`` turns it into seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bgmgen.music.harmony import Chord
from bgmgen.music.hits import accent_hits
from bgmgen.music.patterns import CRASH, GROOVES, KICK, BassPattern, energy_level, pattern_hits
from bgmgen.music.plan import Plan
from bgmgen.music.roll import STEPS_PER_BAR, STEPS_PER_BEAT, GeneratedParts, Note, roll_to_notes
from bgmgen.music.styles import ROLES, Style

MIN_VELOCITY, MAX_VELOCITY = 40, 110
BEAT_ACCENT = {0: 8, 2: 4}  # extra velocity on beat 1 and beat 3 of a bar
MELODY_ACCENT, ACCOMPANIMENT_CUT = 10, 4  # the tune over the chords (listening: it was buried otherwise)
ACCOMPANIMENT_FLOOR = 40  # accompaniment notes under E2 are left to the bass part
BASS_LOW = 33  # A1: the bass line's chord roots lie in A1..G#2, a fifth or octave above where asked
PAD_LOW = 52  # E3: the pad's close voicing lies in E3..Eb4
HALF_BAR = STEPS_PER_BAR // 2
VARIANT_EVERY = 4  # bars: the last bar of every four plays another variant of the pattern
EMBELLISH_CHANCE = 0.3  # per bar: a pickup kick or an open hat added to the drum pattern


@dataclass
class Part:
    """One role of the arrangement: its GM program and notes on the step grid."""

    role: str
    program: int
    notes: list[Note] = field(default_factory=list)
    is_drum: bool = False


@dataclass
class Arrangement:
    """The whole band for a plan, one Part per role in ``ROLES`` order (drums may have no notes)."""

    style: Style
    parts: dict[str, Part]
    n_steps: int

    def roles(self) -> list[str]:
        return list(self.parts)


def step_velocities(plan: Plan, n_steps: int) -> np.ndarray:
    """Velocity for a note starting at each step: the bar's energy, with accents on beats 1 and 3."""
    step = np.arange(n_steps)
    bar = np.minimum(step // STEPS_PER_BAR, plan.n_bars - 1)
    energy = np.asarray(plan.energy)[bar]
    velocity = MIN_VELOCITY + energy * (MAX_VELOCITY - MIN_VELOCITY - max(BEAT_ACCENT.values()))
    in_bar = step % STEPS_PER_BAR
    for beat, accent in BEAT_ACCENT.items():
        velocity[in_bar == beat * STEPS_PER_BEAT] += accent
    return np.clip(np.round(velocity), 1, 127).astype(int)


def bar_drive(plan: Plan, style: Style) -> np.ndarray:
    """Per bar 0..1: how hard bass and drums play, the plan's density and energy mapped into the style's range."""
    low, high = style.density_range
    level = 0.5 * np.asarray(plan.density) + 0.5 * np.asarray(plan.energy)
    return low + (high - low) * np.clip(level, 0.0, 1.0)


def arrange(
    plan: Plan, parts: GeneratedParts, style: Style, seed: int = 0, hit_steps: list[int] | tuple[int, ...] = ()
) -> Arrangement:
    """The band for ``plan``: the generated melody and accompaniment plus bass, drums and pad in ``style``.

    ``seed`` drives the pattern choices (same seed, same arrangement); ``hit_steps`` are steps that
    get a crash and a bass root (hard cuts). Steps outside the plan are ignored.
    """
    n_steps = plan.n_bars * STEPS_PER_BAR
    hits = sorted({int(s) for s in hit_steps if 0 <= int(s) < n_steps})
    rng = np.random.default_rng([seed, 10])
    velocity = step_velocities(plan, max(n_steps, parts.melody.shape[1]))
    shift = 12 * style.melody_octave
    melody = [
        Note(n.start, n.end, n.pitch + shift, min(127, n.velocity + MELODY_ACCENT))
        for n in roll_to_notes(parts.melody, velocity=velocity)
        if n.start < n_steps and 0 <= n.pitch + shift <= 127
    ]
    accompaniment = [
        Note(n.start, n.end, n.pitch, max(1, n.velocity - ACCOMPANIMENT_CUT))
        for n in roll_to_notes(parts.accompaniment, velocity=velocity)
        if n.start < n_steps and n.pitch >= ACCOMPANIMENT_FLOOR
    ]
    accompaniment = accent_hits(accompaniment, plan, hits)  # a new texture struck on each hard cut
    drive = bar_drive(plan, style)
    chords = plan.chord_objects()
    groove = GROOVES[style.groove]
    band = {
        "melody": Part("melody", style.programs["melody"], melody),
        "accompaniment": Part("accompaniment", style.programs["accompaniment"], accompaniment),
        "bass": Part("bass", style.programs["bass"], bass_line(plan, chords, groove.bass, drive, hits, rng)),
        "drums": Part("drums", 0, drum_part(plan, style, drive, hits, rng), is_drum=True),
    }
    if style.programs.get("pad") is not None:
        band["pad"] = Part("pad", style.programs["pad"], pad_part(plan, chords))
    return Arrangement(style, {role: band[role] for role in ROLES if role in band}, n_steps)


def _phrase_variants(plan: Plan, n_variants: int, rng: np.random.Generator) -> list[int]:
    """Per bar, which variant of a pattern list to play: one per segment, another every VARIANT_EVERY-th bar."""
    choice = []
    for segment in plan.segments:
        base = int(rng.integers(n_variants))
        for k in range(segment.n_bars):
            alternate = k % VARIANT_EVERY == VARIANT_EVERY - 1 and n_variants > 1
            choice.append((base + 1 + int(rng.integers(n_variants - 1))) % n_variants if alternate else base)
    return choice


def _bass_pitch(chord: Chord, next_chord: Chord, degree: str) -> int | None:
    if chord.root is None:
        return None
    bass = chord.bass if chord.bass is not None else chord.root
    low = BASS_LOW + (bass - BASS_LOW) % 12
    if degree == "root":
        return low
    if degree == "octave":
        return low + 12
    if degree == "fifth":
        return BASS_LOW + (chord.root + 7 - BASS_LOW) % 12
    if degree == "third":
        third = 3 if chord.quality.startswith(("min", "dim", "hdim")) else 4
        return BASS_LOW + (chord.root + third - BASS_LOW) % 12
    if degree == "approach":
        target = next_chord.bass if next_chord.bass is not None else next_chord.root
        if target is None:
            return low
        return BASS_LOW + (target - BASS_LOW) % 12 - 1 if (target - BASS_LOW) % 12 else BASS_LOW + 11
    raise ValueError(f"unknown bass degree {degree!r}")


def bass_line(
    plan: Plan, chords: list[Chord], patterns: tuple[tuple[BassPattern, ...], ...], drive: np.ndarray,
    hits: list[int], rng: np.random.Generator,
) -> list[Note]:
    """Bass notes for every bar: the pattern for the bar's drive level, pitched on its half bar's chord."""
    n_steps = plan.n_bars * STEPS_PER_BAR
    variants = {level: _phrase_variants(plan, len(patterns[level]), rng) for level in range(3)}
    notes: list[Note] = []
    for bar in range(plan.n_bars):
        first = bar * STEPS_PER_BAR
        level = 0 if bar == plan.n_bars - 1 else energy_level(float(drive[bar]))
        pattern = patterns[level][variants[level][bar]]
        base_velocity = int(60 + 45 * drive[bar])
        for step, length, degree in pattern:
            half = (first + step) // HALF_BAR
            nxt = chords[min(half + 1, len(chords) - 1)]
            pitch = _bass_pitch(chords[half], nxt, degree)
            if pitch is None:
                continue
            accent = 8 if step in (0, 8) else 0
            notes.append(Note(first + step, min(first + step + length, n_steps), pitch, min(127, base_velocity + accent)))
    for hit in hits:  # a root on each hit: notes sounding over it stop there
        notes = [Note(n.start, min(n.end, hit), n.pitch, n.velocity) if n.start < hit < n.end else n
                 for n in notes if n.start != hit]
        chord = chords[hit // HALF_BAR]
        pitch = _bass_pitch(chord, chord, "root")
        if pitch is not None:
            later = [n.start for n in notes if n.start > hit]
            notes.append(Note(hit, min(hit + STEPS_PER_BEAT * 2, min(later, default=n_steps), n_steps), pitch, 118))
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def drum_part(plan: Plan, style: Style, drive: np.ndarray, hits: list[int], rng: np.random.Generator) -> list[Note]:
    """Drum hits: the groove's pattern per bar, fills into new segments, crashes on their first beats and on hits.
    Calm styles (groove ``none``) play none."""
    if not style.has_drums:
        return []
    groove = GROOVES[style.groove]
    n_steps = plan.n_bars * STEPS_PER_BAR
    variants = {level: _phrase_variants(plan, len(groove.drums[level]), rng) for level in range(3)}
    segment_starts = {s.start_bar for s in plan.segments[1:]}
    bar_steps = plan.bar_beats() * STEPS_PER_BEAT
    notes: list[Note] = []
    for bar in range(plan.n_bars):
        first = bar * STEPS_PER_BAR
        base = 50 + 62 * float(drive[bar])
        shift = 0  # a fill in a short bar plays its end, so it still leads into the next bar
        if bar == plan.n_bars - 1:  # the ending: one last hit, then the chord rings
            notes += [Note(first, first + 1, KICK, int(base)), Note(first, first + 1, CRASH, int(base))]
            continue
        level = energy_level(float(drive[bar]))
        if bar + 1 in segment_starts and groove.fills:
            pattern = groove.fills[int(rng.integers(len(groove.fills)))]
            shift = STEPS_PER_BAR - int(bar_steps[bar])
        else:
            pattern = dict(groove.drums[level][variants[level][bar]])
            if rng.random() < EMBELLISH_CHANCE:  # small changes so no two minutes loop bar for bar
                piece, step = [("kick", 14), ("kick", 15), ("open", 14), ("hat", 15)][int(rng.integers(4))]
                line = pattern.get(piece, "." * 16).ljust(16, ".")
                pattern[piece] = line[:step] + "o" + line[step + 1 :]
        for step, key, factor in pattern_hits(pattern):
            if step >= shift:
                notes.append(Note(first + step - shift, first + step - shift + 1, key, int(np.clip(base * factor, 1, 127))))
        if bar in segment_starts:
            notes.append(Note(first, first + 1, CRASH, int(np.clip(base + 10, 1, 127))))
    for hit in hits:
        notes += [Note(hit, hit + 1, CRASH, 120), Note(hit, hit + 1, KICK, 120)]
    unique = {(n.start, n.pitch): n for n in notes if n.start < n_steps}  # one hit per piece and step: the last
    return sorted(unique.values(), key=lambda n: (n.start, n.pitch))


def pad_part(plan: Plan, chords: list[Chord]) -> list[Note]:
    """A close voicing of each chord (E3..Eb4), held while the chord lasts, soft, following the energy."""
    notes: list[Note] = []
    half = 0
    while half < len(chords):
        end = half + 1
        while end < len(chords) and chords[end] == chords[half] and end % 4:  # held up to the next 2-bar line
            end += 1
        chord = chords[half]
        bar = min(half * HALF_BAR // STEPS_PER_BAR, plan.n_bars - 1)
        velocity = int(40 + 40 * plan.energy[bar])
        for pc in chord.pitch_classes:
            notes.append(Note(half * HALF_BAR, end * HALF_BAR, PAD_LOW + (pc - PAD_LOW) % 12, velocity))
        half = end
    return sorted(notes, key=lambda n: (n.start, n.pitch))
