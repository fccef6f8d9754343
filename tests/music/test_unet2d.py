"""The paper's 2D backbone: same contract as the temporal UNet, selectable through the config."""

from pathlib import Path

import torch

from bgmgen.music.checkpoint import ModelInfo, build_model, load_checkpoint, save_checkpoint
from bgmgen.music.conditioning import build_batch
from bgmgen.music.sampler import SamplerOptions, sample_rolls
from bgmgen.music.unet import UNetConfig
from bgmgen.music.unet2d import PAPER_CONFIG, PaperUNet2D

TINY_2D = UNetConfig(backbone="paper2d", channels=(8, 16), attention=(False, True), groups=4, token_dim=8, time_dim=8)


def _cond(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return build_batch(
        torch.rand(batch, 128, 12, generator=g).round(),
        torch.randint(-1, 12, (batch, 128), generator=g),
        torch.randint(-1, 12, (batch, 128), generator=g),
        torch.rand(batch, 8, 4, generator=g),
        torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]] * batch),
    )


def _randomise_output(model):
    # The output conv starts at zero (silence); give it weights so inputs show in the output.
    torch.nn.init.normal_(model.conv_out.weight, std=0.5)


def test_paper_config_has_the_papers_size():
    model = build_model(PAPER_CONFIG)
    assert isinstance(model, PaperUNet2D)
    assert 35e6 < sum(p.numel() for p in model.parameters()) < 45e6  # the paper's UNet: 41 M


def test_forward_contract_and_condition_dropout():
    torch.manual_seed(0)
    model = build_model(TINY_2D).eval()
    _randomise_output(model)
    x, t = torch.randn(2, 176, 128), torch.tensor([10, 700])
    with torch.no_grad():
        out = model(x, t, _cond(seed=0))
        assert out.shape == (2, 176, 128)
        # Other conditions change the output ...
        assert not torch.allclose(out, model(x, t, _cond(seed=1)))
        # ... unless the condition is dropped (the unconditional branch of guidance).
        drop = torch.tensor([True, True])
        assert torch.allclose(model(x, t, _cond(seed=0), drop), model(x, t, _cond(seed=1), drop))
        assert not torch.allclose(out, model(x, t, _cond(seed=0), segment_aware=False))


def test_checkpoint_round_trip_and_sampling(tmp_path: Path):
    model = build_model(TINY_2D)
    _randomise_output(model)
    path = tmp_path / "paper2d.safetensors"
    save_checkpoint(model, ModelInfo(config=TINY_2D, training_steps=3), path)
    loaded, info = load_checkpoint(path)
    assert info.config == TINY_2D and isinstance(loaded, PaperUNet2D)
    rolls = sample_rolls(loaded, _cond(batch=1), SamplerOptions(steps=2, guidance=2.0), torch.Generator().manual_seed(0))
    assert rolls.shape == (1, 2, 128, 88) and set(rolls.unique().tolist()) <= {0.0, 1.0}
