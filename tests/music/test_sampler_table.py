"""Compiled sampler tables: they match the installed diffusers, step as it does, sample the same rolls,
and spare a default run the diffusers import."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bgmgen.music.sampler as sampler_module  # noqa: E402
from bgmgen.music.conditioning import stack_windows  # noqa: E402
from bgmgen.music.generate import MusicGenerator, window_conditions  # noqa: E402
from bgmgen.music.plan import Plan, Segment  # noqa: E402
from bgmgen.music.sampler import (  # noqa: E402
    LINEAR_SAMPLERS,
    SCHEDULE,
    SHIPPED_STEPS,
    SHIPPED_TABLES,
    SamplerOptions,
    SamplerTable,
    make_scheduler,
    sample_rolls,
    sampler_table,
    shipped_tables,
)
from bgmgen.weights import default_checkpoint  # noqa: E402

SHIPPED = [(sampler, steps) for sampler in LINEAR_SAMPLERS for steps in SHIPPED_STEPS]


def test_every_usual_setting_ships_for_this_schedule():
    assert json.loads(SHIPPED_TABLES.read_text())["schedule"] == SCHEDULE
    assert set(shipped_tables()) == set(SHIPPED)
    assert ("dpm", SamplerOptions().steps) in shipped_tables()  # the default run reads its table


@pytest.mark.parametrize("sampler, steps", SHIPPED)
def test_shipped_table_is_what_the_installed_diffusers_computes(sampler, steps):
    shipped = shipped_tables()[(sampler, steps)]
    built = SamplerTable.from_scheduler(sampler, steps)
    assert shipped.timesteps == built.timesteps
    # Rebuilt with `python -m bgmgen.music.sampler` when diffusers changes its math.
    assert shipped.sample_weights == pytest.approx(built.sample_weights, rel=1e-9, abs=1e-12)
    assert [len(w) for w in shipped.estimate_weights] == [len(w) for w in built.estimate_weights]
    for ours, theirs in zip(shipped.estimate_weights, built.estimate_weights):
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("sampler, steps", [*SHIPPED, ("dpm", 3), ("ddim", 3)])
def test_table_steps_as_the_scheduler_does(sampler, steps):
    table = sampler_table(sampler, steps)
    scheduler = make_scheduler(sampler)
    scheduler.set_timesteps(steps)
    assert table.timesteps == tuple(scheduler.timesteps.tolist())
    g = torch.Generator().manual_seed(1)
    x_table = x_diffusers = torch.randn(2, 176, 32, generator=g)
    estimates: list = []
    for k, t in enumerate(scheduler.timesteps):
        x0 = torch.rand(2, 176, 32, generator=g) * 2 - 1
        estimates.insert(0, x0)
        x_table = table.step(k, x_table, estimates)
        x_diffusers = scheduler.step(x0, t, x_diffusers).prev_sample
        torch.testing.assert_close(x_table, x_diffusers, atol=1e-5, rtol=0)  # each trajectory on its own


def test_table_step_refuses_a_short_history():
    with pytest.raises(ValueError, match="needs 2 estimates"):
        sampler_table("dpm", 10).step(1, torch.zeros(3), [torch.zeros(3)])


def test_ddpm_has_no_table():
    with pytest.raises(ValueError, match="no table"):
        SamplerTable.from_scheduler("ddpm", 10)


@pytest.fixture(scope="module")
def shipped_model() -> MusicGenerator:
    if not default_checkpoint().is_file():
        pytest.skip("shipped checkpoint not present")
    return MusicGenerator.from_checkpoint()


def nine_bar_plan() -> Plan:
    """Two windows (the second continues the first), two segments."""
    chords = ["C:maj", "A:min", "F:maj", "G:maj"]
    plan = Plan(duration=18.0, tempo=120.0, n_bars=9, key="C major", segments=[Segment(0, 4), Segment(4, 9)],
                chords=[chords[i // 2 % 4] for i in range(18)], density=[0.5] * 9, energy=[0.5] * 9, cuts=[],
                cut_alignment_error=0.0, mood={"tension": 0.5, "brightness": 0.5}, seed=0)
    plan.validate()
    return plan


@pytest.mark.parametrize("sampler", LINEAR_SAMPLERS)
def test_shipped_model_writes_the_same_music_with_the_table_as_with_diffusers(shipped_model, monkeypatch, sampler):
    generator = MusicGenerator(shipped_model.model, shipped_model.info, "cpu", SamplerOptions(sampler=sampler),
                               shipped_model.melody_model, shipped_model.melody_info)
    with_table = generator.generate_parts(nine_bar_plan(), seed=3)
    monkeypatch.setattr(sampler_module, "LINEAR_SAMPLERS", ())  # every sampler through diffusers' step
    with_diffusers = generator.generate_parts(nine_bar_plan(), seed=3)
    assert with_table.melody.sum() > 0 and with_table.accompaniment.sum() > 0
    np.testing.assert_array_equal(with_table.melody, with_diffusers.melody)
    np.testing.assert_array_equal(with_table.accompaniment, with_diffusers.accompaniment)


@pytest.mark.parametrize("sampler", LINEAR_SAMPLERS)
def test_shipped_model_soft_estimate_is_diffusers_to_rounding(shipped_model, monkeypatch, sampler):
    # Binary rolls hide small errors (a weight 1% off flipped one cell of 9 bars); the soft estimate does not
    # (measured: 1e-5 apart from diffusers; 3e-4 apart with one weight 1e-4 off).
    plan = nine_bar_plan()
    batch = stack_windows([window_conditions(plan, 0, shipped_model.melody_info.feature_quantiles, tune=True)])

    def soft() -> torch.Tensor:
        options = SamplerOptions(sampler=sampler)
        return sample_rolls(shipped_model.melody_model, batch, options, torch.Generator().manual_seed(3), binary=False)

    with_table = soft()
    monkeypatch.setattr(sampler_module, "LINEAR_SAMPLERS", ())
    torch.testing.assert_close(with_table, soft(), atol=1e-4, rtol=0)


def test_default_sampling_does_not_import_diffusers():
    script = """
import sys
import numpy as np
import torch
from bgmgen.music.conditioning import N_BAR_FEATURES, WindowConditions, stack_windows
from bgmgen.music.roll import WINDOW_STEPS
from bgmgen.music.sampler import SamplerOptions, prepare_sampler, sample_rolls
from bgmgen.music.unet import MusicUNet, UNetConfig

model = MusicUNet(UNetConfig(channels=(8, 8), attention=(False, False), res_blocks=1, groups=4, token_dim=8, time_dim=8))
root = np.zeros(WINDOW_STEPS, dtype=int)
cond = WindowConditions(np.ones((WINDOW_STEPS, 12), np.float32), root, root,
                        np.full((8, N_BAR_FEATURES), 0.5, np.float32), np.zeros(8, dtype=int))
batch = stack_windows([cond])
prepare_sampler(SamplerOptions())  # as the pipeline does while the video is analysed
sample_rolls(model.eval(), batch, SamplerOptions(), torch.Generator().manual_seed(0))
assert "diffusers" not in sys.modules, "sampling imported diffusers"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
