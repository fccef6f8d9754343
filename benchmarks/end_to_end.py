"""End-to-end benchmark: how long scoring a minute of 720p video takes, stage by stage.

Makes a synthetic 1280x720, 30 fps H.264 clip with hard cuts and a sound track in a temporary folder,
then times, in one run:

- the baseline: one full ``ffmpeg -i clip -f null -`` decode;
- each stage through the library (``bgmgen.pipeline.Scorer``): probe, model load, analyse (with a
  separate breakdown of its decode, TransNetV2 load and inference), plan, compose, render, mux;
- the wall time of a whole ``bgmgen score`` run in a fresh process (imports and model loads included);
- the same for a short clip (``--short``, default 10 s of the same kind), as a new user would first try;

and prints a markdown table with the ratio of the total to the ffmpeg decode and the peak memory
(RSS) of each. With ``--repeat N`` every number is the median of N runs.

    python benchmarks/end_to_end.py [--duration 60] [--short 10] [--repeat 1] [--device cpu] [--json out.json]

It prints the CPU model and whether it computes bfloat16 natively (TransNetV2 then runs in bf16). On a CPU
with AVX512 and bf16, ``--avx2`` stands in for one without (the project's AMD EPYC machines): it caps oneDNN's
convolutions, ATen's own kernels and MKL's matrix products at AVX2 (``AVX2_CAPS``), for this process and the
``bgmgen score`` runs it starts, so everything runs in float32 on AVX2 kernels only. (Runs before 2026-12-07
capped oneDNN and ATen but not MKL, whose matrix products then still used AVX512.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clips import shots_filter  # benchmarks/clips.py (scripts run from this folder)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

SIZE = (1280, 720)  # pixels
FPS = 30  # frames per second of the benchmark clip
CUT_SHARES = (0.19, 0.37, 0.52, 0.74, 0.88)  # cut times as shares of the duration (irregular shot lengths)
# One lavfi chain per shot, each a different look so every cut is a hard one. Mandelbrot is drawn small
# and scaled up: at full size it takes longer to make than the whole benchmark.
SHOTS = (
    "testsrc2=s={w}x{h}:r={fps}",
    "mandelbrot=s=320x180:r={fps},scale={w}:{h}",
    "life=s=320x180:r={fps}:mold=10:ratio=0.1:life_color=#f0c020:death_color=#203040,scale={w}:{h}:flags=neighbor",
    "smptehdbars=s={w}x{h}:r={fps}",
    "rgbtestsrc=s={w}x{h}:r={fps},hue=H=2*PI*t",
    "testsrc2=s={w}x{h}:r={fps},negate",
)
MIB = 1024  # ru_maxrss is in KiB on Linux
# Instruction-set caps that make an AVX512/bf16 CPU compute as an AVX2-only one: read when torch loads.
AVX2_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def make_clip(path: Path, duration: float) -> list[float]:
    """Write the benchmark clip to ``path``; returns its cut times in seconds."""
    cuts = [round(share * duration * FPS) / FPS for share in CUT_SHARES]
    bounds = [0, *(round(c * FPS) for c in cuts), round(duration * FPS)]
    chains = shots_filter(bounds, SHOTS, SIZE, FPS)
    # A sound track to replace: a slow two-tone chirp with a little noise.
    chains.append(f"aevalsrc=0.2*sin(2*PI*(220+40*sin(t))*t)+0.02*random(0):s=44100:d={duration}[a]")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-filter_complex", ";".join(chains), "-map", "[v]", "-map", "[a]"]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "60", "-c:a", "aac", "-b:a", "128k", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return cuts


# Runs a command and reports its wall time and peak RSS. A child's ru_maxrss starts from its parent's
# RSS at fork time, so measuring from this (big, torch-laden) process would report our size, not the
# child's; a small launcher process in between keeps the number honest.
_LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
seconds = time.perf_counter() - start
if done.returncode != 0:
    sys.exit(done.stderr.decode(errors="replace")[-800:] or f"exit code {done.returncode}")
print(json.dumps([seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))
"""


def run_child(cmd: list[str], **kwargs) -> tuple[float, float]:
    """Run ``cmd`` to the end; returns (wall seconds, peak RSS in MiB of it or its largest child)."""
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr.strip()}")
    seconds, max_rss_kib = json.loads(done.stdout)
    return seconds, max_rss_kib / MIB


def library_run(clip: Path, out: Path, device: str) -> tuple[dict[str, float], dict]:
    """Score ``clip`` through the library; returns (seconds per stage, facts about the run)."""
    from bgmgen.pipeline import ScoreOptions, Scorer
    from bgmgen.video.decode import probe

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    probe(clip)
    seconds["probe"] = time.perf_counter() - start
    start = time.perf_counter()
    scorer = Scorer(ScoreOptions(device=device, mux=_force()))
    seconds["model load"] = time.perf_counter() - start
    result = scorer.score(clip, out)
    seconds.update(result.seconds)
    facts = {"bars": result.plan.n_bars, "tempo": result.plan.tempo, "cuts": result.plan.cuts, "notes": result.n_notes}
    return seconds, facts


def _force():
    from bgmgen.sound.mux import MuxOptions

    return MuxOptions(force=True)


def analyse_breakdown(clip: Path, device: str) -> dict[str, float]:
    """The analyse stage in parts, timed on their own: decoding the small frames, TransNetV2 load and inference."""
    import numpy as np

    from bgmgen.video.decode import iter_frames, probe
    from bgmgen.video.shots import TransNetV2Detector
    from bgmgen.video.visual import ANALYSIS_FPS, ANALYSIS_SIZE

    info = probe(clip)
    start = time.perf_counter()
    frames = np.concatenate(list(iter_frames(info, fps=ANALYSIS_FPS, size=ANALYSIS_SIZE)))
    decode = time.perf_counter() - start
    full = TransNetV2Detector(device=device, cascade=False)
    start = time.perf_counter()
    full._get_model()
    load = time.perf_counter() - start
    start = time.perf_counter()
    full.detect(frames, ANALYSIS_FPS)
    infer = time.perf_counter() - start
    cascade = TransNetV2Detector(device=device, cascade=True)
    cascade._model = full._model
    start = time.perf_counter()
    cascade.detect(frames, ANALYSIS_FPS)
    infer_cascade = time.perf_counter() - start
    return {"decode 48x27 @ 25 fps": decode, "TransNetV2 load": load, "TransNetV2 inference, every frame": infer,
            "TransNetV2 inference, cascade (the default)": infer_cascade}  # fmt: skip


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _cell(values: list[float]) -> str:
    """'1.23' for one run, '1.23 (1.10-1.40)' for several."""
    if not values:
        return "-"
    text = f"{_median(values):.2f}"
    if len(values) > 1:
        text += f" ({min(values):.2f}-{max(values):.2f})"
    return text


def report(runs: list[dict], meta: dict) -> str:
    """The markdown table for the collected runs."""

    def col(key: str, part: str = "stages") -> list[float]:
        return [r[part][key] for r in runs if key in r[part]]

    decode = col("ffmpeg decode", "baseline")
    base = _median(decode)

    def row(label: str, values: list[float]) -> str:
        return f"| {label} | {_cell(values)} | {_median(values) / base:.2f} |"

    lines = [
        f"Clip: {meta['duration']:.0f} s, {SIZE[0]}x{SIZE[1]}, {FPS} fps H.264 + AAC, {len(meta['cuts'])} hard cuts "
        f"({', '.join(f'{c:.2f}' for c in meta['cuts'])} s); device {meta['device']}; {len(runs)} run(s), "
        "median (min-max) seconds.",
        "",
        "| Stage | Seconds | x ffmpeg decode |",
        "|---|---:|---:|",
        row("baseline: `ffmpeg -i clip -f null -`", decode),
    ]
    for key in ("probe", "model load", "analyse", "plan", "compose", "render", "mux"):
        lines.append(row(key, col(key)))
        if key == "analyse":
            for part in runs[0]["analyse parts"]:
                lines.append(row(f"&nbsp;&nbsp;of which {part} (timed alone)", col(part, "analyse parts")))
    lines.append(row("**library total** (stages above)", [sum(r["stages"].values()) for r in runs]))
    lines.append(row("**`bgmgen score` wall time** (new process, imports included)", col("bgmgen score", "baseline")))
    if "short clip" in runs[0]["baseline"]:
        lines.append(f"| **`bgmgen score` wall time, {meta['short']:g} s clip** (from the command's start) "
                     f"| {_cell(col('short clip', 'baseline'))} | - |")  # fmt: skip
    rss = {key: _median([r["peak_rss_mib"][key] for r in runs]) for key in runs[0]["peak_rss_mib"]}
    facts = runs[0]["facts"]
    lines += [
        "",
        "The analyse parts are timed again on their own; they need not add up to analyse, whose ffmpeg decode "
        "runs alongside the signal computation.",
        f"Peak RSS: `bgmgen score` {rss['bgmgen score']:.0f} MiB (the largest of its process and its ffmpeg/FluidSynth "
        f"children); the library run in this process {rss['library']:.0f} MiB; `ffmpeg -f null` decode "
        f"{rss['ffmpeg decode']:.0f} MiB.",
        f"Music: {facts['bars']} bars at {facts['tempo']:.1f} BPM, {facts['notes']} notes; "
        f"cuts found at {', '.join(f'{c:.2f}' for c in facts['cuts'])} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of video (default 60)")
    parser.add_argument("--short", type=float, default=10.0, help="seconds of the short clip; 0 skips it (default 10)")
    parser.add_argument("--repeat", type=int, default=1, help="runs to take the median of (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--avx2", action="store_true", help="compute as a CPU with AVX2 only would (see AVX2_CAPS)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.repeat < 1:
        parser.error("--duration must be positive and --repeat at least 1")
    if args.avx2:
        os.environ.update(AVX2_CAPS)  # before torch is imported, and inherited by every child process

    import torch

    from bgmgen.video.shots import _cpu_has_native_bf16

    meta = {
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "cpu": cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "native_bf16": _cpu_has_native_bf16(torch),
        # Set to AVX2 on a CPU with bf16, it stands in for one without (oneDNN then uses neither AVX512 nor bf16).
        "onednn_isa_cap": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "isa_caps": {name: os.environ[name] for name in AVX2_CAPS if name in os.environ},
        "short": args.short,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ffmpeg": subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0],
        "load_before": os.getloadavg(),
        "duration": args.duration,
        "device": args.device,
    }
    runs = []
    with tempfile.TemporaryDirectory(prefix="bgmgen-bench-") as tmp:
        clip = Path(tmp) / "bench.mp4"
        print(f"making a {args.duration:g} s {SIZE[0]}x{SIZE[1]} clip ...", file=sys.stderr)
        meta["cuts"] = make_clip(clip, args.duration)
        short_clip = Path(tmp) / "short.mp4"
        if args.short > 0:
            make_clip(short_clip, args.short)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        for i in range(args.repeat):
            print(f"run {i + 1}/{args.repeat} ...", file=sys.stderr)
            run: dict = {"baseline": {}, "peak_rss_mib": {}}
            decode = run_child(["ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-f", "null", "-"])
            run["baseline"]["ffmpeg decode"], run["peak_rss_mib"]["ffmpeg decode"] = decode
            run["stages"], run["facts"] = library_run(clip, Path(tmp) / "library.scored.mp4", args.device)
            run["peak_rss_mib"]["library"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MIB
            run["analyse parts"] = analyse_breakdown(clip, args.device)
            cli = [sys.executable, "-m", "bgmgen.cli", "score", str(clip), "-o", str(Path(tmp) / "cli.scored.mp4"),
                   "--force", "--quiet", "--device", args.device]  # fmt: skip
            run["baseline"]["bgmgen score"], run["peak_rss_mib"]["bgmgen score"] = run_child(cli, cwd=REPO, env=env)
            if args.short > 0:
                cli[4], cli[6] = str(short_clip), str(Path(tmp) / "short.scored.mp4")
                run["baseline"]["short clip"], _ = run_child(cli, cwd=REPO, env=env)
            runs.append(run)
    meta["load_after"] = os.getloadavg()
    print(
        f"{meta['date']}, {meta['cpu']} ({'native bf16' if meta['native_bf16'] else 'no native bf16'}"
        f"{''.join(f', {name}={value}' for name, value in meta['isa_caps'].items())}), "
        f"{meta['cpus']} CPUs (torch threads {meta['torch_threads']}), "
        f"load average before {meta['load_before'][0]:.2f} / after {meta['load_after'][0]:.2f}; "
        f"Python {meta['python']}, torch {meta['torch']}, {meta['ffmpeg']}\n"
    )
    print(report(runs, meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
