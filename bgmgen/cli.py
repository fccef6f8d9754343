"""The ``bgmgen`` command line: parses arguments, builds options, calls the pipeline.

Heavy modules (torch, the pipeline) are imported inside the commands so ``--help`` is instant.
Errors are printed as one line with a non-zero exit; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import BgmgenError

app = typer.Typer(
    help="Score a video: watch the clip and write background music for it (Diff-BGM style).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)  # soft_wrap: an error stays one line in logs
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ogv", ".ogg", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp"}

# Options shared by several commands.
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same music.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; errors only.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.", hidden=True)]
TempoOpt = Annotated[Optional[float], typer.Option("--tempo", help="Tempo in BPM (default: chosen so cuts fall on bar lines).")]
KeyOpt = Annotated[Optional[str], typer.Option("--key", help='Key, e.g. "A minor", "F#m", "Eb major" (default: from the mood).')]
PlanFileOpt = Annotated[Optional[Path], typer.Option("--plan", help="Use this plan (from `bgmgen plan`, maybe edited).")]
GuidanceOpt = Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale (1 = none).")]
StepsOpt = Annotated[int, typer.Option("--steps", help="Denoising steps per 8-bar window.")]
SamplerOpt = Annotated[str, typer.Option("--sampler", help="dpm, ddim or ddpm.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", help="Music model (default: the shipped one).")]
DetectorOpt = Annotated[str, typer.Option("--shot-detector", help="transnetv2 or histogram.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bgmgen {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """bgmgen: background music for videos."""


@contextmanager
def _cli_errors(debug: bool) -> Iterator[None]:
    """Turn failures into one line on stderr and an exit code (no traceback unless --debug)."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        yield
    except BgmgenError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the user gets one line, --debug the traceback
        if debug:
            raise
        err.print(f"[red]error:[/red] unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)", highlight=False)
        raise typer.Exit(1) from None


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str, float], None]]:
    """A ``progress(stage, fraction)`` callback drawing one rich bar per stage."""
    if quiet:
        yield lambda stage, fraction: None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<8}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as bars:
        tasks: dict[str, int] = {}

        def update(stage: str, fraction: float) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=1.0)
            bars.update(tasks[stage], completed=min(max(fraction, 0.0), 1.0))

        yield update


def _options(seed, device, tempo, key, plan_file, guidance, steps, sampler, checkpoint, detector,
             soundfont=None, keep_audio=False, force=False):
    from .audio import RenderOptions
    from .mux import MuxOptions
    from .pipeline import ScoreOptions
    from .plan import PlanOptions
    from .sampler import SamplerOptions

    if steps < 1:
        raise BgmgenError("--steps must be at least 1")
    if sampler not in ("dpm", "ddim", "ddpm"):
        raise BgmgenError(f"unknown sampler {sampler!r}: use dpm, ddim or ddpm")
    if key is not None:
        from .plan import choose_key

        choose_key(PlanOptions(key=key), 0.5, None)  # a bad --key fails now, not after the analysis
    return ScoreOptions(
        plan=PlanOptions(tempo=tempo, key=key, seed=seed),
        sampler=SamplerOptions(sampler=sampler, steps=steps, guidance=guidance),
        render=RenderOptions(soundfont=soundfont),
        mux=MuxOptions(keep_audio=keep_audio, force=force),
        seed=seed, device=device, shot_detector=detector, checkpoint=checkpoint, plan_file=plan_file,
    )


def _check_input(video: Path) -> Path:
    from .errors import InputError

    if not video.exists():
        raise InputError(f"{video}: no such file")
    if video.is_dir():
        raise InputError(f"{video}: is a folder (use `bgmgen batch` for folders)")
    return video


@app.command()
def score(
    video: Annotated[Path, typer.Argument(help="The video to score.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output video (default: NAME.scored.EXT beside the input).")] = None,
    keep_audio: Annotated[bool, typer.Option("--keep-audio", help="Mix the original sound under the music.")] = False,
    soundfont: Annotated[Optional[Path], typer.Option("--soundfont", help="SoundFont (.sf2/.sf3) to play the music with.")] = None,
    force: ForceOpt = False, seed: SeedOpt = 0, device: DeviceOpt = "auto", tempo: TempoOpt = None, key: KeyOpt = None,
    plan: PlanFileOpt = None, guidance: GuidanceOpt = 5.0, steps: StepsOpt = 20, sampler: SamplerOpt = "dpm",
    checkpoint: CheckpointOpt = None, shot_detector: DetectorOpt = "transnetv2", quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Write VIDEO with new music as its sound track."""
    with _cli_errors(debug):
        from .mux import check_output_path, default_output_path
        from .pipeline import Scorer
        from .video import probe

        info = probe(_check_input(video))
        output = output or default_output_path(video, info.video_codec)
        check_output_path(video, output, force)  # before the model loads
        options = _options(seed, device, tempo, key, plan, guidance, steps, sampler, checkpoint, shot_detector,
                           soundfont, keep_audio, force)
        scorer = Scorer(options)
        with _progress(quiet) as progress:
            result = scorer.score(video, output, progress)
        if not quiet:
            p = result.plan
            err.print(f"{p.n_bars} bars at {p.tempo:.1f} BPM in {p.key}, {len(p.segments)} segments, {result.n_notes} notes; "
                      f"cuts off bar lines by {p.cut_alignment_error:.2f} s on average", highlight=False, soft_wrap=True)
        typer.echo(str(result.output))


@app.command()
def midi(
    video: Annotated[Path, typer.Argument(help="The video to write music for.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="MIDI file (default: NAME.mid beside the input).")] = None,
    force: ForceOpt = False, seed: SeedOpt = 0, device: DeviceOpt = "auto", tempo: TempoOpt = None, key: KeyOpt = None,
    plan: PlanFileOpt = None, guidance: GuidanceOpt = 5.0, steps: StepsOpt = 20, sampler: SamplerOpt = "dpm",
    checkpoint: CheckpointOpt = None, shot_detector: DetectorOpt = "transnetv2", quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Write the music for VIDEO as a MIDI file."""
    with _cli_errors(debug):
        from .mux import check_output_path
        from .pipeline import Scorer

        _check_input(video)
        output = output or video.with_suffix(".mid")
        check_output_path(video, output, force, video=False)  # before the model loads
        options = _options(seed, device, tempo, key, plan, guidance, steps, sampler, checkpoint, shot_detector, force=force)
        scorer = Scorer(options)
        with _progress(quiet) as progress:
            result = scorer.midi(video, output, progress)
        typer.echo(str(result.output))


@app.command("plan")
def plan_command(
    video: Annotated[Path, typer.Argument(help="The video to plan music for.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Plan JSON (default: NAME.plan.json beside the input).")] = None,
    force: ForceOpt = False, seed: SeedOpt = 0, device: DeviceOpt = "auto", tempo: TempoOpt = None, key: KeyOpt = None,
    shot_detector: DetectorOpt = "transnetv2", quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Write the musical plan (tempo, segments, key, chords, levels) as editable JSON."""
    with _cli_errors(debug):
        from .mux import check_output_path
        from .pipeline import plan_only

        _check_input(video)
        output = output or video.with_name(f"{video.stem}.plan.json")
        check_output_path(video, output, force, video=False)
        options = _options(seed, device, tempo, key, None, 5.0, 20, "dpm", None, shot_detector)
        with _progress(quiet) as progress:
            result = plan_only(video, options, progress)
        result.save(output)
        typer.echo(str(output))


@app.command()
def batch(
    folder: Annotated[Path, typer.Argument(help="Folder of videos to score.")],
    output_dir: Annotated[Optional[Path], typer.Option("-o", "--output-dir", help="Where to write (default: beside each input).")] = None,
    keep_audio: Annotated[bool, typer.Option("--keep-audio", help="Mix the original sound under the music.")] = False,
    force: ForceOpt = False, seed: SeedOpt = 0, device: DeviceOpt = "auto", guidance: GuidanceOpt = 5.0, steps: StepsOpt = 20,
    checkpoint: CheckpointOpt = None, shot_detector: DetectorOpt = "transnetv2", quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Score every video in FOLDER, one after another; a failure skips that file and goes on."""
    with _cli_errors(debug):
        from .errors import InputError
        from .mux import default_output_path
        from .pipeline import Scorer
        from .video import probe

        if not folder.is_dir():
            raise InputError(f"{folder}: not a folder")
        videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and ".scored." not in p.name)
        if not videos:
            raise InputError(f"{folder}: no videos found")
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
        options = _options(seed, device, None, None, None, guidance, steps, "dpm", checkpoint, shot_detector,
                           keep_audio=keep_audio, force=force)
        scorer = Scorer(options)  # the model loads once for the whole folder
        failed = 0
        for video in videos:
            try:
                out = default_output_path(video, probe(video).video_codec)
                if output_dir is not None:
                    out = output_dir / out.name
                with _progress(quiet) as progress:
                    scorer.score(video, out, progress)
                typer.echo(str(out))
            except BgmgenError as exc:
                failed += 1
                err.print(f"skipped {video}: {exc}", highlight=False)
        if not quiet:
            err.print(f"{len(videos) - failed} scored, {failed} failed", highlight=False)
        if failed:
            raise typer.Exit(1)


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="POP909 folder (…/POP909) or prepared pop909_*.npz folder.")] = Path("../shared/data/pop909/POP909"),
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (safetensors).")] = Path("models/bgmgen-music.safetensors"),
    steps: Annotated[int, typer.Option("--steps", help="Total optimiser steps.")] = 20000,
    minutes: Annotated[Optional[float], typer.Option("--minutes", help="Stop after this much wall time.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    lr: Annotated[float, typer.Option("--lr")] = 3e-4,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the saved training state.")] = True,
    backbone: Annotated[str, typer.Option("--backbone", help="temporal1d (fast on CPU) or paper2d (Diff-BGM's 2D UNet, for GPUs).")] = "temporal1d",
    seed: SeedOpt = 0, device: DeviceOpt = "auto", quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Train the music model on POP909 (resumable; writes safetensors)."""
    with _cli_errors(debug):
        from .errors import InputError
        from .pipeline import resolve_device
        from .train import TrainConfig
        from .train import train as run_training

        from .model import UNetConfig
        from .model2d import PAPER_CONFIG

        if not data.exists():
            raise InputError(f"{data}: no such folder (point --data at POP909)")
        configs = {"temporal1d": UNetConfig(), "paper2d": PAPER_CONFIG}
        if backbone not in configs:
            raise BgmgenError(f"unknown backbone {backbone!r}: use temporal1d or paper2d")
        cfg = TrainConfig(data=data, out=out, steps=steps, max_minutes=minutes, batch_size=batch_size, lr=lr,
                          seed=seed, device=resolve_device(device), resume=resume, model=configs[backbone])
        with _progress(quiet) as progress:
            run_training(cfg, progress=lambda step, total, record: progress("train", step / total))
        typer.echo(str(out))


def main() -> None:
    app(prog_name="bgmgen")


if __name__ == "__main__":
    main()
