"""The denoising UNet: shapes, SAC-Att masking, condition dropout, checkpoints (tiny random models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bgmgen.errors import ModelError  # noqa: E402
from bgmgen.music.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from bgmgen.music.conditioning import HALF_BARS, N_BAR_FEATURES, WindowConditions, stack_windows  # noqa: E402
from bgmgen.music.roll import N_PITCHES, STEPS_PER_BAR, WINDOW_STEPS  # noqa: E402
from bgmgen.music.unet import AttentionBlock, MusicUNet, UNetConfig, segment_attention_mask, timestep_embedding

from conftest import REPO_DIR

TINY = UNetConfig(channels=(16, 32, 32), groups=8, token_dim=16, time_dim=16)
SHIPPED = REPO_DIR / "models" / "bgmgen-music.safetensors"


def tiny_model(seed: int = 0) -> MusicUNet:
    """A tiny random UNet whose output depends on its input (the real init zeroes the last conv)."""
    torch.manual_seed(seed)
    model = MusicUNet(TINY).eval()
    torch.nn.init.normal_(model.conv_out.weight, std=0.5)
    return model


def random_conditions(seed: int, segment_ids=(0, 0, 0, 0, 1, 1, 1, 1)) -> WindowConditions:
    rng = np.random.default_rng(seed)
    roots = np.repeat(rng.integers(0, 12, HALF_BARS), STEPS_PER_BAR // 2)
    chroma = np.zeros((WINDOW_STEPS, 12), dtype=np.float32)
    for third in (0, 4, 7):
        chroma[np.arange(WINDOW_STEPS), (roots + third) % 12] = 1
    return WindowConditions(chroma, roots, roots, rng.random((8, N_BAR_FEATURES)).astype(np.float32), np.array(segment_ids))


def inputs(batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2 * N_PITCHES, WINDOW_STEPS, generator=g), torch.full((batch,), 500)


def test_forward_shape_and_initial_bias():
    model = MusicUNet(TINY).eval()
    x, t = inputs(2)
    with torch.no_grad():
        out = model(x, t, stack_windows([random_conditions(0), random_conditions(1)]))
    assert out.shape == (2, 2 * N_PITCHES, WINDOW_STEPS)
    # A fresh model predicts "mostly silent" everywhere (sigmoid(-4) ~ 2%, the share of note cells).
    assert torch.allclose(out, torch.full_like(out, -4.0))


def test_output_depends_on_conditions_and_timestep():
    model = tiny_model()
    x, t = inputs()
    with torch.no_grad():
        a = model(x, t, stack_windows([random_conditions(0)]))
        b = model(x, t, stack_windows([random_conditions(1)]))
        c = model(x, t + 300, stack_windows([random_conditions(0)]))
    assert torch.isfinite(a).all()
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 10]), 8)
    assert emb.shape == (2, 8)
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))  # sin 0, cos 0
    assert not torch.allclose(emb[0], emb[1])


def test_segment_attention_mask_sees_only_tokens_of_the_own_segment():
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2], [0, 0, 0, 0, 0, 0, 0, 0]])
    for n_positions in (WINDOW_STEPS, 32, 8):
        mask = segment_attention_mask(segments, n_positions)
        assert mask.shape == (2, n_positions, HALF_BARS) and mask.dtype == torch.bool
        for i in range(n_positions):
            bar = i * 8 // n_positions
            own = segments[0, bar]
            want = [bool(segments[0, j // 2] == own) for j in range(HALF_BARS)]
            assert mask[0, i].tolist() == want
        assert mask[1].all()  # one segment: everything visible
    mask = segment_attention_mask(segments, 32)
    assert mask[0, 0].nonzero().flatten().tolist() == list(range(0, 6))  # bar 0 -> tokens of bars 0-2
    assert mask[0, 13].nonzero().flatten().tolist() == list(range(6, 12))  # bar 3 -> bars 3-5
    assert mask[0, 31].nonzero().flatten().tolist() == list(range(12, 16))  # bar 7 -> bars 6-7


def test_cross_attention_of_one_segment_ignores_other_segments_tokens():
    torch.manual_seed(0)
    block = AttentionBlock(32, 16, heads=4, groups=8).eval()
    x = torch.randn(1, 32, 32)
    tokens = torch.randn(1, HALF_BARS, 16)
    other = tokens.clone()
    other[:, 12:] = torch.randn(1, 4, 16)  # new tokens for segment 2 (bars 6-7) only
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2]])
    with torch.no_grad():
        a, b = block(x, tokens, segments), block(x, other, segments)
        a_all, b_all = block(x, tokens, None), block(x, other, None)
    first = slice(0, 24)  # positions of bars 0-5 (segments 0 and 1)
    assert torch.allclose(a[:, :, first], b[:, :, first], atol=1e-6)
    assert not torch.allclose(a[:, :, 24:], b[:, :, 24:], atol=1e-4)
    # Without the mask the same change leaks everywhere, so the check above is not vacuous.
    assert not torch.allclose(a_all[:, :, first], b_all[:, :, first], atol=1e-4)


def test_segment_aware_switch(monkeypatch):
    model = tiny_model()
    x, t = inputs()
    split = stack_windows([random_conditions(0)])
    single = stack_windows([random_conditions(0, segment_ids=(0,) * 8)])
    with torch.no_grad():
        assert not torch.allclose(model(x, t, split), model(x, t, split, segment_aware=False), atol=1e-5)
        # With one segment the mask lets everything through: same as no mask.
        assert torch.allclose(model(x, t, single), model(x, t, single, segment_aware=False), atol=1e-5)

    import bgmgen.music.unet as model_module

    calls = []
    real = model_module.segment_attention_mask

    def spy(segment_ids, n_positions):
        calls.append((segment_ids.clone(), n_positions))
        return real(segment_ids, n_positions)

    monkeypatch.setattr(model_module, "segment_attention_mask", spy)
    with torch.no_grad():
        model(x, t, split)
    # Attention runs only at the lowest level (128 steps halved twice): every mask is for 32 positions.
    assert calls and {n for _, n in calls} == {WINDOW_STEPS // 4}
    assert torch.equal(calls[0][0], split.segment_ids)
    calls.clear()
    with torch.no_grad():
        model(x, t, split, segment_aware=False)
    assert calls == []


def test_dropped_conditions_use_the_null_condition():
    model = tiny_model()
    x, t = inputs()
    # Same segmentation, different chords and bar features.
    a, b = stack_windows([random_conditions(0)]), stack_windows([random_conditions(1)])
    drop = torch.tensor([True])
    with torch.no_grad():
        dropped_a, dropped_b = model(x, t, a, drop_condition=drop), model(x, t, b, drop_condition=drop)
        kept_a = model(x, t, a, drop_condition=torch.tensor([False]))
        plain_a = model(x, t, a)
    assert torch.allclose(dropped_a, dropped_b)
    assert not torch.allclose(dropped_a, kept_a, atol=1e-4)
    assert torch.allclose(kept_a, plain_a)
    # The music to continue is not a condition: it still counts when conditions are dropped.
    rolls = np.zeros((1, 2, WINDOW_STEPS, N_PITCHES), dtype=np.float32)
    rolls[0, 0, ::4, 40] = 1
    with_context = stack_windows([random_conditions(0)], rolls, [32])
    with torch.no_grad():
        assert not torch.allclose(model(x, t, with_context, drop_condition=drop), dropped_a, atol=1e-4)


def test_drop_applies_per_item():
    model = tiny_model()
    x, t = inputs(2)
    cond = stack_windows([random_conditions(0), random_conditions(1)])
    with torch.no_grad():
        mixed = model(x, t, cond, drop_condition=torch.tensor([True, False]))
        plain = model(x, t, cond)
        all_dropped = model(x, t, cond, drop_condition=torch.tensor([True, True]))
    assert torch.allclose(mixed[1], plain[1], atol=1e-5)
    assert torch.allclose(mixed[0], all_dropped[0], atol=1e-5)
    assert not torch.allclose(mixed[0], plain[0], atol=1e-4)


def info(steps: int = 42) -> ModelInfo:
    return ModelInfo(
        config=TINY,
        training_steps=steps,
        feature_quantiles={"density": [0.1, 0.5, 0.9]},
        schedule={"num_train_timesteps": 1000},
        notes="test",
    )


def test_checkpoint_round_trip_in_fp16(tmp_path):
    from safetensors import safe_open

    model = tiny_model()
    path = tmp_path / "nested" / "m.safetensors"
    save_checkpoint(model, info(), path)
    assert path.is_file() and list(path.parent.iterdir()) == [path]  # no .partial left behind
    with safe_open(str(path), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        assert json.loads(f.metadata()["bgmgen"])["training_steps"] == 42
    loaded, loaded_info = load_checkpoint(path)
    assert loaded_info == info()
    assert isinstance(loaded_info.config.channels, tuple)
    assert not loaded.training
    original = model.state_dict()
    for name, value in loaded.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, original[name].half().float()), name
    x, t = inputs()
    cond = stack_windows([random_conditions(0)])
    with torch.no_grad():
        assert torch.allclose(loaded(x, t, cond), model(x, t, cond), atol=0.05)


def test_checkpoint_in_fp32_is_exact(tmp_path):
    model = tiny_model()
    save_checkpoint(model, info(), tmp_path / "m.safetensors", half=False)
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_corrupt_and_truncated_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file" * 10)
    with pytest.raises(ModelError):
        load_checkpoint(garbage)
    good = tmp_path / "good.safetensors"
    save_checkpoint(tiny_model(), info(), good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelError):
        load_checkpoint(truncated)


def rewrite(src: Path, dst: Path, tensors=None, metadata=None) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        current = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    save_file(tensors(current) if tensors else current, str(dst), metadata=metadata if metadata is not None else meta)
    return dst


def test_mismatched_or_foreign_checkpoints_raise_model_error(tmp_path):
    good = tmp_path / "good.safetensors"
    save_checkpoint(tiny_model(), info(), good)
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as f:
        meta = json.loads(f.metadata()["bgmgen"])

    missing = rewrite(good, tmp_path / "missing.safetensors", tensors=lambda t: {k: v for k, v in t.items() if k != "null_tokens"})
    with pytest.raises(ModelError, match="does not match"):
        load_checkpoint(missing)

    wider = dict(meta, config=dict(meta["config"], channels=[16, 32, 48]))
    with pytest.raises(ModelError, match="does not match"):
        load_checkpoint(rewrite(good, tmp_path / "wider.safetensors", metadata={"bgmgen": json.dumps(wider)}))

    with pytest.raises(ModelError):  # a safetensors file from another program
        load_checkpoint(rewrite(good, tmp_path / "foreign.safetensors", metadata={"format": "pt"}))

    with pytest.raises(ModelError):  # bgmgen metadata of another shape
        load_checkpoint(rewrite(good, tmp_path / "odd.safetensors", metadata={"bgmgen": json.dumps({"steps": 3})}))


def test_shipped_checkpoint_describes_itself_in_fp16():
    from safetensors import safe_open

    if not SHIPPED.is_file():
        pytest.skip("shipped checkpoint not present")
    with safe_open(str(SHIPPED), framework="pt") as f:
        meta = json.loads(f.metadata()["bgmgen"])
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        n_params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    assert dtypes == {"F16"}
    assert 10e6 < n_params < 12e6
    assert meta["training_steps"] > 0
    assert set(meta["feature_quantiles"]) == {"density", "energy", "register", "polyphony"}
    assert meta["schedule"]["prediction_type"] == "sample"
    assert UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
