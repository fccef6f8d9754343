"""The melody `bgmgen midi` writes for real clips, against issue 10's targets, for one or more melody models.

Each clip of ``--videos`` (and the synthetic clips with irregular cuts of `picture_to_music.py`) is analysed and planned as the pipeline does (seed ``--seed``), composed by the
shipped accompaniment model under each melody model named, arranged in the plan's style and written to
MIDI; the written file's tracks are listed and its melody (the ``melody`` track read back from the file)
is measured over the whole piece: share of stepwise moves, of leaps over seven semitones, range, chord
tones on beats 1 and 3, empty bars and PCHE (`evaluation.metrics.melody_statistics`). Most shared clips
last one to three bars, so the summary pools the moves of all clips (each clip's shares weighted by its
melody's moves) beside the count of clips inside the targets.

    python benchmarks/clip_melodies.py --videos ../shared/data/videos --melody models/bgmgen-melody.safetensors \\
        --melody NEW/bgmgen-melody.safetensors --out docs/clip-melodies.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from bgmgen.evaluation.metrics import melody_statistics
from bgmgen.music.arrange import arrange
from bgmgen.music.generate import MusicGenerator
from bgmgen.music.midi import write_arrangement
from bgmgen.music.plan import PlanOptions, make_plan
from bgmgen.music.roll import PITCH_LOW, STEPS_PER_BAR
from bgmgen.music.styles import get_style
from bgmgen.video.visual import analyze_video

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parts_listening import chords_per_step  # noqa: E402
from picture_to_music import SYNTHETIC_CUTS, VIDEO_SUFFIXES, make_synthetic  # noqa: E402

TARGETS = {"stepwise": (0.55, 0.80), "leaps": (0.0, 0.10), "range": (8, 22), "strong_chord_tones": (0.70, 1.0)}


def melody_from_midi(midi, plan) -> np.ndarray:
    """The ``melody`` track of a written file (``pretty_midi.PrettyMIDI``) back on the plan's grid (nearest
    played step), as a [2, steps, 88] roll."""
    track = next((i for i in midi.instruments if i.name == "melody"), None)  # absent when the tune is silent
    n_steps = plan.n_bars * STEPS_PER_BAR
    played = np.flatnonzero(plan.step_sounds(np.arange(n_steps)))
    times = plan.step_time(played)
    roll = np.zeros((2, n_steps, 88), np.float32)
    for note in track.notes if track else []:
        start, end = (played[int(np.argmin(np.abs(times - t)))] for t in (note.start, note.end))
        roll[0, start, note.pitch - PITCH_LOW] = 1
        roll[1, start : max(end, start + 1), note.pitch - PITCH_LOW] = 1
    return roll


def measure(generator: MusicGenerator, plan, seed: int, folder: Path) -> dict:
    import pretty_midi

    parts = generator.generate_parts(plan, seed)
    band = arrange(plan, parts, get_style(plan.style), seed, plan.hits)
    midi = folder / "band.mid"
    written = pretty_midi.PrettyMIDI(str(write_arrangement(band, plan, midi, seed)))
    stats = melody_statistics(melody_from_midi(written, plan), *chords_per_step(plan))
    tracks = {i.name: len(i.notes) for i in written.instruments}
    return {"tracks": tracks, "moves": max(tracks.get("melody", 0) - 1, 0), **{k: round(v, 3) for k, v in stats.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, required=True)
    parser.add_argument("--melody", type=Path, action="append", required=True, help="melody model (repeat to compare)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    generators = {str(m): MusicGenerator.from_checkpoint(melody_path=m) for m in args.melody}
    results: dict = {"seed": args.seed, "clips": []}
    with tempfile.TemporaryDirectory(prefix="bgmgen-melodies-") as tmp:
        clips = sorted(p for p in args.videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        clips += [make_synthetic(Path(tmp) / f"synthetic_{i}.mp4", cuts, cuts[-1] + 4.0) for i, cuts in enumerate(SYNTHETIC_CUTS)]
        for path in clips:
            plan = make_plan(analyze_video(path), PlanOptions(seed=args.seed))
            row: dict = {"clip": path.name, "style": plan.style, "bars": plan.n_bars}
            for name, generator in generators.items():
                folder = Path(tmp) / f"{path.stem}-{len(row)}"
                folder.mkdir()
                row[name] = measure(generator, plan, args.seed, folder)
            results["clips"].append(row)
            print(json.dumps(row), flush=True)
    for name in generators:
        rows = [r[name] for r in results["clips"]]
        weights = np.array([r["moves"] for r in rows], float)
        pooled = {k: round(float(np.nansum([r[k] * w for r, w in zip(rows, weights)]) / weights.sum()), 3) for k in ("stepwise", "leaps")}
        pooled.update({k: round(float(np.nanmean([r[k] for r in rows])), 3) for k in ("range", "strong_chord_tones", "empty_bars", "pche")})
        inside = {k: sum(lo <= r[k] <= hi for r in rows) for k, (lo, hi) in TARGETS.items()}
        results[name] = {"pooled": pooled, "clips_inside_target": inside, "clips": len(rows)}
        print(name, json.dumps(results[name]))
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
