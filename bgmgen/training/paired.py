"""Video-conditioned training on paired features in the BGM909 layout (``bgmgen train --paired DIR``).

Diff-BGM conditions its diffusion model on per-beat CLIP video features and BLIP caption features of
each song's music video, with segment-aware cross-attention (SAC-Att). This module reads such pairs
from a folder (layout in docs/paired-training.md), pools the video features per bar *by timestamp*
(the paper warps them uniformly onto the song), gives each bar the caption of the video segment it
falls in, and trains ``model.MusicUNet`` with one visual and one caption token per bar; a bar's music
attends only to the tokens of bars in its own video segment. The music-side conditions (chords, bar
features) are left empty, as in the paper, so the music can only follow the video. Evaluation
generates every test video's music and scores Diff-BGM's retrieval precision (``retrieval.py``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bgmgen.errors import InputError
from bgmgen.music.roll import BARS_PER_WINDOW, N_PITCHES, STEPS_PER_BAR, STEPS_PER_BEAT, WINDOW_STEPS
from bgmgen.music.unet import UNetConfig
from bgmgen.training.pop909 import song_split

log = logging.getLogger("bgmgen")

PAIR_FILE = "pair.json"  # {"song_id": "001", "segments": [[start_s, end_s], ...], "offset": 0.0}
VIDEO_FEATURES = "video_features.npy"  # [frames, video_dim] one CLIP image embedding per sampled frame
VIDEO_TIMES = "video_times.npy"  # [frames] seconds of each frame in the video
TEXT_FEATURES = "text_features.npy"  # [segments, text_dim] one caption embedding per segment
MUSIC_FILE = "music.npz"  # optional: roll [steps, 2, 88] uint8, step_times [steps] s, window_starts [W]
SPLIT_NAME = "split.json"  # optional {"train": [video ids], "valid": [...], "test": [...]}


@dataclass
class PairedSong:
    """One video and its song, with the video's features already laid on the song's bars."""

    video_id: str
    song_id: str
    roll: np.ndarray  # [steps, 2, 88] uint8 on the song's sixteenth-note grid
    window_starts: np.ndarray  # [W] steps where 8 whole 4/4 bars begin
    bar_steps: np.ndarray  # [bars] sorted start steps of every bar some window covers
    bar_video: np.ndarray  # [bars, video_dim] float32 mean CLIP feature of the frames in the bar
    bar_text: np.ndarray  # [bars, text_dim] float32 caption feature of the bar's video segment
    bar_segment: np.ndarray  # [bars] int video segment of the bar (SAC-Att groups)

    def window_bars(self, start: int) -> np.ndarray:
        """Row indices into the ``bar_*`` tables of the 8 bars of the window starting at ``start``."""
        return np.searchsorted(self.bar_steps, start + STEPS_PER_BAR * np.arange(BARS_PER_WINDOW))


def step_times_from_beats(beat_times: np.ndarray) -> np.ndarray:
    """Seconds of every sixteenth step, interpolating linearly between annotated beats (as pop909 does)."""
    intervals = np.diff(beat_times, append=beat_times[-1] + (beat_times[-1] - beat_times[-2]))
    return (beat_times[:, None] + intervals[:, None] * np.arange(STEPS_PER_BEAT) / STEPS_PER_BEAT).ravel()


def _load_music(folder: Path, song_id: str, pop909: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(roll, step_times, window_starts)`` from the pair's music.npz or from the POP909 song."""
    if (folder / MUSIC_FILE).exists():
        with np.load(folder / MUSIC_FILE) as data:
            roll, times = data["roll"].astype(np.uint8), data["step_times"].astype(np.float64)
            starts = data["window_starts"] if "window_starts" in data.files else np.arange(0, len(roll), 2 * STEPS_PER_BAR)
        return roll, times, starts[starts + WINDOW_STEPS <= len(roll)].astype(np.int64)
    if pop909 is None:
        raise InputError(f"{folder}: no {MUSIC_FILE}; give the POP909 folder (--data) to read song {song_id}")
    from bgmgen.training.pop909 import load_song

    song_dir = pop909 / song_id
    if not song_dir.is_dir():
        raise InputError(f"{folder}: POP909 song {song_id} not found under {pop909}")
    song = load_song(song_dir)
    beats = np.loadtxt(song_dir / "beat_midi.txt", ndmin=2)[:, 0]
    return song.roll, step_times_from_beats(beats), song.window_starts


def load_pair(folder: Path, pop909: Path | None = None) -> PairedSong:
    """Read one pair folder; raises InputError naming the file that is missing or inconsistent."""
    try:
        meta = json.loads((folder / PAIR_FILE).read_text())
        video = np.load(folder / VIDEO_FEATURES).astype(np.float32)
        times = np.load(folder / VIDEO_TIMES).astype(np.float64)
        text = np.load(folder / TEXT_FEATURES).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder}: unreadable pair ({exc})") from exc
    segments = np.asarray(meta.get("segments") or [[0.0, float("inf")]], dtype=np.float64).reshape(-1, 2)
    if video.ndim != 2 or len(video) != len(times) or len(video) == 0:
        raise InputError(f"{folder}: {VIDEO_FEATURES} needs one row per entry of {VIDEO_TIMES}")
    if text.ndim != 2 or len(text) != len(segments):
        raise InputError(f"{folder}: {TEXT_FEATURES} needs one row per segment of {PAIR_FILE} ({len(segments)})")
    song_id = str(meta.get("song_id", folder.name))
    roll, step_times, starts = _load_music(folder, song_id, pop909)
    if len(starts) == 0:
        raise InputError(f"{folder}: the song has no 8-bar window of whole 4/4 bars")
    step_times = step_times + float(meta.get("offset", 0.0))  # music time -> video time

    order = np.argsort(times)
    times, video = times[order], video[order]
    bar_steps = np.unique(starts[:, None] + STEPS_PER_BAR * np.arange(BARS_PER_WINDOW))
    bar_video = np.empty((len(bar_steps), video.shape[1]), dtype=np.float32)
    ends = np.append(step_times, step_times[-1] + (step_times[-1] - step_times[-2]))
    bar_start, bar_end = step_times[bar_steps], ends[np.minimum(bar_steps + STEPS_PER_BAR, len(step_times))]
    for i, (t0, t1) in enumerate(zip(bar_start, bar_end)):
        lo, hi = np.searchsorted(times, [t0, t1])
        if hi > lo:
            bar_video[i] = video[lo:hi].mean(axis=0)
        else:  # no frame inside the bar (sparse sampling): the nearest one
            bar_video[i] = video[np.argmin(np.abs(times - (t0 + t1) / 2))]
    middle = (bar_start + bar_end) / 2
    bar_segment = np.clip(np.searchsorted(segments[:, 0], middle, side="right") - 1, 0, len(segments) - 1)
    return PairedSong(folder.name, song_id, roll, starts, bar_steps, bar_video, text[bar_segment], bar_segment)


def paired_split(root: Path, split: str) -> list[str]:
    """Video ids of ``split``: from ``root/split.json``, else the POP909 split of each pair's song."""
    ids = sorted(p.name for p in root.iterdir() if (p / PAIR_FILE).is_file()) if root.is_dir() else []
    if not ids:
        raise InputError(f"{root}: no paired feature folders (each needs a {PAIR_FILE}; see docs/paired-training.md)")
    if (root / SPLIT_NAME).exists():
        chosen = json.loads((root / SPLIT_NAME).read_text()).get(split, [])
        return [i for i in chosen if i in set(ids)]
    songs = set(song_split().get(split, []))
    return [i for i in ids if str(json.loads((root / i / PAIR_FILE).read_text()).get("song_id", i)) in songs]


@dataclass
class PairedDataset:
    """The pairs of one split and every 8-bar training window in them."""

    songs: list[PairedSong]
    window_song: np.ndarray = field(init=False)  # [windows] index into songs
    window_start: np.ndarray = field(init=False)  # [windows] start step in that song

    def __post_init__(self) -> None:
        self.window_song = np.concatenate([np.full(len(s.window_starts), i) for i, s in enumerate(self.songs)])
        self.window_start = np.concatenate([s.window_starts for s in self.songs])

    @classmethod
    def load(cls, root: Path, split: str, pop909: Path | None = None) -> PairedDataset:
        """Load ``split`` of the paired folder ``root``; raises InputError when it has no pairs."""
        ids = paired_split(root, split)
        if not ids:
            raise InputError(f"{root}: the {split} split has no pairs")
        songs = [load_pair(root / i, pop909) for i in ids]
        dims = {(s.bar_video.shape[1], s.bar_text.shape[1]) for s in songs}
        if len(dims) > 1:
            raise InputError(f"{root}: pairs disagree on feature widths {sorted(dims)}")
        return cls(songs)

    @property
    def video_dim(self) -> int:
        return self.songs[0].bar_video.shape[1]

    @property
    def text_dim(self) -> int:
        return self.songs[0].bar_text.shape[1]

    def batch(self, items: list[tuple[int, int]], condition_songs: list[int] | None = None, transpose=None, device="cpu"):
        """Rolls ``[B, 2, T, 88]`` and their ConditionBatch for ``(song, window start)`` items.

        ``condition_songs`` takes each item's video features from another song instead (window by
        window, wrapping), for the shuffled-condition control; ``transpose`` [B] shifts the music only.
        """
        import torch

        from bgmgen.music.conditioning import build_batch

        rolls, video, text, segments = [], [], [], []
        for j, (s, start) in enumerate(items):
            song = self.songs[s]
            roll = song.roll[start : start + WINDOW_STEPS].transpose(1, 0, 2).astype(np.float32)
            if transpose is not None and transpose[j]:
                roll = _shift_pitch(roll, int(transpose[j]))
            rolls.append(roll)
            source = song if condition_songs is None else self.songs[condition_songs[j]]
            if source is not song:  # the same window position in the other video
                k = int(np.searchsorted(song.window_starts, start))
                start = int(source.window_starts[k % len(source.window_starts)])
            bars = source.window_bars(start)
            video.append(source.bar_video[bars])
            text.append(source.bar_text[bars])
            segments.append(source.bar_segment[bars])
        n = len(items)
        roll = torch.as_tensor(np.stack(rolls), device=device)
        # No music-side conditions: empty chords and features, as in Diff-BGM (the video is the condition).
        chroma = torch.zeros(n, WINDOW_STEPS, 12, device=device)
        none = torch.full((n, WINDOW_STEPS), -1, dtype=torch.long, device=device)
        features = torch.zeros(n, BARS_PER_WINDOW, 4, device=device)
        cond = build_batch(chroma, none, none, features, torch.as_tensor(np.stack(segments), device=device))
        cond = replace(cond, video=torch.as_tensor(np.stack(video), device=device),
                       text=torch.as_tensor(np.stack(text), device=device))
        return roll, cond


def _shift_pitch(roll: np.ndarray, semitones: int) -> np.ndarray:
    """Shift a roll ``[2, T, 88]`` by whole semitones, dropping notes pushed off the keyboard (no wrap)."""
    out = np.zeros_like(roll)
    if semitones > 0:
        out[:, :, semitones:] = roll[:, :, : N_PITCHES - semitones]
    else:
        out[:, :, : N_PITCHES + semitones] = roll[:, :, -semitones:]
    return out


def evaluation_windows(song: PairedSong) -> list[int]:
    """Non-overlapping window starts covering the song from its first window, in order."""
    starts, last = [], -WINDOW_STEPS
    for start in song.window_starts:
        if start >= last + WINDOW_STEPS:
            starts.append(int(start))
            last = start
    return starts


@dataclass(frozen=True)
class PairedEvalOptions:
    sampler_steps: int = 20  # denoising steps per window
    guidance: float = 3.0  # classifier-free guidance scale
    segment_aware: bool = True  # SAC-Att on (off = the "w/o SAC-Att" ablation)
    shuffle_conditions: bool = False  # give each video another video's features (a control: ~chance)
    k: int = 20  # P@k
    candidates: int = 60  # candidates per query, as in Diff-BGM
    seed: int = 0  # sampling noise and candidate draws
    batch_size: int = 64  # windows denoised at once


def evaluate_paired(model, dataset: PairedDataset, options: PairedEvalOptions = PairedEvalOptions(), device="cpu") -> dict[str, float]:
    """Generate music for every video of ``dataset`` and score retrieval against all its ground truth.

    Returns ``p_at_k`` (0..1), ``chance``, ``chunks`` (queries), and notes per bar of the generated and
    the real music. Raises InputError if the set has too few chunks for P@k.
    """
    import torch

    from bgmgen.evaluation.retrieval import CHUNK_BARS, chance_level, music_embedding, retrieval_precision_at_k
    from bgmgen.music.sampler import SamplerOptions, sample_rolls

    items = [(s, w) for s, song in enumerate(dataset.songs) for w in evaluation_windows(song)]
    if len(items) * BARS_PER_WINDOW // CHUNK_BARS <= options.k:  # found before any sampling
        raise InputError(f"P@{options.k} needs more than {options.k} chunks; this split has {len(items) * BARS_PER_WINDOW // CHUNK_BARS}")
    n_songs = len(dataset.songs)
    sources = None
    if options.shuffle_conditions:
        sources = [(s + 1) % n_songs for s, _ in items]  # every video gets its neighbour's features
    generator = torch.Generator(device=device).manual_seed(options.seed)
    sampler = SamplerOptions(steps=options.sampler_steps, guidance=options.guidance, segment_aware=options.segment_aware)
    fake, real = [], []
    model.eval()
    for i in range(0, len(items), options.batch_size):
        part = items[i : i + options.batch_size]
        roll, cond = dataset.batch(part, None if sources is None else sources[i : i + options.batch_size], device=device)
        fake.append(sample_rolls(model, cond, sampler, generator).cpu().numpy())
        real.append(roll.cpu().numpy())
    fake_rolls, real_rolls = np.concatenate(fake), np.concatenate(real)
    song_of = np.array([s for s, _ in items])
    fake_emb, real_emb = [], []
    for s in range(n_songs):
        rows = np.flatnonzero(song_of == s)
        # A video's music = its windows in order; chunk i of the generated music goes with chunk i of the real.
        fake_emb.append(music_embedding(np.concatenate(fake_rolls[rows], axis=1)))
        real_emb.append(music_embedding(np.concatenate(real_rolls[rows], axis=1)))
    fake_all, real_all = np.concatenate(fake_emb), np.concatenate(real_emb)
    p = retrieval_precision_at_k(fake_all, real_all, options.k, options.candidates, options.seed)
    bars = fake_rolls.shape[0] * BARS_PER_WINDOW
    return {
        "p_at_k": p,
        "chance": chance_level(len(real_all), options.k, options.candidates),
        "chunks": float(len(real_all)),
        "notes_per_bar": float(fake_rolls[:, 0].sum() / bars),
        "real_notes_per_bar": float(real_rolls[:, 0].sum() / bars),
    }


def paired_model_config(base: UNetConfig, dataset: PairedDataset) -> UNetConfig:
    """``base`` with the feature widths of ``dataset`` switched on."""
    return replace(base, video_dim=dataset.video_dim, text_dim=dataset.text_dim)


@dataclass(frozen=True)
class PairedTrainConfig:
    data: Path  # paired feature folder in the BGM909 layout (docs/paired-training.md)
    pop909: Path | None = None  # POP909 folder, for pairs that name a song instead of shipping music.npz
    out: Path = Path("models/bgmgen-paired.safetensors")  # EMA weights, written at every checkpoint
    steps: int = 20000  # total optimiser steps
    max_minutes: float | None = None  # stop (and save) after this much wall time
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    condition_dropout: float = 0.15  # share of items trained with null video/caption tokens (for guidance)
    max_transpose: int = 0  # music-only transposition range (features stay: a video says little about key)
    positive_weight: float = 1.0  # BCE weight of note cells
    noise_bias: float = 1.0  # timesteps drawn as T * u**noise_bias: < 1 trains more on heavy noise (where the video matters)
    checkpoint_every: int = 1000
    eval_every: int = 1000  # P@k on the valid split (costs one generation pass)
    evaluation: PairedEvalOptions = field(default_factory=PairedEvalOptions)
    seed: int = 0
    device: str = "cpu"
    resume: bool = True
    state: Path | None = None  # full training state for resuming; default: beside ``out``
    model: UNetConfig = field(default_factory=UNetConfig)  # video_dim/text_dim are set from the data


def train_paired(cfg: PairedTrainConfig, progress=None) -> Path:
    """Train (or resume) the video-conditioned model and write its EMA checkpoint to ``cfg.out``.

    Logs one JSON line per evaluation (loss, lr, P@k on the valid split) to ``<out>.log.jsonl``;
    ``progress(step, total, record)`` is called after every step. Returns ``cfg.out``.
    """
    import time

    import torch

    from bgmgen.music.checkpoint import ModelInfo
    from bgmgen.music.sampler import SCHEDULE, training_scheduler
    from bgmgen.training.train import TrainingRun, cosine_lr

    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_set = PairedDataset.load(cfg.data, "train", cfg.pop909)
    try:
        valid_set: PairedDataset | None = PairedDataset.load(cfg.data, "valid", cfg.pop909)
    except InputError:
        valid_set = None
        log.warning("%s: no valid split; training without P@k checks", cfg.data)
    config = paired_model_config(cfg.model, train_set)
    run = TrainingRun.start(config, cfg.lr, device, cfg.state or cfg.out.with_name(cfg.out.stem + ".train-state.pt"), cfg.resume)
    scheduler = training_scheduler()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    rng = np.random.default_rng(cfg.seed + run.step)
    info = ModelInfo(config=config, schedule=dict(SCHEDULE), notes=f"paired: video+caption conditioned on {cfg.data.name}")
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    log_path = cfg.out.with_suffix(".log.jsonl")
    started = time.monotonic()
    losses: list[float] = []
    while run.step < cfg.steps:
        index = rng.integers(0, len(train_set.window_start), size=cfg.batch_size)
        items = [(int(train_set.window_song[i]), int(train_set.window_start[i])) for i in index]
        shift = rng.integers(-cfg.max_transpose, cfg.max_transpose + 1, size=cfg.batch_size)
        roll, cond = train_set.batch(items, transpose=shift, device=device)
        drop = torch.as_tensor(rng.random(cfg.batch_size) < cfg.condition_dropout, device=device)
        lr = cosine_lr(cfg.lr, run.step, cfg.warmup_steps, cfg.steps, cfg.max_minutes, time.monotonic() - started)
        run.model.train()
        loss = _paired_loss(run.model, scheduler, roll, cond, drop, cfg.positive_weight, cfg.noise_bias)
        losses.append(run.update(loss, lr, cfg.ema_decay))
        step = run.step
        record: dict = {"step": step, "loss": float(np.mean(losses[-100:])), "lr": lr}
        out_of_time = cfg.max_minutes is not None and time.monotonic() - started > cfg.max_minutes * 60
        if valid_set is not None and (step % cfg.eval_every == 0 or step == cfg.steps or out_of_time):
            try:
                record.update({f"valid_{k}": v for k, v in evaluate_paired(run.ema, valid_set, cfg.evaluation, device).items()})
            except InputError as exc:  # a valid split too small for P@k: keep training
                log.warning("skipping P@k: %s", exc)
            record["minutes"] = (time.monotonic() - started) / 60
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            log.info("step %d %s", step, record)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
            run.save(info, cfg.out)
        if progress:
            progress(step, cfg.steps, record)
        if out_of_time:
            break
    return cfg.out


def _paired_loss(model, scheduler, roll, cond, drop, pos_weight: float, noise_bias: float):
    """Weighted BCE of the clean roll predicted from ``roll`` noised at ``T * u**noise_bias`` (u uniform).

    Under light noise the model only has to copy its input; the video can only help under heavy noise,
    so a ``noise_bias`` below 1 spends more of a short run where the features are learned.
    """
    import torch
    import torch.nn.functional as F

    from bgmgen.music.sampler import TRAIN_TIMESTEPS, from_roll

    x0 = from_roll(roll)
    u = torch.rand(x0.shape[0], device=x0.device)
    t = (TRAIN_TIMESTEPS * u**noise_bias).long().clamp(max=TRAIN_TIMESTEPS - 1)
    logits = model(scheduler.add_noise(x0, torch.randn_like(x0), t), t, cond, drop_condition=drop)
    target = (x0 > 0).float()
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(pos_weight, device=x0.device))


def evaluate_checkpoint(checkpoint: Path, data: Path, split: str = "test", pop909: Path | None = None,
                        options: PairedEvalOptions = PairedEvalOptions(), device: str = "cpu") -> dict[str, float]:
    """``evaluate_paired`` for a saved paired checkpoint; raises ModelError if it is not a paired model."""
    from bgmgen.errors import ModelError
    from bgmgen.music.checkpoint import load_checkpoint

    model, info = load_checkpoint(checkpoint, device)
    if not info.config.video_dim:
        raise ModelError(f"{checkpoint} is a music-only model; train one with bgmgen train --paired")
    return evaluate_paired(model, PairedDataset.load(data, split, pop909), options, device)
