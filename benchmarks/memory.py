"""Memory benchmark: peak memory of ``bgmgen score`` on 1-minute and 10-minute 1080p videos.

Makes a synthetic 1920x1080, 25 fps H.264 clip of one minute with hard cuts (lavfi test sources, one look
per shot); the longer clips are that minute repeated (ffmpeg's concat demuxer, stream copy), so making
them costs seconds, not an encode. Clips are cached in ``.cache/bench/`` and reused.

Each clip is then scored by ``bgmgen score`` in a fresh process while the benchmark samples the resident
memory (RSS) of that process and all its children (ffmpeg, FluidSynth) every ``--interval`` seconds with
psutil. The peak of the sum over the process tree is the figure; the peak of the Python process alone is
shown beside it. Prints a markdown table and, with ``--write``, replaces the "Memory" section of
``docs/benchmarks.md`` with it.

    python benchmarks/memory.py [--minutes 1 10] [--detectors transnetv2 histogram] [--write]

Needs psutil (``pip install psutil``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from clips import shots_filter  # benchmarks/clips.py (scripts run from this folder)

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"
DOC = REPO / "docs" / "benchmarks.md"
SECTION = "## Memory: scoring 1 and 10 minutes of 1080p video"

SIZE = (1920, 1080)  # pixels
FPS = 25  # frames per second
MINUTE_S = 60
CUTS_S = (9.0, 21.0, 33.0, 47.0)  # hard cuts within each minute, seconds
# One look per shot. Mandelbrot is drawn small and scaled up: at full size it is slower to make than to score.
SHOTS = (
    "testsrc2=s={w}x{h}:r={fps}",
    "mandelbrot=s=320x180:r={fps},scale={w}:{h}",
    "smptehdbars=s={w}x{h}:r={fps}",
    "rgbtestsrc=s={w}x{h}:r={fps},hue=H=2*PI*t/10",
    "testsrc2=s={w}x{h}:r={fps},negate",
)
MIB = 1024 * 1024


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def one_minute_clip() -> Path:
    """The cached 1-minute 1080p clip with cuts at CUTS_S (made on first use)."""
    path = CACHE / "minute-1080p.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    bounds = [0, *(round(c * FPS) for c in CUTS_S), MINUTE_S * FPS]
    chains = shots_filter(bounds, SHOTS, SIZE, FPS)
    partial = path.with_suffix(".partial.mp4")
    # Keyframes every 2 s, as cameras and web video have them.
    _ffmpeg("-filter_complex", ";".join(chains), "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast",
            "-g", str(2 * FPS), "-pix_fmt", "yuv420p", str(partial))  # fmt: skip
    partial.replace(path)
    return path


def clip(minutes: int) -> Path:
    """The cached clip of ``minutes`` minutes: the 1-minute clip repeated, stream-copied."""
    minute = one_minute_clip()
    if minutes == 1:
        return minute
    path = CACHE / f"{minutes}min-1080p.mp4"
    if path.exists():
        return path
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=CACHE, delete=False) as listing:
        # The concat demuxer's list quotes names itself; this one has no quotes in it.
        listing.write(f"file '{minute.resolve()}'\n" * minutes)
    partial = path.with_suffix(".partial.mp4")
    try:
        _ffmpeg("-f", "concat", "-safe", "0", "-i", listing.name, "-c", "copy", str(partial))
        partial.replace(path)
    finally:
        os.unlink(listing.name)
    return path


@dataclass
class Measurement:
    minutes: int
    detector: str  # shot detector used
    seconds: float  # wall time of the whole run
    peak_tree: int  # bytes: highest sum of RSS over the process and its children
    peak_python: int  # bytes: highest RSS of the bgmgen process alone
    peak_child: int  # bytes: highest RSS of any one child (ffmpeg, FluidSynth)


def measure(video: Path, minutes: int, detector: str, interval: float) -> Measurement:
    """Run ``bgmgen score`` on ``video`` and sample the memory of its process tree until it ends."""
    import psutil

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="bgmgen-mem-") as tmp:
        out = Path(tmp) / "scored.mp4"
        cmd = [sys.executable, "-m", "bgmgen.cli", "score", str(video), "-o", str(out), "-q",
               "--shot-detector", detector, "--device", "cpu"]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        root = psutil.Process(proc.pid)
        peak_tree = peak_python = peak_child = 0
        try:
            while proc.poll() is None:
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    break
                rss = []
                for p in tree:
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.NoSuchProcess:
                        rss.append(0)
                peak_tree = max(peak_tree, sum(rss))
                peak_python = max(peak_python, rss[0])
                peak_child = max([peak_child, *rss[1:]])
                time.sleep(interval)
        finally:
            if proc.poll() is None:  # the benchmark was stopped: stop the run too (it cleans up after itself)
                proc.terminate()
                proc.wait()
        stderr = proc.stderr.read().decode(errors="replace")
        proc.wait()
        seconds = time.perf_counter() - start
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"bgmgen score failed on {video} (exit {proc.returncode}): {stderr.strip()}")
    return Measurement(minutes, detector, seconds, peak_tree, peak_python, peak_child)


def table(results: list[Measurement]) -> str:
    lines = [
        "| Video | Shot detector | Wall time | Peak RSS, process tree | Peak RSS, Python process | Peak RSS, largest child |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.minutes} min 1920x1080 H.264 | {r.detector} | {r.seconds:.0f} s | {r.peak_tree / MIB:.0f} MiB | "
                     f"{r.peak_python / MIB:.0f} MiB | {r.peak_child / MIB:.0f} MiB |")  # fmt: skip
    return "\n".join(lines)


def section(results: list[Measurement], interval: float, notes: str = "") -> str:
    """The Memory section of docs/benchmarks.md for ``results``; ``notes`` is added after the table."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    return f"""{SECTION}

`benchmarks/memory.py` makes a synthetic 1-minute 1920x1080, 25 fps H.264 clip with four hard cuts
(lavfi test sources) and longer clips by repeating that minute (stream copy), then runs `bgmgen score -q`
on each in a new process and samples the resident memory (RSS) of the process and all its children
(ffmpeg, FluidSynth) every {interval:g} s with psutil. Rerun it with:

    .venv/bin/python benchmarks/memory.py --minutes 1 10 --detectors transnetv2 histogram --write

**Run of {when}**: {os.cpu_count()} CPUs, Python {platform.python_version()}, default music settings,
`--device cpu`; one-minute load average {load:.2f} at the end (the machine is shared, so wall times vary).

{table(results)}

The budget is 1.5 GB (1431 MiB) for the whole process tree. Memory that grows with the length of the video
is kept small on purpose: the analysis keeps one 48x27 RGB frame per 1/25 s (3.9 KB each, 58 MB for
10 minutes) and a few float32 numbers per frame; TransNetV2 runs over windows of at most 300 frames; the
music is rendered by FluidSynth to a temporary file and levelled, limited and written in blocks of 6 s
read from that file (`bgmgen.sound.loudness`), so no whole-track audio array is ever in memory.
{notes}"""


def write_section(text: str) -> None:
    """Replace (or append) the Memory section of docs/benchmarks.md, leaving the others as they are."""
    doc = DOC.read_text()
    start = doc.find(SECTION)
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        end = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text.rstrip("\n") + "\n" + (doc[end:] if end >= 0 else "")
    DOC.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 10], help="clip lengths to measure")
    parser.add_argument("--detectors", nargs="+", default=["transnetv2"], help="shot detectors to measure with")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between memory samples")
    parser.add_argument("--write", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # unwind, so the run is stopped too

    results = []
    for detector in args.detectors:
        for minutes in args.minutes:
            result = measure(clip(minutes), minutes, detector, args.interval)
            print(
                f"{minutes} min, {detector}: {result.seconds:.0f} s, peak {result.peak_tree / MIB:.0f} MiB", flush=True
            )
            results.append(result)
    print(table(results))
    if args.write:
        write_section(section(results, args.interval))
        print(f"wrote the Memory section of {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
