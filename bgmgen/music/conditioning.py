"""What the music model is conditioned on, for one 8-bar window, and how it becomes tensors.

The same conditions come from real music when training (``pop909.Corpus.windows``) and from a
video's plan when scoring (built in ``generate.py``), so that what the plan asks for is what the
model learned to obey.

Two views reach the network:
- aligned channels, one value per time step: a chord-tone mask and a bass mask over the 88 pitches
  (so harmony need not be learned through attention alone), the per-bar control features, a
  segment-start flag and the position in the bar;
- tokens, one per half bar, for cross-attention: chord (chroma, root, bass) and the bar's features.
Segment ids per bar drive the segment-aware attention mask (SAC-Att).

In the melody-then-accompaniment cascade the accompaniment model also gets the melody, as a roll
aligned with its own (``ConditionBatch.melody``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from bgmgen.music.roll import BARS_PER_WINDOW, N_PITCHES, ONSET, PITCH_LOW, STEPS_PER_BAR

BAR_FEATURES = ("density", "energy", "register", "polyphony")
N_BAR_FEATURES = len(BAR_FEATURES)
DENSITY_SCALE = np.log1p(64.0)  # density feature = log1p(onsets in bar) / log1p(64)
POLYPHONY_SCALE = 8.0  # polyphony feature = mean sounding notes per step / 8
HALF_BARS = 2 * BARS_PER_WINDOW
STEPS_PER_HALF_BAR = STEPS_PER_BAR // 2
N_TOKEN_FEATURES = 12 + 13 + 13 + N_BAR_FEATURES + 1  # chroma, root one-hot (+none), bass one-hot (+none), bar features, segment start
N_ALIGNED_CHANNELS = 2 * N_PITCHES + N_BAR_FEATURES + 1 + 2  # chord mask, bass mask, features, segment start, bar phase
N_CONTEXT_CHANNELS = 2 * N_PITCHES + 1  # known roll and its mask, for continuing a previous window

_PITCH_CLASS_OF_COLUMN = (np.arange(N_PITCHES) + PITCH_LOW) % 12


@dataclass
class WindowConditions:
    """Conditions of one window; every array covers ``WINDOW_STEPS`` steps or ``BARS_PER_WINDOW`` bars."""

    chroma: np.ndarray  # [WINDOW_STEPS, 12] 0/1 chord tones per step; all zero = no chord
    root: np.ndarray  # [WINDOW_STEPS] pitch class of the chord root, -1 = no chord
    bass: np.ndarray  # [WINDOW_STEPS] pitch class of the bass, -1 = no chord
    bar_features: np.ndarray  # [BARS_PER_WINDOW, N_BAR_FEATURES] in 0..1
    segment_ids: np.ndarray  # [BARS_PER_WINDOW] int, equal ids = same segment

    def transpose(self, semitones: int) -> WindowConditions:
        """The same conditions a given number of semitones higher (register follows)."""
        features = self.bar_features.copy()
        features[:, 2] = np.clip(features[:, 2] + semitones / N_PITCHES, 0.0, 1.0)
        return WindowConditions(
            chroma=np.roll(self.chroma, semitones, axis=1),
            root=np.where(self.root >= 0, (self.root + semitones) % 12, -1),
            bass=np.where(self.bass >= 0, (self.bass + semitones) % 12, -1),
            bar_features=features,
            segment_ids=self.segment_ids,
        )


def bar_features_from_roll(roll: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """Per-bar control features measured on music: ``roll`` [2, steps, 88], ``velocity`` [steps, 88].

    Returns [bars, N_BAR_FEATURES]: onset density, mean onset velocity, mean onset pitch (register)
    and mean number of sounding notes per step, each scaled to about 0..1.
    """
    n_bars = roll.shape[1] // STEPS_PER_BAR
    onsets = roll[ONSET, : n_bars * STEPS_PER_BAR].reshape(n_bars, STEPS_PER_BAR, N_PITCHES)
    sounding = roll[:, : n_bars * STEPS_PER_BAR].max(axis=0).reshape(n_bars, STEPS_PER_BAR, N_PITCHES)
    vel = velocity[: n_bars * STEPS_PER_BAR].reshape(n_bars, STEPS_PER_BAR, N_PITCHES)
    counts = onsets.sum(axis=(1, 2))
    safe = np.maximum(counts, 1)
    density = np.log1p(counts) / DENSITY_SCALE
    energy = (vel * onsets).sum(axis=(1, 2)) / safe / 127.0
    register = (onsets.sum(axis=1) * np.arange(N_PITCHES)).sum(axis=1) / safe / N_PITCHES
    register = np.where(counts > 0, register, 0.5)
    polyphony = sounding.sum(axis=2).mean(axis=1) / POLYPHONY_SCALE
    features = np.stack([density, energy, register, polyphony], axis=1)
    return np.clip(features, 0.0, 1.0).astype(np.float32)


@dataclass
class ConditionBatch:
    """Tensors for a batch of windows, ready for the network (see ``unet.MusicUNet.forward``)."""

    aligned: torch.Tensor  # [B, N_ALIGNED_CHANNELS, WINDOW_STEPS]
    tokens: torch.Tensor  # [B, HALF_BARS, N_TOKEN_FEATURES]
    segment_ids: torch.Tensor  # [B, BARS_PER_WINDOW] long
    context: torch.Tensor  # [B, N_CONTEXT_CHANNELS, WINDOW_STEPS]
    video: torch.Tensor | None = None  # [B, BARS_PER_WINDOW, video_dim] per-bar visual features (paired models)
    text: torch.Tensor | None = None  # [B, BARS_PER_WINDOW, text_dim] caption features of each bar's segment
    melody: torch.Tensor | None = None  # [B, 2*88, WINDOW_STEPS] 0/1 melody roll the accompaniment goes with

    def _map(self, fn) -> ConditionBatch:
        return ConditionBatch(*(None if t is None else fn(t) for t in (
            self.aligned, self.tokens, self.segment_ids, self.context, self.video, self.text, self.melody)))

    def to(self, device) -> ConditionBatch:
        return self._map(lambda t: t.to(device))

    def slice(self, start: int, stop: int) -> ConditionBatch:
        """Windows ``start:stop`` of the batch."""
        return self._map(lambda t: t[start:stop])

    def repeat(self, n: int) -> ConditionBatch:
        """The batch stacked ``n`` times (for the guided and unguided halves of one forward pass)."""
        return self._map(lambda t: t.repeat(n, *([1] * (t.dim() - 1))))


def build_batch(chroma, root, bass, bar_features, segment_ids, context_roll=None, known_steps=None, melody_roll=None) -> ConditionBatch:
    """Turn batched conditions (torch tensors on any device) into network inputs.

    ``chroma`` [B, T, 12] float, ``root``/``bass`` [B, T] long (-1 none), ``bar_features``
    [B, BARS, F], ``segment_ids`` [B, BARS] long, ``context_roll`` [B, 2, T, 88] (optional) with
    ``known_steps`` [B] long: how many leading steps of it are given; ``melody_roll`` [B, 2, T, 88]
    (optional): the melody an accompaniment model writes under.
    """
    import torch

    device = chroma.device
    batch, steps = chroma.shape[:2]
    pitch_class = torch.as_tensor(_PITCH_CLASS_OF_COLUMN, device=device)
    chord_mask = chroma[:, :, pitch_class]  # [B, T, 88]
    bass_mask = (bass[:, :, None] == pitch_class).float()
    step_bar = torch.arange(steps, device=device) // STEPS_PER_BAR
    features = bar_features[:, step_bar]  # [B, T, F]
    first_of_segment = torch.ones_like(segment_ids, dtype=torch.bool)
    first_of_segment[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    step_in_bar = torch.arange(steps, device=device) % STEPS_PER_BAR
    segment_start = (first_of_segment[:, step_bar] & (step_in_bar == 0)).float()
    phase = 2 * torch.pi * step_in_bar.float() / STEPS_PER_BAR
    phase = torch.stack([phase.sin(), phase.cos()], dim=1).expand(batch, steps, 2)
    aligned = torch.cat([chord_mask, bass_mask, features, segment_start[:, :, None], phase], dim=2)

    mid = torch.arange(HALF_BARS, device=device) * STEPS_PER_HALF_BAR + STEPS_PER_HALF_BAR // 2
    half_bar_bar = torch.arange(HALF_BARS, device=device) // 2
    root_onehot = torch.nn.functional.one_hot(torch.where(root[:, mid] >= 0, root[:, mid], 12), 13).float()
    bass_onehot = torch.nn.functional.one_hot(torch.where(bass[:, mid] >= 0, bass[:, mid], 12), 13).float()
    token_start = (first_of_segment[:, half_bar_bar] & (torch.arange(HALF_BARS, device=device) % 2 == 0)).float()
    token_features = torch.cat(
        [chroma[:, mid], root_onehot, bass_onehot, bar_features[:, half_bar_bar], token_start[:, :, None]], dim=2
    )

    context = torch.zeros(batch, N_CONTEXT_CHANNELS, steps, device=device)
    if context_roll is not None:
        known = (torch.arange(steps, device=device)[None, :] < known_steps[:, None]).float()  # [B, T]
        rolled = context_roll.permute(0, 1, 3, 2).reshape(batch, 2 * N_PITCHES, steps)
        context[:, : 2 * N_PITCHES] = rolled * known[:, None, :]
        context[:, -1] = known
    melody = None
    if melody_roll is not None:
        melody = melody_roll.permute(0, 1, 3, 2).reshape(batch, 2 * N_PITCHES, steps).float().contiguous()
    return ConditionBatch(aligned.transpose(1, 2).contiguous(), token_features, segment_ids.long(), context, melody=melody)


def stack_windows(conds: list[WindowConditions], context_rolls: np.ndarray | None = None, known_steps: list[int] | None = None,
                  device="cpu", melody_rolls: np.ndarray | None = None) -> ConditionBatch:
    """``build_batch`` for a list of numpy ``WindowConditions``."""
    import torch

    def t(name, dtype):
        return torch.as_tensor(np.stack([getattr(c, name) for c in conds]), dtype=dtype, device=device)

    ctx = None if context_rolls is None else torch.as_tensor(context_rolls, dtype=torch.float32, device=device)
    known = None if known_steps is None else torch.as_tensor(known_steps, dtype=torch.long, device=device)
    melody = None if melody_rolls is None else torch.as_tensor(melody_rolls, dtype=torch.float32, device=device)
    return build_batch(
        t("chroma", torch.float32), t("root", torch.long), t("bass", torch.long),
        t("bar_features", torch.float32), t("segment_ids", torch.long), ctx, known, melody,
    )
