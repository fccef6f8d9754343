"""Writing music for a plan: consecutive 8-bar windows, each continuing the last.

``MusicGenerator(model, info, device).generate(plan, seed)`` returns one piano roll covering all
the plan's bars. Windows start every ``HOP_BARS`` bars; each is given the last ``OVERLAP_BARS`` of
the previous window as known context, which the model was trained to continue, so phrases carry
over window boundaries instead of being cut (Diff-BGM generated windows independently).
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
from bgmgen.music.roll import BARS_PER_WINDOW, N_PITCHES, STEPS_PER_BAR, WINDOW_STEPS, GeneratedParts, split_top_line
from bgmgen.music.sampler import SamplerOptions, sample_rolls
from bgmgen.music.unet import MusicUNet
from bgmgen.weights import default_checkpoint

log = logging.getLogger("bgmgen")

OVERLAP_BARS = 2
HOP_BARS = BARS_PER_WINDOW - OVERLAP_BARS


def level_to_feature(level: float, quantiles: list[float]) -> float:
    """Map a plan level 0..1 onto the training range of a bar feature (5th to 95th percentile)."""
    low, _, high = quantiles
    return float(low + np.clip(level, 0.0, 1.0) * (high - low))


def window_conditions(plan: Plan, start_bar: int, quantiles: dict[str, list[float]]) -> WindowConditions:
    """Conditions for bars ``start_bar .. start_bar+8`` of the plan; bars past its end repeat the last."""
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
                level_to_feature(plan.density[b], quantiles["density"]),
                level_to_feature(plan.energy[b], quantiles["energy"]),
                # Brighter pictures sit a little higher on the keyboard.
                level_to_feature(0.5 + 0.4 * (brightness - 0.5), quantiles["register"]),
                level_to_feature(plan.density[b], quantiles["polyphony"]),
            ]
            for b in bars
        ],
        dtype=np.float32,
    )
    segments = np.array([plan.segment_of_bar(int(b)) for b in bars])
    # Bars past the end belong to no real segment; keep them with the last one.
    return WindowConditions(chroma, root.astype(np.int64), bass.astype(np.int64), features, segments)


class MusicGenerator:
    """Holds a loaded model and writes rolls for plans."""

    def __init__(self, model: MusicUNet, info: ModelInfo, device: str | torch.device = "cpu", options: SamplerOptions = SamplerOptions()):
        self.model = model.to(device).eval()
        self.info = info
        self.device = torch.device(device)
        self.options = options

    @classmethod
    def from_checkpoint(cls, path: Path | None = None, device: str = "cpu", options: SamplerOptions = SamplerOptions()) -> MusicGenerator:
        model, info = load_checkpoint(path or default_checkpoint(), device)
        return cls(model, info, device, options)

    def generate(self, plan: Plan, seed: int = 0, progress: Callable[[float], None] | None = None) -> np.ndarray:
        """A binary roll ``[2, plan.n_bars * 16, 88]`` for the whole plan."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        starts = list(range(0, max(plan.n_bars - OVERLAP_BARS, 1), HOP_BARS))
        total_steps = max(plan.n_bars, starts[-1] + BARS_PER_WINDOW) * STEPS_PER_BAR
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

    def generate_parts(self, plan: Plan, seed: int = 0, progress: Callable[[float], None] | None = None) -> GeneratedParts:
        """The music by part; this model writes one roll, whose top line is taken as the melody."""
        return split_top_line(self.generate(plan, seed, progress))
