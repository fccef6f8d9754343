"""Sampling rolls: schedulers, determinism, classifier-free guidance arithmetic (tiny or fake models)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bgmgen.music.conditioning import N_BAR_FEATURES, WindowConditions, stack_windows  # noqa: E402
from bgmgen.music.roll import N_PITCHES, WINDOW_STEPS  # noqa: E402
from bgmgen.music.sampler import (
    SamplerOptions,
    from_roll,
    make_scheduler,
    sample_rolls,
    to_roll,
    training_scheduler,
)
from bgmgen.music.unet import MusicUNet, UNetConfig  # noqa: E402

TINY = UNetConfig(channels=(16, 32, 32), groups=8, token_dim=16, time_dim=16)


@pytest.fixture(scope="module")
def model() -> MusicUNet:
    torch.manual_seed(0)
    net = MusicUNet(TINY).eval()
    torch.nn.init.normal_(net.conv_out.weight, std=0.5)  # make the output depend on the input
    torch.nn.init.zeros_(net.conv_out.bias)
    return net


def conditions(n: int = 2):
    chroma = np.zeros((WINDOW_STEPS, 12), dtype=np.float32)
    chroma[:, [0, 4, 7]] = 1
    root = np.zeros(WINDOW_STEPS, dtype=int)
    cond = WindowConditions(chroma, root, root, np.full((8, N_BAR_FEATURES), 0.5, np.float32), np.zeros(8, dtype=int))
    return stack_windows([cond] * n)


class FakeModel:
    """Predicts a certain clean roll: all notes on for conditional items, all off for dropped ones."""

    def __init__(self):
        self.calls = []
        self.prepared = 0

    def prepare(self, cond, drop_condition=None, segment_aware=True):
        self.prepared += 1
        return (drop_condition, segment_aware)

    def __call__(self, x, t, prepared):
        drop_condition, segment_aware = prepared
        self.calls.append((x.shape[0], None if drop_condition is None else drop_condition.tolist(), segment_aware))
        logits = torch.full_like(x, 30.0)
        if drop_condition is not None:
            logits[drop_condition] = -30.0
        return logits


@pytest.mark.parametrize("sampler", ["dpm", "ddim", "ddpm"])
def test_sample_rolls_returns_binary_rolls(model, sampler):
    rolls = sample_rolls(model, conditions(2), SamplerOptions(sampler=sampler, steps=3), torch.Generator().manual_seed(0))
    assert rolls.shape == (2, 2, WINDOW_STEPS, N_PITCHES)
    assert set(rolls.unique().tolist()) == {0.0, 1.0}  # binary, and neither silent nor full


def test_same_seed_same_rolls_other_seed_other_rolls(model):
    options = SamplerOptions(steps=3)
    a = sample_rolls(model, conditions(1), options, torch.Generator().manual_seed(7))
    b = sample_rolls(model, conditions(1), options, torch.Generator().manual_seed(7))
    c = sample_rolls(model, conditions(1), options, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_guidance_one_runs_the_conditional_branch_only():
    fake = FakeModel()
    rolls = sample_rolls(fake, conditions(2), SamplerOptions(steps=4, guidance=1.0), torch.Generator().manual_seed(0))
    assert [c[0] for c in fake.calls] == [2] * 4  # one call per step, batch not doubled
    assert fake.prepared == 1  # the conditions are prepared once for the window's steps
    assert all(c[1] is None for c in fake.calls)
    assert rolls.min() == 1.0  # the conditional prediction: every cell on


def test_guided_sampling_doubles_the_batch_with_dropped_second_half():
    fake = FakeModel()
    options = SamplerOptions(steps=3, guidance=5.0, segment_aware=False)
    rolls = sample_rolls(fake, conditions(2), options, torch.Generator().manual_seed(0))
    assert [c[0] for c in fake.calls] == [4] * 3
    assert fake.calls[0][1] == [False, False, True, True]
    assert all(c[2] is False for c in fake.calls)  # the ablation switch reaches the model
    assert rolls.min() == 1.0  # uncond + 5 * (cond - uncond), clipped: on


@pytest.mark.parametrize("sampler", ["dpm", "ddim"])
def test_guidance_zero_gives_the_unconditional_prediction(sampler):
    options = SamplerOptions(sampler=sampler, steps=3, guidance=0.0)
    rolls = sample_rolls(FakeModel(), conditions(1), options, torch.Generator().manual_seed(0))
    assert rolls.max() == 0.0


def test_make_scheduler():
    dpm = make_scheduler("dpm")
    assert type(dpm).__name__ == "DPMSolverMultistepScheduler"
    assert dpm.config.prediction_type == "sample" and dpm.config.algorithm_type == "dpmsolver++"
    assert type(make_scheduler("ddim")).__name__ == "DDIMScheduler"
    assert type(make_scheduler("ddpm")).__name__ == "DDPMScheduler"
    with pytest.raises(ValueError, match="unknown sampler"):
        make_scheduler("euler")


def test_training_schedule_ends_in_pure_noise():
    scheduler = training_scheduler()
    assert scheduler.config.prediction_type == "sample"
    assert float(scheduler.alphas_cumprod[-1]) < 1e-4
    assert float(scheduler.alphas_cumprod[0]) > 0.99


def test_roll_layout_conversions_are_inverse():
    g = torch.Generator().manual_seed(0)
    roll = (torch.rand(2, 2, WINDOW_STEPS, N_PITCHES, generator=g) < 0.1).float()
    x = from_roll(roll)
    assert x.shape == (2, 2 * N_PITCHES, WINDOW_STEPS)
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    # Network channel c * 88 + p holds roll channel c, pitch p.
    assert torch.equal(x[:, N_PITCHES + 5, :], roll[:, 1, :, 5] * 2 - 1)
    assert torch.equal(to_roll(x), roll)
