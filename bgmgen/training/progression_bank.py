"""Building the chord-progression bank (``bgmgen/data/progressions.json``) from POP909's annotations.

Counts the 4-bar progressions of every annotated song relative to its key (see ``bgmgen.music.progressions``)
and keeps the most frequent per mode, plus the commonest tonic cadences. Build the packaged bank with
``python -m bgmgen.training.progression_bank POP909_ROOT -o bgmgen/data/progressions.json``.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmgen.errors import InputError
from bgmgen.music.harmony import Chord, Key
from bgmgen.music.progressions import (
    BEATS_PER_BAR,
    CADENCE_BARS,
    DEFAULT_BANK_PATH,
    DEFAULT_TOP,
    HALF_BARS_PER_BAR,
    MIN_DISTINCT_CHORDS,
    MODES,
    PROGRESSION_BARS,
    PROGRESSION_HOP_BARS,
    ModeBank,
    ProgressionBank,
    is_tonic,
    roman,
)
from bgmgen.training.pop909 import SKIPPED_SONGS

log = logging.getLogger("bgmgen")


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

    parser = argparse.ArgumentParser(prog="python -m bgmgen.training.progression_bank", description=__doc__.splitlines()[0])
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
