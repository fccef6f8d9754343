"""End-to-end tests on real clips: real ffmpeg, TransNetV2, the shipped music model and FluidSynth.

Each real clip is planned, written as MIDI and scored once through the command line (in-process),
and the tests check the results against what is known about the clip: its video must come back
untouched, the music must be audible and cover the whole length, and segments must start at the cuts.
The helpers at the top are shared with ``test_cli.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bgmgen.cli import app
from bgmgen.music.sampler import SamplerOptions
from bgmgen.pipeline import STAGES, ScoreOptions, Scorer, plan_only
from bgmgen.video.decode import probe

DATA_DIR = Path(__file__).parent / "data"
SAMPLE_RATE = 44100  # Hz, for decoded sound tracks
CUT_TOLERANCE_S = 0.1  # a detected cut may be this far from the known one (2.4 frames at 24 fps)
BAR_LINE_TOLERANCE_S = 0.25  # a segment must start this close to each cut
MIDI_TICK_S = 0.01  # MIDI files store times in ticks (a few ms at these tempos)


@dataclass(frozen=True)
class RealClip:
    name: str
    cuts: tuple[float, ...]  # known hard cuts, seconds (from tests/data/LICENSES.md)


REAL_CLIPS = (RealClip("rocket_launch.webm", (3.09,)), RealClip("webcam_talk.avi", ()))


# --- helpers (also used by test_cli.py) -------------------------------------------------------------------


def run_cli(*args: object) -> object:
    """Run ``bgmgen ARGS`` in-process; returns click's Result (exit_code, stdout, stderr, output).

    Fails the test if the command crashed with an exception the CLI did not turn into an exit code.
    """
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"bgmgen {args} crashed: {result.exception!r}\n{result.output}") from result.exception
    return result


def ok(*args: object) -> Path:
    """Run ``bgmgen ARGS``, require success, and return the path it printed on stdout."""
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    printed = result.stdout.strip().splitlines()
    assert printed, result.output
    return Path(printed[-1])


def streams(path: Path) -> list[dict]:
    """ffprobe's streams of ``path``, with packets counted (``nb_read_packets``)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return json.loads(out)["streams"]


def video_stream(path: Path) -> dict:
    return next(s for s in streams(path) if s["codec_type"] == "video")


def video_packet_hashes(path: Path) -> list[str]:
    """MD5 of every packet of the first video stream, in order (timestamps left out)."""
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framemd5", "-"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def decode_audio(path: Path) -> np.ndarray:
    """The first sound track of ``path`` as mono float32 samples at SAMPLE_RATE."""
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE),
         "-f", "f32le", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(out, dtype=np.float32)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0


def midi_notes(path: Path) -> list:
    """All notes of a MIDI file (pretty_midi Notes), sorted by start."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(str(path))
    return sorted((n for inst in midi.instruments for n in inst.notes), key=lambda n: (n.start, n.pitch))


def midi_tempo(path: Path) -> float:
    import pretty_midi

    _, tempi = pretty_midi.PrettyMIDI(str(path)).get_tempo_changes()
    assert len(tempi) == 1, tempi
    return float(tempi[0])


def assert_video_kept(source: Path, scored: Path) -> None:
    """The scored file's video is the source's: same codec, same packets, same length within a frame."""
    before, after = video_stream(source), video_stream(scored)
    assert after["codec_name"] == before["codec_name"]
    assert int(after["nb_read_packets"]) == int(before["nb_read_packets"])
    assert video_packet_hashes(scored) == video_packet_hashes(source)
    info_in, info_out = probe(source), probe(scored)
    assert abs(info_out.duration - info_in.duration) <= 1.0 / info_in.fps + 1e-3


def assert_audible_music(scored: Path, duration: float) -> np.ndarray:
    """One sound track, as long as the video, with music in every second (the fade-out excepted)."""
    kinds = [s["codec_type"] for s in streams(scored)]
    assert kinds.count("audio") == 1 and kinds.count("video") == 1, kinds
    audio = decode_audio(scored)
    assert abs(len(audio) / SAMPLE_RATE - duration) < 0.1
    assert rms(audio) > 0.02  # about -34 dBFS: clearly audible
    body = audio[: max(SAMPLE_RATE // 2, len(audio) - SAMPLE_RATE // 2)]  # leave out the fade-out
    windows = [body[i : i + SAMPLE_RATE] for i in range(0, len(body), SAMPLE_RATE)]
    quiet = [i for i, w in enumerate(windows) if len(w) > SAMPLE_RATE // 4 and rms(w) < 0.003]
    assert not quiet, f"silent seconds: {quiet}"
    return audio


# --- real clips through the CLI -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RealRun:
    clip: RealClip
    source: Path  # the copy that was scored
    source_sha: str
    plan: dict
    midi: Path
    scored: Path


@pytest.fixture(scope="module", params=REAL_CLIPS, ids=lambda c: c.name)
def real(request, tmp_path_factory) -> RealRun:
    """Plan, MIDI and scored video of one real clip, with default settings and TransNetV2."""
    import hashlib

    clip: RealClip = request.param
    folder = tmp_path_factory.mktemp(Path(clip.name).stem)
    source = folder / clip.name
    shutil.copy(DATA_DIR / clip.name, source)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    plan_path = ok("plan", source, "-q")
    midi_path = ok("midi", source, "--plan", plan_path, "-q")
    scored = ok("score", source, "-q")
    return RealRun(clip, source, sha, json.loads(plan_path.read_text()), midi_path, scored)


@pytest.mark.slow
def test_real_clip_outputs_are_named_and_input_untouched(real):
    import hashlib

    stem = Path(real.clip.name).stem
    assert real.midi == real.source.with_name(f"{stem}.mid")
    assert real.scored.parent == real.source.parent and real.scored.name.startswith(f"{stem}.scored.")
    assert sorted(p.name for p in real.source.parent.iterdir()) == sorted(
        [real.clip.name, f"{stem}.plan.json", f"{stem}.mid", real.scored.name]
    )
    assert hashlib.sha256(real.source.read_bytes()).hexdigest() == real.source_sha


@pytest.mark.slow
def test_real_clip_video_is_kept(real):
    assert_video_kept(real.source, real.scored)


@pytest.mark.slow
def test_real_clip_music_is_audible_throughout(real):
    assert_audible_music(real.scored, probe(real.source).duration)


@pytest.mark.slow
def test_real_clip_midi_covers_the_whole_clip(real):
    duration, tempo = real.plan["duration"], real.plan["tempo"]
    assert abs(duration - probe(real.source).duration) < 1e-3
    assert midi_tempo(real.midi) == pytest.approx(tempo, rel=1e-3)
    notes = midi_notes(real.midi)
    bar = 240.0 / tempo
    for b in range(real.plan["n_bars"]):
        start, end = b * bar, min((b + 1) * bar, duration)
        assert any(n.start < end and n.end > start for n in notes), f"bar {b} ({start:.2f}-{end:.2f} s) is silent"
    assert notes[0].start < 60.0 / tempo  # music starts on the first beat
    # ... and rings to the very end, not past it (MIDI ticks round times by a few ms).
    assert max(n.end for n in notes) == pytest.approx(duration, abs=MIDI_TICK_S)


@pytest.mark.slow
def test_real_clip_segments_start_at_the_cuts(real):
    plan = real.plan
    assert len(plan["cuts"]) == len(real.clip.cuts), plan["cuts"]
    for found, known in zip(plan["cuts"], real.clip.cuts):
        assert abs(found - known) <= CUT_TOLERANCE_S
    bar = 240.0 / plan["tempo"]
    starts = [s["start_bar"] * bar for s in plan["segments"]]
    for cut in plan["cuts"]:
        assert min(abs(s - cut) for s in starts) <= BAR_LINE_TOLERANCE_S, (cut, starts)
    # Segments tile the bars without gaps.
    bounds = [(s["start_bar"], s["end_bar"]) for s in plan["segments"]]
    assert bounds[0][0] == 0 and bounds[-1][1] == plan["n_bars"]
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert plan["n_bars"] * bar >= plan["duration"] > (plan["n_bars"] - 1) * bar


# --- the library API ---------------------------------------------------------------------------------------

FAST = ScoreOptions(shot_detector="histogram", sampler=SamplerOptions(steps=2, guidance=1.0))


def test_scorer_reports_each_stage_and_times_it(clip_factory, tmp_path):
    clip = clip_factory("clip.mp4", duration=3.0, cuts=[1.5], size=(96, 54))
    seen: list[tuple[str, float]] = []
    result = Scorer(FAST).score(clip, tmp_path / "out.mp4", progress=lambda stage, f: seen.append((stage, f)))
    assert result.output == tmp_path / "out.mp4" and result.output.exists()
    assert set(result.seconds) == set(STAGES)
    assert all(s >= 0 for s in result.seconds.values())
    order = list(dict.fromkeys(stage for stage, _ in seen))
    assert order == list(STAGES)
    for stage in STAGES:
        fractions = [f for s, f in seen if s == stage]
        assert fractions[-1] == 1.0 and fractions == sorted(fractions), (stage, fractions)
    assert result.plan.cuts and abs(result.plan.cuts[0] - 1.5) <= 0.04
    assert result.n_notes > 0


def test_plan_only_does_not_load_the_music_model(clip_factory, monkeypatch):
    from bgmgen.music.generate import MusicGenerator

    def refuse(*args, **kwargs):
        raise AssertionError("plan_only loaded the music model")

    monkeypatch.setattr(MusicGenerator, "from_checkpoint", refuse)
    plan = plan_only(clip_factory("clip.mp4", duration=2.0), FAST)
    assert plan.n_bars >= 1 and plan.duration == pytest.approx(2.0, abs=0.05)


def test_one_scorer_scores_several_videos(clip_factory, tmp_path):
    scorer = Scorer(FAST)
    short = scorer.score(clip_factory("a.mp4", duration=1.0), tmp_path / "a.scored.mp4")
    longer = scorer.score(clip_factory("b.mp4", duration=3.0, cuts=[1.0]), tmp_path / "b.scored.mp4")
    assert probe(short.output).duration == pytest.approx(1.0, abs=0.05)
    assert probe(longer.output).duration == pytest.approx(3.0, abs=0.05)
    assert longer.plan.n_bars >= short.plan.n_bars


def test_auto_device_without_a_gpu_driver_is_cpu_before_torch_is_imported(monkeypatch, tmp_path):
    # No driver device files: "auto" is the CPU at once, so ffmpeg can decode while torch imports in a thread.
    code = ("import sys; from bgmgen import pipeline; pipeline._GPU_DRIVER_FILES = (sys.argv[1],); "
            "assert pipeline.resolve_device('auto') == 'cpu'; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "no-driver")], check=True)
    # A driver is there: torch decides.
    import torch

    from bgmgen import pipeline

    driver = tmp_path / "nvidiactl"
    driver.touch()
    monkeypatch.setattr(pipeline, "_GPU_DRIVER_FILES", (str(driver),))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pipeline.resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pipeline.resolve_device("auto") == "cpu"
