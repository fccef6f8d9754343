"""Chords and keys: parsing Harte-style labels (as in POP909's annotations), chroma, scales.

Labels look like ``E:min7``, ``Bb:maj/3`` or ``N`` (no chord). Pitch classes are integers 0..11 (C=0).
"""

from __future__ import annotations

from dataclasses import dataclass

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_NOTE_BASE = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

# Intervals (semitones above the root) of every quality POP909 uses, plus a few common extras.
QUALITY_INTERVALS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "maj6": (0, 4, 7, 9),
    "min6": (0, 3, 7, 9),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "minmaj7": (0, 3, 7, 11),
    "dim7": (0, 3, 6, 9),
    "hdim7": (0, 3, 6, 10),
    "sus4(b7)": (0, 5, 7, 10),
    "9": (0, 4, 7, 10, 2),
    "maj9": (0, 4, 7, 11, 2),
    "min9": (0, 3, 7, 10, 2),
}

# Scale degrees of inversion suffixes ("/3", "/b7") in semitones above the root.
_DEGREE_SEMITONES = {"1": 0, "2": 2, "3": 4, "4": 5, "5": 7, "6": 9, "7": 11, "9": 2}

# Degree written for a bass n semitones above the root (inverse of _DEGREE_SEMITONES, flats for the rest).
_BASS_DEGREES = ("1", "b2", "2", "b3", "3", "4", "b5", "5", "b6", "6", "b7", "7")

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor


def parse_pitch_class(name: str) -> int:
    """``"Eb"`` -> 3. Accepts sharps (#) and flats (b), repeated."""
    if not name or name[0].upper() not in _NOTE_BASE:
        raise ValueError(f"not a pitch name: {name!r}")
    pc = _NOTE_BASE[name[0].upper()]
    for accidental in name[1:]:
        if accidental == "#":
            pc += 1
        elif accidental == "b":
            pc -= 1
        else:
            raise ValueError(f"not a pitch name: {name!r}")
    return pc % 12


def _degree_semitones(degree: str) -> int:
    flats = degree.count("b")
    sharps = degree.count("#")
    return (_DEGREE_SEMITONES[degree.strip("b#")] - flats + sharps) % 12


@dataclass(frozen=True)
class Chord:
    """One chord: ``root`` and ``bass`` are pitch classes; ``root`` None means no chord (N)."""

    root: int | None
    quality: str = "maj"
    bass: int | None = None

    @classmethod
    def parse(cls, label: str) -> Chord:
        """Parse ``"E:min7/b7"``; unknown qualities fall back to their triad (min* -> min, else maj)."""
        label = label.strip()
        if label in ("N", "X", ""):
            return cls(None, "", None)
        root_name, _, rest = label.partition(":")
        root = parse_pitch_class(root_name)
        quality, _, inversion = (rest or "maj").partition("/")
        if quality not in QUALITY_INTERVALS:
            quality = "min" if quality.startswith("min") else "maj"
        if not inversion:
            bass = root
        elif inversion[0] in _NOTE_BASE:  # an upper-case note name, as ``label`` writes it
            bass = parse_pitch_class(inversion)
        else:  # a scale degree, as in Harte labels
            bass = (root + _degree_semitones(inversion)) % 12
        return cls(root, quality, bass)

    @property
    def is_none(self) -> bool:
        return self.root is None

    @property
    def pitch_classes(self) -> tuple[int, ...]:
        if self.root is None:
            return ()
        return tuple(sorted({(self.root + i) % 12 for i in QUALITY_INTERVALS[self.quality]}))

    @property
    def chroma(self) -> tuple[int, ...]:
        """12 zeros and ones, C first."""
        pcs = set(self.pitch_classes)
        return tuple(int(pc in pcs) for pc in range(12))

    def transpose(self, semitones: int) -> Chord:
        if self.root is None:
            return self
        bass = None if self.bass is None else (self.bass + semitones) % 12
        return Chord((self.root + semitones) % 12, self.quality, bass)

    @property
    def label(self) -> str:
        if self.root is None:
            return "N"
        text = f"{PITCH_NAMES[self.root]}:{self.quality}"
        if self.bass is not None and self.bass != self.root:
            text += f"/{PITCH_NAMES[self.bass]}"
        return text

    @property
    def harte(self) -> str:
        """Strict Harte label, bass as a degree above the root (``"G:maj/3"``), so ``parse`` reads it back."""
        if self.root is None:
            return "N"
        text = f"{PITCH_NAMES[self.root]}:{self.quality}"
        if self.bass is not None and self.bass != self.root:
            text += f"/{_BASS_DEGREES[(self.bass - self.root) % 12]}"
        return text

    def __str__(self) -> str:
        return self.label


NO_CHORD = Chord(None, "", None)


@dataclass(frozen=True)
class Key:
    """A key: tonic pitch class and mode (``"major"`` or ``"minor"``)."""

    tonic: int
    mode: str = "major"

    @classmethod
    def parse(cls, text: str) -> Key:
        """Parse ``"Gb:maj"``, ``"A:min"``, ``"C major"``, ``"Am"`` or ``"F#m"``."""
        text = text.strip()
        for sep in (":", " "):
            if sep in text:
                name, mode = text.split(sep, 1)
                mode = mode.strip().lower()
                return cls(parse_pitch_class(name.strip()), "minor" if mode.startswith("min") else "major")
        if text.endswith("m") and len(text) > 1:
            return cls(parse_pitch_class(text[:-1]), "minor")
        return cls(parse_pitch_class(text), "major")

    @property
    def scale(self) -> tuple[int, ...]:
        steps = MAJOR_SCALE if self.mode == "major" else MINOR_SCALE
        return tuple(sorted((self.tonic + s) % 12 for s in steps))

    @property
    def label(self) -> str:
        return f"{PITCH_NAMES[self.tonic]} {self.mode}"

    def __str__(self) -> str:
        return self.label


def chord_from_pitch_classes(
    weights: list[float] | tuple[float, ...], bass: list[float] | tuple[float, ...] | None = None
) -> Chord:
    """Recognise the triad-family chord that best explains a 12-bin pitch-class weight vector.

    Scores every root and quality by the weight on chord tones minus the weight off them, with a
    small preference for simpler chords; returns NO_CHORD for silence. ``bass`` (optional, 12 bins:
    how long each pitch class was the lowest sounding note) settles chords that share their tones,
    such as C6 and Am7 or Csus4 and Fsus2, in favour of the root in the bass.
    """
    total = float(sum(weights))
    if total <= 0:
        return NO_CHORD
    bass_total = float(sum(bass)) if bass is not None else 0.0
    best, best_score = NO_CHORD, float("-inf")
    for quality in ("maj", "min", "dim", "aug", "sus2", "sus4", "7", "maj7", "min7", "maj6", "min6"):
        penalty = 0.02 * (len(QUALITY_INTERVALS[quality]) - 3)
        for root in range(12):
            tones = {(root + i) % 12 for i in QUALITY_INTERVALS[quality]}
            on = sum(weights[pc] for pc in tones)
            score = (2 * on - total) / total - penalty
            if bass_total > 0:
                score += 0.1 * bass[root] / bass_total
            if score > best_score:
                best, best_score = Chord(root, quality, root), score
    return best
