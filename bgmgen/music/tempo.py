"""Tempo maps: a 4/4 tempo that may change gently on bar lines, and the odd short bar, so that hard
cuts fall on downbeats.

A map is an opening tempo and a list of ``TempoChange(bar, tempo)``: from that bar line on, the music
goes at that tempo. Each bar has one tempo, so bar lines, beats and the 16-step grid all follow from
the per-bar tempos (``bar_edges``, ``time_of_position``). A bar may also be short: a ``ShortBar(bar,
beats)`` of 2/4 or 3/4, the film composer's way to catch a cut that a gentle tempo cannot reach. Its
grid keeps 16 steps (positions count in 4/4 bars), and the steps past its last beat do not sound.
``fit_tempo_map`` chooses a map for a video's cuts: one tempo when it already puts every cut where it
belongs, otherwise tempos piecewise constant between "anchor" cuts, each anchor exactly on a bar line
(through a short bar before it when the tempo alone cannot), every change within ``MAX_TEMPO_STEP`` of
the tempo before it and all of them within ``TEMPO_BAND`` of one centre tempo. Cuts that are not
anchors (too close to the previous one, or out of reach) are checked for landing on a beat.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from bgmgen.errors import BgmgenError

BEATS_PER_BAR = 4  # 4/4, except the short bars
SHORT_BAR_BEATS = (2, 3)  # a short bar is a bar of 2/4 or 3/4
SHORT_BAR_COST = 0.5  # per short bar, against tempo change (a 10 % change costs about as much)
STEPS_PER_BAR = 16  # the sixteenth-note grid (as in roll.py, repeated here to keep this module a leaf)
SECONDS_PER_BAR_AT_1_BPM = BEATS_PER_BAR * 60.0  # a bar lasts this / tempo seconds
MAX_TEMPO_STEP = 0.08  # a change may move the tempo by at most 8 % of the tempo before it
MAX_TEMPO_SPREAD = 0.35  # the fastest bar of a plan file may be at most 35 % faster than its slowest
TEMPO_BAND = 0.15  # a fitted map spans at most a factor 1.15^2 = 1.32 (within MAX_TEMPO_SPREAD)
ON_GRID = 1.0 / STEPS_PER_BAR  # a cut "is on" a downbeat or beat within a sixteenth of a bar
FIT_MARGIN = 0.75  # the fitter aims inside 3/4 of that, so MIDI tick rounding cannot push a cut out
FAR_CUT_BARS = 1.0  # cuts at least this many bars after the previous cut (or the start) belong on a downbeat
MAX_SKIPPED_FAR = 4  # the fitter may leave at most this many far cuts between two anchors
DOWNBEAT_MISS_COST = 1.0  # per far cut not on a downbeat
BEAT_MISS_COST = 1.0  # per cut not on a beat
DISTANCE_COST = 0.2  # per bar of distance of a non-anchored cut from its downbeat (prefers closer)
CHANGE_COST = 0.02  # per tempo change, so a map changes tempo only where that buys alignment
CHANGE_SIZE_COST = 1.0  # per unit of |ln(tempo ratio)| at a change (a 4 % change costs 0.04)
PRIOR_COST = 0.02  # per bar per squared octave away from the mood's tempo
BEAM_WIDTH = 4  # hypotheses kept while pinning cuts to the grid
MAX_CUTS_FOR_BEAM = 40  # beyond this many cuts the pinning is greedy (one hypothesis), to bound the time
FREE_PINS = 3  # when pinning a cut, the bars since this many pins back are solved again


@dataclass(frozen=True)
class TempoChange:
    """From the bar line that starts ``bar`` on, the music goes at ``tempo`` BPM."""

    bar: int
    tempo: float


@dataclass(frozen=True)
class ShortBar:
    """Bar ``bar`` has only ``beats`` beats (2/4 or 3/4); the bars around it are 4/4."""

    bar: int
    beats: int


def bar_beats(short_bars: list[ShortBar], n_bars: int) -> np.ndarray:
    """Beats of each of ``n_bars`` bars: 4, or a short bar's beats."""
    beats = np.full(max(n_bars, 1), BEATS_PER_BAR)
    for short in short_bars:
        if 0 <= short.bar < len(beats):
            beats[short.bar] = short.beats
    return beats


def short_bars_from_beats(beats: np.ndarray) -> list[ShortBar]:
    """The short bars of per-bar beats."""
    return [ShortBar(int(b), int(n)) for b, n in enumerate(beats) if n != BEATS_PER_BAR]


def _full_bars(beats: np.ndarray | None, n_bars: int) -> np.ndarray:
    """Per-bar length as a fraction of a 4/4 bar (1 everywhere without ``beats``)."""
    if beats is None:
        return np.ones(n_bars)
    return np.asarray(beats, dtype=float)[:n_bars] / BEATS_PER_BAR


def bar_tempos(tempo: float, changes: list[TempoChange], n_bars: int) -> np.ndarray:
    """Tempo (BPM) of each of ``n_bars`` bars: ``tempo`` until the first change, then each change's."""
    tempos = np.full(max(n_bars, 1), float(tempo))
    for change in changes:
        tempos[change.bar :] = change.tempo
    return tempos


def bar_edges(tempos: np.ndarray, beats: np.ndarray | None = None) -> np.ndarray:
    """Times (s) of the bar lines: ``[0, end of bar 0, ..., end of the last bar]`` (len n_bars + 1)."""
    tempos = np.asarray(tempos, dtype=float)
    lengths = _full_bars(beats, len(tempos)) * SECONDS_PER_BAR_AT_1_BPM / tempos
    return np.concatenate([[0.0], np.cumsum(lengths)])


def time_of_position(position: float | np.ndarray, tempos: np.ndarray, edges: np.ndarray,
                     beats: np.ndarray | None = None) -> float | np.ndarray:  # fmt: skip
    """Time (s) of a position in bars (bar 2.5 = half way through the third bar); before 0 and after the
    last bar the first and last tempos continue. Positions are counted in 4/4 bars, so the end of a short
    bar (2.5 in a 2/4 bar 2) and the rest of its bar are its last bar line."""
    pos = np.asarray(position, dtype=float)
    n_bars = len(tempos)
    bar = np.clip(np.floor(pos), 0, n_bars - 1).astype(int)
    into = np.where(pos < n_bars, np.minimum(pos - bar, _full_bars(beats, n_bars)[bar]), 0.0)
    after = np.maximum(pos - n_bars, 0.0)  # past the last bar: its tempo continues from the last bar line
    start = np.where(pos < n_bars, edges[bar], edges[n_bars])
    times = start + (into + after) * SECONDS_PER_BAR_AT_1_BPM / tempos[bar]
    return float(times) if np.ndim(times) == 0 else times


def position_of_time(seconds: float | np.ndarray, tempos: np.ndarray, edges: np.ndarray) -> float | np.ndarray:
    """Position in bars of a time (s); the inverse of ``time_of_position`` (a time in a short bar lies
    before its ``beats / 4``)."""
    t = np.asarray(seconds, dtype=float)
    n_bars = len(tempos)
    bar = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_bars - 1)
    start = np.where(t < edges[n_bars], bar, n_bars)
    pos = start + (t - edges[start]) * tempos[bar] / SECONDS_PER_BAR_AT_1_BPM
    return float(pos) if np.ndim(pos) == 0 else pos


def validate_tempo_map(tempo: float, changes: list[TempoChange], n_bars: int, limits: tuple[float, float]) -> None:
    """Raise BgmgenError naming the first problem of a map: a change off the plan's bars or out of order,
    a tempo outside ``limits`` or not finite, a change over MAX_TEMPO_STEP, a spread over MAX_TEMPO_SPREAD."""
    previous_bar, previous = 0, float(tempo)
    for change in changes:
        where = f"plan tempo_map change at bar {change.bar}"
        if not previous_bar < change.bar < n_bars:
            raise BgmgenError(f"{where} must come after bar {previous_bar} and before bar {n_bars} (bars in order)")
        if not (math.isfinite(change.tempo) and limits[0] <= change.tempo <= limits[1]):
            raise BgmgenError(f"{where}: tempo {change.tempo:g} BPM is outside {limits[0]:g}..{limits[1]:g}")
        if abs(change.tempo / previous - 1.0) > MAX_TEMPO_STEP + 1e-9:
            raise BgmgenError(
                f"{where} goes from {previous:g} to {change.tempo:g} BPM, more than "
                f"{MAX_TEMPO_STEP:.0%} at once (split it over several bars)"
            )
        previous_bar, previous = change.bar, change.tempo
    tempos = [float(tempo)] + [c.tempo for c in changes]
    if max(tempos) > (1.0 + MAX_TEMPO_SPREAD) * min(tempos) + 1e-9:
        raise BgmgenError(
            f"plan tempo_map spans {min(tempos):g}..{max(tempos):g} BPM, more than {MAX_TEMPO_SPREAD:.0%} apart"
        )


def changes_from_tempos(tempos: np.ndarray) -> tuple[float, list[TempoChange]]:
    """The opening tempo and the changes of per-bar tempos (a change wherever a bar differs from the last)."""
    changes = [TempoChange(int(b), float(tempos[b])) for b in range(1, len(tempos)) if tempos[b] != tempos[b - 1]]
    return float(tempos[0]), changes


def validate_short_bars(short_bars: list[ShortBar], n_bars: int) -> None:
    """Raise BgmgenError naming the first bad short bar: off the plan's bars, out of order, or not 2 or 3 beats."""
    previous = -1
    for short in short_bars:
        where = f"plan short_bars entry for bar {short.bar}"
        if not previous < short.bar < n_bars:
            raise BgmgenError(f"{where} must come after bar {previous} and before bar {n_bars} (bars in order, once each)")
        if short.beats not in SHORT_BAR_BEATS:
            raise BgmgenError(f"{where}: a short bar has 2 or 3 beats, not {short.beats}")
        previous = short.bar


@dataclass(frozen=True)
class CutAlignment:
    """Where cuts land on a tempo map, with the figures the plan reports."""

    positions: np.ndarray  # position of each cut in bars (4/4 bars: a short bar ends before its next integer)
    far: np.ndarray  # bool per cut: at least FAR_CUT_BARS after the previous cut (or the start)
    on_downbeat: np.ndarray  # bool per cut: within a sixteenth of a bar of a bar line
    on_beat: np.ndarray  # bool per cut: within a sixteenth of a bar of a beat
    mean_error: float  # mean |cut - nearest bar line| in seconds (0 without cuts)
    bar_lines: np.ndarray  # per cut: the bar that starts at its nearest bar line
    beat_steps: np.ndarray  # per cut: the grid step of its nearest beat (a short bar's end: the next bar's first)
    downbeat_distance: np.ndarray  # per cut: distance to its nearest bar line, in bars

    def figures(self) -> dict[str, float]:
        """The plan's alignment figures: fractions of far cuts on downbeats and of all cuts on beats (1 if none)."""
        far = int(self.far.sum())
        return {
            "far_cuts": float(far),
            "far_cuts_on_downbeats": float(self.on_downbeat[self.far].mean()) if far else 1.0,
            "cuts_on_beats": float(self.on_beat.mean()) if len(self.on_beat) else 1.0,
        }


def cut_alignment(cuts: list[float] | np.ndarray, tempos: np.ndarray, margin: float = 1.0,
                  beats: np.ndarray | None = None) -> CutAlignment:  # fmt: skip
    """Measure where ``cuts`` land on bars with ``tempos`` (and ``beats``, for short bars); ``margin`` < 1
    narrows "on" (the fitter's aim)."""
    tempos = np.asarray(tempos, dtype=float)
    n_bars = len(tempos)
    lengths = np.append(_full_bars(beats, n_bars), 1.0)  # past the last bar, 4/4 bars continue
    edges = bar_edges(tempos, beats)
    times = np.asarray(cuts, dtype=float).reshape(-1)
    pos = np.atleast_1d(position_of_time(times, tempos, edges)) if times.size else np.zeros(0)
    bar = np.clip(np.floor(pos), 0, None).astype(int)
    length = lengths[np.minimum(bar, n_bars)]
    into = np.clip(pos - bar, 0.0, None)
    # Beats elapsed since the start: how far apart two cuts are, whatever the bars' lengths.
    beats_before = BEATS_PER_BAR * np.concatenate([[0.0], np.cumsum(lengths[:-1])])
    elapsed = beats_before[np.minimum(bar, n_bars)] + BEATS_PER_BAR * (into + np.maximum(bar - n_bars, 0))
    gaps = np.diff(np.concatenate([[0.0], elapsed]))
    to_next = np.maximum(length - into, 0.0)
    down = np.minimum(into, to_next)
    beat_index = np.minimum(np.round(BEATS_PER_BAR * into), np.round(BEATS_PER_BAR * length))
    beat = np.abs(BEATS_PER_BAR * into - beat_index) / BEATS_PER_BAR
    bar_lines = np.where(to_next < into, bar + 1, bar)
    at_end = beat_index >= np.round(BEATS_PER_BAR * length)
    beat_steps = np.where(at_end, (bar + 1) * STEPS_PER_BAR, bar * STEPS_PER_BAR + beat_index * (STEPS_PER_BAR // BEATS_PER_BAR))
    line_times = edges[np.minimum(bar_lines, n_bars)] if times.size else np.zeros(0)
    return CutAlignment(
        positions=pos,
        far=gaps >= BEATS_PER_BAR * FAR_CUT_BARS - 1e-9,
        on_downbeat=down <= margin * ON_GRID + 1e-9,
        on_beat=beat <= margin * ON_GRID + 1e-9,
        mean_error=float(np.mean(np.abs(times - line_times))) if times.size else 0.0,
        bar_lines=bar_lines.astype(int),
        beat_steps=beat_steps.astype(int),
        downbeat_distance=down,
    )


def misfit(alignment: CutAlignment) -> float:
    """Cost of an alignment: misses of far cuts on downbeats and of cuts on beats, plus distance."""
    return float(
        DOWNBEAT_MISS_COST * np.sum(alignment.far & ~alignment.on_downbeat)
        + BEAT_MISS_COST * np.sum(~alignment.on_beat)
        + DISTANCE_COST * np.sum(alignment.downbeat_distance[alignment.far])
    )


def hit_steps(alignment: CutAlignment) -> list[int]:
    """A grid step per cut for its hit: the beat it is on, else the step nearest it (sorted, no repeats)."""
    steps = set()
    for pos, on_beat, beat_step in zip(alignment.positions, alignment.on_beat, alignment.beat_steps):
        steps.add(int(beat_step) if on_beat else int(round(pos * STEPS_PER_BAR)))
    return sorted(s for s in steps if s >= 0)


def bars_to_cover(duration: float, tempos_so_far: np.ndarray, last_tempo: float,
                  beats_so_far: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Per-bar tempos extended at ``last_tempo`` until the bars cover ``duration`` seconds."""
    covered = float(bar_edges(tempos_so_far, beats_so_far)[-1]) if len(tempos_so_far) else 0.0
    extra = max(0, math.ceil((duration - covered) * last_tempo / SECONDS_PER_BAR_AT_1_BPM - 1e-9))
    tempos = np.concatenate([tempos_so_far, np.full(extra, float(last_tempo))])
    return tempos if len(tempos) else np.array([float(last_tempo)])


def fit_tempo_map(
    cuts: list[float], duration: float, centre: float, target: float, limits: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar tempos and beats that put ``cuts`` on downbeats (far cuts) and beats (all), covering ``duration``.

    ``centre`` is the single tempo that fits the cuts best (``plan.choose_tempo``); if it already puts
    every cut where it belongs it is kept. Otherwise cuts are pinned in order to grid positions (far
    cuts to bar lines, the others to beats), each to the nearest position a gentle map can still reach:
    the bar lengths are the unknowns of a linear programme (``_solve_bars``) whose constraints are the
    pinned cuts, the per-change limit, the band and ``limits``. Where no gentle map reaches a bar line,
    a far cut a beat or three off one may still get it through a short bar (2/4 or 3/4) just before it.
    The map with the lower cost is returned (the single tempo on ties); ``target`` (the mood's tempo)
    breaks ties between maps.
    """
    single = bars_to_cover(duration, np.zeros(0), centre)
    full = np.full(len(single), BEATS_PER_BAR)
    times = np.asarray(sorted(c for c in cuts if 0.0 < c < duration), dtype=float)
    best_cost = misfit(cut_alignment(times, single, FIT_MARGIN))
    if times.size == 0 or best_cost == 0.0:
        return single, full
    tempos, beats = _pin_cuts(times, duration, centre, target, limits, BEAM_WIDTH if times.size <= MAX_CUTS_FOR_BEAM else 1)
    if misfit(cut_alignment(times, tempos, FIT_MARGIN, beats)) < best_cost - 1e-9:
        return tempos, beats
    return single, full


def _grid_candidates(pos: float, far: bool, previous: float, first_bars: range | None = None
                     ) -> list[tuple[float, tuple[tuple[int, int], ...]]]:  # fmt: skip
    """Pins to try for a cut now at ``pos``, as ``(grid position in bars, short bars (bar, beats) to make)``.

    For a far cut: the three nearest bar lines (or every bar in ``first_bars``), then each of the three
    nearest beats that is not a bar line made into one by short bars (a cut on beat 3 of bar k: bar k
    in 2/4; on beat 4: bar k in 3/4; on beat 2: bars k-1 and k in 3/4 and 2/4), then those beats as
    they are. For a near one the three nearest beats. Short bars start no earlier than the ``previous`` cut.
    """
    def nearest(unit: float) -> list[float]:
        k = round(pos / unit)
        return sorted(((k + d) * unit for d in (-1, 0, 1)), key=lambda g: abs(g - pos))

    beats = [(g, ()) for g in nearest(1.0 / BEATS_PER_BAR)]
    if not far:
        return beats
    if first_bars is not None:
        return [(float(b), ()) for b in sorted(first_bars, key=lambda b: abs(b - pos))] + beats
    bars = [(g, ()) for g in nearest(1.0)]
    shortened = []
    for grid, _ in beats:
        bar, beat = int(math.floor(grid + 1e-9)), int(round((grid - math.floor(grid + 1e-9)) * BEATS_PER_BAR))
        short = {2: ((bar, 2),), 3: ((bar, 3),), 1: ((bar - 1, 3), (bar, 2))}.get(beat)
        if short and short[0][0] >= math.ceil(previous - 1e-9):
            shortened.append((float(bar + 1), short))
    return bars + shortened + beats


@dataclass(frozen=True)
class _Partial:
    """One hypothesis of the beam: the pins so far, the bars they imply, and what they cost."""

    pins: tuple[tuple[float, float, float], ...]  # (position in bars, time, slack s): see ``_solve_bars``
    tempos: np.ndarray
    beats: np.ndarray  # per bar: 4, or a short bar's 2 or 3
    previous: float  # position of the last cut placed
    misses: float  # far cuts off their bar line + cuts off a beat, so far
    change: float  # sum of |ln tempo ratio| between bars, plus SHORT_BAR_COST per short bar


def _pin_cuts(times: np.ndarray, duration: float, start_tempo: float, target: float, limits: tuple[float, float],
              beam_width: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Beam search over pinning each cut, in order, to a grid position that a gentle map can reach
    (checked by ``_solve_bars``); returns the per-bar tempos and beats of the best hypothesis."""
    n_bars = math.ceil(duration * limits[1] / SECONDS_PER_BAR_AT_1_BPM) + 1  # enough bars at the fastest tempo
    beam = [_Partial((), np.full(n_bars, start_tempo), np.full(n_bars, BEATS_PER_BAR), 0.0, 0.0, 0.0)]
    for index, cut in enumerate(times):
        # The first cut decides the tempo, so it may go to any bar line the tempo limits reach.
        first_bars = range(max(1, math.ceil(cut * limits[0] / SECONDS_PER_BAR_AT_1_BPM)),
                           math.floor(cut * limits[1] / SECONDS_PER_BAR_AT_1_BPM) + 1) if index == 0 else None  # fmt: skip
        grown: list[_Partial] = []
        for partial in beam:
            pos = float(position_of_time(cut, partial.tempos, bar_edges(partial.tempos, partial.beats)))
            far = pos - partial.previous >= FAR_CUT_BARS - 1e-9  # no short bar lies between the two
            unit = 1.0 if far else 1.0 / BEATS_PER_BAR
            if index and abs(pos / unit - round(pos / unit)) * unit <= 0.5 * FIT_MARGIN * ON_GRID:
                # Already in place: pinned there loosely (within the fitter's aim), so later pins cannot move it off.
                grid = round(pos / unit) * unit
                slack = 0.5 * FIT_MARGIN * ON_GRID * SECONDS_PER_BAR_AT_1_BPM / float(np.max(partial.tempos))
                grown.append(dataclasses.replace(partial, pins=(*partial.pins, (grid, float(cut), slack)), previous=grid))
                continue
            last_pin = partial.pins[-1][0] if partial.pins else 0.0
            placed = 0
            candidates = _grid_candidates(pos, far, partial.previous, first_bars)
            if beam_width == 1 and index:  # long videos: the nearest bar line, short bar and beat only, to bound the time
                shortened = [c for c in candidates if c[1]][:1]
                candidates = [candidates[0], *shortened, candidates[-3]] if far else candidates[:1]
            for grid, short in candidates:
                if not last_pin < grid < n_bars - 1:
                    continue
                beats = partial.beats.copy()
                for bar, n_beats in short:
                    beats[bar] = n_beats
                pins = (*partial.pins, (grid, float(cut), 0.0))
                # Bars before the pin FREE_PINS back stay as they are; the rest are solved again.
                n_frozen = int(math.floor(pins[-FREE_PINS - 1][0])) if len(pins) > FREE_PINS else 0
                n_free = min(n_bars, int(math.floor(grid)) + 2) - n_frozen
                free = _solve_bars(partial.tempos[:n_frozen], beats[:n_frozen], [q for q in pins if q[0] >= n_frozen],
                                   beats[n_frozen : n_frozen + n_free], limits)  # fmt: skip
                if free is None:
                    continue
                solved = np.concatenate([partial.tempos[:n_frozen], free, np.full(n_bars - n_frozen - n_free, free[-1])])
                # Pinned on a beat less than a bar after the previous cut, a cut is no longer "far".
                on_bar = abs(grid - round(grid)) < 1e-9
                miss = DOWNBEAT_MISS_COST * (grid - partial.previous >= FAR_CUT_BARS - 1e-9 and not on_bar)
                # Smoothness first, then the mood's tempo, among hypotheses that miss as few cuts.
                change = float(np.sum(np.abs(np.diff(np.log(solved))))) + PRIOR_COST * abs(np.log2(np.median(solved) / target))
                change += SHORT_BAR_COST * int(np.sum(beats != BEATS_PER_BAR))
                grown.append(_Partial(pins, solved, beats, grid, partial.misses + miss, change))
                placed += 1
                if placed >= beam_width or (on_bar and beam_width == 1):
                    break
            if not placed:  # nowhere to pin it: it stays where the map puts it, counted as missed
                miss = BEAT_MISS_COST + DOWNBEAT_MISS_COST * far
                grown.append(dataclasses.replace(partial, previous=pos, misses=partial.misses + miss))
        grown.sort(key=lambda h: (h.misses, h.change))
        beam = grown[:beam_width]

    def covering(h: _Partial) -> tuple[np.ndarray, np.ndarray]:
        n = max(1, int(np.searchsorted(bar_edges(h.tempos, h.beats), duration - 1e-9, side="left")))
        return h.tempos[:n], h.beats[:n]

    # The beam counts misses as it pins; the final choice measures them on the finished maps.
    return min((covering(h) for h in beam), key=lambda tb: misfit(cut_alignment(times, tb[0], FIT_MARGIN, tb[1])))


def _solve_bars(frozen: np.ndarray, frozen_beats: np.ndarray, pins: list[tuple[float, float, float]], free_beats: np.ndarray,
                limits: tuple[float, float]) -> np.ndarray | None:  # fmt: skip
    """Lengths of bars ``len(frozen) .. len(frozen) + len(free_beats)`` meeting every pin ``(position in
    bars, time, slack)``, its position within ``slack`` seconds of its time (exactly with slack 0), as
    tempos after the ``frozen`` ones; None if no gentle map can. The bars have
    ``frozen_beats`` and ``free_beats`` beats (a short bar lasts its share of a 4/4 bar at its tempo).

    A linear programme over the free bar lengths d_k (s): each within MAX_TEMPO_STEP of the bar before
    (the last frozen one included), all inside a band (1 + TEMPO_BAND)^2 wide that also holds the frozen
    bars, within the tempo ``limits``, with the least total change (L1, so changes are few). Only the
    bars since a few pins back are free, which keeps every programme small on long videos.
    """
    from scipy import sparse
    from scipy.optimize import linprog

    n, n0 = len(free_beats), len(frozen)
    step = 1.0 + 0.999 * MAX_TEMPO_STEP  # a hair inside the limit, so rounding for the JSON stays within it
    frozen_bars = SECONDS_PER_BAR_AT_1_BPM / np.asarray(frozen, dtype=float)  # 4/4 lengths, for the limits
    start = float(bar_edges(frozen, frozen_beats)[-1])
    share = np.asarray(free_beats, dtype=float) / BEATS_PER_BAR
    # Variables: d (n), s (n) with s_k >= |d_k - d_{k-1}| (d_{-1} the last frozen bar, if any), lo, hi.
    n_var = 2 * n + 2
    lo, hi = n_var - 2, n_var - 1
    rows, cols, vals, rhs = [], [], [], []

    def add(entries: list[tuple[int, float]], bound: float = 0.0) -> None:
        for col, val in entries:
            rows.append(len(rhs))
            cols.append(col)
            vals.append(val)
        rhs.append(bound)

    for k in range(1, n):
        for a, b in ((k, k - 1), (k - 1, k)):
            add([(a, 1.0), (b, -step)])  # d_a <= step * d_b
            add([(a, 1.0), (b, -1.0), (n + k, -1.0)])  # d_a - d_b <= s_k
    if n0:
        last = float(frozen_bars[-1])
        add([(0, 1.0)], step * last)
        add([(0, -1.0)], -last / step)
        add([(0, 1.0), (n, -1.0)], last)
        add([(0, -1.0), (n, -1.0)], -last)
        add([(lo, 1.0)], float(frozen_bars.min()))
        add([(hi, -1.0)], -float(frozen_bars.max()))
    for k in range(n):
        add([(k, 1.0), (hi, -1.0)])  # d_k <= hi
        add([(k, -1.0), (lo, 1.0)])  # lo <= d_k
    add([(hi, 1.0), (lo, -((1.0 + TEMPO_BAND) ** 2))])  # hi <= band^2 * lo
    exact = [pin for pin in pins if pin[2] == 0.0]
    a_eq = np.zeros((len(exact), n_var))
    row = 0
    for position, time, slack in pins:
        bar = int(math.floor(position + 1e-9)) - n0
        coefficients = [(k, float(share[k])) for k in range(bar)] + ([(bar, position - n0 - bar)] if bar < n else [])
        if slack == 0.0:
            for col, val in coefficients:
                a_eq[row, col] += val
            row += 1
        else:  # time - slack <= time of the position <= time + slack
            add(coefficients, time - start + slack)
            add([(col, -val) for col, val in coefficients], -(time - start - slack))
    shortest, longest = SECONDS_PER_BAR_AT_1_BPM / limits[1], SECONDS_PER_BAR_AT_1_BPM / limits[0]
    cost = np.zeros(n_var)
    cost[n : 2 * n] = 1.0
    result = linprog(
        cost, A_ub=sparse.csr_matrix((vals, (rows, cols)), shape=(len(rhs), n_var)), b_ub=np.array(rhs),
        A_eq=a_eq if exact else None, b_eq=np.array([t - start for _, t, _ in exact]) if exact else None,
        bounds=[(shortest, longest)] * n + [(0.0, None)] * n + [(shortest, longest)] * 2, method="highs",
    )
    if result.status != 0:
        return None
    return SECONDS_PER_BAR_AT_1_BPM / np.asarray(result.x[:n])
