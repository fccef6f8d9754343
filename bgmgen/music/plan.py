"""The musical plan: tempo, bars, key, segments, a chord per half bar and per-bar levels for a video.

``make_plan(analysis, options)`` turns a ``VideoAnalysis`` (duration, cuts, per-frame energy and
motion, mood) into a ``Plan``: a 4/4 tempo map whose bar lines fall on the cuts (one tempo when it
fits, else gentle changes on bar lines and the odd 2/4 or 3/4 bar, ``bgmgen.music.tempo``), a hit step on every cut, segments
that start at those bar lines (merged and split to phrase sizes), chords drawn from the progression
bank with a cadence at the end, and density/energy levels that follow the picture. Plans are JSON
files the user may edit; ``Plan.from_dict`` checks them. Every stage turns steps and bars into
seconds with ``Plan.step_time`` and ``Plan.bar_start``, which follow the map; ``Plan.step_sounds``
says which steps a short bar leaves out.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bgmgen.errors import BgmgenError, InputError
from bgmgen.files import atomic_output
from bgmgen.music.harmony import Chord, Key
from bgmgen.music.progressions import HALF_BARS_PER_BAR, ProgressionBank
from bgmgen.music.roll import STEPS_PER_BAR
from bgmgen.music.styles import STYLES, default_style
from bgmgen.music.tempo import (
    ShortBar, TempoChange, bar_beats, bar_edges, bar_tempos, bars_to_cover, changes_from_tempos, cut_alignment,
    fit_tempo_map, hit_steps, position_of_time, short_bars_from_beats, time_of_position, validate_short_bars,
    validate_tempo_map,
)

if TYPE_CHECKING:  # the plan reads analyses as data; it never runs the analysers
    from bgmgen.video.features import LearnedCues

log = logging.getLogger("bgmgen")

PLAN_VERSION = 1
BEATS_PER_BAR = 4  # always 4/4
SECONDS_PER_MINUTE = 60.0
TEMPO_LIMITS = (30.0, 300.0)  # BPM accepted in a plan file
CALM_TEMPO = 80.0  # BPM suggested by tension 0
TENSE_TEMPO = 125.0  # BPM suggested by tension 1
TEMPO_PRIOR_WEIGHT = 0.3  # score per squared octave away from the suggested tempo (alignment is in bars, 0..0.5)
MAX_TEMPO_CANDIDATES = 40_000  # beyond this many exact-alignment tempos, search a uniform grid instead
TEMPO_GRID_STEP = 0.5  # BPM, grid searched alongside the exact-alignment tempos
MIN_SEGMENT_BARS = 1  # every cut starts a segment; cuts closer than a bar share one bar line
PHRASE_BARS = 8  # long segments split into 8-bar phrases (4 where 8 does not fit)
SHORT_PHRASE_BARS = 4
CUT_LIFT = 0.15  # added to density and energy in the first bar after a big cut (scaled by its size)
BUILD_LIFT = 0.07  # added in the bar before a big cut (less before that), so the music builds into it
BUILD_BARS = 2  # bars of build before a big cut
ENDING_BARS = 3  # bars over which the music falls away at the end
ENDING_ENERGY = 0.75  # factor on the last bar's energy (the bars before it fall towards it)
ENDING_DENSITY = 0.6  # factor on the last bar's density
MAJOR_TONICS = ("C", "D", "Eb", "E", "F", "G", "A", "Bb")  # comfortable keys for piano pop
MINOR_TONICS = ("A", "B", "C", "D", "E", "F#", "G")
# With CLIP features, its zero-shot tension/brightness are blended into the embedded mood (which sets tempo,
# key mode and level ranges) and its per-bar tension into the energy curve. Small weights: the embedded
# signals stay the main guide, CLIP tips close calls (e.g. a dim but cheerful scene towards major).
CLIP_MOOD_WEIGHT = 0.35
CLIP_ENERGY_WEIGHT = 0.25


@dataclass(frozen=True)
class Segment:
    """A run of bars, ``start_bar`` inclusive to ``end_bar`` exclusive."""

    start_bar: int
    end_bar: int

    @property
    def n_bars(self) -> int:
        return self.end_bar - self.start_bar


@dataclass(frozen=True)
class PlanOptions:
    """What the user may fix; everything else follows from the video."""

    tempo: float | None = None  # BPM override; None = chosen to fit the cuts
    key: str | None = None  # e.g. "A minor", "F#m", "Eb:maj"; None = from mood and seed
    seed: int = 0  # drives the key's tonic and the chord draws
    min_tempo: float = 70.0  # BPM range searched when the tempo is not given
    max_tempo: float = 140.0
    style: str | None = None  # a preset in bgmgen.music.styles; None = from the video's mood and pace


@dataclass
class Plan:
    """Everything the music stages need to score one video; serialisable to JSON."""

    duration: float  # seconds of video to cover
    tempo: float  # BPM, 4/4, at the start (``tempo_map`` may change it on later bar lines)
    n_bars: int  # bars that cover the duration (the last bar may run past the end)
    key: str  # Key label, e.g. "A minor"
    segments: list[Segment]  # contiguous runs of bars covering 0..n_bars
    chords: list[str]  # one Harte label per half bar, len == 2 * n_bars
    density: list[float]  # per bar 0..1: relative note density wanted (0 sparse, 1 busiest)
    energy: list[float]  # per bar 0..1: loudness/intensity wanted
    cuts: list[float]  # cut times (s) from the analysis
    cut_alignment_error: float  # mean |cut - nearest bar line| in seconds (0 if no cuts), on the map
    mood: dict[str, float]  # {"tension": .., "brightness": ..}
    seed: int
    captions: list[str] = field(default_factory=list)  # per segment (BLIP, when found); editable
    clip_mood: dict[str, float] = field(default_factory=dict)  # CLIP zero-shot scores ({} without CLIP)
    analysers: list[str] = field(default_factory=list)  # what analysed the video, e.g. ["embedded-signals", "clip"]
    style: str = ""  # preset the music is arranged in (bgmgen.music.styles); "" = chosen from the mood and tempo
    tempo_map: list[TempoChange] = field(default_factory=list)  # tempo changes on bar lines after bar 0; [] = one tempo
    short_bars: list[ShortBar] = field(default_factory=list)  # bars of 2/4 or 3/4 (the rest are 4/4)
    hits: list[int] = field(default_factory=list)  # grid steps (16 per bar) with a musical hit: one per cut
    cut_alignment: dict[str, float] = field(default_factory=dict)  # figures from tempo.CutAlignment.figures
    version: int = PLAN_VERSION

    @property
    def beat_duration(self) -> float:
        """Seconds per beat at the opening tempo (bars differ under a tempo map: use ``step_time``)."""
        return SECONDS_PER_MINUTE / self.tempo

    @property
    def bar_duration(self) -> float:
        """Seconds per bar at the opening tempo (bars differ under a tempo map: use ``bar_start``)."""
        return BEATS_PER_BAR * self.beat_duration

    def bar_tempos(self) -> np.ndarray:
        """Tempo (BPM) of each bar, from ``tempo`` and ``tempo_map``."""
        return bar_tempos(self.tempo, self.tempo_map, self.n_bars)

    def bar_beats(self) -> np.ndarray:
        """Beats of each bar: 4, or a short bar's 2 or 3."""
        return bar_beats(self.short_bars, self.n_bars)

    def bar_start(self, bar: int | np.ndarray) -> float | np.ndarray:
        """Time (s) of the bar line that starts ``bar`` (past the last bar its tempo continues)."""
        tempos, beats = self.bar_tempos(), self.bar_beats()
        return time_of_position(bar, tempos, bar_edges(tempos, beats), beats)

    def step_time(self, step: int | np.ndarray) -> float | np.ndarray:
        """Time (s) of a step of the 16-per-bar grid; every stage turns steps into seconds here. The steps
        a short bar leaves out (see ``step_sounds``) all fall on its last bar line."""
        tempos, beats = self.bar_tempos(), self.bar_beats()
        return time_of_position(np.asarray(step, dtype=float) / STEPS_PER_BAR, tempos, bar_edges(tempos, beats), beats)

    def step_sounds(self, step: int | np.ndarray) -> bool | np.ndarray:
        """Whether a step is played: all are, except those past a short bar's last beat."""
        steps = np.asarray(step)
        bar = np.clip(steps // STEPS_PER_BAR, 0, self.n_bars - 1)
        inside = (steps % STEPS_PER_BAR < self.bar_beats()[bar] * (STEPS_PER_BAR // BEATS_PER_BAR)) | (steps >= self.n_bars * STEPS_PER_BAR)
        return bool(inside) if np.ndim(inside) == 0 else inside

    def bar_position(self, seconds: float | np.ndarray) -> float | np.ndarray:
        """Position in bars of a time (s): bar 2.5 is half way through the third bar (counted in 4/4 bars)."""
        tempos = self.bar_tempos()
        return position_of_time(seconds, tempos, bar_edges(tempos, self.bar_beats()))

    def segment_of_bar(self, bar: int) -> int:
        """Index of the segment holding ``bar``; raises IndexError outside 0..n_bars-1."""
        for index, segment in enumerate(self.segments):
            if segment.start_bar <= bar < segment.end_bar:
                return index
        raise IndexError(f"bar {bar} is outside the plan's {self.n_bars} bars")

    def chord_objects(self) -> list[Chord]:
        return [Chord.parse(label) for label in self.chords]

    def key_object(self) -> Key:
        return Key.parse(self.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "duration": self.duration,
            "tempo": self.tempo,
            "n_bars": self.n_bars,
            "key": self.key,
            "style": self.style,
            "seed": self.seed,
            "mood": dict(self.mood),
            "cuts": list(self.cuts),
            "cut_alignment_error": self.cut_alignment_error,
            "cut_alignment": dict(self.cut_alignment),
            "tempo_map": [{"bar": c.bar, "tempo": c.tempo} for c in self.tempo_map],
            "short_bars": [{"bar": b.bar, "beats": b.beats} for b in self.short_bars],
            "hits": list(self.hits),
            "segments": [{"start_bar": s.start_bar, "end_bar": s.end_bar} for s in self.segments],
            "captions": list(self.captions),
            "clip_mood": dict(self.clip_mood),
            "analysers": list(self.analysers),
            "chords": list(self.chords),
            "density": list(self.density),
            "energy": list(self.energy),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """Build and check a plan; raises BgmgenError naming the first problem found."""
        if not isinstance(data, dict):
            raise BgmgenError("plan must be a JSON object")
        try:
            plan = cls(
                duration=float(data["duration"]),
                tempo=float(data["tempo"]),
                n_bars=int(data["n_bars"]),
                key=str(data["key"]),
                segments=[Segment(int(s["start_bar"]), int(s["end_bar"])) for s in data["segments"]],
                chords=[str(label) for label in data["chords"]],
                density=[float(v) for v in data["density"]],
                energy=[float(v) for v in data["energy"]],
                cuts=[float(t) for t in data.get("cuts", [])],
                cut_alignment_error=float(data.get("cut_alignment_error", 0.0)),
                mood={str(k): float(v) for k, v in data.get("mood", {}).items()},
                seed=int(data.get("seed", 0)),
                captions=[str(c) for c in data.get("captions", [])],
                clip_mood={str(k): float(v) for k, v in data.get("clip_mood", {}).items()},
                analysers=[str(a) for a in data.get("analysers", [])],
                style=str(data.get("style", "")),
                tempo_map=[TempoChange(int(c["bar"]), float(c["tempo"])) for c in data.get("tempo_map", [])],
                short_bars=[ShortBar(int(b["bar"]), int(b["beats"])) for b in data.get("short_bars", [])],
                hits=[int(h) for h in data.get("hits", [])],
                cut_alignment={str(k): float(v) for k, v in data.get("cut_alignment", {}).items()},
                version=int(data.get("version", PLAN_VERSION)),
            )
        except KeyError as exc:
            raise BgmgenError(f"plan is missing the field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise BgmgenError(f"plan has a field of the wrong type: {exc}") from None
        if not plan.style:  # plans written before styles existed
            plan.style = default_style(plan.mood.get("tension", 0.5), plan.mood.get("brightness", 0.5), plan.tempo)
        plan.validate()
        return plan

    def validate(self) -> None:
        """Raise BgmgenError if the plan is inconsistent (lengths, chords, tempo, segments)."""
        if self.version != PLAN_VERSION:
            raise BgmgenError(f"plan version {self.version} is not supported (expected {PLAN_VERSION})")
        if not TEMPO_LIMITS[0] <= self.tempo <= TEMPO_LIMITS[1]:
            raise BgmgenError(f"plan tempo {self.tempo:g} BPM is outside {TEMPO_LIMITS[0]:g}..{TEMPO_LIMITS[1]:g}")
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise BgmgenError(f"plan duration must be positive, got {self.duration:g}")
        if self.n_bars < 1:
            raise BgmgenError(f"plan needs at least one bar, got n_bars={self.n_bars}")
        validate_tempo_map(self.tempo, self.tempo_map, self.n_bars, TEMPO_LIMITS)
        validate_short_bars(self.short_bars, self.n_bars)
        if self.bar_start(self.n_bars) < self.duration - 1e-6:
            raise BgmgenError(
                f"plan's {self.n_bars} bars at {self.tempo:g} BPM (and its tempo_map) do not cover {self.duration:g} s "
                f"(they end at {self.bar_start(self.n_bars):.2f} s)"
            )
        steps = STEPS_PER_BAR * self.n_bars
        bad_hits = [h for h in self.hits if not 0 <= h < steps]
        if bad_hits:
            raise BgmgenError(f"plan hit step {bad_hits[0]} is outside the plan's steps 0..{steps - 1}")
        try:
            self.key_object()
        except ValueError:
            raise BgmgenError(f"plan key {self.key!r} is not a key (try 'A minor' or 'Eb major')") from None
        needed = HALF_BARS_PER_BAR * self.n_bars
        if len(self.chords) != needed:
            raise BgmgenError(
                f"plan has {len(self.chords)} chords for {self.n_bars} bars (need {needed}, one per half bar)"
            )
        for i, label in enumerate(self.chords):
            try:
                Chord.parse(label)
            except (ValueError, KeyError):
                raise BgmgenError(f"plan chord {i} {label!r} is not a chord label (like 'A:min7' or 'N')") from None
        for name in ("density", "energy"):
            values = getattr(self, name)
            if len(values) != self.n_bars:
                raise BgmgenError(f"plan has {len(values)} {name} values for {self.n_bars} bars")
            if not all(0.0 <= v <= 1.0 for v in values):
                raise BgmgenError(f"plan {name} values must lie in 0..1")
        expected_start = 0
        for segment in self.segments:
            if segment.start_bar != expected_start or segment.end_bar <= segment.start_bar:
                raise BgmgenError(
                    "plan segments must be non-empty and contiguous from bar 0; "
                    f"bad segment {segment.start_bar}..{segment.end_bar}"
                )
            expected_start = segment.end_bar
        if expected_start != self.n_bars:
            raise BgmgenError(f"plan segments cover bars 0..{expected_start}, not 0..{self.n_bars}")
        if self.style and self.style not in STYLES:
            raise BgmgenError(f"plan style {self.style!r} is not a style (choose one of {', '.join(STYLES)})")
        if self.captions and len(self.captions) != len(self.segments):
            raise BgmgenError(f"plan has {len(self.captions)} captions for {len(self.segments)} segments")

    def save(self, path: Path) -> None:
        """Write the plan as pretty JSON, atomically; raises OutputError if it cannot be written."""
        with atomic_output(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Plan:
        """Read and check a plan file; InputError if unreadable, BgmgenError if malformed."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InputError(f"cannot read plan {path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BgmgenError(f"plan {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _bars_for(duration: float, bar_duration: float) -> int:
    # A tiny tolerance keeps 8.0 s at 2 s per bar at 4 bars despite float noise.
    return max(1, math.ceil(duration / bar_duration - 1e-9))


def alignment_error(cuts: list[float] | np.ndarray, bar_duration: float) -> float:
    """Mean distance (s) from each cut to its nearest bar line (bar lines at k * bar_duration); 0 if no cuts."""
    times = np.asarray(cuts, dtype=float)
    if times.size == 0:
        return 0.0
    position = times / bar_duration
    return float(np.mean(np.abs(position - np.round(position))) * bar_duration)


def suggested_tempo(tension: float, motion: float = 0.5, cuts_per_minute: float = 0.0) -> float:
    """Tempo (BPM) the mood suggests: calm ~80, tense ~125, nudged up by motion and fast cutting."""
    tempo = CALM_TEMPO + (TENSE_TEMPO - CALM_TEMPO) * float(np.clip(tension, 0.0, 1.0))
    tempo += 10.0 * (float(np.clip(motion, 0.0, 1.0)) - 0.5)
    # 12 cuts a minute is ordinary editing; much faster cutting asks for a few BPM more.
    tempo += 8.0 * float(np.clip((cuts_per_minute - 12.0) / 12.0, -1.0, 1.0))
    return tempo


def choose_tempo(cuts: list[float], target: float, min_tempo: float, max_tempo: float) -> float:
    """Tempo in [min_tempo, max_tempo] whose bar lines best meet ``cuts``, with a pull towards ``target``.

    Score = mean distance of each cut to its nearest bar line, in bars (0..0.5), plus
    TEMPO_PRIOR_WEIGHT * (octaves from target)^2. The alignment term is piecewise linear in the
    tempo with its minima where some cut lands exactly on a bar line, so those tempos (240 k / cut)
    are searched exactly, together with a 0.5 BPM grid and the target itself.
    """
    target = float(np.clip(target, min_tempo, max_tempo))
    times = np.asarray([c for c in cuts if c > 0], dtype=float)
    if times.size == 0:
        return target
    bar_beats = BEATS_PER_BAR * SECONDS_PER_MINUTE  # bars at tempo T last bar_beats / T seconds
    n_exact = float(np.sum(times * (max_tempo - min_tempo) / bar_beats)) + times.size
    n_grid = int((max_tempo - min_tempo) / TEMPO_GRID_STEP) + 1
    parts = [np.linspace(min_tempo, max_tempo, n_grid), [target]]
    if n_exact <= MAX_TEMPO_CANDIDATES:
        for cut in times:
            k = np.arange(math.ceil(cut * min_tempo / bar_beats), math.floor(cut * max_tempo / bar_beats) + 1)
            parts.append(bar_beats * k / cut)
    else:
        parts.append(np.linspace(min_tempo, max_tempo, MAX_TEMPO_CANDIDATES))
    candidates = np.unique(np.clip(np.concatenate(parts), min_tempo, max_tempo))
    scores = np.empty(candidates.size)
    chunk = max(1, 2_000_000 // times.size)  # bound the temporary array
    for i in range(0, candidates.size, chunk):
        tempos = candidates[i : i + chunk, None]
        position = times[None, :] * tempos / bar_beats
        misfit = np.mean(np.abs(position - np.round(position)), axis=1)
        prior = TEMPO_PRIOR_WEIGHT * np.log2(tempos[:, 0] / target) ** 2
        scores[i : i + chunk] = misfit + prior
    return float(candidates[int(np.argmin(scores))])


def make_segments(cut_bars: list[int], n_bars: int) -> list[Segment]:
    """Segments starting at the given bars, merged to >= MIN_SEGMENT_BARS and split into 4/8-bar phrases."""
    bounds = sorted({b for b in cut_bars if 0 < b < n_bars} | {0, n_bars})
    # Merge: repeatedly fold the shortest too-short segment into its shorter neighbour.
    while len(bounds) > 2:
        lengths = np.diff(bounds)
        shortest = int(np.argmin(lengths))
        if lengths[shortest] >= MIN_SEGMENT_BARS:
            break
        if shortest == 0:
            drop = 1
        elif shortest == len(lengths) - 1:
            drop = shortest
        else:
            drop = shortest if lengths[shortest - 1] <= lengths[shortest + 1] else shortest + 1
        del bounds[drop]
    segments = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        for length in _phrase_lengths(end - start):
            segments.append(Segment(start, start + length))
            start += length
    return segments


def _phrase_lengths(n_bars: int) -> list[int]:
    """Split a long run into 8-bar phrases; a remainder under 4 bars turns the last 8 into 4 + (4 + r)."""
    if n_bars <= PHRASE_BARS:
        return [n_bars]
    full, rest = divmod(n_bars, PHRASE_BARS)
    if rest == 0:
        return [PHRASE_BARS] * full
    if rest >= SHORT_PHRASE_BARS:
        return [PHRASE_BARS] * full + [rest]
    return [PHRASE_BARS] * (full - 1) + [SHORT_PHRASE_BARS, SHORT_PHRASE_BARS + rest]


def video_fingerprint(analysis: Any) -> int:
    """A number that stays the same for the same video and differs between videos: a checksum of its
    duration, cut count and mean signals, rounded coarsely enough to survive decoder noise."""
    def mean(name: str) -> float:
        values = getattr(analysis, name, None)
        return float(np.mean(values)) if values is not None and np.size(values) else 0.0

    text = (f"{float(analysis.info.duration):.1f}|{len(analysis.cuts)}|{mean('brightness'):.2f}|"
            f"{mean('colourfulness'):.2f}|{mean('motion'):.2f}")  # fmt: skip
    return zlib.crc32(text.encode())


def choose_key(options: PlanOptions, brightness: float, rng: np.random.Generator) -> Key:
    """The override key, else major for bright moods / minor for dark, tonic drawn from common keys
    (``rng`` is seeded by the seed and the video, so videos spread over keys even with one seed)."""
    if options.key is not None:
        try:
            return Key.parse(options.key)
        except ValueError:
            raise BgmgenError(f"--key {options.key!r} is not a key (try 'A minor', 'F#m' or 'Eb:maj')") from None
    mode = "major" if brightness >= 0.5 else "minor"
    tonics = MAJOR_TONICS if mode == "major" else MINOR_TONICS
    return Key.parse(f"{tonics[int(rng.integers(len(tonics)))]} {mode}")


def _bar_means(analysis: Any, signal: np.ndarray | None, edges: np.ndarray, duration: float) -> np.ndarray:
    """Mean of a per-frame signal over each bar's span (bar lines at ``edges``) within the video (0.5 where there is none)."""
    n_bars = len(edges) - 1
    if signal is None or len(signal) == 0:
        return np.full(n_bars, 0.5)
    values = np.empty(n_bars)
    for bar in range(n_bars):
        start = float(edges[bar])
        end = min(float(edges[bar + 1]), duration)
        values[bar] = analysis.mean_over(signal, start, max(end, start + 1e-3))
    return np.nan_to_num(values, nan=0.5)


def _pool_per_bar(times: np.ndarray, values: np.ndarray, bar_duration: float, n_bars: int) -> np.ndarray:
    """Mean of per-sample ``values`` over each bar; a bar with no sample takes the one nearest its middle."""
    bars = np.floor(times / bar_duration).astype(int)
    middles = (np.arange(n_bars) + 0.5) * bar_duration
    return np.array([
        values[bars == bar].mean() if (bars == bar).any() else values[int(np.argmin(np.abs(times - middles[bar])))]
        for bar in range(n_bars)
    ])


def energy_arc(n_bars: int, cut_bars: list[int], picture: np.ndarray) -> np.ndarray:
    """Per-bar additions that build into big cuts: over the BUILD_BARS before a cut that starts a
    segment, rising to BUILD_LIFT * size, then CUT_LIFT * size on the cut's bar. A cut is big (size up
    to 1) when its shot is long (room to build) and the picture's energy jumps across it."""
    arc = np.zeros(n_bars)
    previous = 0
    for bar in sorted(cut_bars):
        shot_bars = bar - previous
        jump = float(picture[bar] - picture[bar - 1]) if 0 < bar < len(picture) else 0.0
        size = float(np.clip(0.4 + 0.1 * min(shot_bars, 6) + jump, 0.2, 1.0))
        ramp = min(BUILD_BARS, shot_bars - 1)  # never build across the previous cut
        for k in range(1, ramp + 1):
            arc[bar - k] = max(arc[bar - k], BUILD_LIFT * size * (ramp + 1 - k) / ramp)
        arc[bar] = max(arc[bar], CUT_LIFT * size)
        previous = bar
    return arc


def ending_fall(n_bars: int) -> np.ndarray:
    """Per bar 0..1: how far the music has fallen away towards its end (1 on the last bar, 0 before the
    last ENDING_BARS bars; only the last bar when the piece is short)."""
    fall = np.zeros(n_bars)
    span = min(ENDING_BARS, n_bars // 4) if n_bars > 1 else 0
    span = max(span, 1) if n_bars > 1 else 0
    for k in range(span):
        fall[n_bars - 1 - k] = (span - k) / span
    return fall


def _mood_cues(mood: Any) -> dict[str, float]:
    """The cues the video's mood was judged from (pace, cut rate, warmth, saturation, flicker), for the plan file."""
    names = ("pace", "cut_rate", "warmth", "saturation", "flicker")
    return {name: round(float(getattr(mood, name)), 4) for name in names if hasattr(mood, name)}


def caption_for_span(cues: LearnedCues, start: float, end: float) -> str:
    """The caption whose key frame is nearest the middle of ``start..end`` ("" when there are none)."""
    if not cues.captions:
        return ""
    return cues.captions[int(np.argmin(np.abs(cues.caption_times - 0.5 * (start + end))))]


def _levels(curve: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map a per-bar 0..1 curve into [low, high], half absolute level and half its own contour, smoothed."""
    lo, hi = float(curve.min()), float(curve.max())
    # Stretch the contour, but not a nearly flat curve's noise (a span under 0.3 is not stretched to full).
    contour = np.clip(0.5 + (curve - (lo + hi) / 2) / max(hi - lo, 0.3), 0.0, 1.0)
    mixed = 0.5 * np.clip(curve, 0.0, 1.0) + 0.5 * contour
    if mixed.size >= 3:
        padded = np.concatenate([mixed[:1], mixed, mixed[-1:]])
        mixed = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    return low + (high - low) * mixed


def make_plan(analysis: Any, options: PlanOptions = PlanOptions(), bank: ProgressionBank | None = None) -> Plan:
    """Plan the music for an analysed video.

    Takes a ``VideoAnalysis`` (uses ``info.duration``, ``cuts``, ``energy``, ``motion``,
    ``analysis_fps`` via ``mean_over``, and ``mood``), the user's options and a progression bank
    (default: the packaged one). Deterministic for the same inputs. Raises BgmgenError for bad
    options (tempo out of range, unknown key) and ModelError if the default bank is missing.
    """
    duration = float(analysis.info.duration)
    if not duration > 0:
        raise BgmgenError(f"cannot plan music for a video of duration {duration:g} s")
    if options.min_tempo > options.max_tempo:
        raise BgmgenError(f"min tempo {options.min_tempo:g} is above max tempo {options.max_tempo:g}")
    tension, brightness = float(analysis.mood.tension), float(analysis.mood.brightness)
    cues = analysis.learned  # what CLIP and BLIP saw, as data (empty without their weights)
    clip_mood = dict(cues.mood)
    if clip_mood:
        tension = (1 - CLIP_MOOD_WEIGHT) * tension + CLIP_MOOD_WEIGHT * clip_mood["tension"]
        brightness = (1 - CLIP_MOOD_WEIGHT) * brightness + CLIP_MOOD_WEIGHT * clip_mood["brightness"]
    cuts = sorted(float(c) for c in analysis.cuts if 0.0 < float(c) < duration)
    motion = getattr(analysis, "motion", None)
    mean_motion = float(np.mean(motion)) if motion is not None and len(motion) else 0.5

    # 1. Tempo: the user's (one tempo), or a map whose bar lines meet the cuts (one tempo when that fits).
    if options.tempo is not None:
        tempo = float(options.tempo)
        if not TEMPO_LIMITS[0] <= tempo <= TEMPO_LIMITS[1]:
            raise BgmgenError(f"tempo {tempo:g} BPM is outside {TEMPO_LIMITS[0]:g}..{TEMPO_LIMITS[1]:g}")
        tempos = np.full(_bars_for(duration, BEATS_PER_BAR * SECONDS_PER_MINUTE / tempo), tempo)
        beats = np.full(len(tempos), BEATS_PER_BAR)  # one tempo means plain 4/4 too
    else:
        target = suggested_tempo(tension, mean_motion, len(cuts) * SECONDS_PER_MINUTE / duration)
        centre = choose_tempo(cuts, target, options.min_tempo, options.max_tempo)
        fitted, beats = fit_tempo_map(cuts, duration, centre, target, (options.min_tempo, options.max_tempo))
        # A map is rounded for the JSON (0.001 BPM moves a bar line by microseconds), which also merges
        # the solver's last-digit noise into one tempo.
        if np.ptp(fitted) > 0:
            fitted = np.round(fitted, 3)
            tempos = bars_to_cover(duration, fitted, float(fitted[-1]), beats)
            beats = np.concatenate([beats, np.full(len(tempos) - len(beats), BEATS_PER_BAR)])
        else:
            tempos = fitted
    tempo, tempo_map = changes_from_tempos(tempos)
    n_bars = len(tempos)
    aligned = cut_alignment(cuts, tempos, beats=beats)
    error = aligned.mean_error
    log.info("plan: %.2f BPM (%.1f..%.1f, %d changes), %d bars (%d short), cuts off their bar lines by %.3f s on average",
             tempo, tempos.min(), tempos.max(), len(tempo_map), n_bars, int(np.sum(beats != BEATS_PER_BAR)), error)  # fmt: skip
    edges = bar_edges(tempos, beats)

    # 2. Segments: cuts on bar lines start segments, merged/split to phrase sizes; every cut gets a hit.
    # Only cuts on a downbeat start a segment there; the others get a hit on their beat.
    cut_bars = sorted({int(b) for b, down in zip(aligned.bar_lines, aligned.on_downbeat) if down})
    segments = make_segments(cut_bars, n_bars)

    # 3. Key and chords: a fresh progression per segment, a cadence in the last one.
    rng = np.random.default_rng(options.seed)
    key = choose_key(options, brightness, np.random.default_rng([options.seed, video_fingerprint(analysis)]))
    bank = bank if bank is not None else ProgressionBank.load()
    energy_curve = _bar_means(analysis, analysis.energy, edges, duration)
    if len(cues.frame_times):
        positions = position_of_time(np.asarray(cues.frame_times, float), tempos, edges)
        clip_tension = _pool_per_bar(np.atleast_1d(positions), cues.frame_tension, 1.0, n_bars)
        energy_curve = (1 - CLIP_ENERGY_WEIGHT) * energy_curve + CLIP_ENERGY_WEIGHT * clip_tension
    chords: list[str] = []
    reusable: dict[tuple[int, bool], list[str]] = {}
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        # Segments of the same length and energy class may repeat their progression (verse-like).
        kind = (segment.n_bars, bool(energy_curve[segment.start_bar : segment.end_bar].mean() >= 0.5))
        if not last and kind in reusable and rng.random() < 0.5:
            labels = reusable[kind]
        else:
            labels = [c.harte for c in bank.sample(key, segment.n_bars, rng, cadence=last)]
            if not last:
                reusable.setdefault(kind, labels)
        chords.extend(labels)

    # 4. Per-bar levels: follow the picture's energy, ranged by tension; an arc on top: build into big
    # cuts, lift on them, fall away over the last bars.
    motion_curve = _bar_means(analysis, motion, edges, duration)
    energy = _levels(energy_curve, 0.15 + 0.3 * tension, 0.55 + 0.45 * tension)
    density = _levels(0.7 * energy_curve + 0.3 * motion_curve, 0.1 + 0.3 * tension, 0.5 + 0.5 * tension)
    arc = energy_arc(n_bars, [s.start_bar for s in segments[1:] if s.start_bar in cut_bars], energy_curve)
    energy, density = energy + arc, density + arc
    fall = ending_fall(n_bars)
    energy *= 1.0 - (1.0 - ENDING_ENERGY) * fall
    density *= 1.0 - (1.0 - ENDING_DENSITY) * fall

    plan = Plan(
        duration=duration,
        tempo=tempo,
        n_bars=n_bars,
        key=key.label,
        segments=segments,
        chords=chords,
        density=[round(float(v), 4) for v in np.clip(density, 0.0, 1.0)],
        energy=[round(float(v), 4) for v in np.clip(energy, 0.0, 1.0)],
        cuts=cuts,
        cut_alignment_error=error,
        mood={"tension": tension, "brightness": brightness, **_mood_cues(analysis.mood)},
        seed=options.seed,
        clip_mood=clip_mood,
        analysers=[str(a) for a in getattr(analysis, "analysers", [])],
        style=options.style if options.style is not None else default_style(tension, brightness, tempo),
        tempo_map=tempo_map,
        short_bars=short_bars_from_beats(beats),
        hits=[h for h in hit_steps(aligned) if h < n_bars * STEPS_PER_BAR],
        cut_alignment={k: round(v, 4) for k, v in aligned.figures().items()},
    )
    if cues.captions:
        spans = [(plan.bar_start(s.start_bar), min(plan.bar_start(s.end_bar), duration)) for s in segments]
        plan.captions = [caption_for_span(cues, start, end) for start, end in spans]
    plan.validate()
    return plan
