"""The whole pipeline, top to bottom: video -> analysis -> plan -> music -> MIDI -> audio -> video.

    info     = video.probe(path)                      # fail fast on broken input
    analysis = visual.analyze_video(path)             # frames, shot cuts (TransNetV2), motion, light
    plan     = plan.make_plan(analysis, options)      # tempo, bars, segments, key, chords, levels
    parts    = MusicGenerator.generate_parts(plan)    # diffusion, window by window: melody + accompaniment
    band     = arrange.arrange(plan, parts, style)    # + bass, drums, pad in the plan's style
    midi     = midi.write_arrangement(band, plan)     # pretty_midi, one track per role
    wav      = band.render_band(band, duration)       # FluidSynth per part, summed, trimmed and normalised
    output   = mux.mux(video, wav, output)            # ffmpeg, video copied

Every stage reports progress through ``progress(stage, fraction)``; the library never prints.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bgmgen.errors import BgmgenError, ModelError
from bgmgen.music.arrange import Arrangement, arrange
from bgmgen.music.midi import write_arrangement
from bgmgen.music.plan import Plan, PlanOptions, make_plan
from bgmgen.music.roll import GeneratedParts
from bgmgen.music.styles import Style, get_style
from bgmgen.music.sampler import SamplerOptions
from bgmgen.sound.mux import MuxOptions, check_output_path, mux
from bgmgen.sound.band import render_band
from bgmgen.sound.render import RenderOptions
from bgmgen.sound.speech import melody_expression, voice_spans
from bgmgen.video.decode import VideoInfo, probe
from bgmgen.video.features import FeatureModels

log = logging.getLogger("bgmgen")

Progress = Callable[[str, float], None]
STAGES = ("analyse", "plan", "compose", "render", "mux")


@dataclass(frozen=True)
class ScoreOptions:
    """Everything a run can be told; the CLI builds one from its flags."""

    plan: PlanOptions = field(default_factory=PlanOptions)
    sampler: SamplerOptions = field(default_factory=SamplerOptions)
    render: RenderOptions = field(default_factory=RenderOptions)
    mux: MuxOptions = field(default_factory=MuxOptions)
    seed: int = 0  # drives the diffusion noise (the plan has its own seed in ``plan``)
    device: str = "cpu"  # cpu | cuda | auto
    shot_detector: str = "transnetv2"
    checkpoint: Path | None = None  # music model; None = the shipped one
    plan_file: Path | None = None  # use this (edited) plan instead of making one
    weights_dir: Path | None = None  # CLIP/BLIP/BERT weights, searched before $BGMGEN_MODELS and the HF cache
    learned_features: bool = True  # use CLIP/BLIP when their weights are found (never downloads)
    instruments: dict[str, int] = field(default_factory=dict)  # GM program per role, over the style's
    stems_dir: Path | None = None  # also write one WAV per role and the mix here (score)


@dataclass
class ScoreResult:
    output: Path
    plan: Plan
    n_notes: int
    seconds: dict[str, float]  # wall time per stage
    roll: np.ndarray | None = None  # the generated piano roll [2, steps, 88] (both parts), for `report.draw_report`
    parts: GeneratedParts | None = None  # the generated melody and accompaniment
    arrangement: Arrangement | None = None  # the whole band as written to MIDI
    stems: dict[str, Path] = field(default_factory=dict)  # role (and "mix") -> WAV, with ScoreOptions.stems_dir


# Device files of the kernel drivers through which torch reaches a GPU (NVIDIA; AMD's ROCm; WSL2's CUDA).
_GPU_DRIVER_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/kfd", "/dev/dxg")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cuda`` without one is an error."""
    if device == "cpu" or (device == "auto" and _no_gpu_driver()):
        # Without importing torch (1 s): the Scorer's loading threads do that while ffmpeg starts decoding.
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BgmgenError("--device cuda was asked for, but no CUDA GPU is available (use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise BgmgenError(f"unknown device {device!r}: use auto, cpu or cuda")
    return device


def _no_gpu_driver() -> bool:
    """True where torch certainly sees no GPU: Linux without any GPU driver's device files."""
    return sys.platform == "linux" and not any(os.path.exists(path) for path in _GPU_DRIVER_FILES)


class Scorer:
    """Loads the music model once and scores any number of videos (``batch`` reuses one)."""

    def __init__(self, options: ScoreOptions = ScoreOptions()):
        self.options = options
        self.device = resolve_device(options.device)
        if options.checkpoint is not None and not Path(options.checkpoint).is_file():
            raise ModelError(f"music model checkpoint not found: {options.checkpoint}")  # before any work
        # Importing torch and loading the music model take seconds on a cold start: a thread does it while the
        # first video is probed and decoded (ffmpeg and numpy leave the GIL free); compose waits for it.
        loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bgmgen-model-load")
        self._generator: Future = loader.submit(self._load_generator)
        loader.shutdown(wait=False)
        self.feature_models = FeatureModels()  # CLIP/BLIP/BERT, loaded on first use, kept for the next video

    def _load_generator(self):
        from bgmgen.music.generate import MusicGenerator
        from bgmgen.music.sampler import prepare_sampler

        generator = MusicGenerator.from_checkpoint(self.options.checkpoint, self.device, self.options.sampler)
        # The shipped sampler table (milliseconds), or for ddpm and unshipped step counts diffusers' import
        # (1-3 s): here, beside the video's analysis, rather than on the first window's critical path.
        prepare_sampler(self.options.sampler)
        # The plan's tempo fit (scipy.optimize's linprog, 0.2-0.4 s to import), imported here rather than on the
        # critical path. (The render imports its own scipy modules while FluidSynth runs.)
        import scipy.optimize  # noqa: F401

        return generator

    @property
    def generator(self):
        """The music generator (``MusicGenerator``), waiting for the loading thread; raises what loading raised."""
        return self._generator.result()

    def compose(self, plan: Plan, progress: Progress | None = None) -> GeneratedParts:
        report = progress or (lambda stage, fraction: None)
        return self.generator.generate_parts(plan, self.options.seed, progress=lambda f: report("compose", f))

    def style(self, plan: Plan) -> Style:
        """The plan's style with the user's instrument overrides."""
        return get_style(plan.style).with_instruments(self.options.instruments)

    def arrange(self, plan: Plan, parts: GeneratedParts) -> Arrangement:
        """The band for the plan; the plan's hits (hard cuts) get a crash, a bass root and a struck chord."""
        return arrange(plan, parts, self.style(plan), self.options.seed, plan.hits)

    def midi(self, video: Path, output: Path, progress: Progress | None = None) -> ScoreResult:
        """Write the music for ``video`` as a MIDI file at ``output``."""
        report = progress or (lambda stage, fraction: None)
        check_output_path(video, output, self.options.mux.force, video=False)
        seconds: dict[str, float] = {}
        plan = plan_for(video, probe(video), self.options, self.device, report, seconds, self.feature_models)
        start = time.perf_counter()
        parts = self.compose(plan, report)
        band = self.arrange(plan, parts)
        seconds["compose"] = time.perf_counter() - start
        write_arrangement(band, plan, output, self.options.seed)
        return ScoreResult(output, plan, _n_notes(band), seconds, parts.combined(), parts, band)

    def score(self, video: Path, output: Path, progress: Progress | None = None, stems_dir: Path | None = None,
              info: VideoInfo | None = None) -> ScoreResult:
        """Write ``output``: ``video`` with new music as its sound track; with ``stems_dir`` (default:
        ``options.stems_dir``) also one WAV per role and the mix there. ``info``: ``probe(video)`` where the
        caller has it already (ffprobe takes ~0.3 s)."""
        stems_dir = stems_dir if stems_dir is not None else self.options.stems_dir
        report = progress or (lambda stage, fraction: None)
        info = info or probe(video)
        check_output_path(video, output, self.options.mux.force)
        seconds: dict[str, float] = {}
        plan = plan_for(video, info, self.options, self.device, report, seconds, self.feature_models)
        start = time.perf_counter()
        parts = self.compose(plan, report)
        band = self.arrange(plan, parts)
        seconds["compose"] = time.perf_counter() - start
        with tempfile.TemporaryDirectory(prefix="bgmgen-") as tmp:
            start = time.perf_counter()
            expression = {}
            if self.options.mux.keep_audio and info.has_audio:
                # The melody steps back where the original has a voice; the whole music still ducks in mux.
                expression["melody"] = melody_expression(voice_spans(video, info.duration), info.duration)
            stems = render_band(band, plan, Path(tmp), info.duration, self.options.render, self.options.seed,
                                expression, stems_dir, self.options.mux.force)  # fmt: skip
            wav = stems["mix"]
            seconds["render"] = time.perf_counter() - start
            report("render", 1.0)
            start = time.perf_counter()
            mux(video, wav, output, info.duration, info.has_audio, self.options.mux, lambda f: report("mux", f), info)
            seconds["mux"] = time.perf_counter() - start
            report("mux", 1.0)
        return ScoreResult(output, plan, _n_notes(band), seconds, parts.combined(), parts, band,
                           stems if stems_dir is not None else {})  # fmt: skip


def _n_notes(band: Arrangement) -> int:
    return sum(len(part.notes) for part in band.parts.values())


def plan_for(
    video: Path, info: VideoInfo, options: ScoreOptions, device: str, report: Progress, seconds: dict[str, float],
    feature_models: FeatureModels | None = None,
) -> Plan:
    """Analyse ``video`` and plan its music, or load the plan file named in ``options``."""
    from bgmgen.video.features import FeatureOptions
    from bgmgen.video.visual import analyze_video

    start = time.perf_counter()
    if options.plan_file is not None:
        plan = Plan.load(options.plan_file)
        if options.plan.style is not None:  # --style wins over the plan file's
            plan.style = get_style(options.plan.style).name
        if abs(plan.duration - info.duration) > 0.5:
            raise BgmgenError(
                f"plan {options.plan_file} was made for a {plan.duration:.2f} s video; this one lasts {info.duration:.2f} s"
            )
        report("analyse", 1.0)
    else:
        analysis = analyze_video(
            video, shot_detector=options.shot_detector, device=device, progress=lambda f: report("analyse", f), info=info,
            features=FeatureOptions(weights_dir=options.weights_dir, device=device, models=feature_models)
            if options.learned_features else None,
        )
        seconds["analyse"] = time.perf_counter() - start
        log.info("analysers used: %s", ", ".join(analysis.analysers))
        start = time.perf_counter()
        plan = make_plan(analysis, options.plan)
    seconds["plan"] = time.perf_counter() - start
    report("plan", 1.0)
    return plan


def plan_only(video: Path, options: ScoreOptions = ScoreOptions(), progress: Progress | None = None) -> Plan:
    """Analyse and plan without loading the music model (``bgmgen plan``)."""
    report = progress or (lambda stage, fraction: None)
    return plan_for(video, probe(video), options, resolve_device(options.device), report, {})
