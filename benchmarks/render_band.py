"""Render time of the band against the old single piano track, for the same plan and notes, in one run.

A 60 s plan (22 bars at 86.4 BPM, the end-to-end benchmark's clip) with ~300 notes of melody and
accompaniment drawn at the model's density. Old: the combined roll as one piano track, one FluidSynth run
(what `Scorer.score` did before the arrangement). New: the band in a style, rendered as the pipeline does
(two FluidSynth runs side by side, summed). Runs alternate; medians of ``--repeat``.

    python benchmarks/render_band.py [--repeat 3] [--styles piano,pop,upbeat]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--styles", default="piano,pop,upbeat")
    args = parser.parse_args()

    from bgmgen.music.arrange import arrange
    from bgmgen.music.midi import write_arrangement, write_midi
    from bgmgen.music.plan import Plan, Segment
    from bgmgen.music.roll import STEPS_PER_BAR, Note, notes_to_roll, split_top_line
    from bgmgen.music.styles import get_style
    from bgmgen.sound.band import RENDER_GROUPS
    from bgmgen.sound.render import find_soundfont, render, render_stems

    n_bars, tempo = 22, 86.4
    rng = np.random.default_rng(0)
    plan = Plan(duration=60.0, tempo=tempo, n_bars=n_bars, key="A minor",
                segments=[Segment(0, 5), Segment(5, 8), Segment(8, 11), Segment(11, 16), Segment(16, 19), Segment(19, 22)],
                chords=(["A:min", "A:min", "F:maj", "F:maj", "C:maj", "C:maj", "G:maj", "G:maj"] * 6)[: 2 * n_bars],
                density=list(rng.uniform(0.3, 0.8, n_bars)), energy=list(rng.uniform(0.3, 0.9, n_bars)), cuts=[],
                cut_alignment_error=0.0, mood={}, seed=0, style="pop")  # fmt: skip
    plan.validate()
    n = n_bars * STEPS_PER_BAR
    notes = [Note(int(s), int(s) + int(rng.integers(2, 9)), int(rng.choice([57, 60, 64, 67, 69, 72, 76])))
             for s in np.sort(rng.choice(n, 300, replace=True))]  # fmt: skip
    roll = notes_to_roll(notes, n)
    parts = split_top_line(roll)
    print(f"SoundFont {find_soundfont(None).name}; {len(notes)} notes over {n_bars} bars at {tempo} BPM")
    times: dict[str, list[float]] = {"old: one piano track": []} | {f"new: {s}": [] for s in args.styles.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for _ in range(args.repeat):
            start = time.perf_counter()
            render(write_midi(roll, plan, folder / "old.mid"), folder / "old.wav", plan.duration)
            times["old: one piano track"].append(time.perf_counter() - start)
            for name in args.styles.split(","):
                band = arrange(plan, parts, get_style(name))
                start = time.perf_counter()
                midis = {g: write_arrangement(band, plan, folder / f"{g}.mid", 0, roles) for g, roles in RENDER_GROUPS.items()}
                render_stems(midis, None, folder / "new.wav", plan.duration)
                times[f"new: {name}"].append(time.perf_counter() - start)
    print("| render (MIDI write + FluidSynth + levelling) | median s | min-max |")
    print("|---|---:|---:|")
    for label, values in times.items():
        print(f"| {label} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} |")


if __name__ == "__main__":
    main()
