"""Does the shipped music model follow the chords and stay in key? Measured on held-out POP909 songs.

Takes 8-bar windows of the test split, gives the model the real music's conditions (chords, per-bar
density/energy/register/polyphony), and compares what it writes with the real music and with a
rule-free baseline (random notes of the key at the real density).

    python benchmarks/music_quality.py --data ../shared/data/pop909/POP909 [--windows 64]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bgmgen.generate import default_checkpoint
from bgmgen.harmony import Chord, Key
from bgmgen.metrics import (
    chord_accuracy,
    chord_tone_ratio,
    grooving_pattern_similarity,
    in_key_ratio,
    pitch_class_histogram_entropy,
)
from bgmgen.model import load_checkpoint
from bgmgen.roll import N_PITCHES, PITCH_LOW, STEPS_PER_BAR
from bgmgen.sampler import SamplerOptions, sample_rolls
from bgmgen.train import TrainConfig, load_corpora, make_batch


def half_bar_chords(chroma: np.ndarray, root: np.ndarray) -> list[Chord]:
    """The conditioning chord at the middle of each half bar (quality from its chroma)."""
    chords = []
    for mid in range(STEPS_PER_BAR // 4, chroma.shape[0], STEPS_PER_BAR // 2):
        if root[mid] < 0:
            chords.append(Chord(None, "", None))
            continue
        intervals = {(pc - root[mid]) % 12 for pc in np.flatnonzero(chroma[mid])}
        chords.append(Chord(int(root[mid]), "min" if 3 in intervals and 4 not in intervals else "maj", int(root[mid])))
    return chords


def random_in_key(real: np.ndarray, scale: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random key notes at the real onset positions' count per bar, each one step long."""
    out = np.zeros_like(real)
    columns = [c for c in range(N_PITCHES) if (c + PITCH_LOW) % 12 in scale and 36 <= c + PITCH_LOW <= 84]
    steps, _ = np.nonzero(real[0])
    for s in steps:
        out[0, s, rng.choice(columns)] = 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/pop909/POP909"))
    parser.add_argument("--checkpoint", type=Path, default=default_checkpoint())
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--guidance", type=float, nargs="+", default=[5.0, 1.0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)

    test = load_corpora(args.data, Path(".cache/pop909"))["test"]
    model, info = load_checkpoint(args.checkpoint)
    rng = np.random.default_rng(2024)
    index = rng.choice(len(test.window_starts), size=min(args.windows, len(test.window_starts)), replace=False)
    cfg = replace(TrainConfig(data=args.data), context_probability=0.0, segment_break_probability=0.25)
    roll, cond, _ = make_batch(test, index, rng, cfg, augment=False, device="cpu")
    _, chroma, root, *_ = test.windows(index)
    real = roll.numpy()

    systems: dict[str, np.ndarray] = {"ground_truth": real}
    seconds: dict[str, float] = {}
    for g in args.guidance:
        start = time.perf_counter()
        name = f"model (guidance {g:g})"
        systems[name] = sample_rolls(model, cond, SamplerOptions(steps=args.steps, guidance=g), torch.Generator().manual_seed(0)).numpy()
        seconds[name] = (time.perf_counter() - start) / len(index)
    scales = [Key(int(test.key_tonic[test.window_song[w]]), "minor" if test.key_minor[test.window_song[w]] else "major").scale for w in index]
    systems["random_in_key"] = np.stack([random_in_key(real[i], scales[i], rng) for i in range(len(index))])

    print(f"{len(index)} test windows (8 bars each) from {len(set(test.window_song[index]))} held-out songs; "
          f"checkpoint {args.checkpoint.name} ({info.training_steps} steps), {args.steps} DPM-Solver steps\n")
    print("| system | chord accuracy | chord-tone ratio | in-key ratio | notes / 8 bars | PCHE | GPS | s / window (batched) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rolls in systems.items():
        rows = []
        for i in range(len(index)):
            chords = half_bar_chords(chroma[i].numpy(), root[i].numpy())
            step_chroma = chroma[i].numpy()
            rows.append([
                chord_accuracy(rolls[i], chords), chord_tone_ratio(rolls[i], step_chroma), in_key_ratio(rolls[i], scales[i]),
                rolls[i][0].sum(), pitch_class_histogram_entropy(rolls[i]), grooving_pattern_similarity(rolls[i]),
            ])
        m = np.nanmean(np.array(rows, dtype=float), axis=0)
        timing = f"{seconds[name]:.3f}" if name in seconds else "-"
        print(f"| {name} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.0f} | {m[4]:.3f} | {m[5]:.3f} | {timing} |")


if __name__ == "__main__":
    main()
