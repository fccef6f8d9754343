"""Shared test helpers: synthetic clips made with ffmpeg's lavfi sources, whose truth is known.

``make_clip`` builds a clip from segments of lavfi sources joined by hard cuts at given times, so shot
detection, timing and signal tests can check exact values. Everything is generated in ``tmp_path``.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Sequence

import pytest

REPO_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_DIR / "tests" / "data"  # small clips and POP909 songs, with their licences

# Visually distinct, patterned sources used for consecutive shots when no sources are given.
# Each has its own colours and layout, so a switch between them is an unambiguous hard cut.
DEFAULT_SHOT_SOURCES = ("testsrc2", "smptebars", "rgbtestsrc", "mandelbrot")

# Default codec per container extension (the encoder must be in Debian's ffmpeg build).
_CODEC_FOR_EXT = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx", ".avi": "mjpeg"}


def _source(spec: str, size: tuple[int, int], fps: float) -> str:
    """One lavfi source filter with size and rate set, e.g. 'color=c=red' -> 'color=c=red:s=64x36:r=25'."""
    sep = ":" if "=" in spec else "="
    return f"{spec}{sep}s={size[0]}x{size[1]}:r={fps}"


def make_clip(
    tmp_path: Path,
    name: str = "clip.mp4",
    *,
    duration: float = 2.0,
    size: tuple[int, int] = (64, 36),
    fps: float = 25.0,
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
    cuts: Sequence[float] = (),
    sources: Sequence[str] | None = None,
    audio: bool = False,
    vf: str | None = None,
    output_args: Sequence[str] = (),
) -> Path:
    """Write a synthetic clip to ``tmp_path / name`` and return its path.

    The clip is ``len(cuts) + 1`` shots; shot i shows ``sources[i % len(sources)]`` (lavfi source specs such
    as ``"color=c=red"``, ``"testsrc2"``, ``"mandelbrot"``) and the first frame of shot i+1 is at ``cuts[i]``
    seconds (rounded to the nearest frame, halves up). ``vf`` is a filter chain applied after the shots are joined (e.g.
    ``select=...`` for variable frame rate); ``output_args`` go before the output name (e.g.
    ``["-metadata:s:v", "rotate=90"]``). With ``audio`` a 440 Hz sine of the same length is added.
    Note that ``testsrc2`` rounds odd sizes down to even: use ``color`` sources for odd sizes.
    """
    path = tmp_path / name
    sources = list(sources or DEFAULT_SHOT_SOURCES)
    bounds = [0.0, *cuts, duration]
    frame_bounds = [math.floor(t * fps + 0.5) for t in bounds]  # nearest frame, halves up
    chains, labels = [], []
    for i, (a, b) in enumerate(zip(frame_bounds[:-1], frame_bounds[1:])):
        src = _source(sources[i % len(sources)], size, fps)
        chains.append(f"{src},trim=end_frame={b - a},setpts=PTS-STARTPTS,format={pix_fmt}[s{i}]")
        labels.append(f"[s{i}]")
    joined = f"{''.join(labels)}concat=n={len(labels)}:v=1:a=0"
    if vf:
        joined += f",{vf}"
    chains.append(f"{joined}[v]")
    if audio:
        chains.append(f"sine=f=440:sample_rate=44100:d={duration}[a]")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-filter_complex", ";".join(chains), "-map", "[v]"]
    if audio:
        cmd += ["-map", "[a]"]
    cmd += ["-c:v", codec or _CODEC_FOR_EXT.get(path.suffix, "libx264"), "-pix_fmt", pix_fmt]
    cmd += [*output_args, str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


@pytest.fixture
def clip_factory(tmp_path: Path):
    """``clip_factory(name, **kwargs)``: make_clip bound to this test's tmp_path."""

    def factory(name: str = "clip.mp4", **kwargs) -> Path:
        return make_clip(tmp_path, name, **kwargs)

    return factory


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    # The models here are small: on a shared 2-core machine one thread runs them several times faster
    # than two threads competing with ffmpeg and each other (measured up to 10x).
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A folder of prepared POP909 corpora made from the two bundled songs (the same songs in every split)."""
    from bgmgen.training.pop909 import Corpus, load_song

    folder = tmp_path_factory.mktemp("prepared")
    corpus = Corpus.from_songs([load_song(DATA_DIR / "pop909" / "001"), load_song(DATA_DIR / "pop909" / "002")])
    for split in ("train", "valid", "test"):
        corpus.save(folder / f"pop909_{split}.npz")
    return folder
