"""Writing music for a plan: consecutive 8-bar windows, each continuing the last.

``MusicGenerator(model, info, device).generate_parts(plan, seed)`` returns the melody and the
accompaniment, each a piano roll covering all the plan's bars (``generate`` returns both in one).
Windows start every ``HOP_BARS`` bars; each is given the last ``OVERLAP_BARS`` of the previous window
as known context, which the model was trained to continue, so phrases carry over window boundaries
instead of being cut (Diff-BGM generated windows independently).

With an accompaniment checkpoint (``ModelInfo.part``) the generator is a cascade, as in whole-song
hierarchical generation (Wang et al., ICLR 2024): for each window the small melody model writes the
tune over the plan's chords, then the accompaniment model writes the rest given that melody as
aligned input. The melody is read as one voice (``one_voice``), and a segment that returns with the
same chords as an earlier one takes up that segment's melody (``returning_phrases``), so the piece
has a theme. A single-roll checkpoint (``part == "all"``) falls back to taking its top line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bgmgen.music.checkpoint import ModelInfo, load_checkpoint
from bgmgen.music.conditioning import WindowConditions, stack_windows
from bgmgen.music.plan import Plan
from bgmgen.errors import ModelError
from bgmgen.music.roll import (
    BARS_PER_WINDOW,
    N_PITCHES,
    ONSET,
    PITCH_LOW,
    STEPS_PER_BAR,
    SUSTAIN,
    WINDOW_STEPS,
    GeneratedParts,
    split_top_line,
)
from bgmgen.music.sampler import SamplerOptions, sample_rolls
from bgmgen.music.unet import MusicUNet
from bgmgen.weights import MELODY_CHECKPOINT_NAME, default_checkpoint, default_melody_checkpoint

log = logging.getLogger("bgmgen")

OVERLAP_BARS = 2
HOP_BARS = BARS_PER_WINDOW - OVERLAP_BARS
# Where a tune may lie (MIDI pitches G3..E6; 98 % of POP909's held-out melody notes lie in 58..86):
# notes the melody model writes outside are moved by octaves into it.
MELODY_LOW, MELODY_HIGH = 55, 88
# Onset threshold of ``decode_one_voice``, chosen on validation windows (docs/music-quality.md).
MELODY_ONSET_THRESHOLD = 0.2
# A tune's density and loudness vary far less than its accompaniment's: plans' levels of 0.2-0.4 for calm
# pictures, mapped like the accompaniment's (0 -> 5th, 1 -> 95th percentile), asked the melody model for
# 1-2 notes a bar with a quarter of the bars empty. So the melody is asked for POP909's median melody at
# the usual plan level, and the plan moves it half as far (docs/music-quality.md).
MELODY_LEVEL_CENTRE, MELODY_LEVEL_SPREAD = 0.35, 0.5


def melody_checkpoint_for(path: Path) -> Path:
    """The melody model that goes with the accompaniment checkpoint at ``path``: the file beside it."""
    return Path(path).with_name(MELODY_CHECKPOINT_NAME)


def one_voice(roll: np.ndarray, low: int = MELODY_LOW, high: int = MELODY_HIGH) -> np.ndarray:
    """A melody roll read as one voice: at each onset step the highest onset is kept, every note
    lasts until the next onset at most, and pitches outside ``low..high`` move by octaves into it.
    (Constrained decoding of the melody model's output: a lead sheet's tune is one line.)"""
    out = np.zeros_like(roll)
    onsets = roll[ONSET] > 0
    sustains = roll[SUSTAIN] > 0
    steps = np.flatnonzero(onsets.any(axis=1))
    for i, step in enumerate(steps):
        col = int(np.flatnonzero(onsets[step])[-1])
        end = steps[i + 1] if i + 1 < len(steps) else roll.shape[1]
        length = 1
        while step + length < end and sustains[step + length, col]:
            length += 1
        pitch = col + PITCH_LOW
        while pitch < low:
            pitch += 12
        while pitch > high:
            pitch -= 12
        out[ONSET, step, pitch - PITCH_LOW] = 1
        out[SUSTAIN, step + 1 : step + length, pitch - PITCH_LOW] = 1
    return out


def decode_one_voice(soft: np.ndarray, onset_threshold: float, low: int = MELODY_LOW, high: int = MELODY_HIGH) -> np.ndarray:
    """One voice decoded from the melody model's clean-roll estimate ``soft`` [2, steps, 88] in 0..1:
    a note starts at each step whose most likely onset pitch (within ``low..high``) is above
    ``onset_threshold``, on that pitch, and lasts while its sustain stays above half the threshold
    (until the next onset at most). Constrained decoding: a tune is one line, and a small model's
    estimate often spreads one note's certainty over neighbouring pitches, so no single cell of it
    passes the plain 0.5 a polyphonic part is read with."""
    columns = slice(low - PITCH_LOW, high - PITCH_LOW + 1)
    onset = soft[ONSET][:, columns]
    best = onset.argmax(axis=1)
    starts = np.flatnonzero(onset.max(axis=1) > onset_threshold)
    out = np.zeros_like(soft)
    for i, step in enumerate(starts):
        col = int(best[step]) + low - PITCH_LOW
        end = starts[i + 1] if i + 1 < len(starts) else soft.shape[1]
        length = 1
        while step + length < end and soft[SUSTAIN, step + length, col] > onset_threshold / 2:
            length += 1
        out[ONSET, step, col] = 1
        out[SUSTAIN, step + 1 : step + length, col] = 1
    return out


def returning_phrases(plan: Plan) -> dict[int, int]:
    """Segments that return: ``{later segment: earlier segment}`` for each segment with the same
    number of bars and the same chords as an earlier one (the plan repeats a progression for a
    segment of the same length and energy class). The first such earlier segment is the source."""
    sources: dict[tuple, int] = {}
    returns = {}
    for index, segment in enumerate(plan.segments):
        key = (segment.n_bars, tuple(plan.chords[2 * segment.start_bar : 2 * segment.end_bar]))
        if key in sources:
            returns[index] = sources[key]
        else:
            sources[key] = index
    return returns


def level_to_feature(level: float, quantiles: list[float]) -> float:
    """Map a plan level 0..1 onto the training range of a bar feature (5th to 95th percentile)."""
    low, _, high = quantiles
    return float(low + np.clip(level, 0.0, 1.0) * (high - low))


def tune_level_to_feature(level: float, quantiles: list[float]) -> float:
    """Map a plan level onto a melody bar feature: the median at the plan's usual level, moved by
    ``MELODY_LEVEL_SPREAD`` of the 5-95 % range per unit of level, within that range."""
    low, median, high = quantiles
    return float(np.clip(median + MELODY_LEVEL_SPREAD * (level - MELODY_LEVEL_CENTRE) * (high - low), low, high))


def window_conditions(plan: Plan, start_bar: int, quantiles: dict[str, list[float]], tune: bool = False) -> WindowConditions:
    """Conditions for bars ``start_bar .. start_bar+8`` of the plan; bars past its end repeat the last.
    ``tune``: for the melody model (density, energy and polyphony through ``tune_level_to_feature``)."""
    level = tune_level_to_feature if tune else level_to_feature
    bars = np.minimum(np.arange(start_bar, start_bar + BARS_PER_WINDOW), plan.n_bars - 1)
    chords = plan.chord_objects()
    half_bars = np.minimum(np.arange(2 * start_bar, 2 * start_bar + 2 * BARS_PER_WINDOW), 2 * plan.n_bars - 1)
    chroma = np.repeat(np.array([chords[h].chroma for h in half_bars], dtype=np.float32), STEPS_PER_BAR // 2, axis=0)
    root = np.repeat([-1 if chords[h].root is None else chords[h].root for h in half_bars], STEPS_PER_BAR // 2)
    bass = np.repeat([-1 if chords[h].bass is None else chords[h].bass for h in half_bars], STEPS_PER_BAR // 2)
    brightness = plan.mood.get("brightness", 0.5)
    features = np.array(
        [
            [
                level(plan.density[b], quantiles["density"]),
                level(plan.energy[b], quantiles["energy"]),
                # Brighter pictures sit a little higher on the keyboard.
                level_to_feature(0.5 + 0.4 * (brightness - 0.5), quantiles["register"]),
                level(plan.density[b], quantiles["polyphony"]),
            ]
            for b in bars
        ],
        dtype=np.float32,
    )
    segments = np.array([plan.segment_of_bar(int(b)) for b in bars])
    # Bars past the end belong to no real segment; keep them with the last one.
    return WindowConditions(chroma, root.astype(np.int64), bass.astype(np.int64), features, segments)


class MusicGenerator:
    """Holds a loaded model (and, for a cascade, the melody model) and writes rolls for plans."""

    def __init__(self, model: MusicUNet, info: ModelInfo, device: str | torch.device = "cpu", options: SamplerOptions = SamplerOptions(),
                 melody_model: MusicUNet | None = None, melody_info: ModelInfo | None = None):
        if info.part == "accompaniment" and melody_model is None:
            raise ModelError("an accompaniment model needs a melody model to go with it")
        self.model = model.to(device).eval()
        self.info = info
        self.melody_model = None if melody_model is None else melody_model.to(device).eval()
        self.melody_info = melody_info
        self.device = torch.device(device)
        self.options = options

    @classmethod
    def from_checkpoint(cls, path: Path | None = None, device: str = "cpu", options: SamplerOptions = SamplerOptions(),
                        melody_path: Path | None = None) -> MusicGenerator:
        """Load a checkpoint; an accompaniment one brings its melody model (``melody_path``, or the
        file beside it named ``MELODY_CHECKPOINT_NAME``)."""
        if path is None:  # the shipped cascade, in the checkout or an installed prefix
            path, melody_path = default_checkpoint(), melody_path or default_melody_checkpoint()
        model, info = load_checkpoint(path, device)
        melody_model = melody_info = None
        if info.part == "accompaniment":
            melody_path = melody_path or melody_checkpoint_for(path)
            melody_model, melody_info = load_checkpoint(melody_path, device)
            if melody_info.part != "melody":
                raise ModelError(f"{melody_path} is not a melody model (it writes {melody_info.part!r})")
        elif info.part == "melody":
            raise ModelError(f"{path} is a melody model: load the accompaniment checkpoint that goes with it")
        return cls(model, info, device, options, melody_model, melody_info)

    def generate(self, plan: Plan, seed: int = 0, progress: Callable[[float], None] | None = None) -> np.ndarray:
        """A binary roll ``[2, plan.n_bars * 16, 88]`` for the whole plan (every part in one)."""
        if self.melody_model is None:
            return self._single_roll(plan, seed, progress)
        return self.generate_parts(plan, seed, progress).combined()

    def generate_parts(self, plan: Plan, seed: int = 0, progress: Callable[[float], None] | None = None) -> GeneratedParts:
        """The music by part: the cascade's melody and accompaniment, or a single-roll model's top
        line and the rest."""
        if self.melody_model is None:
            return split_top_line(self._single_roll(plan, seed, progress))
        generator = torch.Generator(device=self.device).manual_seed(seed)
        starts, total_steps = _window_starts(plan)
        melody = np.zeros((2, total_steps, N_PITCHES), dtype=np.float32)
        accompaniment = np.zeros_like(melody)
        returns = returning_phrases(plan)
        for i, start in enumerate(starts):
            first = start * STEPS_PER_BAR
            known = 0 if i == 0 else OVERLAP_BARS * STEPS_PER_BAR
            span = slice(first, first + WINDOW_STEPS)
            # 1. The tune over the chords, continuing the last window's.
            cond = window_conditions(plan, start, self.melody_info.feature_quantiles, tune=True)
            batch = stack_windows([cond], melody[None, :, span], [known], device=self.device)
            soft = sample_rolls(self.melody_model, batch, self.options, generator, binary=False)[0].cpu().numpy()
            melody[:, first + known : first + WINDOW_STEPS] = decode_one_voice(soft, MELODY_ONSET_THRESHOLD)[:, known:]
            _take_up_returning(melody, plan, returns, new_bars=range(start + known // STEPS_PER_BAR, start + BARS_PER_WINDOW))
            # 2. The accompaniment under that tune.
            cond = window_conditions(plan, start, self.info.feature_quantiles)
            batch = stack_windows([cond], accompaniment[None, :, span], [known], device=self.device, melody_rolls=melody[None, :, span])
            window = sample_rolls(self.model, batch, self.options, generator)[0].cpu().numpy()
            accompaniment[:, first + known : first + WINDOW_STEPS] = window[:, known:]
            if progress:
                progress((i + 1) / len(starts))
        steps = plan.n_bars * STEPS_PER_BAR
        return GeneratedParts(melody[:, :steps], accompaniment[:, :steps])

    def _single_roll(self, plan: Plan, seed: int, progress: Callable[[float], None] | None) -> np.ndarray:
        """A single-roll model's music for the whole plan."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        starts, total_steps = _window_starts(plan)
        roll = np.zeros((2, total_steps, N_PITCHES), dtype=np.float32)
        for i, start in enumerate(starts):
            cond = window_conditions(plan, start, self.info.feature_quantiles)
            first = start * STEPS_PER_BAR
            known = 0 if i == 0 else OVERLAP_BARS * STEPS_PER_BAR
            context = roll[None, :, first : first + WINDOW_STEPS]
            batch = stack_windows([cond], context, [known], device=self.device)
            window = sample_rolls(self.model, batch, self.options, generator)[0].cpu().numpy()
            # Keep the known bars as they were; take the rest from the new window.
            roll[:, first + known : first + WINDOW_STEPS] = window[:, known:]
            if progress:
                progress((i + 1) / len(starts))
        return roll[:, : plan.n_bars * STEPS_PER_BAR]


def _window_starts(plan: Plan) -> tuple[list[int], int]:
    """First bar of every window, and the steps the windows cover (at least the plan's)."""
    starts = list(range(0, max(plan.n_bars - OVERLAP_BARS, 1), HOP_BARS))
    return starts, max(plan.n_bars, starts[-1] + BARS_PER_WINDOW) * STEPS_PER_BAR


def _take_up_returning(melody: np.ndarray, plan: Plan, returns: dict[int, int], new_bars: range) -> None:
    """Copy an earlier segment's melody into the bars of ``new_bars`` whose segment returns (same
    chords); the earlier bars are written (in this window or before). The model's own bars stay
    elsewhere, and the bars after a returning segment continue from it as the next window's context."""
    for bar in new_bars:
        if bar >= plan.n_bars:
            break
        segment = plan.segment_of_bar(bar)
        if segment not in returns:
            continue
        source = plan.segments[returns[segment]].start_bar + bar - plan.segments[segment].start_bar
        if source < bar:
            melody[:, bar * STEPS_PER_BAR : (bar + 1) * STEPS_PER_BAR] = melody[:, source * STEPS_PER_BAR : (source + 1) * STEPS_PER_BAR]
