"""How long one 8-bar window takes to write on this machine, per sampler (median of repeats, one run).

The default (DPM-Solver++ 20 steps, guidance 5: both halves in one batched forward pass) must stay
under 1 s on 2 CPU cores. Times the shipped model through ``sample_rolls`` on one window of real
conditions (a plan's first window); ``ddpm_1000`` is timed once and given as a ratio.

With a cascade checkpoint (melody model, then the accompaniment model given the melody) the sampler
rows time the accompaniment model (under an empty melody) and the last rows time the melody model
alone and 8 bars of all parts through ``generate_parts``, which is what a user waits for.

    python benchmarks/sampling_speed.py [--threads 2] [--repeats 5] [--checkpoint PATH] [--quick]

``--quick`` times only DPM-Solver++ with guidance (the default 10 steps and the former 20) and, for a cascade,
the melody model and all parts (no DDPM 1000 steps, which takes minutes on a loaded machine). Each row is printed as soon as it is measured.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bgmgen.music.conditioning import stack_windows
from bgmgen.music.generate import MusicGenerator, window_conditions
from bgmgen.music.plan import Plan, Segment
from bgmgen.music.roll import N_PITCHES, WINDOW_STEPS
from bgmgen.music.sampler import SamplerOptions, sample_rolls

SETTINGS = {
    "dpm_10 + guidance (default)": SamplerOptions(),
    "dpm_20 + guidance (the default until 2026-12-03)": SamplerOptions(steps=20),
    "dpm_10, no guidance": SamplerOptions(guidance=1.0),
    "ddim_50 + guidance": SamplerOptions(sampler="ddim", steps=50),
    "ddpm_1000 + guidance": SamplerOptions(sampler="ddpm", steps=1000),
}


def demo_plan() -> Plan:
    chords = ["C:maj", "C:maj", "A:min", "A:min", "F:maj", "F:maj", "G:7", "G:7"] * 2
    return Plan(duration=19.2, tempo=100.0, n_bars=8, key="C major", segments=[Segment(0, 4), Segment(4, 8)],
                chords=chords, density=[0.5] * 8, energy=[0.5] * 8, cuts=[9.6], cut_alignment_error=0.0,
                mood={"tension": 0.5, "brightness": 0.5}, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="only DPM-Solver++ with guidance (the default and 20 steps) and the cascade rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generator = MusicGenerator.from_checkpoint(args.checkpoint)
    cascade = generator.melody_model is not None
    silence = np.zeros((1, 2, WINDOW_STEPS, N_PITCHES), dtype=np.float32) if cascade else None
    batch = stack_windows([window_conditions(demo_plan(), 0, generator.info.feature_quantiles)], melody_rolls=silence)
    sample_rolls(generator.model, batch, SamplerOptions(steps=2))  # warm-up: first-call allocations
    settings = {name: o for name, o in SETTINGS.items() if not args.quick or (o.sampler == "dpm" and o.guidance == SamplerOptions().guidance)}
    print(f"one 8-bar window, {args.threads} torch threads, median of {args.repeats}\n")
    print("| sampler | s / 8 bars | x default |")
    print("|---|---|---|", flush=True)
    default = None
    rows = [(name, lambda r, o=options: sample_rolls(generator.model, batch, o, torch.Generator().manual_seed(r)),
             1 if options.steps > 100 else args.repeats) for name, options in settings.items()]
    if cascade:
        melody_batch = stack_windows([window_conditions(demo_plan(), 0, generator.melody_info.feature_quantiles, tune=True)])
        rows.append(("melody model, default sampler",
                     lambda r: sample_rolls(generator.melody_model, melody_batch, SamplerOptions(), torch.Generator().manual_seed(r)), args.repeats))
        rows.append(("8 bars, all parts (generate_parts)", lambda r: generator.generate_parts(demo_plan(), seed=r), args.repeats))
    for name, run, repeats in rows:
        seconds = _median(run, repeats)
        default = default or seconds  # the first row is the default sampler
        print(f"| {name} | {seconds:.3f} | {seconds / default:.2f} |", flush=True)


def _median(run, repeats: int) -> float:
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        run(r)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


if __name__ == "__main__":
    main()
