"""Training: batches, the loss, and short real runs of ``train()`` with a tiny model (write, resume, stop)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bgmgen.music.checkpoint import load_checkpoint  # noqa: E402
from bgmgen.music.roll import N_PITCHES, STEPS_PER_BAR, WINDOW_STEPS  # noqa: E402
from bgmgen.music.sampler import from_roll, training_scheduler  # noqa: E402
from bgmgen.music.unet import UNetConfig  # noqa: E402
from bgmgen.training.pop909 import Corpus  # noqa: E402
from bgmgen.training.train import (
    TrainConfig,
    diffusion_loss,
    load_corpora,
    make_batch,
    random_segments,
    train,
)  # noqa: E402

TINY = UNetConfig(channels=(16, 32, 32), groups=8, token_dim=16, time_dim=16)


def config(prepared: Path, out: Path, **changes) -> TrainConfig:
    cfg = TrainConfig(
        data=prepared, out=out, steps=3, batch_size=2, warmup_steps=1, checkpoint_every=1000, eval_every=1000, model=TINY
    )
    return replace(cfg, **changes)


def test_load_corpora_reads_prepared_files(prepared, tmp_path):
    corpora = load_corpora(prepared, tmp_path / "unused-cache")
    assert set(corpora) == {"train", "valid", "test"}
    assert corpora["train"].song_ids == ["001", "002"]
    assert not (tmp_path / "unused-cache").exists()


def test_random_segments():
    rng = np.random.default_rng(0)
    segments = random_segments(500, rng, 0.3)
    assert segments.shape == (500, 8)
    assert (segments[:, 0] == 0).all()
    steps = np.diff(segments, axis=1)
    assert set(np.unique(steps)) == {0, 1}  # contiguous ids, new ones only at boundaries
    assert 0.2 < steps.mean() < 0.4
    assert (random_segments(4, rng, 0.0) == 0).all()
    assert (random_segments(4, rng, 1.0) == np.arange(8)).all()


def test_make_batch_hides_known_prefixes_from_the_loss(prepared):
    corpus = Corpus.load(prepared / "pop909_train.npz")
    cfg = config(prepared, Path("unused"), context_probability=1.0)
    rng = np.random.default_rng(3)
    roll, cond, loss_mask = make_batch(corpus, np.arange(16), rng, cfg, augment=True, device="cpu")
    assert roll.shape == (16, 2, WINDOW_STEPS, N_PITCHES)
    known = cond.context[:, -1]  # the known-step mask the network sees
    known_steps = known.sum(dim=1).long().tolist()
    assert set(known_steps) <= {1 * STEPS_PER_BAR, 2 * STEPS_PER_BAR, 4 * STEPS_PER_BAR}
    assert torch.equal(loss_mask, 1 - known)  # the loss covers exactly the steps to be generated
    for i, n in enumerate(known_steps):
        context = cond.context[i, :N_PITCHES, :n]
        assert torch.equal(context, roll[i, 0, :n].T)  # the prefix is the window's own (transposed) music
    cfg = config(prepared, Path("unused"), context_probability=0.0)
    _, cond, loss_mask = make_batch(corpus, np.arange(4), rng, cfg, augment=False, device="cpu")
    assert cond.context.sum() == 0 and loss_mask.min() == 1


class Perfect(torch.nn.Module):
    """Knows the clean roll: returns confident logits for it (or zeros when ``unsure``)."""

    def __init__(self, roll, unsure=False):
        super().__init__()
        self.target, self.unsure = from_roll(roll), unsure

    def forward(self, x, t, cond, drop_condition=None):
        return torch.zeros_like(x) if self.unsure else self.target * 30


def test_diffusion_loss(prepared):
    corpus = Corpus.load(prepared / "pop909_train.npz")
    rng = np.random.default_rng(0)
    roll, cond, mask = make_batch(corpus, np.arange(4), rng, config(prepared, Path("unused")), augment=False, device="cpu")
    scheduler = training_scheduler()
    drop = torch.zeros(4, dtype=torch.bool)
    assert diffusion_loss(Perfect(roll), scheduler, roll, cond, mask, drop, 1.0).item() < 1e-6
    # Logits of 0 cost log 2 per cell, wherever the mask lets the loss see.
    unsure = diffusion_loss(Perfect(roll, unsure=True), scheduler, roll, cond, mask, drop, 1.0).item()
    assert unsure == pytest.approx(math.log(2), rel=1e-5)
    # Weighting note cells raises the loss by the share of note cells in the counted steps.
    weighted = diffusion_loss(Perfect(roll, unsure=True), scheduler, roll, cond, mask, drop, 3.0).item()
    notes = (roll.transpose(2, 3).reshape(4, 2 * N_PITCHES, -1) * mask[:, None, :]).sum() / (mask.sum() * 2 * N_PITCHES)
    assert weighted == pytest.approx(math.log(2) * (1 + 2 * float(notes)), rel=1e-4)


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # an untrained model writes no notes to score
def test_train_writes_a_checkpoint_and_resumes(prepared, tmp_path):
    out = tmp_path / "models" / "tiny.safetensors"
    seen = []
    assert train(config(prepared, out), progress=lambda s, n, r: seen.append((s, n, r)), cache=tmp_path / "cache") == out
    assert [(s, n) for s, n, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 for _, _, r in seen)
    model, info = load_checkpoint(out)
    assert info.training_steps == 3 and info.config == TINY
    assert set(info.feature_quantiles) == {"density", "energy", "register", "polyphony"}
    assert info.schedule["prediction_type"] == "sample"
    state = out.with_name("tiny.train-state.pt")
    assert state.is_file()
    # The evaluation ran on the last step and was logged; the real music scores well on its own chords.
    log = [json.loads(line) for line in out.with_suffix(".log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3]
    assert {"notes", "chord_tones", "in_key", "real_notes", "real_chord_tones", "real_in_key"} <= set(log[0])
    assert log[0]["real_notes"] > 0 and log[0]["real_chord_tones"] > 0.6 and log[0]["real_in_key"] > 0.8

    # Resume: a longer run continues from step 3, not from 0.
    seen.clear()
    train(config(prepared, out, steps=5), progress=lambda s, n, r: seen.append((s, n, r)), cache=tmp_path / "cache")
    assert [s for s, _, _ in seen] == [4, 5]
    resumed, info = load_checkpoint(out)
    assert info.training_steps == 5
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))
    assert [json.loads(line)["step"] for line in out.with_suffix(".log.jsonl").read_text().splitlines()] == [3, 5]

    # Nothing left to do: no step runs, and the checkpoint stays as it was.
    seen.clear()
    train(config(prepared, out, steps=5), progress=lambda s, n, r: seen.append(s), cache=tmp_path / "cache")
    assert seen == [] and load_checkpoint(out)[1].training_steps == 5


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_train_without_resume_and_with_a_time_budget(prepared, tmp_path):
    out = tmp_path / "budget.safetensors"
    seen = []
    # A spent time budget stops after the first step, and still saves.
    budget = config(prepared, out, steps=50, max_minutes=1e-9, resume=False)
    train(budget, progress=lambda s, n, r: seen.append(s), cache=tmp_path / "c")
    assert seen == [1]
    assert load_checkpoint(out)[1].training_steps == 1
    assert not out.with_suffix(".log.jsonl").exists()  # no evaluation before eval_every or the last step
    seen.clear()
    fresh = config(prepared, out, steps=2, resume=False, eval_every=10**6)
    train(fresh, progress=lambda s, n, r: seen.append(s), cache=tmp_path / "c")
    assert seen == [1, 2]  # started over
