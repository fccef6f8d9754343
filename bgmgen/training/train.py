"""Training the music model on POP909 windows (``bgmgen train``).

Each step draws random 8-bar windows, transposes them, gives each a random segmentation (for
SAC-Att) and sometimes a known prefix (so the model learns to continue a previous window), drops
the conditions of some items (for classifier-free guidance), noises the roll and trains the network
to recover it with a Bernoulli (BCE) objective: notes fill ~2% of the cells, and a plain MSE drifts
towards silence (docs/measurements).

``TrainConfig.part`` picks what the model writes: ``all`` (the three POP909 tracks as one roll),
``melody`` (the MELODY track: the first stage of the cascade) or ``accompaniment`` (BRIDGE + PIANO,
given the real melody as aligned input channels). ``init_from`` starts from another checkpoint,
new input channels at zero (``checkpoint.load_widened``), which makes CPU training a fine-tune.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bgmgen.evaluation.metrics import chord_tone_ratio, in_key_ratio
from bgmgen.errors import BgmgenError
from bgmgen.music.checkpoint import ModelInfo, build_model, load_widened, save_checkpoint
from bgmgen.music.conditioning import build_batch
from bgmgen.music.roll import BARS_PER_WINDOW, STEPS_PER_BAR
from bgmgen.music.sampler import (
    SCHEDULE,
    TRAIN_TIMESTEPS,
    SamplerOptions,
    from_roll,
    sample_rolls,
    training_scheduler,
)
from bgmgen.music.unet import UNetConfig
from bgmgen.training.pop909 import Corpus, prepare

log = logging.getLogger("bgmgen")


@dataclass(frozen=True)
class TrainConfig:
    data: Path  # POP909 folder (…/POP909) or a folder of prepared pop909_*.npz files
    out: Path = Path("models/bgmgen-music.safetensors")  # EMA weights, written at every checkpoint
    steps: int = 20000  # total optimiser steps
    max_minutes: float | None = None  # stop (and save) after this much wall time
    batch_size: int = 64
    lr: float = 3e-4
    warmup_steps: int = 500
    ema_decay: float = 0.999
    condition_dropout: float = 0.15  # share of items trained unconditionally (for guidance)
    context_probability: float = 0.5  # share of items given a known prefix of 1, 2 or 4 bars
    segment_break_probability: float = 0.2  # chance of a segment boundary at each inner bar line
    positive_weight: float = 1.0  # BCE weight of note cells
    checkpoint_every: int = 1000
    eval_every: int = 1000
    seed: int = 0
    device: str = "cpu"
    resume: bool = True
    state: Path | None = None  # full training state for resuming; default: beside ``out``
    model: UNetConfig = field(default_factory=UNetConfig)
    part: str = "all"  # all | melody | accompaniment (see the module docstring)
    init_from: Path | None = None  # checkpoint to start a fresh run from (ignored when resuming)
    threads: int | None = None  # torch CPU threads (None = torch's default)


PARTS = ("all", "melody", "accompaniment")

# The cascade's melody model: a small temporal UNet (a tune is one voice; it needs far less capacity).
MELODY_CONFIG = UNetConfig(channels=(48, 64, 80), attention=(False, False, True), res_blocks=1, heads=4,
                           token_dim=64, time_dim=64, groups=8)


def _state_path(cfg: TrainConfig) -> Path:
    return cfg.state or cfg.out.with_name(cfg.out.stem + ".train-state.pt")


def load_corpora(data: Path, cache: Path) -> dict[str, Corpus]:
    """Prepared corpora by split; prepares them from a POP909 folder into ``cache`` if needed."""
    if (data / "pop909_train.npz").exists():
        folder = data
    else:
        folder = cache
        if not (cache / "pop909_train.npz").exists():
            log.info("quantising POP909 from %s into %s", data, cache)
            prepare(data, cache)
    return {name: Corpus.load(folder / f"pop909_{name}.npz") for name in ("train", "valid", "test")}


def random_segments(batch: int, rng: np.random.Generator, p_break: float) -> np.ndarray:
    breaks = rng.random((batch, BARS_PER_WINDOW)) < p_break
    breaks[:, 0] = False
    return np.cumsum(breaks, axis=1)


def make_batch(corpus: Corpus, index: np.ndarray, rng: np.random.Generator, cfg: TrainConfig, augment: bool, device):
    """Rolls [B, 2, T, 88] and their ConditionBatch, with the loss mask over steps [B, T]."""
    n = len(index)
    shift = rng.integers(-6, 6, size=n) if augment else np.zeros(n, dtype=np.int64)
    roll, chroma, root, bass, features, _ = corpus.windows(index, shift, device=device, part=cfg.part)
    melody = corpus.windows(index, shift, device=device, part="melody")[0] if cfg.model.melody_channels else None
    segments = torch.as_tensor(random_segments(n, rng, cfg.segment_break_probability), device=device)
    prefix_bars = np.where(rng.random(n) < cfg.context_probability, rng.choice([1, 2, 4], size=n), 0)
    known = torch.as_tensor(prefix_bars * STEPS_PER_BAR, device=device)
    cond = build_batch(chroma, root, bass, features, segments, roll, known, melody)
    loss_mask = (torch.arange(roll.shape[2], device=device)[None, :] >= known[:, None]).float()
    return roll, cond, loss_mask


def diffusion_loss(model, scheduler, roll, cond, loss_mask, drop, pos_weight, generator=None) -> torch.Tensor:
    x0 = from_roll(roll)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    t = torch.randint(0, TRAIN_TIMESTEPS, (x0.shape[0],), generator=generator, device=x0.device)
    xt = scheduler.add_noise(x0, noise, t)
    logits = model(xt, t, cond, drop_condition=drop)
    target = (x0 > 0).float()
    weight = torch.where(target > 0, pos_weight, 1.0) * loss_mask[:, None, :]
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    return loss / (loss_mask.sum() * x0.shape[1])


def evaluate_samples(model, corpus: Corpus, cfg: TrainConfig, device, n: int = 32) -> dict[str, float]:
    """Sample ``n`` fixed validation windows and compare notes, chord tones and key with the real music."""
    rng = np.random.default_rng(1234)
    index = rng.choice(len(corpus.window_starts), size=min(n, len(corpus.window_starts)), replace=False)
    no_context = replace(cfg, context_probability=0.0)
    roll, cond, _ = make_batch(corpus, index, rng, no_context, augment=False, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    fake = sample_rolls(model, cond, SamplerOptions(steps=20, guidance=5.0), generator).cpu().numpy()
    real = roll.cpu().numpy()
    chroma = cond.aligned[:, : 88].cpu().numpy()  # chord-tone mask per pitch; recover chroma per step
    stats: dict[str, list[float]] = {k: [] for k in ("notes", "real_notes", "chord_tones", "real_chord_tones", "in_key", "real_in_key")}
    for i, w in enumerate(index):
        song = corpus.window_song[w]
        scale = _scale(int(corpus.key_tonic[song]), bool(corpus.key_minor[song]))
        step_chroma = _chroma_from_mask(chroma[i])
        for prefix, r in (("", fake[i]), ("real_", real[i])):
            stats[prefix + "notes"].append(float(r[0].sum()))
            stats[prefix + "chord_tones"].append(chord_tone_ratio(r, step_chroma))
            stats[prefix + "in_key"].append(in_key_ratio(r, scale))
    return {k: float(np.nanmean(v)) for k, v in stats.items()}


def _scale(tonic: int, minor: bool) -> tuple[int, ...]:
    from bgmgen.music.harmony import Key

    return Key(tonic, "minor" if minor else "major").scale


def _chroma_from_mask(mask: np.ndarray) -> np.ndarray:
    """[88, T] chord-tone mask -> [T, 12] chroma (the mask repeats every octave)."""
    from bgmgen.music.roll import PITCH_LOW

    chroma = np.zeros((mask.shape[1], 12))
    for col in range(12):
        chroma[:, (col + PITCH_LOW) % 12] = mask[col]
    return chroma


def cosine_lr(base_lr: float, step: int, warmup_steps: int, steps: int, max_minutes: float | None, elapsed: float) -> float:
    """Linear warm-up, then cosine decay to 10% over the run (in steps or, with a time budget, wall time)."""
    done = step / steps
    if max_minutes is not None:
        done = max(done, elapsed / (max_minutes * 60))
    # A Python float: a numpy scalar lr in the optimizer state makes torch.load(weights_only=True) refuse it.
    return base_lr * min(1.0, (step + 1) / warmup_steps) * float(0.1 + 0.45 * (1 + np.cos(np.pi * min(done, 1.0))))


@dataclass
class TrainingRun:
    """A model, its EMA copy and optimiser, and how far they got; shared by both training modes."""

    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    state_path: Path
    step: int = 0

    @classmethod
    def start(cls, config: UNetConfig, lr: float, device, state_path: Path, resume: bool, init_from: Path | None = None) -> TrainingRun:
        """Fresh weights (or those of ``init_from``), or the saved state at ``state_path`` when ``resume`` and it exists."""
        model, ema = build_model(config).to(device), build_model(config).to(device)
        if init_from is not None and not (resume and state_path.exists()):
            load_widened(model, init_from)
            log.info("starting from %s", init_from)
        ema.load_state_dict(model.state_dict())
        ema.requires_grad_(False)
        run = cls(model, ema, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01), state_path)
        if resume and state_path.exists():
            state = torch.load(state_path, map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            run.optimizer.load_state_dict(state["optimizer"])
            run.step = int(state["step"])
            log.info("resumed from %s at step %d", state_path, run.step)
        return run

    def update(self, loss: torch.Tensor, lr: float, ema_decay: float) -> float:
        """One optimiser step on ``loss`` at ``lr`` (gradients clipped at 1), then the EMA; returns the loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        decay = min(ema_decay, (1 + self.step) / (10 + self.step))  # short runs: a shorter memory at first
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.model.parameters()):
                e.lerp_(p, 1 - decay)
        self.step += 1
        return loss.item()

    def save(self, info: ModelInfo, out: Path) -> None:
        """The EMA weights as a safetensors checkpoint, and the full state for resuming."""
        save_checkpoint(self.ema, replace(info, training_steps=self.step), out)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "step": self.step}, self.state_path)


def train(cfg: TrainConfig, progress: Callable[[int, int, dict], None] | None = None, cache: Path = Path(".cache/pop909")) -> Path:
    """Train (or resume) and write the EMA checkpoint to ``cfg.out``; returns that path."""
    if cfg.part not in PARTS:
        raise BgmgenError(f"unknown part {cfg.part!r}: use {', '.join(PARTS)}")
    if (cfg.part == "accompaniment") != bool(cfg.model.melody_channels):
        raise BgmgenError("an accompaniment model (and only one) takes the melody as input channels")
    device = torch.device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    corpora = load_corpora(cfg.data, cache)
    train_set, valid_set = corpora["train"], corpora["valid"]
    run = TrainingRun.start(cfg.model, cfg.lr, device, _state_path(cfg), cfg.resume, cfg.init_from)
    scheduler = training_scheduler()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    rng = np.random.default_rng(cfg.seed + run.step)
    info = ModelInfo(config=cfg.model, feature_quantiles=train_set.feature_quantiles(cfg.part), schedule=dict(SCHEDULE), part=cfg.part)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    log_path = cfg.out.with_suffix(".log.jsonl")
    started = time.monotonic()
    losses: list[float] = []
    while run.step < cfg.steps:
        index = rng.integers(0, len(train_set.window_starts), size=cfg.batch_size)
        roll, cond, loss_mask = make_batch(train_set, index, rng, cfg, augment=True, device=device)
        drop = torch.as_tensor(rng.random(cfg.batch_size) < cfg.condition_dropout, device=device)
        lr = cosine_lr(cfg.lr, run.step, cfg.warmup_steps, cfg.steps, cfg.max_minutes, time.monotonic() - started)
        run.model.train()
        loss = diffusion_loss(run.model, scheduler, roll, cond, loss_mask, drop, cfg.positive_weight)
        losses.append(run.update(loss, lr, cfg.ema_decay))
        step = run.step
        record: dict = {"step": step, "loss": float(np.mean(losses[-100:])), "lr": lr}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            run.ema.eval()
            record.update(evaluate_samples(run.ema, valid_set, cfg, device))
            record["minutes"] = (time.monotonic() - started) / 60
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            log.info("step %d %s", step, record)
        out_of_time = cfg.max_minutes is not None and time.monotonic() - started > cfg.max_minutes * 60
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
            run.save(info, cfg.out)
        if progress:
            progress(step, cfg.steps, record)
        if out_of_time:
            break
    return cfg.out
