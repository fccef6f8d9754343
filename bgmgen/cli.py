"""The ``bgmgen`` command line: parses arguments, builds options, calls the pipeline.

Heavy modules (torch, the pipeline) are imported inside the commands so ``--help`` is instant.
Errors are printed as one line with a non-zero exit; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from bgmgen import __version__
from bgmgen.errors import BgmgenError
from bgmgen.music.sampler import SamplerOptions  # no torch at import: --help stays instant

app = typer.Typer(
    help="Score a video: watch the clip and write background music for it (Diff-BGM style).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)  # soft_wrap: an error stays one line in logs

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
DEFAULT_STEPS = SamplerOptions().steps
SamplerOpt = Annotated[str, typer.Option("--sampler", help="dpm, ddim or ddpm.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", help="Music model (default: the shipped one).")]
DetectorOpt = Annotated[str, typer.Option("--shot-detector", help="transnetv2 or histogram.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output.")]
WeightsDirOpt = Annotated[Optional[Path], typer.Option("--weights-dir", help="Folder with CLIP/BLIP/BERT weights (see `bgmgen models`).")]
ReportOpt = Annotated[Optional[Path], typer.Option("--report", help="Also draw a timeline PNG here: frames, cuts, energy, segments, chords, notes.")]
LoudnessOpt = Annotated[float, typer.Option("--loudness", help="Integrated loudness of the sound track, LUFS (EBU R128).")]
StyleOpt = Annotated[Optional[str], typer.Option("--style", help="Style preset (see `bgmgen styles`; default: from the video's mood and pace).")]
InstrumentsOpt = Annotated[Optional[str], typer.Option("--instruments", help="Instruments for single roles, e.g. melody=flute,bass=fingered-bass.")]
StemsOpt = Annotated[Optional[Path], typer.Option("--stems", help="Also write one WAV per role (melody, accompaniment, bass, drums, pad) and the mix into this folder.")]


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
    from rich.markup import escape  # file names like "take [1].mp4" are not markup

    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s: %(message)s")
    previous = _on_sigterm(_terminate)
    try:
        yield
    except BgmgenError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, markup=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        # Ctrl-C or SIGTERM: the stack has unwound, so partial outputs and temporary files are gone.
        terminated = isinstance(exc, _Terminated)
        err.print("terminated" if terminated else "interrupted", highlight=False)
        raise typer.Exit(143 if terminated else 130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the user gets one line, --debug the traceback
        if debug:
            raise
        err.print(f"[red]error:[/red] unexpected {type(exc).__name__}: {escape(str(exc))} (rerun with --debug for details)",
                  highlight=False)  # fmt: skip
        raise typer.Exit(1) from None
    finally:
        _on_sigterm(previous)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds (and cleans up) like Ctrl-C."""


def _terminate(signum, frame) -> None:
    raise _Terminated()


def _on_sigterm(handler):
    """Install ``handler`` for SIGTERM and return the one before; a no-op off the main thread."""
    import signal
    import threading

    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


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
             soundfont=None, keep_audio=False, force=False, weights_dir=None, loudness=-16.0,
             style=None, instruments=None, stems=None):
    from bgmgen.music.plan import PlanOptions
    from bgmgen.music.styles import get_style, parse_instruments
    from bgmgen.pipeline import ScoreOptions
    from bgmgen.sound.mux import MuxOptions
    from bgmgen.sound.render import RenderOptions

    if steps < 1:
        raise BgmgenError("--steps must be at least 1")
    if sampler not in ("dpm", "ddim", "ddpm"):
        raise BgmgenError(f"unknown sampler {sampler!r}: use dpm, ddim or ddpm")
    if not -40.0 <= loudness <= -5.0:
        raise BgmgenError(f"--loudness {loudness:g} LUFS is outside -40..-5 (-16 suits the web, -23 broadcast)")
    if key is not None:
        from bgmgen.music.plan import choose_key

        choose_key(PlanOptions(key=key), 0.5, None)  # a bad --key fails now, not after the analysis
    tempo_range = {}
    if style is not None:
        chosen = get_style(style)  # a bad --style fails now too
        style = chosen.name
        tempo_range = {"min_tempo": chosen.tempo_range[0], "max_tempo": chosen.tempo_range[1]}
    return ScoreOptions(
        plan=PlanOptions(tempo=tempo, key=key, seed=seed, style=style, **tempo_range),
        sampler=SamplerOptions(sampler=sampler, steps=steps, guidance=guidance),
        render=RenderOptions(soundfont=soundfont, target_lufs=loudness),
        mux=MuxOptions(keep_audio=keep_audio, force=force, loudness=loudness),
        seed=seed, device=device, shot_detector=detector, checkpoint=checkpoint, plan_file=plan_file, weights_dir=weights_dir,
        instruments=parse_instruments(instruments), stems_dir=stems,
    )


def _check_input(video: Path) -> Path:
    from bgmgen.errors import InputError

    if not video.exists():
        raise InputError(f"{video}: no such file")
    if video.is_dir():
        raise InputError(f"{video}: is a folder (use `bgmgen batch` for folders)")
    return video


@app.command()
def score(
    video: Annotated[Path, typer.Argument(help="The video to score.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output video (default: NAME.scored.EXT beside the input).")] = None,
    keep_audio: Annotated[bool, typer.Option("--keep-audio", help="Keep the original sound; the music ducks wherever it has speech or sound.")] = False,
    soundfont: Annotated[Optional[Path], typer.Option("--soundfont", help="SoundFont (.sf2/.sf3) to play the music with.")] = None,
    report: ReportOpt = None, loudness: LoudnessOpt = -16.0, style: StyleOpt = None, instruments: InstrumentsOpt = None,
    stems: StemsOpt = None,
    force: ForceOpt = False, seed: SeedOpt = 0, device: DeviceOpt = "auto", tempo: TempoOpt = None, key: KeyOpt = None,
    plan: PlanFileOpt = None, guidance: GuidanceOpt = 5.0, steps: StepsOpt = DEFAULT_STEPS, sampler: SamplerOpt = "dpm",
    checkpoint: CheckpointOpt = None, shot_detector: DetectorOpt = "transnetv2", weights_dir: WeightsDirOpt = None,
    quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Write VIDEO with new music as its sound track."""
    with _cli_errors(debug):
        from bgmgen.pipeline import Scorer
        from bgmgen.report import check_report_path, draw_report
        from bgmgen.sound.mux import check_output_path, default_output_path
        from bgmgen.video.decode import probe

        info = probe(_check_input(video))
        output = output or default_output_path(video, info.video_codec)
        check_output_path(video, output, force)  # before the model loads
        if report is not None:
            check_report_path(video, report, force)
        if stems is not None:
            from bgmgen.sound.band import check_stems_dir

            check_stems_dir(stems, force)
        options = _options(seed, device, tempo, key, plan, guidance, steps, sampler, checkpoint, shot_detector,
                           soundfont, keep_audio, force, weights_dir, loudness, style, instruments, stems)
        scorer = Scorer(options)
        with _progress(quiet) as progress:
            result = scorer.score(video, output, progress, info=info)
        if report is not None:
            draw_report(result.plan, video, result.roll, report, parts=result.parts)
        if not quiet:
            p = result.plan
            _print_analysers(p)
            err.print(f"{p.style} style, {p.n_bars} bars at {p.tempo:.1f} BPM in {p.key}, {len(p.segments)} segments, {result.n_notes} notes; "
                      f"cuts off bar lines by {p.cut_alignment_error:.2f} s on average", highlight=False, soft_wrap=True)
        typer.echo(str(result.output))


@app.command()
def midi(
    video: Annotated[Path, typer.Argument(help="The video to write music for.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="MIDI file (default: NAME.mid beside the input).")] = None,
    style: StyleOpt = None, instruments: InstrumentsOpt = None,
    force: ForceOpt = False, seed: SeedOpt = 0, device: DeviceOpt = "auto", tempo: TempoOpt = None, key: KeyOpt = None,
    plan: PlanFileOpt = None, guidance: GuidanceOpt = 5.0, steps: StepsOpt = DEFAULT_STEPS, sampler: SamplerOpt = "dpm",
    checkpoint: CheckpointOpt = None, shot_detector: DetectorOpt = "transnetv2", weights_dir: WeightsDirOpt = None,
    quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Write the music for VIDEO as a MIDI file, one named track per role (melody, accompaniment, bass, drums, pad)."""
    with _cli_errors(debug):
        from bgmgen.pipeline import Scorer
        from bgmgen.sound.mux import check_output_path

        _check_input(video)
        output = output or video.with_suffix(".mid")
        check_output_path(video, output, force, video=False)  # before the model loads
        options = _options(seed, device, tempo, key, plan, guidance, steps, sampler, checkpoint, shot_detector, force=force,
                           weights_dir=weights_dir, style=style, instruments=instruments)
        scorer = Scorer(options)
        with _progress(quiet) as progress:
            result = scorer.midi(video, output, progress)
        typer.echo(str(result.output))


@app.command("plan")
def plan_command(
    video: Annotated[Path, typer.Argument(help="The video to plan music for.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Plan JSON (default: NAME.plan.json beside the input).")] = None,
    force: ForceOpt = False, seed: SeedOpt = 0, device: DeviceOpt = "auto", tempo: TempoOpt = None, key: KeyOpt = None,
    shot_detector: DetectorOpt = "transnetv2", weights_dir: WeightsDirOpt = None, report: ReportOpt = None,
    style: StyleOpt = None, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Write the musical plan (tempo, segments, key, chords, captions, levels) as editable JSON."""
    with _cli_errors(debug):
        from bgmgen.pipeline import plan_only
        from bgmgen.report import check_report_path, draw_report
        from bgmgen.sound.mux import check_output_path

        _check_input(video)
        output = output or video.with_name(f"{video.stem}.plan.json")
        check_output_path(video, output, force, video=False)
        if report is not None:
            check_report_path(video, report, force)
        options = _options(seed, device, tempo, key, None, 5.0, 20, "dpm", None, shot_detector, weights_dir=weights_dir,
                           style=style)
        with _progress(quiet) as progress:
            result = plan_only(video, options, progress)
        result.save(output)
        if report is not None:
            draw_report(result, video, None, report)  # no music yet: the plan only
        if not quiet:
            _print_analysers(result)
        typer.echo(str(output))


@app.command()
def batch(
    folder: Annotated[Path, typer.Argument(help="Folder of videos to score (sub-folders included).")],
    output_dir: Annotated[Optional[Path], typer.Option("-o", "--output-dir", help="Where to write, mirroring FOLDER's tree (default: beside each input).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", help="Worker processes (or Ray actors), each loading the model once.")] = 1,
    ray: Annotated[Optional[str], typer.Option("--ray", help='Run on the Ray cluster at ADDRESS, or "local" for a private one.')] = None,
    report_json: Annotated[Optional[Path], typer.Option("--report-json", help="Write every file's status, timings and error here.")] = None,
    keep_audio: Annotated[bool, typer.Option("--keep-audio", help="Keep the original sound; the music ducks wherever it has speech or sound.")] = False,
    loudness: LoudnessOpt = -16.0, style: StyleOpt = None, instruments: InstrumentsOpt = None,
    stems: Annotated[Optional[Path], typer.Option("--stems", help="Also write each video's stems (one WAV per role and the mix) into DIR/NAME/.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Redo outputs that exist (default: skip them).")] = False,
    seed: SeedOpt = 0, device: DeviceOpt = "auto", guidance: GuidanceOpt = 5.0, steps: StepsOpt = DEFAULT_STEPS,
    checkpoint: CheckpointOpt = None, shot_detector: DetectorOpt = "transnetv2", weights_dir: WeightsDirOpt = None,
    quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Score every video under FOLDER; finished outputs are skipped, a failure is reported and the batch goes on.

    Prints each output written on stdout, a table on stderr at the end, and exits 1 when any file failed.
    """
    with _cli_errors(debug):
        from bgmgen.batch import find_jobs, run_batch
        from bgmgen.errors import InputError

        if report_json is not None and report_json.is_dir():
            raise BgmgenError(f"--report-json is a folder: {report_json}")  # found now, not after the batch
        options = _options(seed, device, None, None, None, guidance, steps, "dpm", checkpoint, shot_detector,
                           keep_audio=keep_audio, force=force, weights_dir=weights_dir, loudness=loudness,
                           style=style, instruments=instruments, stems=stems)
        if stems is not None and not stems.is_dir():
            raise BgmgenError(f"--stems folder does not exist: {stems}")
        jobs = find_jobs(folder, output_dir)
        if not jobs:
            raise InputError(f"{folder}: no videos found")

        def show(result) -> None:
            if result.status == "scored":
                typer.echo(str(result.output))
            elif result.status == "failed":
                err.print(f"skipped {result.input}: {_reason(result)}", highlight=False, markup=False)
            bars.advance(task)

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("files"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                      disable=quiet, transient=True) as bars:  # fmt: skip
            task = bars.add_task("files", total=len(jobs))
            report = run_batch(jobs, options, workers=workers, ray_address=ray, on_result=show)
        if report_json is not None:
            report.save(report_json)
        if not quiet:
            _print_batch_table(report, folder)
        if report.failed:
            raise typer.Exit(1)


def _reason(result) -> str:
    """A batch result's error without the input's path in front (probe errors start with it)."""
    error = result.error or ""
    return error.removeprefix(f"{result.input}: ")


def _print_batch_table(report, folder: Path) -> None:
    """The summary on stderr: every file (only the failures when there are many), then the counts."""
    from rich.markup import escape
    from rich.table import Table

    rows = report.results if len(report.results) <= 50 else [r for r in report.results if r.status == "failed"]
    table = Table("file", "status", "seconds", "error", box=None, pad_edge=False)
    colours = {"scored": "green", "skipped": "dim", "failed": "red"}
    for r in rows:
        name = str(r.input.relative_to(folder)) if r.input.is_relative_to(folder) else str(r.input)
        table.add_row(escape(name), f"[{colours[r.status]}]{r.status}[/]", f"{r.seconds:.1f}", escape(_reason(r)))
    if rows:
        err.print(table)
    err.print(f"{report.count('scored')} scored, {report.count('skipped')} skipped, {report.count('failed')} failed "
              f"in {report.seconds:.1f} s ({report.runner}, {report.workers} worker{'s' * (report.workers > 1)})",
              highlight=False)  # fmt: skip


@app.command()
def styles() -> None:
    """List the style presets: instruments per role, groove, tempo and density ranges."""
    from rich.table import Table

    from bgmgen.music.styles import PITCHED_ROLES, STYLES, program_name

    table = Table("style", *PITCHED_ROLES, "drums", "tempo", "density", title="bgmgen styles", title_justify="left")
    for style in STYLES.values():
        programs = [program_name(p) if p is not None else "-" for p in (style.programs.get(r) for r in PITCHED_ROLES)]
        table.add_row(f"[bold]{style.name}[/]", *programs, style.groove if style.has_drums else "-",
                      f"{style.tempo_range[0]:g}-{style.tempo_range[1]:g} BPM",
                      f"{style.density_range[0]:g}-{style.density_range[1]:g}")  # fmt: skip
    Console(width=max(Console().width, 150)).print(table)  # a table too narrow for the names helps nobody
    typer.echo("Set one with --style NAME, or edit \"style\" in a plan; override roles with --instruments melody=flute.")


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="POP909 folder (…/POP909) or prepared pop909_*.npz folder.")] = Path("../shared/data/pop909/POP909"),
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the table as JSON here.")] = None,
    rows: Annotated[Optional[str], typer.Option("--rows", help="Comma-separated rows (default: all).")] = None,
    windows: Annotated[int, typer.Option("--windows", help="Test windows (8 bars each) per row.")] = 64,
    si_pieces: Annotated[int, typer.Option("--si-pieces", help="32-bar pieces rendered to audio for SI (0 = skip SI).")] = 8,
    melody_checkpoint: Annotated[Optional[Path], typer.Option("--melody-checkpoint", help="The cascade's melody model (default: the file beside --checkpoint).")] = None,
    compare_checkpoint: Annotated[Optional[Path], typer.Option("--compare-checkpoint", help="A single-roll model for the top-line rows (default: --checkpoint, if single-roll).")] = None,
    checkpoint: CheckpointOpt = None, seed: SeedOpt = 2024, device: DeviceOpt = "cpu", force: ForceOpt = False,
    quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Measure the music model on the POP909 test split against ablations and rule baselines, and each part against POP909's."""
    with _cli_errors(debug):
        from bgmgen.evaluation.evaluate import ALL_ROWS, EvalOptions, save_results
        from bgmgen.evaluation.evaluate import evaluate as run_evaluation
        from bgmgen.pipeline import resolve_device

        if json_out is not None and json_out.exists() and not force:
            raise BgmgenError(f"{json_out} exists (use --force to overwrite)")
        chosen = tuple(r.strip() for r in rows.split(",") if r.strip()) if rows else ALL_ROWS
        options = EvalOptions(data=data, checkpoint=checkpoint, rows=chosen, windows=windows, si_pieces=si_pieces,
                              seed=seed, device=resolve_device(device), melody_checkpoint=melody_checkpoint,
                              compare_checkpoint=compare_checkpoint)
        with _progress(quiet) as progress:
            results = run_evaluation(options, progress)
        if json_out is not None:
            save_results(results, options, json_out)
        _print_evaluation(results)


def _print_evaluation(results: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from bgmgen.evaluation.evaluate import (
        ACCOMPANIMENT_ROWS,
        METRIC_HEADERS,
        METRICS,
        MELODY_HEADERS,
        MELODY_ROWS,
        PART_METRIC_HEADERS,
        PART_METRICS,
    )
    from bgmgen.evaluation.metrics import MELODY_METRICS

    for names, headers, metrics in (([r for r in results if r not in (*MELODY_ROWS, *ACCOMPANIMENT_ROWS)], METRIC_HEADERS, METRICS),
                                    ([r for r in results if r in MELODY_ROWS], MELODY_HEADERS, MELODY_METRICS),
                                    ([r for r in results if r in ACCOMPANIMENT_ROWS], PART_METRIC_HEADERS, PART_METRICS)):
        if not names:
            continue
        table = Table("row", *headers, box=None, pad_edge=False)
        for row in names:
            values = results[row]
            table.add_row(row, *("-" if values.get(m, float("nan")) != values.get(m, float("nan")) else f"{values[m]:.3f}" for m in metrics))
        Console(width=200).print(table)


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
    paired: Annotated[Optional[Path], typer.Option("--paired", help="Train the video-conditioned model on paired features in the BGM909 layout (docs/paired-training.md); --data then names POP909 for pairs without music.npz.")] = None,
    eval_only: Annotated[bool, typer.Option("--eval-only", help="With --paired: print P@20 of the checkpoint at --out on the test split instead of training.")] = False,
    part: Annotated[str, typer.Option("--part", help="What the model writes: all (one roll), melody (the cascade's small melody model) or accompaniment (given the melody).")] = "all",
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="Start from this checkpoint (new input channels at zero), e.g. the shipped model for --part accompaniment.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads.")] = None,
    seed: SeedOpt = 0, device: DeviceOpt = "auto", quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Train the music model on POP909 (resumable; writes safetensors)."""
    with _cli_errors(debug):
        from bgmgen.errors import InputError
        from bgmgen.music.unet import UNetConfig
        from bgmgen.music.unet2d import PAPER_CONFIG
        from bgmgen.pipeline import resolve_device
        from bgmgen.training.train import MELODY_CONFIG, PARTS, TrainConfig
        from bgmgen.training.train import train as run_training

        configs = {"temporal1d": UNetConfig(), "paper2d": PAPER_CONFIG}
        if backbone not in configs:
            raise BgmgenError(f"unknown backbone {backbone!r}: use temporal1d or paper2d")
        if part not in PARTS:
            raise BgmgenError(f"unknown part {part!r}: use {', '.join(PARTS)}")
        if init_from is not None and not init_from.is_file():
            raise InputError(f"{init_from}: no such checkpoint")
        if part == "melody":
            configs = {"temporal1d": MELODY_CONFIG}
        elif part == "accompaniment":
            configs = {name: replace(config, melody_channels=2 * 88) for name, config in configs.items()}
        if backbone not in configs:
            raise BgmgenError(f"--part {part} uses the temporal1d backbone")
        if paired is not None:
            _train_paired(paired, data if data.is_dir() else None, out, eval_only, steps=steps, max_minutes=minutes,
                          batch_size=batch_size, lr=lr, seed=seed, device=resolve_device(device), resume=resume,
                          model=configs[backbone], quiet=quiet)
            return
        if eval_only:
            raise BgmgenError("--eval-only needs --paired DIR")
        if not data.exists():
            raise InputError(f"{data}: no such folder (point --data at POP909)")
        cfg = TrainConfig(data=data, out=out, steps=steps, max_minutes=minutes, batch_size=batch_size, lr=lr,
                          seed=seed, device=resolve_device(device), resume=resume, model=configs[backbone],
                          part=part, init_from=init_from, threads=threads,
                          warmup_steps=min(500, max(steps // 20, 1)) if init_from else 500)
        with _progress(quiet) as progress:
            run_training(cfg, progress=lambda step, total, record: progress("train", step / total))
        typer.echo(str(out))


def _train_paired(folder: Path, pop909: Optional[Path], out: Path, eval_only: bool, quiet: bool, **settings) -> None:
    """``bgmgen train --paired``: train on (or, with --eval-only, score P@20 on) a paired feature folder."""
    import json

    from bgmgen.training.paired import PairedTrainConfig, evaluate_checkpoint, train_paired

    if out == Path("models/bgmgen-music.safetensors"):
        out = Path("models/bgmgen-paired.safetensors")  # never overwrite the shipped music-only model
    if eval_only:
        typer.echo(json.dumps(evaluate_checkpoint(out, folder, "test", pop909, device=settings["device"])))
        return
    cfg = PairedTrainConfig(data=folder, pop909=pop909, out=out, **settings)
    with _progress(quiet) as progress:
        train_paired(cfg, progress=lambda step, total, record: progress("train", step / total))
    typer.echo(str(out))


def _print_analysers(plan) -> None:
    """One line on stderr naming the analysers behind a plan, and why CLIP/BLIP were not among them."""
    if not plan.analysers:
        return
    missing = [name for name in ("clip", "blip") if name not in plan.analysers]
    note = f" (no {'/'.join(m.upper() for m in missing)} weights found: embedded default; see `bgmgen models`)" if missing else ""
    err.print(f"analysers: {', '.join(plan.analysers)}{note}", highlight=False, markup=False)


models_app = typer.Typer(help="List the external models bgmgen uses, or fetch one.", invoke_without_command=True,
                         no_args_is_help=False)
app.add_typer(models_app, name="models")


@models_app.callback()
def models(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    weights_dir: WeightsDirOpt = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip hashing the weight files.")] = False,
    debug: DebugOpt = False,
) -> None:
    """List each external model: where it is looked for, whether it is found, its checksum status."""
    if ctx.invoked_subcommand is not None:
        return
    with _cli_errors(debug):
        import json

        from bgmgen.weights import all_status

        found = all_status(weights_dir, check=not no_check)
        if json_output:
            typer.echo(json.dumps({"models": [m.to_dict() for m in found]}, indent=2))
            return
        from rich.table import Table

        table = Table("model", "found", "source", "checksum", "path / searched", box=None, pad_edge=False)
        table.columns[-1].overflow = "fold"  # paths are long; fold rather than cut them
        for m in found:
            where = m.path if m.found else "; ".join(m.searched)
            table.add_row(m.name, "yes" if m.found else "[red]no[/]", m.source or "-", m.checksum, where)
        Console(soft_wrap=True).print(table)


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="clip, blip or bert.")],
    weights_dir: WeightsDirOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Download model NAME from the Hugging Face Hub (into --weights-dir, else the Hugging Face cache)."""
    with _cli_errors(debug):
        from bgmgen.weights import fetch

        typer.echo(str(fetch(name, weights_dir)))


def main() -> None:
    try:
        app(prog_name="bgmgen")
    finally:
        # Exiting, Python's last garbage collection walks every object torch and diffusers created (0.5-0.8 s
        # on a 2-core CPU). The work is done and its files are closed: leave those objects to the process's end.
        gc.freeze()


if __name__ == "__main__":
    main()
