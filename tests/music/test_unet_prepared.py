"""Conditions prepared once per window: the same logits as computing everything at every step (tiny models)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from bgmgen.music.conditioning import BARS_PER_WINDOW, HALF_BARS, N_BAR_FEATURES, WindowConditions, build_batch, stack_windows  # noqa: E402
from bgmgen.music.roll import N_PITCHES, STEPS_PER_BAR, WINDOW_STEPS  # noqa: E402
from bgmgen.music.unet import Conv1d, MusicUNet, UNetConfig, conv1d_taps  # noqa: E402
from bgmgen.music.unet2d import PaperUNet2D  # noqa: E402

TINY = UNetConfig(channels=(16, 32, 32), groups=8, token_dim=16, time_dim=16)
TINY_2D = UNetConfig(backbone="paper2d", channels=(8, 16), attention=(False, True), groups=4, token_dim=8, time_dim=8)


def random_model(cls, config: UNetConfig, seed: int = 0):
    """A tiny model whose every weight matters (the real init zeroes the output and video convolutions)."""
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if not p.abs().sum():
                p.normal_(std=0.3)
    return model


def random_conditions(seed: int) -> WindowConditions:
    rng = np.random.default_rng(seed)
    roots = np.repeat(rng.integers(0, 12, HALF_BARS), STEPS_PER_BAR // 2)
    chroma = np.zeros((WINDOW_STEPS, 12), dtype=np.float32)
    for third in (0, 4, 7):
        chroma[np.arange(WINDOW_STEPS), (roots + third) % 12] = 1
    return WindowConditions(chroma, roots, roots, rng.random((BARS_PER_WINDOW, N_BAR_FEATURES)).astype(np.float32),
                            np.array([0, 0, 0, 1, 1, 1, 2, 2]))


def guided_batch(config: UNetConfig, seed: int = 0):
    """A window's conditions as a guided sampler passes them: both halves, the second dropped."""
    rng = np.random.default_rng(seed)
    context = rng.integers(0, 2, (1, 2, WINDOW_STEPS, N_PITCHES)).astype(np.float32)
    melody = rng.integers(0, 2, (1, 2, WINDOW_STEPS, N_PITCHES)).astype(np.float32) if config.melody_channels else None
    cond = stack_windows([random_conditions(seed)], context, [2 * STEPS_PER_BAR], melody_rolls=melody)
    if config.video_dim:
        cond.video = torch.randn(1, BARS_PER_WINDOW, config.video_dim)
        cond.text = torch.randn(1, BARS_PER_WINDOW, config.text_dim)
    return cond.repeat(2), torch.tensor([False, True])


@pytest.mark.parametrize("config", [
    TINY,
    replace(TINY, melody_channels=2 * N_PITCHES),  # accompaniment: the melody is part of the prepared input
    replace(TINY, video_dim=12, text_dim=10),  # paired: per-bar video/caption tokens, input and output terms
], ids=["music", "accompaniment", "paired"])
@pytest.mark.parametrize("segment_aware", [True, False])
def test_prepared_conditions_give_the_logits_of_the_full_computation(config, segment_aware):
    model = random_model(MusicUNet, config)
    cond, drop = guided_batch(config)
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        prepared = model.prepare(cond, drop, segment_aware)
        for t in (999, 500, 37):  # the denoising steps of one window, all from one preparation
            x = torch.randn(2, 2 * N_PITCHES, WINDOW_STEPS, generator=g)
            ts = torch.full((2,), t)
            reused = model(x, ts, prepared)
            reference = model(x, ts, cond, drop_condition=drop, segment_aware=segment_aware)
            assert torch.allclose(reused, reference, atol=1e-5, rtol=0), (reused - reference).abs().max()
        # The preparation holds what the conditions decide: another window's conditions give other logits.
        other, _ = guided_batch(config, seed=1)
        assert not torch.allclose(model(x, ts, model.prepare(other, drop, segment_aware)), reused, atol=1e-4)


def test_the_2d_backbone_takes_prepared_conditions_too():
    model = random_model(PaperUNet2D, TINY_2D)
    g = torch.Generator().manual_seed(0)
    cond = build_batch(torch.rand(1, 128, 12, generator=g).round(), torch.randint(-1, 12, (1, 128), generator=g),
                       torch.randint(-1, 12, (1, 128), generator=g), torch.rand(1, 8, 4, generator=g),
                       torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])).repeat(2)
    drop = torch.tensor([False, True])
    with torch.inference_mode():
        prepared = model.prepare(cond, drop)
        for t in (900, 100):
            x = torch.randn(2, 2 * N_PITCHES, WINDOW_STEPS, generator=g)
            ts = torch.full((2,), t)
            assert torch.allclose(model(x, ts, prepared), model(x, ts, cond, drop_condition=drop), atol=1e-5)


@pytest.mark.parametrize("cin, cout, kernel, stride, padding", [(16, 32, 3, 1, 1), (32, 32, 3, 2, 1), (48, 16, 1, 1, 0)])
def test_convolution_as_a_product_over_taps_equals_the_direct_one(cin, cout, kernel, stride, padding):
    torch.manual_seed(0)
    conv = Conv1d(cin, cout, kernel, stride=stride, padding=padding)
    x = torch.randn(2, cin, WINDOW_STEPS)
    reference = F.conv1d(x, conv.weight, conv.bias, stride=stride, padding=padding)
    assert torch.allclose(conv(x), reference, atol=1e-5, rtol=0)
    assert torch.allclose(conv1d_taps(x, conv.weight, None, stride, padding), reference - conv.bias[:, None], atol=1e-5, rtol=0)
    assert list(conv.state_dict()) == ["weight", "bias"]  # checkpoints load as for nn.Conv1d
