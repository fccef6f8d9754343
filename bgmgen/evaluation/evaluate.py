"""``bgmgen evaluate``: the music model measured on held-out POP909 music, beside baselines and ablations.

Every row writes music for the same test windows (8 bars each, from the committed test split) under
the same conditions the real music had: its chords, its per-bar density/energy/register/polyphony and
a random segmentation. Rows are the real music itself, the model with the default sampler, the model
without SAC-Att or without guidance, the model with other samplers, and two baselines that need no
model. Metrics follow Diff-BGM (PCHE, GPS, SI) plus chord accuracy, in-key ratio and the Spearman
correlation between the requested and the produced per-bar density.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bgmgen.evaluation.metrics import (
    chord_accuracy,
    grooving_pattern_similarity,
    in_key_ratio,
    onset_counts_per_bar,
    pitch_class_histogram_entropy,
)
from bgmgen.music.harmony import Chord, Key
from bgmgen.music.roll import BARS_PER_WINDOW, N_PITCHES, PITCH_LOW, STEPS_PER_BAR
from bgmgen.music.sampler import SamplerOptions

log = logging.getLogger("bgmgen")

# Model rows: how each one samples (differences from the default sampler options).
MODEL_ROWS: dict[str, dict] = {
    "model": {},
    "no_sac_att": {"segment_aware": False},
    "no_guidance": {"guidance": 1.0},
    "ddpm_1000": {"sampler": "ddpm", "steps": 1000},
    "ddim_50": {"sampler": "ddim", "steps": 50},
    "dpm_20": {"sampler": "dpm", "steps": 20},
    "dpm_10": {"sampler": "dpm", "steps": 10},
}
BASELINE_ROWS = ("random_in_key", "chord_arpeggio")
ALL_ROWS = ("ground_truth", *MODEL_ROWS, *BASELINE_ROWS)
METRICS = ("pche", "gps", "si", "chord_acc", "in_key", "density_spearman", "notes_per_8_bars", "seconds_per_8_bars")
METRIC_HEADERS = ("PCHE", "GPS", "SI", "chord acc", "in key", "density rho", "notes/8 bars", "s/8 bars")
SI_TEMPO = 120.0  # BPM used to turn pieces into audio for SI (the paper's parser assumes 120 too)
PIECE_BARS = 32  # SI needs room for repetition: whole 8-bar windows are too short to show structure

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class EvalOptions:
    data: Path  # POP909 folder (…/POP909) or a folder of prepared pop909_*.npz files
    checkpoint: Path | None = None  # None = the shipped model
    rows: tuple[str, ...] = ALL_ROWS
    windows: int = 64  # test windows per row (the same windows for every row)
    si_pieces: int = 8  # SI is measured on this many 32-bar pieces (one per test song), rendered to audio
    si_max_steps: int = 100  # rows sampling with more steps than this skip SI (ddpm_1000 would take an hour)
    batch_size: int = 32
    seed: int = 2024
    device: str = "cpu"
    sampler: SamplerOptions = field(default_factory=SamplerOptions)  # the default (``model``) row
    cache: Path = Path(".cache/pop909")


@dataclass
class TestWindows:
    """Held-out windows and everything a row needs to write music for them."""

    real: np.ndarray  # [N, 2, T, 88] the real music
    cond: object  # ConditionBatch
    chords: list[list[Chord]]  # [N][half bars] conditioning chord (root and major/minor colour)
    scales: list[tuple[int, ...]]  # [N] scale of the song's key
    density: np.ndarray  # [N, bars] requested density feature
    song_ids: list[str]
    corpus: object = None  # the test Corpus (pieces are sampled from it)
    piece_starts: list[int] = field(default_factory=list)  # first step of each 32-bar piece in the corpus


def load_test_windows(options: EvalOptions) -> TestWindows:
    """Pick ``options.windows`` windows of the test split (seeded) and their real conditions."""
    from bgmgen.errors import InputError
    from bgmgen.training.train import TrainConfig, load_corpora, make_batch

    if not options.data.exists():
        raise InputError(f"{options.data}: POP909 not found (point --data at the POP909 folder)")
    test = load_corpora(options.data, options.cache)["test"]
    rng = np.random.default_rng(options.seed)
    index = np.sort(rng.choice(len(test.window_starts), size=min(options.windows, len(test.window_starts)), replace=False))
    # No known prefix; a segment boundary at a quarter of the inner bar lines (SAC-Att has something to do).
    config = replace(TrainConfig(data=options.data), context_probability=0.0, segment_break_probability=0.25)
    roll, cond, _ = make_batch(test, index, rng, config, augment=False, device="cpu")
    _, chroma, root, _, features, _ = test.windows(index)
    chroma, root = chroma.numpy(), root.numpy()
    songs = test.window_song[index]
    return TestWindows(
        corpus=test,
        piece_starts=find_pieces(test, options.si_pieces, options.seed),
        real=roll.numpy(),
        cond=cond,
        chords=[half_bar_chords(chroma[i], root[i]) for i in range(len(index))],
        scales=[song_scale(test, s) for s in songs],
        density=features[:, :, 0].numpy(),
        song_ids=[test.song_ids[s] for s in songs],
    )


def find_pieces(corpus, count: int, seed: int) -> list[int]:
    """Start steps of ``count`` runs of ``PIECE_BARS`` whole bars, each from a different test song."""
    from bgmgen.training.pop909 import WINDOW_HOP_BARS

    starts = set(corpus.window_starts.tolist())
    hop = WINDOW_HOP_BARS * STEPS_PER_BAR
    needed = range(0, (PIECE_BARS - BARS_PER_WINDOW) * STEPS_PER_BAR + 1, hop)  # windows covering the piece
    pieces = {}
    for start, song in zip(corpus.window_starts.tolist(), corpus.window_song.tolist()):
        if song not in pieces and all(start + offset in starts for offset in needed):
            pieces[song] = start
    chosen = np.random.default_rng(seed).permutation(sorted(pieces))[:count]
    return [pieces[int(song)] for song in sorted(chosen)]


def piece_conditions(corpus, piece_starts: list[int]) -> tuple[np.ndarray, np.ndarray, list[list[Chord]], list[tuple[int, ...]]]:
    """Real rolls ``[P, 2, PIECE_BARS*16, 88]``, requested densities, chords and scales of the pieces."""
    steps = np.asarray(piece_starts, dtype=np.int64)[:, None] + np.arange(PIECE_BARS * STEPS_PER_BAR)
    real = corpus.roll[steps].transpose(0, 2, 1, 3).astype(np.float32)
    bars = np.asarray(piece_starts, dtype=np.int64)[:, None] // STEPS_PER_BAR + np.arange(PIECE_BARS)
    density = corpus.bar_features[bars, 0]
    chords = [half_bar_chords(corpus.chroma[s].astype(np.float32), corpus.root[s]) for s in steps]
    songs = [corpus.window_song[np.searchsorted(corpus.window_starts, p)] for p in piece_starts]
    scales = [song_scale(corpus, g) for g in songs]
    return real, density, chords, scales


def song_scale(corpus, song: int) -> tuple[int, ...]:
    """The scale of song ``song``'s annotated key."""
    return Key(int(corpus.key_tonic[song]), "minor" if corpus.key_minor[song] else "major").scale


def half_bar_chords(chroma: np.ndarray, root: np.ndarray) -> list[Chord]:
    """The conditioning chord at the middle of each half bar: its root and major or minor colour."""
    chords = []
    for mid in range(STEPS_PER_BAR // 4, chroma.shape[0], STEPS_PER_BAR // 2):
        if root[mid] < 0:
            chords.append(Chord(None, "", None))
            continue
        intervals = {(pc - root[mid]) % 12 for pc in np.flatnonzero(chroma[mid])}
        chords.append(Chord(int(root[mid]), "min" if 3 in intervals and 4 not in intervals else "maj", int(root[mid])))
    return chords


# ----------------------------------------------------------------------------- baselines


def random_in_key(density: np.ndarray, scale: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random notes of the key, as many per bar as the requested density asks, each a beat long."""
    from bgmgen.music.conditioning import DENSITY_SCALE

    n_bars = len(density)
    roll = np.zeros((2, n_bars * STEPS_PER_BAR, N_PITCHES), dtype=np.float32)
    columns = [c for c in range(N_PITCHES) if (c + PITCH_LOW) % 12 in scale and 48 <= c + PITCH_LOW <= 84]
    for bar, level in enumerate(density):
        count = int(round(np.expm1(level * DENSITY_SCALE)))
        for step in rng.integers(0, STEPS_PER_BAR, size=count) + bar * STEPS_PER_BAR:
            _put_note(roll, int(step), int(rng.choice(columns)), 4)
    return roll


def chord_arpeggio(density: np.ndarray, chords: list[Chord]) -> np.ndarray:
    """A rule-based accompaniment: the bass of each chord held, its tones arpeggiated upwards.

    Each bar gets as many arpeggio notes (on an even grid) as the requested density asks.
    """
    from bgmgen.music.conditioning import DENSITY_SCALE

    n_bars = len(density)
    roll = np.zeros((2, n_bars * STEPS_PER_BAR, N_PITCHES), dtype=np.float32)
    half = STEPS_PER_BAR // 2
    for bar, level in enumerate(density):
        count = int(np.clip(round(np.expm1(level * DENSITY_SCALE)) - 2, 0, STEPS_PER_BAR))
        grid = np.unique(np.linspace(0, STEPS_PER_BAR, count, endpoint=False).astype(int)) if count else []
        for h in (0, 1):
            chord = chords[2 * bar + h]
            if chord.is_none:
                continue
            start = bar * STEPS_PER_BAR + h * half
            _put_note(roll, start, 36 + (chord.root - 36) % 12 - PITCH_LOW, half)  # bass C2..B2
            tones = sorted(60 + (pc - 60) % 12 for pc in chord.pitch_classes)  # one octave from C4
            steps = [s for s in grid if h * half <= s < (h + 1) * half]
            for i, s in enumerate(steps):
                _put_note(roll, bar * STEPS_PER_BAR + int(s), tones[i % len(tones)] - PITCH_LOW, 2)
    return roll


def _put_note(roll: np.ndarray, step: int, column: int, length: int) -> None:
    roll[0, step, column] = 1
    roll[1, step + 1 : step + length, column] = 1


# ----------------------------------------------------------------------------- metrics


def density_spearman(requested: np.ndarray, rolls: np.ndarray) -> float:
    """Spearman correlation between requested density and produced onsets, over all bars of all windows."""
    from scipy.stats import spearmanr

    produced = np.concatenate([onset_counts_per_bar(r) for r in rolls])
    return float(spearmanr(requested.reshape(-1), produced).statistic)


def row_metrics(rolls: np.ndarray, windows: TestWindows, pieces: np.ndarray | None) -> dict[str, float]:
    """The metrics of one row, means over windows; SI over the 32-bar ``pieces`` (NaN without)."""
    per_window = np.array(
        [
            [
                pitch_class_histogram_entropy(r),
                grooving_pattern_similarity(r),
                chord_accuracy(r, windows.chords[i]),
                in_key_ratio(r, windows.scales[i]),
                r[0].sum(),
            ]
            for i, r in enumerate(rolls)
        ],
        dtype=float,
    )
    pche, gps, chord_acc, in_key, notes = np.nanmean(per_window, axis=0)
    return {
        "pche": pche,
        "gps": gps,
        "si": structure_of(pieces) if pieces is not None and len(pieces) else float("nan"),
        "chord_acc": chord_acc,
        "in_key": in_key,
        "density_spearman": density_spearman(windows.density, rolls),
        "notes_per_8_bars": notes,
    }


def structure_of(rolls: np.ndarray) -> float:
    """Mean SI over rolls rendered to audio at ``SI_TEMPO``."""
    from bgmgen.evaluation.structure import structure_indicator_from_roll

    return float(np.nanmean([structure_indicator_from_roll(r, SI_TEMPO) for r in rolls]))


# ----------------------------------------------------------------------------- the evaluation


def sample_row(generator, windows: TestWindows, options: SamplerOptions, seed: int, batch_size: int,
               progress: Callable[[float], None] | None = None) -> np.ndarray:
    """The model's rolls for every test window, sampled in batches."""
    import torch

    from bgmgen.music.sampler import sample_rolls

    torch_generator = torch.Generator(device=generator.device).manual_seed(seed)
    n = len(windows.real)
    out = []
    for start in range(0, n, batch_size):
        cond = windows.cond.slice(start, start + batch_size).to(generator.device)
        out.append(sample_rolls(generator.model, cond, options, torch_generator).cpu().numpy())
        if progress:
            progress(min(start + batch_size, n) / n)
    return np.concatenate(out)


def sample_pieces(generator, windows: TestWindows, options: SamplerOptions, seed: int) -> np.ndarray:
    """The model's 32-bar pieces, window after window, each continuing the last (as ``generate`` does)."""
    import torch

    from bgmgen.music.conditioning import build_batch
    from bgmgen.music.generate import HOP_BARS, OVERLAP_BARS
    from bgmgen.music.roll import WINDOW_STEPS
    from bgmgen.music.sampler import sample_rolls

    corpus, starts = windows.corpus, np.asarray(windows.piece_starts)
    torch_generator = torch.Generator(device=generator.device).manual_seed(seed)
    index_of = {int(s): i for i, s in enumerate(corpus.window_starts)}
    pieces = np.zeros((len(starts), 2, PIECE_BARS * STEPS_PER_BAR, N_PITCHES), dtype=np.float32)
    for k, bar in enumerate(range(0, PIECE_BARS - OVERLAP_BARS, HOP_BARS)):
        first = bar * STEPS_PER_BAR
        index = np.array([index_of[int(s) + first] for s in starts])
        _, chroma, root, bass, features, segments = corpus.windows(index)
        known = 0 if k == 0 else OVERLAP_BARS * STEPS_PER_BAR
        context = torch.as_tensor(pieces[:, :, first : first + WINDOW_STEPS])
        cond = build_batch(chroma, root, bass, features, segments, context, torch.full((len(starts),), known))
        new = sample_rolls(generator.model, cond.to(generator.device), options, torch_generator).cpu().numpy()
        pieces[:, :, first + known : first + WINDOW_STEPS] = new[:, :, known:]
    return pieces


def seconds_per_window(generator, windows: TestWindows, options: SamplerOptions, repeats: int = 3) -> float:
    """Wall time to write one 8-bar window alone (what a user waits for), median of ``repeats``."""
    import torch

    from bgmgen.music.sampler import sample_rolls

    cond = windows.cond.slice(0, 1).to(generator.device)
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        sample_rolls(generator.model, cond, options, torch.Generator(device=generator.device).manual_seed(r))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def evaluate(options: EvalOptions, progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """Run every row of ``options.rows``; returns ``{row: {metric: value}}``."""
    from bgmgen.errors import BgmgenError
    from bgmgen.music.generate import MusicGenerator

    unknown = [r for r in options.rows if r not in ALL_ROWS]
    if unknown:
        raise BgmgenError(f"unknown evaluation row(s) {', '.join(unknown)}; choose from {', '.join(ALL_ROWS)}")
    report = progress or (lambda row, fraction: None)
    windows = load_test_windows(options)
    real_pieces, piece_density, piece_chords, piece_scales = piece_conditions(windows.corpus, windows.piece_starts)
    generator = None
    if any(r in MODEL_ROWS for r in options.rows):
        generator = MusicGenerator.from_checkpoint(options.checkpoint, options.device, options.sampler)
    rng = np.random.default_rng(options.seed)
    results: dict[str, dict[str, float]] = {}
    for row in options.rows:
        seconds = float("nan")
        if row == "ground_truth":
            rolls, pieces = windows.real, real_pieces
        elif row == "random_in_key":
            rolls = np.stack([random_in_key(d, s, rng) for d, s in zip(windows.density, windows.scales)])
            pieces = np.array([random_in_key(d, s, rng) for d, s in zip(piece_density, piece_scales)])
        elif row == "chord_arpeggio":
            rolls = np.stack([chord_arpeggio(d, c) for d, c in zip(windows.density, windows.chords)])
            pieces = np.array([chord_arpeggio(d, c) for d, c in zip(piece_density, piece_chords)])
        else:
            sampler = replace(options.sampler, **MODEL_ROWS[row])
            rolls = sample_row(generator, windows, sampler, options.seed, options.batch_size, lambda f: report(row, 0.8 * f))
            pieces = None
            if sampler.steps <= options.si_max_steps and windows.piece_starts:
                pieces = sample_pieces(generator, windows, sampler, options.seed)
            report(row, 0.9)
            seconds = seconds_per_window(generator, windows, sampler, repeats=1 if sampler.steps > 100 else 3)
        results[row] = {**row_metrics(rolls, windows, pieces), "seconds_per_8_bars": seconds}
        report(row, 1.0)
        log.info("evaluated %s: %s", row, results[row])
    return results


def save_results(results: dict[str, dict[str, float]], options: EvalOptions, path: Path) -> None:
    """``{"rows": {row: {metric: value}}, "setup": {...}}`` as JSON (NaN written as null)."""
    import json

    from bgmgen import __version__
    from bgmgen.files import atomic_output

    def clean(value: float) -> float | None:
        return None if value != value else round(float(value), 4)

    document = {
        "rows": {row: {m: clean(v) for m, v in values.items()} for row, values in results.items()},
        "setup": {
            "bgmgen": __version__,
            "checkpoint": str(options.checkpoint or "shipped"),
            "windows": options.windows,
            "si_pieces": options.si_pieces,
            "si": f"SI(3, 8) of {PIECE_BARS}-bar pieces rendered at {SI_TEMPO:g} BPM",
            "seed": options.seed,
            "default_sampler": {"sampler": options.sampler.sampler, "steps": options.sampler.steps, "guidance": options.sampler.guidance},
        },
    }
    with atomic_output(path) as partial:
        partial.write_text(json.dumps(document, indent=2) + "\n")
