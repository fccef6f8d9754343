"""How long one 8-bar window takes to write on this machine, per sampler (median of repeats, one run).

The default (DPM-Solver++ 20 steps, guidance 5: both halves in one batched forward pass) must stay
under 1 s on 2 CPU cores. Times the shipped model through ``sample_rolls`` on one window of real
conditions (a plan's first window); ``ddpm_1000`` is timed once and given as a ratio.

    python benchmarks/sampling_speed.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bgmgen.music.conditioning import stack_windows
from bgmgen.music.generate import MusicGenerator, window_conditions
from bgmgen.music.plan import Plan, Segment
from bgmgen.music.sampler import SamplerOptions, sample_rolls

SETTINGS = {
    "dpm_20 + guidance (default)": SamplerOptions(),
    "dpm_20, no guidance": SamplerOptions(guidance=1.0),
    "dpm_10 + guidance": SamplerOptions(steps=10),
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generator = MusicGenerator.from_checkpoint()
    batch = stack_windows([window_conditions(demo_plan(), 0, generator.info.feature_quantiles)])
    sample_rolls(generator.model, batch, SamplerOptions(steps=2))  # warm-up: first-call allocations
    medians = {}
    for name, options in SETTINGS.items():
        times = []
        for r in range(1 if options.steps > 100 else args.repeats):
            start = time.perf_counter()
            sample_rolls(generator.model, batch, options, torch.Generator().manual_seed(r))
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    default = medians["dpm_20 + guidance (default)"]
    print(f"one 8-bar window, {args.threads} torch threads, median of {args.repeats}\n")
    print("| sampler | s / 8 bars | x default |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {seconds / default:.2f} |")


if __name__ == "__main__":
    main()
