"""Chord-progression bank: the common 4-bar progressions of POP909, relative to the key.

A progression is eight half-bar chords (two per 4/4 bar) written as Harte labels relative to a C
tonic, so ``G:maj/3`` means "V in first inversion" in any major key and ``F:maj`` means "bVI" in a
minor one. ``build_progression_bank`` counts them over the annotated songs (major and minor keys
apart) and keeps the most frequent, plus the commonest 2-bar endings on the tonic (cadences);
``ProgressionBank.sample`` draws them by frequency and transposes them into a key.

Build the packaged bank with ``python -m bgmgen.progressions POP909_ROOT -o bgmgen/data/progressions.json``.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BgmgenError, InputError, ModelError, OutputError
from .harmony import Chord, Key

log = logging.getLogger("bgmgen")

BANK_VERSION = 1
DEFAULT_BANK_PATH = Path(__file__).parent / "data" / "progressions.json"
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


# --- building from POP909 -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    start: float
    end: float
    label: str


def _read_spans(path: Path) -> list[_Span]:
    spans = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            spans.append(_Span(float(parts[0]), float(parts[1]), parts[2]))
    return sorted(spans, key=lambda s: s.start)


def _half_bar_runs(beats: np.ndarray) -> list[list[tuple[float, float]]]:
    """Runs of consecutive regular 4/4 bars, each as its list of half-bar (start, end) times.

    Bars come from the 4/4 downbeat column; a bar that does not hold exactly four beats (pickups,
    irregular bars) ends a run, so phrase positions restart after it.
    """
    times = beats[:, 0]
    downbeats = np.flatnonzero(beats[:, 2] > 0.5)
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for first, nxt in zip(downbeats[:-1], downbeats[1:]):
        if nxt - first == BEATS_PER_BAR:
            middle = first + BEATS_PER_BAR // 2
            current += [(times[first], times[middle]), (times[middle], times[nxt])]
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _chord_at(chords: list[_Span], starts: list[float], start: float, end: float) -> str:
    """Label of the chord that overlaps [start, end) the longest (``N`` if none does).

    Near-ties (two chords of a beat each) go to the earlier chord, the one sounding at the start.
    """
    best, best_overlap = "N", 0.0
    tolerance = 0.01 * (end - start)
    i = max(bisect.bisect_right(starts, start) - 1, 0)
    while i < len(chords) and chords[i].start < end:
        overlap = min(end, chords[i].end) - max(start, chords[i].start)
        if overlap > best_overlap + tolerance:
            best, best_overlap = chords[i].label, overlap
        i += 1
    return best


def _key_index_at(keys: list[_Span], time: float) -> int:
    """Index of the key span in force at ``time`` (the first one before any starts)."""
    index = 0
    for i, span in enumerate(keys):
        if span.start <= time:
            index = i
    return index


def song_windows(song_dir: Path) -> list[tuple[str, tuple[str, ...]]]:
    """All 4-bar windows of one song as (mode, 8 C-relative labels), skipping any with no-chords.

    Reads ``beat_midi.txt``, ``chord_midi.txt`` and ``key_audio.txt``; windows start at even bars
    of each run of regular 4/4 bars and must stay within one key. Songs not in 4/4 yield nothing.
    Raises InputError if an annotation file is missing or unreadable.
    """
    try:
        beats = np.loadtxt(song_dir / "beat_midi.txt", ndmin=2)
        chords = _read_spans(song_dir / "chord_midi.txt")
        keys = [span for span in _read_spans(song_dir / "key_audio.txt") if span.label != "N"]
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read POP909 annotations in {song_dir}: {exc}") from None
    if not keys or len(beats) < 2:
        return []
    parsed_keys = [Key.parse(span.label) for span in keys]
    starts = [span.start for span in chords]
    windows = []
    for run in _half_bar_runs(beats):
        labels: list[str | None] = []
        key_ids: list[int] = []
        for start, end in run:
            key_id = _key_index_at(keys, (start + end) / 2)
            chord = Chord.parse(_chord_at(chords, starts, start, end))
            labels.append(None if chord.is_none else chord.transpose(-parsed_keys[key_id].tonic).harte)
            key_ids.append(key_id)
        size = HALF_BARS_PER_BAR * PROGRESSION_BARS
        for h in range(0, len(run) - size + 1, HALF_BARS_PER_BAR * PROGRESSION_HOP_BARS):
            window = labels[h : h + size]
            if None in window or len(set(key_ids[h : h + size])) != 1:
                continue
            windows.append((parsed_keys[key_ids[h]].mode, tuple(window)))  # type: ignore[arg-type]
    return windows


def build_progression_bank(pop909_root: Path, top: int = DEFAULT_TOP) -> ProgressionBank:
    """Count 4-bar progressions and tonic cadences over every song folder under ``pop909_root``.

    Keeps the ``top`` most frequent of each per mode (ties broken by label, so the result is
    deterministic); progressions holding a single chord throughout are dropped. Songs in 3/4 and
    those in ``pop909.SKIPPED_SONGS`` are left out.
    Raises InputError if no song folder is found.
    """
    from .pop909 import SKIPPED_SONGS

    song_dirs = sorted(p for p in Path(pop909_root).iterdir() if (p / "chord_midi.txt").is_file())
    if not song_dirs:
        raise InputError(f"no POP909 song folders (with chord_midi.txt) under {pop909_root}")
    progressions = {mode: Counter() for mode in MODES}
    cadences = {mode: Counter() for mode in MODES}
    n_songs = 0
    for song_dir in song_dirs:
        if song_dir.name in SKIPPED_SONGS:
            continue
        windows = song_windows(song_dir)
        n_songs += bool(windows)
        for mode, labels in windows:
            # Four bars of one chord (intros, vamps) are common but make dull background music.
            if len(set(labels)) >= MIN_DISTINCT_CHORDS:
                progressions[mode][labels] += 1
            ending = labels[-HALF_BARS_PER_BAR * CADENCE_BARS :]
            # A cadence lands on the tonic after something else (not four bars of I).
            if is_tonic(ending[-1], mode) and not all(is_tonic(label, mode) for label in ending):
                cadences[mode][ending] += 1
    for mode in MODES:
        counts = progressions[mode]
        log.info("progressions: %d %s windows, %d distinct", sum(counts.values()), mode, len(counts))

    def most_common(counter: Counter) -> tuple[tuple[tuple[str, ...], int], ...]:
        return tuple(sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:top])

    banks = {mode: ModeBank(most_common(progressions[mode]), most_common(cadences[mode])) for mode in MODES}
    return ProgressionBank(banks["major"], banks["minor"], n_songs)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: build the bank from a POP909 folder, save it, print a summary."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bgmgen.progressions", description=__doc__.splitlines()[0])
    parser.add_argument("pop909_root", type=Path, help="folder holding the POP909 song folders (001, 002, ...)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_BANK_PATH, help="JSON file to write")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP, help="progressions kept per mode")
    args = parser.parse_args(argv)
    bank = build_progression_bank(args.pop909_root, args.top)
    bank.save(args.output)
    print(f"{bank.n_songs} songs -> {args.output}")
    for mode in MODES:
        mode_bank = bank.mode_bank(mode)
        kept = sum(count for _, count in mode_bank.progressions)
        print(f"\n{mode}: {len(mode_bank.progressions)} progressions kept ({kept} windows); top 10:")
        for labels, count in mode_bank.progressions[:10]:
            print(f"  {count:4d}  " + " ".join(roman(label) for label in labels))
        print(f"{mode}: top 5 cadences:")
        for labels, count in mode_bank.cadences[:5]:
            print(f"  {count:4d}  " + " ".join(roman(label) for label in labels))


if __name__ == "__main__":
    main()
