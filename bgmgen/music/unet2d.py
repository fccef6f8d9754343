"""The paper's backbone, for training on a GPU: a 2D UNet over the roll as an image (time x pitch).

Diff-BGM denoises the 2x128x128 roll with a Stable-Diffusion-style UNet (64-128-256-256 channels,
attention at the two coarse levels and in the middle). This module builds that shape over our
88-pitch roll (padded to 96 columns) with the same inputs and outputs as ``model.MusicUNet``, so
``UNetConfig(backbone="paper2d")`` trains and samples through the same code. On 2 CPU cores it is
~25x slower to train than the temporal 1D UNet (docs/measurements), hence not the default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bgmgen.music.conditioning import ConditionBatch
from bgmgen.music.roll import N_PITCHES
from bgmgen.music.unet import Attention, ConditionalUNet, CrossContext, UNetConfig, segment_attention_mask

PADDED_PITCHES = 96  # divisible by 2**3 for three downsamplings
N_FEATURE_CHANNELS = 7  # bar features (4), segment start, bar phase (2): broadcast over pitch


class ResBlock2d(nn.Module):
    def __init__(self, cin: int, cout: int, time_dim: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(time_dim, cout)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(temb)[:, :, None, None]
        return self.conv2(F.silu(self.norm2(h))) + self.skip(x)


class SpatialTransformer(nn.Module):
    """Self-attention over all cells, SAC-masked cross-attention to tokens, feed-forward."""

    def __init__(self, channels: int, token_dim: int, heads: int, groups: int, ff_mult: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(3))
        self.self_attn = Attention(channels, channels, heads)
        self.cross_attn = Attention(channels, token_dim, heads)
        self.ff = nn.Sequential(nn.Linear(channels, ff_mult * channels), nn.GELU(), nn.Linear(ff_mult * channels, channels))

    def cross_context(self, tokens: torch.Tensor, segment_ids: torch.Tensor | None, shape: torch.Size) -> CrossContext:
        """The cross-attention's keys, values and SAC-Att mask for feature maps of ``shape`` [B, C, H, W]."""
        mask = None
        if segment_ids is not None:
            mask = segment_attention_mask(segment_ids, shape[2], tokens.shape[1]).repeat_interleave(shape[3], dim=1)[:, None]
        return CrossContext(*self.cross_attn.keys_values(tokens), mask)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, segment_ids: torch.Tensor | None,
                cross: CrossContext | None = None) -> torch.Tensor:
        b, c, height, width = x.shape
        cross = cross or self.cross_context(tokens, segment_ids, x.shape)
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, H*W, C], time-major as in the paper
        s = self.norms[0](h)
        h = h + self.self_attn(s, s)
        h = h + self.cross_attn.attend(self.norms[1](h), cross.keys, cross.values, cross.mask)
        h = h + self.ff(self.norms[2](h))
        return x + h.transpose(1, 2).reshape(b, c, height, width)


class PaperUNet2D(ConditionalUNet):
    """``forward(x_t, t, cond) -> logits [B, 2*88, T]``, the same contract as ``MusicUNet``."""

    res_block = ResBlock2d
    attention_block = SpatialTransformer
    dims = 2

    def __init__(self, config: UNetConfig):
        # Roll (2) + chord and bass masks (2) + broadcast features + context roll (2) and its mask (1).
        super().__init__(config, 2 + 2 + N_FEATURE_CHANNELS + 3, 2)

    def forward(self, x, t, cond: ConditionBatch, drop_condition=None, segment_aware: bool = True) -> torch.Tensor:
        prepared = self.prepared(cond, drop_condition, segment_aware)
        aligned, cond = prepared.aligned, prepared.cond
        batch, steps = x.shape[0], x.shape[2]

        def image(a: torch.Tensor, n: int) -> torch.Tensor:  # [B, n*88, T] -> [B, n, T, 96]
            return F.pad(a.view(batch, n, N_PITCHES, steps).transpose(2, 3), (0, PADDED_PITCHES - N_PITCHES))

        features = aligned[:, 2 * N_PITCHES :, :, None].expand(-1, -1, -1, PADDED_PITCHES)
        known = cond.context[:, -1:, :, None].expand(-1, -1, -1, PADDED_PITCHES)
        h = torch.cat([image(x, 2), image(aligned[:, : 2 * N_PITCHES], 2), features,
                       image(cond.context[:, : 2 * N_PITCHES], 2), known], dim=1)
        h = self.conv_in(h)
        h = self.run_unet(h if prepared.inputs_term is None else h + prepared.inputs_term, t, prepared)
        out = self.conv_out(h)[..., :N_PITCHES]  # [B, 2, T, 88]
        return out.transpose(2, 3).reshape(batch, 2 * N_PITCHES, steps)


PAPER_CONFIG = UNetConfig(
    backbone="paper2d", channels=(64, 128, 256, 256), attention=(False, True, True, True),
    res_blocks=2, heads=4, ff_mult=4, token_dim=512, time_dim=256, groups=32,
)
