"""Shot-detection cascade against the full TransNetV2: the same cuts, for how much of the network's work?

For every clip given (default: tests/data and ../shared/data/videos) and for synthetic clips with hard cuts,
dissolves and fades (made with ffmpeg in a temporary folder), decodes the 25 fps 48x27 analysis frames, runs
TransNetV2 in float32 over every frame (the full model) and the default detector (the cascade, only around
``candidate_regions``, in the precision ``--precision`` picks: by default what ``auto`` resolves to on this
CPU), and prints a markdown table: cuts of each, how many of the full model's cuts the cascade finds within
two frames, extra cuts, the network's work against the full pass's (frames computed, context included) and
both times.

    python benchmarks/shot_cascade.py [CLIP ...] [--threads 2] [--precision auto]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FPS = 25.0
TOLERANCE_FRAMES = 2

# name -> ffmpeg filter graph making [v] (160x90, 25 fps): hard cuts, dissolves, fades to and from black.
SYNTHETIC = {
    "synthetic hard cuts": "testsrc2=s=160x90:r=25:d=4[a];mandelbrot=s=160x90:r=25,trim=duration=4[b];"
    "smptebars=s=160x90:r=25:d=4[c];[a][b][c]concat=n=3[v]",
    "synthetic dissolves": "testsrc2=s=160x90:r=25:d=5[a];mandelbrot=s=160x90:r=25,trim=duration=5[b];"
    "smptebars=s=160x90:r=25:d=5[c];[a][b]xfade=transition=dissolve:duration=1:offset=4[ab];"
    "[ab][c]xfade=transition=fade:duration=0.6:offset=8.4[v]",
    "synthetic fades": "testsrc2=s=160x90:r=25:d=5,fade=t=out:st=4:d=1[a];"
    "mandelbrot=s=160x90:r=25,trim=duration=5,fade=t=in:st=0:d=1,fade=t=out:st=4.2:d=0.8[b];"
    "rgbtestsrc=s=160x90:r=25:d=4,fade=t=in:st=0:d=0.5[c];[a][b][c]concat=n=3[v]",
}


def make_synthetic(folder: Path) -> dict[str, Path]:
    """Write the synthetic transition clips; returns name -> path."""
    paths = {}
    for i, (name, graph) in enumerate(SYNTHETIC.items()):
        path = folder / f"synthetic{i}.mp4"
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-filter_complex", graph, "-map", "[v]",
               "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)]  # fmt: skip
        subprocess.run(cmd, check=True)
        paths[name] = path
    return paths


def matched(reference: list[float], found: list[float], tolerance: float) -> int:
    """How many reference cuts have a found cut within ``tolerance`` seconds (each found cut used once)."""
    free, hits = sorted(found), 0
    for cut in reference:
        near = [f for f in free if abs(f - cut) <= tolerance]
        if near:
            free.remove(min(near, key=lambda f: abs(f - cut)))
            hits += 1
    return hits


def compare(frames, full, cascade) -> dict:
    """Cuts and timings of the full and the cascaded detector on one clip's frames."""
    from bgmgen.video.shots import frames_computed

    start = time.perf_counter()
    full_cuts = full.detect(frames, FPS)
    full_s = time.perf_counter() - start
    start = time.perf_counter()
    cascade_cuts = cascade.detect(frames, FPS)
    cascade_s = time.perf_counter() - start
    # The network's work: frames it computed, context included, against the full pass's.
    work = [frames_computed(detector.plan_windows(frames)) for detector in (full, cascade)]
    hits = matched(full_cuts, cascade_cuts, TOLERANCE_FRAMES / FPS + 1e-6)
    return {"frames": len(frames), "full": full_cuts, "cascade": cascade_cuts, "found": hits,
            "extra": len(cascade_cuts) - matched(cascade_cuts, full_cuts, TOLERANCE_FRAMES / FPS + 1e-6),
            "scored": work[1] / max(1, work[0]), "full_s": full_s, "cascade_s": cascade_s}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="the cascade's (the full model runs in fp32)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from bgmgen.video.decode import iter_frames, probe
    from bgmgen.video.shots import TransNetV2Detector

    torch.set_num_threads(args.threads)
    clips = {p.name: p for p in args.clips} or {
        p.name: p for folder in (REPO / "tests" / "data", REPO.parent / "shared" / "data" / "videos")
        for p in sorted(folder.glob("*")) if p.suffix in {".mp4", ".webm", ".avi", ".ogv", ".mov", ".mpeg"}
    }  # fmt: skip
    full = TransNetV2Detector(cascade=False, precision="fp32")
    cascade = TransNetV2Detector(cascade=True, precision=args.precision)
    cascade._model = full._get_model()
    precision = cascade.resolved_precision(torch)
    rows, totals = [], {"ref": 0, "found": 0, "extra": 0, "frames": 0, "scored": 0.0, "full_s": 0.0, "cascade_s": 0.0}
    with tempfile.TemporaryDirectory(prefix="bgmgen-cascade-") as tmp:
        clips.update(make_synthetic(Path(tmp)))
        for name, path in clips.items():
            frames = np.concatenate(list(iter_frames(probe(path), fps=FPS, size=(48, 27))))
            r = compare(frames, full, cascade)
            rows.append(
                f"| {name} | {r['frames']} | {len(r['full'])} | {len(r['cascade'])} | {r['found']}/{len(r['full'])} "
                f"| {r['extra']} | {100 * r['scored']:.0f} % | {r['full_s']:.2f} | {r['cascade_s']:.2f} |"
            )
            totals["ref"] += len(r["full"])
            for key in ("found", "extra", "frames", "full_s", "cascade_s"):
                totals[key] += r[key]
            totals["scored"] += r["scored"] * r["frames"]
            print(rows[-1], file=sys.stderr)
    print(f"load average {os.getloadavg()[0]:.2f}, torch threads {args.threads}, cascade in {precision}\n")
    print("| Clip | Frames | Full-model cuts | Cascade cuts | Full cuts found (+-2 frames) | Extra | Work "
          "| Full s | Cascade s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(
        f"| **all** | {totals['frames']} | {totals['ref']} | | {totals['found']}/{totals['ref']} | {totals['extra']} "
        f"| {100 * totals['scored'] / max(1, totals['frames']):.0f} % | {totals['full_s']:.1f} | {totals['cascade_s']:.1f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
