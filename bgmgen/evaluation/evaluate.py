"""``bgmgen evaluate``: the music model measured on held-out POP909 music, beside baselines and ablations.

Every row writes music for the same test windows (8 bars each, from the committed test split) under
the same conditions the real music had: its chords, its per-bar density/energy/register/polyphony and
a random segmentation. Rows are the real music itself, the model with the default sampler, the model
without SAC-Att or without guidance, the model with other samplers, and two baselines that need no
model. Metrics follow Diff-BGM (PCHE, GPS, SI) plus chord accuracy, in-key ratio and the Spearman
correlation between the requested and the produced per-bar density.

Per-part rows (``evaluate_parts``) measure the melody against POP909's MELODY track (steps, leaps,
range, chord tones on beats 1 and 3, empty bars, PCHE) and the accompaniment against BRIDGE + PIANO
(the metrics above), for the cascade and for the shipped single-roll model split at its top line,
with the real music's band (10th to 90th percentile over all held-out windows) beside them.
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
# Per-part rows: the real parts, their bands, the cascade (melody model, then the accompaniment model
# given that melody or, for comparison, the real one) and a single-roll model split at its top line.
MELODY_ROWS = ("melody_pop909", "melody_pop909_p10", "melody_pop909_p90", "melody_model", "melody_top_line")
ACCOMPANIMENT_ROWS = ("accompaniment_pop909", "accompaniment_pop909_p10", "accompaniment_pop909_p90",
                      "accompaniment_model", "accompaniment_given_real_melody", "accompaniment_below_top_line")
PART_ROWS = (*MELODY_ROWS, *ACCOMPANIMENT_ROWS)
TOP_LINE_ROWS = ("melody_top_line", "accompaniment_below_top_line")  # need a single-roll model
MELODY_HEADERS = ("stepwise", "leaps > 7", "range", "chord tones 1&3", "empty bars", "PCHE")
PART_METRICS = ("pche", "gps", "chord_acc", "in_key", "density_spearman", "notes_per_8_bars")
PART_METRIC_HEADERS = ("PCHE", "GPS", "chord acc", "in key", "density rho", "notes/8 bars")
ALL_ROWS = ("ground_truth", *MODEL_ROWS, *BASELINE_ROWS, *PART_ROWS)
METRICS = ("pche", "gps", "si", "chord_acc", "in_key", "density_spearman", "notes_per_8_bars", "seconds_per_8_bars")
METRIC_HEADERS = ("PCHE", "GPS", "SI", "chord acc", "in key", "density rho", "notes/8 bars", "s/8 bars")
SI_TEMPO = 120.0  # BPM used to turn pieces into audio for SI (the paper's parser assumes 120 too)
PIECE_BARS = 32  # SI needs room for repetition: whole 8-bar windows are too short to show structure

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class EvalOptions:
    data: Path  # POP909 folder (…/POP909) or a folder of prepared pop909_*.npz files
    checkpoint: Path | None = None  # None = the shipped model
    melody_checkpoint: Path | None = None  # for a cascade: None = the file beside ``checkpoint``
    compare_checkpoint: Path | None = None  # a single-roll model for the top-line rows; None = the checkpoint itself if single-roll
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
    """The model's 32-bar pieces, window after window, each continuing the last (as ``generate`` does);
    a cascade writes each window's melody, then its accompaniment under it, and returns both in one."""
    import torch

    from bgmgen.music.conditioning import build_batch
    from bgmgen.music.generate import HOP_BARS, MELODY_ONSET_THRESHOLD, OVERLAP_BARS, decode_one_voice
    from bgmgen.music.roll import WINDOW_STEPS
    from bgmgen.music.sampler import sample_rolls

    corpus, starts = windows.corpus, np.asarray(windows.piece_starts)
    torch_generator = torch.Generator(device=generator.device).manual_seed(seed)
    index_of = {int(s): i for i, s in enumerate(corpus.window_starts)}
    cascade = generator.melody_model is not None
    shape = (len(starts), 2, PIECE_BARS * STEPS_PER_BAR, N_PITCHES)
    pieces, melodies = np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)
    for k, bar in enumerate(range(0, PIECE_BARS - OVERLAP_BARS, HOP_BARS)):
        first = bar * STEPS_PER_BAR
        span = slice(first, first + WINDOW_STEPS)
        index = np.array([index_of[int(s) + first] for s in starts])
        known = 0 if k == 0 else OVERLAP_BARS * STEPS_PER_BAR
        known_steps = torch.full((len(starts),), known)
        melody = None
        if cascade:
            _, chroma, root, bass, features, segments = corpus.windows(index, part="melody")
            cond = build_batch(chroma, root, bass, features, segments, torch.as_tensor(melodies[:, :, span]), known_steps)
            soft = sample_rolls(generator.melody_model, cond.to(generator.device), options, torch_generator, binary=False).cpu().numpy()
            melodies[:, :, first + known : first + WINDOW_STEPS] = np.stack([decode_one_voice(r, MELODY_ONSET_THRESHOLD) for r in soft])[:, :, known:]
            melody = torch.as_tensor(melodies[:, :, span])
        _, chroma, root, bass, features, segments = corpus.windows(index, part="accompaniment" if cascade else "all")
        cond = build_batch(chroma, root, bass, features, segments, torch.as_tensor(pieces[:, :, span]), known_steps, melody)
        new = sample_rolls(generator.model, cond.to(generator.device), options, torch_generator).cpu().numpy()
        pieces[:, :, first + known : first + WINDOW_STEPS] = new[:, :, known:]
    return np.maximum(pieces, melodies) if cascade else pieces


def seconds_per_window(generator, windows: TestWindows, options: SamplerOptions, repeats: int = 3, cascade_windows=None) -> float:
    """Wall time to write one 8-bar window alone (what a user waits for; a cascade: both parts), median of ``repeats``."""
    import torch

    from bgmgen.music.sampler import sample_rolls

    cond = windows.cond.slice(0, 1).to(generator.device)
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        if cascade_windows is not None:
            one = PartWindows(**{**cascade_windows.__dict__, "melody": cascade_windows.melody[:1]})
            sample_cascade(generator, one, options, r, 1)
        else:
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
    options = _with_top_line_rows_settled(options)
    report = progress or (lambda row, fraction: None)
    results: dict[str, dict[str, float]] = {}
    whole_rows = tuple(r for r in options.rows if r not in PART_ROWS)
    if not whole_rows:
        return evaluate_parts(options, progress)
    windows = load_test_windows(options)
    real_pieces, piece_density, piece_chords, piece_scales = piece_conditions(windows.corpus, windows.piece_starts)
    generator = None
    if any(r in MODEL_ROWS for r in options.rows):
        generator = MusicGenerator.from_checkpoint(options.checkpoint, options.device, options.sampler, options.melody_checkpoint)
    cascade_windows = None
    if generator is not None and generator.melody_model is not None:
        # A cascade's whole roll is its two parts in one, written for the same windows.
        pick = np.random.default_rng(options.seed)
        index = np.sort(pick.choice(len(windows.corpus.window_starts), size=len(windows.real), replace=False))
        cascade_windows = load_part_windows(options, windows.corpus, index)
    rng = np.random.default_rng(options.seed)
    for row in whole_rows:
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
            pieces = None
            if cascade_windows is not None:
                rolls = np.maximum(*sample_cascade(generator, cascade_windows, sampler, options.seed, options.batch_size))
            else:
                rolls = sample_row(generator, windows, sampler, options.seed, options.batch_size, lambda f: report(row, 0.8 * f))
            if sampler.steps <= options.si_max_steps and windows.piece_starts:
                pieces = sample_pieces(generator, windows, sampler, options.seed)
            report(row, 0.9)
            seconds = seconds_per_window(generator, windows, sampler, repeats=1 if sampler.steps > 100 else 3, cascade_windows=cascade_windows)
        results[row] = {**row_metrics(rolls, windows, pieces), "seconds_per_8_bars": seconds}
        report(row, 1.0)
        log.info("evaluated %s: %s", row, results[row])
    if any(r in PART_ROWS for r in options.rows):
        results.update(evaluate_parts(options, progress))
    return results


def _with_top_line_rows_settled(options: EvalOptions) -> EvalOptions:
    """Settle the top-line rows before any work: they need a single-roll model (``compare_checkpoint``, or
    the checkpoint itself). With a cascade checkpoint (the shipped one) and none to compare, the default
    rows (all) leave them out; rows asked for by name fail at once rather than after the other rows."""
    from bgmgen.errors import BgmgenError
    from bgmgen.music.checkpoint import load_checkpoint
    from bgmgen.weights import default_checkpoint

    wanted = [r for r in options.rows if r in TOP_LINE_ROWS]
    if not wanted or options.compare_checkpoint is not None:
        return options
    if load_checkpoint(options.checkpoint or default_checkpoint())[1].part == "all":
        return options
    if options.rows == ALL_ROWS:
        log.info("no single-roll model to compare (--compare-checkpoint): skipping %s", ", ".join(wanted))
        return replace(options, rows=tuple(r for r in options.rows if r not in TOP_LINE_ROWS))
    raise BgmgenError(f"rows {', '.join(wanted)} need a single-roll checkpoint: pass --compare-checkpoint")


# ----------------------------------------------------------------------------- per part


@dataclass
class PartWindows:
    """The test windows' real melody and accompaniment, and each part's conditions."""

    melody: np.ndarray  # [N, 2, T, 88] POP909's MELODY track
    accompaniment: np.ndarray  # [N, 2, T, 88] BRIDGE + PIANO
    melody_cond: object  # ConditionBatch with the melody's bar features
    accompaniment_cond: object  # ConditionBatch with the accompaniment's bar features
    all_cond: object  # ConditionBatch with all tracks' bar features (for a single-roll model)
    chroma: np.ndarray  # [N, T, 12]
    root: np.ndarray  # [N, T]
    chords: list[list[Chord]]
    scales: list[tuple[int, ...]]
    density: np.ndarray  # [N, bars] the accompaniment's density feature


def load_part_windows(options: EvalOptions, corpus, index: np.ndarray) -> PartWindows:
    """The windows ``index`` of ``corpus`` by part; every part gets the same random segmentation."""
    import torch

    from bgmgen.music.conditioning import build_batch
    from bgmgen.training.train import random_segments

    rng = np.random.default_rng(options.seed)
    segments = torch.as_tensor(random_segments(len(index), rng, 0.25))
    parts, conds = {}, {}
    for part in ("melody", "accompaniment", "all"):
        roll, chroma, root, bass, features, _ = corpus.windows(index, part=part)
        parts[part], conds[part] = (roll, features), build_batch(chroma, root, bass, features, segments)
    chroma, root = chroma.numpy(), root.numpy()
    songs = corpus.window_song[index]
    return PartWindows(
        melody=parts["melody"][0].numpy(), accompaniment=parts["accompaniment"][0].numpy(),
        melody_cond=conds["melody"], accompaniment_cond=conds["accompaniment"], all_cond=conds["all"],
        chroma=chroma, root=root,
        chords=[half_bar_chords(chroma[i], root[i]) for i in range(len(index))],
        scales=[song_scale(corpus, s) for s in songs],
        density=parts["accompaniment"][1][:, :, 0].numpy(),
    )


def melody_rows_of(rolls: np.ndarray, windows: PartWindows) -> np.ndarray:
    """Melody statistics per window, ``[N, len(MELODY_METRICS)]``."""
    from bgmgen.evaluation.metrics import MELODY_METRICS, melody_statistics

    stats = [melody_statistics(r, windows.chroma[i], windows.root[i]) for i, r in enumerate(rolls)]
    return np.array([[s[m] for m in MELODY_METRICS] for s in stats], dtype=float)


def accompaniment_rows_of(rolls: np.ndarray, windows: PartWindows) -> np.ndarray:
    """PCHE, GPS, chord accuracy, in key and notes per window, ``[N, 5]``."""
    return np.array(
        [[pitch_class_histogram_entropy(r), grooving_pattern_similarity(r), chord_accuracy(r, windows.chords[i]),
          in_key_ratio(r, windows.scales[i]), r[0].sum()] for i, r in enumerate(rolls)],
        dtype=float,
    )


ACCOMPANIMENT_WINDOW_METRICS = ("pche", "gps", "chord_acc", "in_key", "notes_per_8_bars")


def _melody_result(per_window: np.ndarray, reducer=np.nanmean) -> dict[str, float]:
    from bgmgen.evaluation.metrics import MELODY_METRICS

    return dict(zip(MELODY_METRICS, (float(v) for v in reducer(per_window, axis=0))))


def _accompaniment_result(per_window: np.ndarray, rolls: np.ndarray | None, windows: PartWindows, reducer=np.nanmean) -> dict[str, float]:
    values = dict(zip(ACCOMPANIMENT_WINDOW_METRICS, (float(v) for v in reducer(per_window, axis=0))))
    values["density_spearman"] = density_spearman(windows.density, rolls) if rolls is not None else float("nan")
    return values


def sample_cascade(generator, windows: PartWindows, options: SamplerOptions, seed: int, batch_size: int,
                   real_melody: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's melody and accompaniment for every test window; with ``real_melody`` the
    accompaniment is written under POP909's melody instead of the model's."""
    import torch

    from bgmgen.music.generate import MELODY_ONSET_THRESHOLD, decode_one_voice
    from bgmgen.music.sampler import sample_rolls

    torch_generator = torch.Generator(device=generator.device).manual_seed(seed)
    melodies, accompaniments = [], []
    for start in range(0, len(windows.melody), batch_size):
        if real_melody:
            melody = windows.melody[start : start + batch_size]
        else:
            cond = windows.melody_cond.slice(start, start + batch_size).to(generator.device)
            soft = sample_rolls(generator.melody_model, cond, options, torch_generator, binary=False).cpu().numpy()
            melody = np.stack([decode_one_voice(r, MELODY_ONSET_THRESHOLD) for r in soft])
        cond = windows.accompaniment_cond.slice(start, start + batch_size)
        cond.melody = torch.as_tensor(melody).permute(0, 1, 3, 2).reshape(len(melody), 2 * N_PITCHES, -1)
        accompaniments.append(sample_rolls(generator.model, cond.to(generator.device), options, torch_generator).cpu().numpy())
        melodies.append(melody)
    return np.concatenate(melodies), np.concatenate(accompaniments)


def sample_top_line(generator, windows: PartWindows, options: SamplerOptions, seed: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A single-roll model's windows split at their top line (``roll.split_top_line``)."""
    from bgmgen.music.roll import split_top_line

    rolls = sample_row(generator, TestWindows(real=windows.melody, cond=windows.all_cond, chords=[], scales=[],
                                              density=windows.density, song_ids=[]), options, seed, batch_size)
    parts = [split_top_line(r) for r in rolls]
    return np.stack([p.melody for p in parts]), np.stack([p.accompaniment for p in parts])


def evaluate_parts(options: EvalOptions, progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """The per-part rows of ``options.rows`` (``PART_ROWS``); ``{row: {metric: value}}``."""
    from bgmgen.music.generate import MusicGenerator
    from bgmgen.training.train import load_corpora

    from bgmgen.errors import InputError

    report = progress or (lambda row, fraction: None)
    if not options.data.exists():
        raise InputError(f"{options.data}: POP909 not found (point --data at the POP909 folder)")
    test = load_corpora(options.data, options.cache)["test"]
    rng = np.random.default_rng(options.seed)
    index = np.sort(rng.choice(len(test.window_starts), size=min(options.windows, len(test.window_starts)), replace=False))
    windows = load_part_windows(options, test, index)
    # Bands: every held-out window (real music costs nothing to measure).
    every = load_part_windows(options, test, np.arange(len(test.window_starts)))
    real_melody, real_accompaniment = melody_rows_of(every.melody, every), accompaniment_rows_of(every.accompaniment, every)
    p10, p90 = (lambda a, axis: np.nanpercentile(a, 10, axis=axis)), (lambda a, axis: np.nanpercentile(a, 90, axis=axis))
    rows = [r for r in options.rows if r in PART_ROWS]
    cascade = top_line = None
    needs_cascade = {"melody_model", "accompaniment_model", "accompaniment_given_real_melody"} & set(rows)
    needs_top_line = {"melody_top_line", "accompaniment_below_top_line"} & set(rows)
    generator = MusicGenerator.from_checkpoint(options.checkpoint, options.device, options.sampler, options.melody_checkpoint) if needs_cascade or needs_top_line else None
    if needs_cascade:
        if generator.melody_model is None:
            from bgmgen.errors import BgmgenError

            raise BgmgenError("the cascade rows need an accompaniment checkpoint with its melody model")
        report("melody_model", 0.1)
        cascade = sample_cascade(generator, windows, options.sampler, options.seed, options.batch_size)
    if needs_top_line:
        single = generator
        if options.compare_checkpoint is not None or generator.melody_model is not None:
            single = MusicGenerator.from_checkpoint(options.compare_checkpoint, options.device, options.sampler)
        if single.melody_model is not None:
            from bgmgen.errors import BgmgenError

            raise BgmgenError("the top-line rows need a single-roll checkpoint (--compare-checkpoint)")
        top_line = sample_top_line(single, windows, options.sampler, options.seed, options.batch_size)
    results: dict[str, dict[str, float]] = {}
    for row in rows:
        if row == "melody_pop909":
            results[row] = _melody_result(melody_rows_of(windows.melody, windows))
        elif row == "melody_pop909_p10":
            results[row] = _melody_result(real_melody, p10)
        elif row == "melody_pop909_p90":
            results[row] = _melody_result(real_melody, p90)
        elif row == "melody_model":
            results[row] = _melody_result(melody_rows_of(cascade[0], windows))
        elif row == "melody_top_line":
            results[row] = _melody_result(melody_rows_of(top_line[0], windows))
        elif row == "accompaniment_pop909":
            results[row] = _accompaniment_result(accompaniment_rows_of(windows.accompaniment, windows), windows.accompaniment, windows)
        elif row == "accompaniment_pop909_p10":
            results[row] = _accompaniment_result(real_accompaniment, None, every, p10)
        elif row == "accompaniment_pop909_p90":
            results[row] = _accompaniment_result(real_accompaniment, None, every, p90)
        elif row == "accompaniment_model":
            results[row] = _accompaniment_result(accompaniment_rows_of(cascade[1], windows), cascade[1], windows)
        elif row == "accompaniment_given_real_melody":
            _, rolls = sample_cascade(generator, windows, options.sampler, options.seed, options.batch_size, real_melody=True)
            results[row] = _accompaniment_result(accompaniment_rows_of(rolls, windows), rolls, windows)
        elif row == "accompaniment_below_top_line":
            results[row] = _accompaniment_result(accompaniment_rows_of(top_line[1], windows), top_line[1], windows)
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
