"""The denoising network: a temporal 1D UNet over piano rolls with segment-aware cross-attention.

The network maps ``(noisy roll, timestep, conditions) -> logits of the clean roll``; it knows
nothing about noise schedules or sampling (see ``generate.py``). The 88 pitches of both roll
channels are the convolution channels and time is the axis, which is ~25x cheaper on a CPU than the
paper's 2D UNet over 128x128 images (measured in docs/benchmarks.md).

SAC-Att (Diff-BGM): at every cross-attention layer a time position may attend only to the tokens of
its own segment. Self-attention is left global on purpose, so the two halves of a window stay
coherent (the paper's code split it too, which only the convolutions could bridge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bgmgen.errors import ModelError
from bgmgen.music.conditioning import (
    HALF_BARS,
    N_ALIGNED_CHANNELS,
    N_CONTEXT_CHANNELS,
    N_TOKEN_FEATURES,
    ConditionBatch,
)
from bgmgen.music.roll import N_PITCHES


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the network; stored inside every checkpoint."""

    backbone: str = "temporal1d"  # temporal1d (pitches as channels, CPU-friendly) or paper2d (unet2d.py)
    channels: tuple[int, ...] = (128, 192, 240)  # width per resolution level (time halves per level)
    attention: tuple[bool, ...] = (False, False, True)  # self+cross attention blocks at this level
    res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    heads: int = 4
    ff_mult: int = 2  # feed-forward width multiplier in attention blocks
    token_dim: int = 128  # width of the condition tokens
    time_dim: int = 128  # width of the timestep embedding
    groups: int = 16  # GroupNorm groups
    roll_channels: int = 2 * N_PITCHES  # onset and sustain over 88 pitches
    aligned_channels: int = N_ALIGNED_CHANNELS
    context_channels: int = N_CONTEXT_CHANNELS
    token_features: int = N_TOKEN_FEATURES
    n_tokens: int = HALF_BARS
    video_dim: int = 0  # width of per-bar visual features (CLIP); 0 = not a video-conditioned model
    text_dim: int = 0  # width of per-segment caption features; 0 = none (see paired.py)
    melody_channels: int = 0  # 2*88 for an accompaniment model given the melody as aligned input; 0 = none


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, ``[B] -> [B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def conv1d_taps(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """``F.conv1d`` as one batched matrix product over the kernel's taps (im2col); equal to float rounding."""
    b, c, _ = x.shape
    out, _, k = weight.shape
    cols = x
    if k > 1 or stride > 1 or padding:
        cols = F.pad(x, (padding, padding)).unfold(2, k, stride).transpose(2, 3).reshape(b, c * k, -1)
    w = weight.reshape(out, c * k).expand(b, out, c * k)
    return torch.bmm(w, cols) if bias is None else torch.baddbmm(bias[:, None].expand(b, out, cols.shape[2]), w, cols)


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """``conv1d_taps`` on the CPU, where at this network's sizes (batch 2, at most 240 channels and 128
    steps) oneDNN's direct convolution spends more on set-up per call than on arithmetic: per layer the
    product measured 1.0-2.5x faster on 2 AVX2 cores, and a whole window 1.2x. ``F.conv1d`` elsewhere."""
    if x.device.type == "cpu":
        return conv1d_taps(x, weight, bias, stride, padding)
    return F.conv1d(x, weight, bias, stride, padding)


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` (same weights and state dict) computed by ``conv1d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups != 1 or self.dilation != (1,) or isinstance(self.padding, str) or self.padding_mode != "zeros":
            return super().forward(x)
        return conv1d(x, self.weight, self.bias, self.stride[0], self.padding[0])


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, time_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = Conv1d(cin, cout, 3, padding=1)
        self.time = nn.Linear(time_dim, 2 * cout)  # scale and shift
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = Conv1d(cout, cout, 3, padding=1)
        self.skip = Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.time(temb)[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


@dataclass
class CrossContext:
    """What a cross-attention reads from the tokens; the same at every denoising step of a window."""

    keys: torch.Tensor  # [B, heads, tokens, dim / heads]
    values: torch.Tensor  # [B, heads, tokens, dim / heads]
    mask: torch.Tensor | None  # [B, 1, positions, tokens] True = may attend; None = all may


class Attention(nn.Module):
    """Multi-head attention with an optional boolean mask (True = may attend)."""

    def __init__(self, dim: int, kv_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(kv_dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        keys, values = self.keys_values(context)
        return self.attend(x, keys, values, None if mask is None else mask[:, None])

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``context`` [B, m, kv_dim], each [B, heads, m, dim / heads]."""
        k, v = self.kv(context).view(context.shape[0], context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return k, v

    def attend(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` [B, n, dim] attending to ``keys_values``; ``mask`` [B, 1, n, m] or None."""
        b, n, d = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class AttentionBlock(nn.Module):
    """Self-attention over time, cross-attention to condition tokens (SAC-masked), feed-forward."""

    def __init__(self, channels: int, token_dim: int, heads: int, groups: int, ff_mult: int = 2):
        super().__init__()
        self.norm_in = nn.GroupNorm(groups, channels)
        self.norm_self = nn.LayerNorm(channels)
        self.self_attn = Attention(channels, channels, heads)
        self.norm_cross = nn.LayerNorm(channels)
        self.cross_attn = Attention(channels, token_dim, heads)
        self.norm_ff = nn.LayerNorm(channels)
        self.ff = nn.Sequential(nn.Linear(channels, ff_mult * channels), nn.GELU(), nn.Linear(ff_mult * channels, channels))

    def cross_context(self, tokens: torch.Tensor, segment_ids: torch.Tensor | None, shape: torch.Size) -> CrossContext:
        """The cross-attention's keys, values and SAC-Att mask for feature maps of ``shape`` [B, C, T]."""
        if segment_ids is None:
            mask = None
        elif tokens.shape[1] == 2 * segment_ids.shape[1]:  # music tokens only (every music-only model)
            mask = segment_attention_mask(segment_ids, shape[2])[:, None]
        else:  # plus per-bar video/caption tokens (paired models)
            mask = segment_attention_mask(segment_ids, shape[2], tokens.shape[1])[:, None]
        return CrossContext(*self.cross_attn.keys_values(tokens), mask)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, segment_ids: torch.Tensor | None,
                cross: CrossContext | None = None) -> torch.Tensor:
        """``segment_ids`` [B, bars] switch on SAC-Att; None lets every position see every token.
        ``cross``: this block's ``cross_context`` for these tokens, where already computed."""
        cross = cross or self.cross_context(tokens, segment_ids, x.shape)
        h = self.norm_in(x).transpose(1, 2)  # [B, T, C]
        s = self.norm_self(h)
        h = h + self.self_attn(s, s)
        h = h + self.cross_attn.attend(self.norm_cross(h), cross.keys, cross.values, cross.mask)
        h = h + self.ff(self.norm_ff(h))
        return x + h.transpose(1, 2)


def segment_attention_mask(segment_ids: torch.Tensor, n_positions: int, n_tokens: int | None = None) -> torch.Tensor:
    """SAC-Att mask ``[B, n_positions, n_tokens]``: position i may see token j iff same segment.

    ``segment_ids`` [B, bars]; positions split the window evenly; the first ``2 * bars`` tokens are
    half bars, any further tokens come in per-bar streams of ``bars`` (video, then caption tokens).
    """
    bars = segment_ids.shape[1]
    n_tokens = n_tokens or 2 * bars
    position_bar = torch.arange(n_positions, device=segment_ids.device) * bars // n_positions
    token_bar = torch.cat([torch.arange(2 * bars, device=segment_ids.device) // 2,
                           torch.arange(n_tokens - 2 * bars, device=segment_ids.device) % bars])
    return segment_ids[:, position_bar][:, :, None] == segment_ids[:, token_bar][:, None, :]


class FeatureTokens(nn.Module):
    """One token per bar from external features (CLIP frames, caption embeddings), with a null token."""

    def __init__(self, features: int, token_dim: int, n: int):
        super().__init__()
        # LayerNorm first: CLIP and BERT vectors come at very different scales.
        self.proj = nn.Sequential(nn.LayerNorm(features), nn.Linear(features, token_dim), nn.SiLU(), nn.Linear(token_dim, token_dim))
        self.position = nn.Parameter(torch.zeros(n, token_dim))
        self.null = nn.Parameter(torch.randn(n, token_dim) * 0.02)

    def forward(self, features: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        """``features`` [B, n, features] -> tokens [B, n, token_dim]; ``drop`` [B] bool picks the null ones."""
        tokens = self.proj(features) + self.position
        if drop is not None:
            tokens = torch.where(drop[:, None, None], self.null.expand_as(tokens), tokens)
        return tokens


@dataclass(eq=False)
class PreparedConditions:
    """A batch of conditions as every denoising step uses them (``ConditionalUNet.prepare``).

    Nothing here depends on x_t or t, so a sampler pays for it once per window rather than once per step.
    """

    cond: ConditionBatch
    aligned: torch.Tensor  # [B, aligned_channels, T], zero for dropped items
    tokens: torch.Tensor  # [B, tokens, token_dim]: null tokens for dropped items, then any video/caption tokens
    segment_ids: torch.Tensor | None  # [B, bars]; None = SAC-Att off
    inputs_term: torch.Tensor | None = None  # added to the first feature map (the backbone's own, see its prepare)
    output_term: torch.Tensor | None = None  # added to the output logits (per-bar video/caption bias)
    crosses: dict[int, CrossContext] = field(default_factory=dict)  # by attention block, filled on first use

    def cross(self, block: nn.Module, shape: torch.Size) -> CrossContext:
        """``block.cross_context`` for these tokens at feature maps of ``shape``, computed once."""
        if id(block) not in self.crosses:
            self.crosses[id(block)] = block.cross_context(self.tokens, self.segment_ids, shape)
        return self.crosses[id(block)]


class ConditionalUNet(nn.Module):
    """What the 1D and 2D backbones share: embeddings, null tokens, the UNet skeleton and its loop.

    Subclasses set ``res_block`` / ``attention_block`` / ``dims`` and turn inputs into the first
    feature map and the last one back into logits [B, 2*88, T].
    """

    res_block: type[nn.Module]
    attention_block: type[nn.Module]
    dims: int

    def __init__(self, config: UNetConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.config = c = config
        conv = Conv1d if self.dims == 1 else nn.Conv2d
        self.time_mlp = nn.Sequential(nn.Linear(128, c.time_dim), nn.SiLU(), nn.Linear(c.time_dim, c.time_dim))
        self.token_proj = nn.Sequential(nn.Linear(c.token_features, c.token_dim), nn.SiLU(), nn.Linear(c.token_dim, c.token_dim))
        self.token_position = nn.Parameter(torch.zeros(c.n_tokens, c.token_dim))
        # Learned "no condition" tokens for classifier-free guidance (condition dropout in training).
        self.null_tokens = nn.Parameter(torch.randn(c.n_tokens, c.token_dim) * 0.02)
        # Video-conditioned models (paired.py) add a visual and a caption token per bar; None keeps
        # the state dict of music-only checkpoints unchanged.
        bars = c.n_tokens // 2
        self.video_tokens = FeatureTokens(c.video_dim, c.token_dim, bars) if c.video_dim else None
        self.text_tokens = FeatureTokens(c.text_dim, c.token_dim, bars) if c.text_dim else None
        # ...and add those per-bar tokens to the first feature map too, so the music can follow the
        # video bar by bar without learning it through attention alone (as the chord masks do).
        streams = bool(c.video_dim) + bool(c.text_dim)
        self.feature_in = nn.Linear(streams * c.token_dim, c.channels[0]) if streams else None
        # ...and read them out as a per-bar bias on the output logits (temporal backbone): which
        # pitches a bar of this video tends to use is learned directly, as the chord masks give it.
        self.feature_out = nn.Linear(streams * c.token_dim, out_channels) if streams and self.dims == 1 else None
        if self.feature_out is not None:
            nn.init.zeros_(self.feature_out.weight)
            nn.init.zeros_(self.feature_out.bias)
        self.conv_in = conv(in_channels, c.channels[0], 3, padding=1)

        def res(cin: int, cout: int) -> nn.Module:
            return self.res_block(cin, cout, c.time_dim, c.groups)

        def attention(ch: int) -> nn.Module:
            return self.attention_block(ch, c.token_dim, c.heads, c.groups, c.ff_mult)

        self.down = nn.ModuleList()
        skips = [c.channels[0]]
        width = c.channels[0]
        for level, (ch, attn) in enumerate(zip(c.channels, c.attention)):
            for _ in range(c.res_blocks):
                self.down.append(res(width, ch))
                width = ch
                if attn:
                    self.down.append(attention(ch))
                skips.append(width)
            if level < len(c.channels) - 1:
                self.down.append(conv(width, width, 3, stride=2, padding=1))
                skips.append(width)
        self.mid = nn.ModuleList([res(width, width), attention(width), res(width, width)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(c.channels))):
            ch, attn = c.channels[level], c.attention[level]
            for _ in range(c.res_blocks + 1):
                self.up.append(res(width + skips.pop(), ch))
                width = ch
                if attn:
                    self.up.append(attention(ch))
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                self.up.append(conv(width, width, 3, padding=1))
        self.norm_out = nn.GroupNorm(c.groups, width)
        self.conv_out = conv(width, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.constant_(self.conv_out.bias, -4.0)  # notes are rare: start from "mostly silent"

    def prepare(self, cond: ConditionBatch, drop_condition: torch.Tensor | None = None, segment_aware: bool = True) -> PreparedConditions:
        """The part of ``forward`` that depends on the conditions only; ``forward`` takes the result as ``cond``."""
        aligned, tokens = self.encode_conditions(cond, drop_condition)
        prepared = PreparedConditions(cond, aligned, tokens, cond.segment_ids if segment_aware else None)
        if self.feature_in is not None:
            added = self.per_bar(self.feature_in, tokens, aligned.shape[2])
            prepared.inputs_term = added if self.dims == 1 else added[..., None]
        return prepared

    def prepared(self, cond: ConditionBatch | PreparedConditions, drop_condition: torch.Tensor | None,
                 segment_aware: bool) -> PreparedConditions:
        """``cond`` as ``prepare`` gives it: a sampler prepares once per window and passes the result to every
        step; training and other one-off calls pass the plain batch."""
        return cond if isinstance(cond, PreparedConditions) else self.prepare(cond, drop_condition, segment_aware)

    def encode_conditions(self, cond: ConditionBatch, drop_condition: torch.Tensor | None):
        """Aligned channels and projected tokens, with dropped items set to the null condition."""
        aligned, tokens = cond.aligned, self.token_proj(cond.tokens) + self.token_position
        if drop_condition is not None:
            aligned = aligned * (~drop_condition).float()[:, None, None]
            tokens = torch.where(drop_condition[:, None, None], self.null_tokens.expand_as(tokens), tokens)
        for stream, features, name in ((self.video_tokens, cond.video, "video"), (self.text_tokens, cond.text, "caption")):
            if stream is not None:
                if features is None:
                    raise ModelError(f"this music model is conditioned on {name} features, and none were given")
                tokens = torch.cat([tokens, stream(features, drop_condition)], dim=1)
        return aligned, tokens

    def per_bar(self, layer: nn.Module, tokens: torch.Tensor, steps: int) -> torch.Tensor:
        """``layer`` applied to each bar's video/caption tokens, spread over its steps: [B, out, steps]."""
        b, bars = tokens.shape[0], self.config.n_tokens // 2
        extra = tokens[:, self.config.n_tokens :]  # the per-bar streams follow the n_tokens music tokens
        per_bar = extra.view(b, -1, bars, extra.shape[2]).permute(0, 2, 1, 3).reshape(b, bars, -1)
        return layer(per_bar).transpose(1, 2).repeat_interleave(steps // bars, dim=2)

    def run_unet(self, h: torch.Tensor, t: torch.Tensor, prepared: PreparedConditions) -> torch.Tensor:
        """Down, middle and up paths from the first feature map to the last (before ``conv_out``)."""
        temb = self.time_mlp(timestep_embedding(t, 128))

        def run(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
            if isinstance(layer, self.res_block):
                return layer(h, temb)
            if isinstance(layer, self.attention_block):
                return layer(h, prepared.tokens, prepared.segment_ids, prepared.cross(layer, h.shape))
            return layer(h)

        skips = [h]
        for layer in self.down:
            h = run(layer, h)
            if isinstance(layer, self.attention_block):
                skips[-1] = h
            else:
                skips.append(h)
        for layer in self.mid:
            h = run(layer, h)
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], dim=1), temb) if isinstance(layer, self.res_block) else run(layer, h)
        return F.silu(self.norm_out(h))


class MusicUNet(ConditionalUNet):
    """Temporal UNet: ``forward(x_t, t, cond) -> logits [B, 2*88, T]`` of the clean roll."""

    res_block = ResBlock
    attention_block = AttentionBlock
    dims = 1

    def __init__(self, config: UNetConfig = UNetConfig()):
        c = config
        super().__init__(config, c.roll_channels + c.aligned_channels + c.context_channels + c.melody_channels, c.roll_channels)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: ConditionBatch | PreparedConditions,
        drop_condition: torch.Tensor | None = None,
        segment_aware: bool = True,
    ) -> torch.Tensor:
        """``x`` [B, 176, T] noisy roll in [-1, 1]; ``t`` [B] timesteps; returns logits [B, 176, T].
        ``cond`` may come ``prepare``d (then the next two arguments are those it was prepared with).

        ``drop_condition`` [B] bool replaces those items' conditions by the null condition (the
        unconditional branch of classifier-free guidance); the context (music to continue) stays.
        ``segment_aware=False`` lets every position attend to every token (the "w/o SAC-Att" ablation).
        An accompaniment model (``melody_channels``) reads ``cond.melody``; like the context it is
        kept in the unconditional branch, so guidance amplifies the chords and features only.
        """
        prepared = self.prepared(cond, drop_condition, segment_aware)
        # The first convolution is linear in its input channels: the conditions' share comes prepared.
        h = conv1d(x, self.conv_in.weight[:, : x.shape[1]], None, padding=1) + prepared.inputs_term
        out = self.conv_out(self.run_unet(h, t, prepared))
        return out if prepared.output_term is None else out + prepared.output_term

    def prepare(self, cond: ConditionBatch, drop_condition: torch.Tensor | None = None, segment_aware: bool = True) -> PreparedConditions:
        """``ConditionalUNet.prepare`` plus the first convolution of every input but the noisy roll
        (with its bias and any per-bar video/caption features) and the per-bar output bias."""
        prepared = super().prepare(cond, drop_condition, segment_aware)
        inputs = [prepared.aligned, cond.context]
        if self.config.melody_channels:
            if cond.melody is None:
                raise ModelError("this accompaniment model needs the melody it goes with, and none was given")
            inputs.append(cond.melody)
        first = conv1d(torch.cat(inputs, dim=1), self.conv_in.weight[:, self.config.roll_channels :], self.conv_in.bias, padding=1)
        prepared.inputs_term = first if prepared.inputs_term is None else first + prepared.inputs_term
        if self.feature_out is not None:
            prepared.output_term = self.per_bar(self.feature_out, prepared.tokens, first.shape[2])
        return prepared
