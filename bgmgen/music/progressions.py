"""Chord-progression bank: the common 4-bar progressions of POP909, relative to the key.

A progression is eight half-bar chords (two per 4/4 bar) written as Harte labels relative to a C
tonic, so ``G:maj/3`` means "V in first inversion" in any major key and ``F:maj`` means "bVI" in a
minor one. The bank holds the most frequent of them over POP909's annotated songs (major and minor keys
apart), plus the commonest 2-bar endings on the tonic (cadences); ``ProgressionBank.sample`` draws them by
frequency and transposes them into a key. ``bgmgen.training.progression_bank`` builds it from POP909.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmgen.errors import BgmgenError, ModelError, OutputError
from bgmgen.music.harmony import Chord, Key

log = logging.getLogger("bgmgen")

BANK_VERSION = 1
DEFAULT_BANK_PATH = Path(__file__).resolve().parents[1] / "data" / "progressions.json"
MODES = ("major", "minor")
HALF_BARS_PER_BAR = 2
PROGRESSION_BARS = 4  # bars per stored progression
PROGRESSION_HOP_BARS = 2  # progressions start every 2 bars of a run of regular bars (phrase-ish starts)
CADENCE_BARS = 2  # bars per stored cadence (the end of a progression that lands on the tonic)
DEFAULT_TOP = 300  # progressions (and cadences) kept per mode
BEATS_PER_BAR = 4
MIN_DISTINCT_CHORDS = 2  # progressions that hold one chord for all four bars are not kept

# Roman numerals for a root n semitones above the tonic (for logs and reports).
_NUMERALS = ("I", "bII", "II", "bIII", "III", "IV", "#IV", "V", "bVI", "VI", "bVII", "VII")


@dataclass(frozen=True)
class ModeBank:
    """Progressions and cadences of one mode, most frequent first, each with its count."""

    progressions: tuple[tuple[tuple[str, ...], int], ...]  # (8 relative Harte labels, count)
    cadences: tuple[tuple[tuple[str, ...], int], ...]  # (4 relative Harte labels ending on I, count)


@dataclass(frozen=True)
class ProgressionBank:
    """Major and minor progression statistics, relative to a C tonic."""

    major: ModeBank
    minor: ModeBank
    n_songs: int  # songs that contributed
    source: str = "POP909"

    def mode_bank(self, mode: str) -> ModeBank:
        """The ``ModeBank`` for ``"major"`` or ``"minor"``."""
        if mode not in MODES:
            raise BgmgenError(f"unknown mode {mode!r}: expected major or minor")
        return self.major if mode == "major" else self.minor

    def sample(self, key: Key, n_bars: int, rng: np.random.Generator, cadence: bool = False) -> list[Chord]:
        """Draw ``2 * n_bars`` half-bar chords in ``key``.

        Concatenates 4-bar progressions drawn by frequency (the last one cut short when ``n_bars``
        is not a multiple of 4). With ``cadence`` the last two bars are a drawn cadence (for a
        one-bar request: its approach chord, then the tonic), so the chords end on the tonic.
        Raises BgmgenError if the bank has no progressions for the key's mode.
        """
        if n_bars < 1:
            raise BgmgenError(f"cannot sample chords for {n_bars} bars")
        bank = self.mode_bank(key.mode)
        if not bank.progressions:
            raise BgmgenError(f"the progression bank has no {key.mode} progressions")
        n_half = HALF_BARS_PER_BAR * n_bars
        tail: list[str] = []
        if cadence:
            ending = _draw(bank.cadences, rng) if bank.cadences else _fallback_cadence(key.mode)
            tail = list(ending[-min(n_half, len(ending)) :])
            if n_half < len(ending):
                # One bar only: keep the approach chord (the last one that is not the tonic) and the tonic.
                approach = [label for label in ending if not is_tonic(label, key.mode)]
                tail = [approach[-1] if approach else ending[0], ending[-1]]
        head: list[str] = []
        while len(head) < n_half - len(tail):
            head.extend(_draw(bank.progressions, rng))
        labels = head[: n_half - len(tail)] + tail
        return [Chord.parse(label).transpose(key.tonic) for label in labels]

    def to_dict(self) -> dict:
        def rows(items: tuple[tuple[tuple[str, ...], int], ...]) -> list[list]:
            return [[" ".join(labels), count] for labels, count in items]

        out: dict = {"version": BANK_VERSION, "source": self.source, "n_songs": self.n_songs}
        for mode in MODES:
            bank = self.mode_bank(mode)
            out[mode] = {"progressions": rows(bank.progressions), "cadences": rows(bank.cadences)}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ProgressionBank:
        """Rebuild a bank from ``to_dict`` output; raises ModelError if it is malformed."""
        try:
            if data["version"] != BANK_VERSION:
                raise ModelError(f"progression bank version {data['version']} is not supported (need {BANK_VERSION})")
            modes = {}
            for mode in MODES:
                modes[mode] = ModeBank(
                    progressions=_parse_rows(data[mode]["progressions"], PROGRESSION_BARS),
                    cadences=_parse_rows(data[mode]["cadences"], CADENCE_BARS),
                )
            return cls(modes["major"], modes["minor"], int(data["n_songs"]), str(data.get("source", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"malformed progression bank: {exc!r}") from None

    def save(self, path: Path) -> None:
        """Write the bank as JSON; raises OutputError if the file cannot be written."""
        try:
            Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write progression bank {path}: {exc.strerror}") from None

    @classmethod
    def load(cls, path: Path | None = None) -> ProgressionBank:
        """Read a bank (default: the packaged one); raises ModelError if missing or malformed."""
        path = Path(path) if path is not None else DEFAULT_BANK_PATH
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise ModelError(f"cannot read progression bank {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ModelError(f"progression bank {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _parse_rows(rows: list, n_bars: int) -> tuple[tuple[tuple[str, ...], int], ...]:
    out = []
    for text, count in rows:
        labels = tuple(text.split())
        if len(labels) != HALF_BARS_PER_BAR * n_bars:
            raise ValueError(f"expected {HALF_BARS_PER_BAR * n_bars} chords, got {text!r}")
        for label in labels:
            if Chord.parse(label).is_none:
                raise ValueError(f"no-chord in progression {text!r}")
        out.append((labels, int(count)))
    return tuple(out)


def _draw(items: tuple[tuple[tuple[str, ...], int], ...], rng: np.random.Generator) -> tuple[str, ...]:
    counts = np.array([count for _, count in items], dtype=float)
    return items[int(rng.choice(len(items), p=counts / counts.sum()))][0]


def _fallback_cadence(mode: str) -> tuple[str, ...]:
    # Only for a bank without cadences: IV V I I (major) or iv V i i (minor).
    tonic, sub = ("C:maj", "F:maj") if mode == "major" else ("C:min", "F:min")
    return (sub, "G:maj", tonic, tonic)


def is_tonic(label: str, mode: str) -> bool:
    """Whether a C-relative label is the root-position tonic chord of ``mode`` (sevenths allowed)."""
    chord = Chord.parse(label)
    if chord.root != 0 or (chord.bass is not None and chord.bass != chord.root):
        return False
    pcs = set(chord.pitch_classes)
    third = 4 if mode == "major" else 3
    return third in pcs and 7 in pcs


def roman(label: str) -> str:
    """A C-relative Harte label as a roman numeral: ``"A:min7"`` -> ``"vi7"``, ``"G:maj/3"`` -> ``"V/3"``."""
    chord = Chord.parse(label)
    if chord.is_none:
        return "N"
    numeral = _NUMERALS[chord.root]
    minorish = chord.quality.startswith(("min", "dim", "hdim"))
    text = numeral.lower() if minorish else numeral
    suffix = {"maj": "", "min": "", "dim": "o", "hdim7": "o7"}.get(chord.quality)
    if suffix is None:
        suffix = chord.quality.removeprefix("min") if minorish else chord.quality
    text += suffix
    if chord.bass is not None and chord.bass != chord.root:
        text += "/" + chord.harte.rsplit("/", 1)[1]
    return text
