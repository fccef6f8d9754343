"""Music that lands on the picture (issue 12): what every clip gets, and how well cuts meet the music.

For each clip of ``--videos`` (analysed with TransNetV2 on the CPU, planned with one ``--seed``): key,
mode, tension, brightness and the cues behind them, the tempo map, and the plan's alignment figures.
For clips with cuts, the music is composed with the shipped models, arranged as the pipeline does (in
the plan's style), written to MIDI and rendered with FluidSynth, then measured: cuts against the
written MIDI's downbeats and beats (pretty_midi), and the onset strength within 50 ms of the cuts
against the median elsewhere and against the music's other beats, with and without the hits. ``--synthetic`` clips with irregular cuts (ffmpeg lavfi shots, known
cut times) go through the same path; ``--random-sets`` draws cut lists with gaps of 3-9 s and 4-12 s
and fits maps to them (plan only), to show how the fitter does on arbitrary editing.

    python benchmarks/picture_to_music.py --videos ../shared/data/videos --out docs/picture-to-music.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from bgmgen.evaluation.sync import grid_figures, onset_ratio
from bgmgen.music.arrange import arrange
from bgmgen.music.generate import MusicGenerator
from bgmgen.music.midi import write_arrangement
from bgmgen.music.plan import PlanOptions, choose_tempo, make_plan
from bgmgen.music.styles import get_style
from bgmgen.music.tempo import cut_alignment, fit_tempo_map
from bgmgen.sound.band import render_band
from bgmgen.sound.render import RenderOptions, read_wav
from bgmgen.video.visual import analyze_video

VIDEO_SUFFIXES = {".avi", ".mp4", ".webm", ".ogv", ".mov", ".mpeg", ".mkv"}
SYNTHETIC_CUTS = (  # irregular editing: shots of 2.6 to 9.4 s, two cuts 0.6 s apart in the last
    (4.3, 9.1, 15.8, 19.4, 27.1, 31.0),
    (3.1, 8.9, 11.5, 20.9, 25.2, 33.7),
    (5.6, 9.2, 16.0, 16.6, 23.9, 28.4),
)
SOURCES = ("testsrc2", "smptebars", "rgbtestsrc", "mandelbrot")


def make_synthetic(path: Path, cuts: tuple[float, ...], duration: float) -> Path:
    """A 64x36 clip of lavfi shots with hard cuts at ``cuts`` (frame-exact at 25 fps)."""
    bounds = [0.0, *cuts, duration]
    inputs, labels = [], []
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        frames = round(end * 25) - round(start * 25)
        inputs += ["-f", "lavfi", "-i", f"{SOURCES[i % len(SOURCES)]}=s=64x36:r=25"]
        labels.append(f"[{i}:v]trim=end_frame={frames},setpts=PTS-STARTPTS[s{i}];")
    graph = "".join(labels) + "".join(f"[s{i}]" for i in range(len(labels))) + f"concat=n={len(labels)}:v=1:a=0[v]"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[v]",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)  # fmt: skip
    return path


def measure(generator: MusicGenerator, plan, seed: int, folder: Path) -> dict:
    """Compose, arrange, write, render and measure one plan (with its hits and without them)."""
    import pretty_midi

    parts = generator.generate_parts(plan, seed)
    out = {}
    for label, hits in (("with_hits", plan.hits), ("without_hits", [])):
        work = folder / label
        work.mkdir()
        band = arrange(plan, parts, get_style(plan.style), seed, hits)
        wav = render_band(band, plan, work, plan.duration, RenderOptions(), seed)["mix"]
        audio = read_wav(wav)
        midi = work / "band.mid"
        write_arrangement(band, plan, midi, seed)
        beats = pretty_midi.PrettyMIDI(str(midi)).get_beats().tolist()
        grid = grid_figures(midi, plan.cuts)
        out[label] = {
            "far_cuts": grid.far_cuts,
            "far_on_downbeats": round(grid.far_on_downbeats, 3),
            "on_beats": round(grid.on_beats, 3),
            "onset_ratio": round(onset_ratio(audio, RenderOptions().sample_rate, plan.cuts), 2),
            "onset_ratio_vs_beats": round(onset_ratio(audio, RenderOptions().sample_rate, plan.cuts, beats), 2),
        }
    return out


def describe(name: str, analysis, plan) -> dict:
    tempos = plan.bar_tempos()
    return {
        "clip": name,
        "duration": round(plan.duration, 2),
        "cuts": [round(c, 2) for c in plan.cuts],
        "key": plan.key,
        "mode": plan.key.split()[-1],
        "tension": round(plan.mood["tension"], 3),
        "brightness": round(plan.mood["brightness"], 3),
        "cues": {k: round(v, 3) for k, v in plan.mood.items() if k not in ("tension", "brightness")},
        "luma": round(float(np.mean(analysis.brightness)), 3),
        "tempo": [round(float(tempos.min()), 1), round(float(tempos.max()), 1)],
        "style": plan.style,
        "tempo_changes": len(plan.tempo_map),
        "short_bars": [[b.bar, b.beats] for b in plan.short_bars],
        "plan_alignment": plan.cut_alignment,
        "hits": plan.hits,
    }


def random_sets(n_sets: int, seed: int) -> dict:
    """Fit maps to random cut lists (gaps uniform in two ranges) and pool the alignment figures."""
    rng = np.random.default_rng(seed)
    out = {}
    for low, high in ((3.0, 9.0), (4.0, 12.0)):
        down, beat = [], []
        for _ in range(n_sets):
            cuts = np.cumsum(rng.uniform(low, high, 10)).tolist()
            centre = choose_tempo(cuts, 100.0, 70.0, 140.0)
            tempos, beats = fit_tempo_map(cuts, cuts[-1] + 3.0, centre, 100.0, (70.0, 140.0))
            aligned = cut_alignment(cuts, tempos, beats=beats)
            down += aligned.on_downbeat[aligned.far].tolist()
            beat += aligned.on_beat.tolist()
        out[f"gaps_{low:g}-{high:g}s"] = {"sets": n_sets, "far_cuts": len(down),
                                          "far_on_downbeats": round(float(np.mean(down)), 3),
                                          "on_beats": round(float(np.mean(beat)), 3)}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--synthetic", type=int, default=len(SYNTHETIC_CUTS), help="synthetic clips with irregular cuts")
    parser.add_argument("--random-sets", type=int, default=8, help="random cut lists per gap range (plan only)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    generator = MusicGenerator.from_checkpoint()
    results: dict = {"seed": args.seed, "clips": [], "synthetic": []}
    with tempfile.TemporaryDirectory(prefix="bgmgen-sync-") as tmp:
        work = Path(tmp)
        clips = sorted(p for p in args.videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        synthetic = [make_synthetic(work / f"synthetic_{i}.mp4", cuts, cuts[-1] + 4.0)
                     for i, cuts in enumerate(SYNTHETIC_CUTS[: args.synthetic])]  # fmt: skip
        for group, paths in (("clips", clips), ("synthetic", synthetic)):
            for path in paths:
                analysis = analyze_video(path)
                plan = make_plan(analysis, PlanOptions(seed=args.seed))
                row = describe(path.name, analysis, plan)
                if plan.cuts:
                    folder = work / path.stem
                    folder.mkdir()
                    row["measured"] = measure(generator, plan, args.seed, folder)
                results[group].append(row)
                print(json.dumps(row), flush=True)
    results["random_sets"] = random_sets(args.random_sets, args.seed)
    print(json.dumps(results["random_sets"]))
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
