"""Scoring whole folders: find the videos, skip what is done, score the rest here, in worker processes or on Ray.

    jobs   = find_jobs(in_dir, out_dir)               # recursive; outputs mirror the input tree
    report = run_batch(jobs, options, workers=4)      # or ray_address="local" / "ray://host:10001"
    report.save(path)                                 # status, timings and error of every file, as JSON

Every file is isolated: its failure becomes a ``FileResult`` with the reason and the batch goes on. A finished
output is never redone unless ``options.mux.force``; outputs are written through a hidden partial file renamed
into place (``files.py``), so a partial is never mistaken for a finished output, and partials left by a killed
worker are removed. Two batches must not write the same output folder at the same time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bgmgen.errors import BgmgenError, InputError
from bgmgen.files import atomic_output, remove_partials

if TYPE_CHECKING:
    from bgmgen.pipeline import ScoreOptions

log = logging.getLogger("bgmgen")

VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ogv", ".ogg", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp",
})  # fmt: skip
OUTPUT_MARK = ".scored."  # in the names of our own outputs (mux.default_output_path), never taken as inputs
PROBE_THREADS = 8  # ffprobe runs while listing, in threads: it is a subprocess, so they overlap
MAX_CRASHES_IN_A_ROW = 3  # workers dying this often with no file finished in between: give up on the rest
CRASHED = "{} died while scoring this file (killed, out of memory or crashed); rerun to retry"

Status = Literal["scored", "skipped", "failed"]
OnResult = Callable[["FileResult"], None]


@dataclass(frozen=True)
class BatchJob:
    """One input video and where its output goes."""

    input: Path
    output: Path | None  # None when the input could not even be probed
    error: str | None = None  # why it cannot be scored, found while listing (then it is not run)


@dataclass(frozen=True)
class FileResult:
    """What happened to one input."""

    input: Path
    output: Path | None
    status: Status
    seconds: float = 0.0  # wall time spent on this file
    stages: dict[str, float] = field(default_factory=dict)  # wall time per pipeline stage, s
    error: str | None = None  # one line, for failed files

    def to_json(self) -> dict:
        return {**asdict(self), "input": str(self.input), "output": None if self.output is None else str(self.output)}


@dataclass
class BatchReport:
    """Every file's result, in the order of the jobs, and how the batch ran."""

    results: list[FileResult]
    runner: str  # sequential | processes | ray
    workers: int
    seconds: float  # wall time of the whole batch

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> bool:
        return self.count("failed") > 0

    def to_json(self) -> dict:
        counts = {status: self.count(status) for status in ("scored", "skipped", "failed")}
        return {"runner": self.runner, "workers": self.workers, "seconds": round(self.seconds, 3), "counts": counts,
                "files": [r.to_json() for r in self.results]}  # fmt: skip

    def save(self, path: Path) -> Path:
        """Write the report as JSON at ``path`` atomically (parents created). Raises OutputError."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path


# --- listing -----------------------------------------------------------------------------------------------------


def find_jobs(in_dir: Path, out_dir: Path | None = None, suffixes: Iterable[str] = VIDEO_SUFFIXES) -> list[BatchJob]:
    """The videos under ``in_dir`` (recursive, sorted) and their outputs under ``out_dir`` (default: ``in_dir``).

    Skips hidden files and folders, our own ``.scored.`` outputs, ``out_dir`` when it lies inside ``in_dir``,
    and links that lead out of ``in_dir`` (links to folders are never followed). Every input is probed for
    its codec, which picks the output's container; an unreadable input, an output that would land outside
    ``out_dir`` or clash with another input's becomes a job with ``error`` set. Raises InputError if
    ``in_dir`` is not a folder.
    """
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise InputError(f"{in_dir}: not a folder")
    out_dir = Path(out_dir) if out_dir is not None else in_dir
    in_root, out_root = in_dir.resolve(), out_dir.resolve()
    suffixes = {s.lower() for s in suffixes}
    skipped_dirs = {out_root} if out_root != in_root else set()
    inputs: list[Path] = []
    for folder, dirs, files in os.walk(in_dir, followlinks=False):
        here = Path(folder)
        # Hidden folders are skipped, and so is the output folder when it lies inside the input folder.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skipped_dirs)
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or OUTPUT_MARK in name or path.suffix.lower() not in suffixes:
                continue
            if path.is_symlink() and not _inside(in_root, path.resolve()):
                log.warning("not following %s: it links outside %s", path, in_dir)
                continue
            inputs.append(path)
    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        jobs = list(pool.map(lambda p: _job(p, out_dir / p.relative_to(in_dir).parent, out_root), inputs))
    return _without_clashes(jobs)


def _job(video: Path, out_folder: Path, out_root: Path) -> BatchJob:
    from bgmgen.sound.mux import default_output_path
    from bgmgen.video.decode import probe

    try:
        output = out_folder / default_output_path(video, probe(video).video_codec).name
    except BgmgenError as exc:
        return BatchJob(video, None, str(exc))
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the listing
        return BatchJob(video, None, f"unexpected {type(exc).__name__}: {exc}")
    if not _inside(out_root, output.parent.resolve()) or output.is_symlink():
        # A link inside the output tree could send the write anywhere.
        return BatchJob(video, output, f"output would be written outside the output folder: {output}")
    return BatchJob(video, output)


def _without_clashes(jobs: list[BatchJob]) -> list[BatchJob]:
    """Fail all but one of the inputs with the same output (``a.mp4`` and ``a.flv`` both give ``a.scored.mp4``).

    The input in the output's own container keeps it, else the first in order.
    """
    owner: dict[Path, Path] = {}
    for job in sorted(jobs, key=lambda j: j.output is None or j.input.suffix.lower() != j.output.suffix):
        if job.error is None:
            owner.setdefault(job.output, job.input)
    return [
        BatchJob(job.input, job.output, f"its output {job.output} is also the output of {owner[job.output]}")
        if job.error is None and owner[job.output] != job.input else job
        for job in jobs
    ]


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


# --- running -----------------------------------------------------------------------------------------------------


def run_batch(
    jobs: list[BatchJob],
    options: ScoreOptions,
    workers: int = 1,
    ray_address: str | None = None,
    on_result: OnResult | None = None,
) -> BatchReport:
    """Score ``jobs`` with ``options`` (a pipeline.ScoreOptions) and return the report, in job order.

    Jobs with an error fail at once; finished outputs are skipped unless ``options.mux.force``. The rest run
    here one after another (``workers`` 1), in ``workers`` processes each loading the model once, or on Ray
    actors when ``ray_address`` is given ("local" starts a private Ray instance with ``workers`` CPUs).
    ``on_result`` is called with each FileResult as it arrives. Raises BgmgenError when the model cannot be
    loaded or Ray is missing; a failing file never raises.
    """
    if workers < 1:
        raise BgmgenError("--workers must be at least 1")
    start = time.perf_counter()
    results: dict[Path, FileResult] = {}

    def record(result: FileResult) -> None:
        results[result.input] = result
        if on_result is not None:
            on_result(result)

    todo = []
    for job in jobs:
        if job.error is not None:
            record(FileResult(job.input, job.output, "failed", error=job.error))
        elif job.output.exists() and not options.mux.force:
            record(FileResult(job.input, job.output, "skipped"))
        else:
            todo.append(job)
    runner = "ray" if ray_address else "processes" if workers > 1 else "sequential"
    if todo:
        for job in todo:  # leftovers of a killed run; made here so workers (and Ray nodes) find the folders
            job.output.parent.mkdir(parents=True, exist_ok=True)
            remove_partials(job.output)
        if ray_address:
            run_on_ray(todo, options, workers, ray_address, record)
        elif workers > 1:
            run_in_processes(todo, options, workers, record)
        else:
            run_here(todo, options, record)
    return BatchReport([results[job.input] for job in jobs], runner, workers, time.perf_counter() - start)


def score_job(scorer, job: BatchJob) -> FileResult:
    """Score one job with a pipeline.Scorer; any failure becomes a failed FileResult (never raises Exception)."""
    start = time.perf_counter()
    try:
        stems_dir = scorer.options.stems_dir
        # Each video's stems in a folder of its own, named after the video.
        result = scorer.score(job.input, job.output, stems_dir=None if stems_dir is None else stems_dir / job.input.stem)
    except BgmgenError as exc:
        return FileResult(job.input, job.output, "failed", time.perf_counter() - start, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        log.debug("scoring %s failed", job.input, exc_info=True)
        error = f"unexpected {type(exc).__name__}: {exc}"
        return FileResult(job.input, job.output, "failed", time.perf_counter() - start, error=error)
    stages = {stage: round(seconds, 3) for stage, seconds in result.seconds.items()}
    return FileResult(job.input, job.output, "scored", time.perf_counter() - start, stages)


def run_here(todo: list[BatchJob], options: ScoreOptions, record: OnResult) -> None:
    """Score one file after another in this process, with one model."""
    from bgmgen.pipeline import Scorer

    scorer = Scorer(options)  # a bad checkpoint fails here, once, before any file
    for job in todo:
        record(score_job(scorer, job))


# --- worker processes --------------------------------------------------------------------------------------------

_scorer = None  # each worker process's own Scorer
_setup_error: BaseException | None = None  # why it could not be built; raised by every task
WORKER_EXIT_WAIT_S = 5.0  # how long to wait for a killed worker's ffmpeg before deleting its partial file


def init_worker(options: ScoreOptions, threads: int) -> None:
    """Build this worker's Scorer with ``threads`` torch threads; a failure is kept for the first task to raise."""
    global _scorer, _setup_error
    try:
        import torch

        torch.set_num_threads(threads)  # several workers share the cores
        from bgmgen.pipeline import Scorer

        _scorer = Scorer(options)
    except Exception as exc:  # noqa: BLE001 - reported by the first task instead of breaking the pool
        _setup_error = exc


def score_in_worker(job: BatchJob) -> FileResult:
    """Process-pool task: score ``job`` with this worker's Scorer (raises only if the worker has none)."""
    if _setup_error is not None:
        raise _setup_error
    return score_job(_scorer, job)


def _start_worker(temp_dir: str, initializer: Callable, *args) -> None:
    """Every pool worker: its own process group (so it can be killed with its ffmpeg), temporary files in
    ``temp_dir`` (deleted by the parent, even after a crash), its pid noted there, then ``initializer(*args)``."""
    os.setpgid(0, 0)
    tempfile.tempdir = temp_dir
    Path(temp_dir, f"worker-{os.getpid()}").touch()
    initializer(*args)


def _kill_workers(temp_dir: str, wait_s: float = 0.0) -> None:
    """Kill every worker's process group noted in ``temp_dir``; wait up to ``wait_s`` until they are gone."""
    groups = [int(p.name.removeprefix("worker-")) for p in Path(temp_dir).glob("worker-*")]
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)  # SIGKILL: an ffmpeg left by a dead worker must stop writing now
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + wait_s
    for group in groups:
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except (ProcessLookupError, PermissionError):
                Path(temp_dir, f"worker-{group}").unlink(missing_ok=True)
                break
            time.sleep(0.05)


def run_in_processes(
    todo: list[BatchJob], options: ScoreOptions, workers: int, record: OnResult,
    initializer: Callable = init_worker, task: Callable[[BatchJob], FileResult] = score_in_worker,
) -> None:  # fmt: skip
    """Score ``todo`` in ``workers`` spawned processes (tests may swap ``initializer`` and ``task``).

    At most one file per worker is in flight, so when a worker dies only the files in flight fail (their
    partial outputs deleted) and a new pool takes the rest. Raises what a worker's initializer raised
    (e.g. ModelError); on KeyboardInterrupt the workers are killed and their partial outputs deleted.
    """
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    pending = deque(todo)
    crashes_in_a_row = 0
    temp_dir = tempfile.mkdtemp(prefix="bgmgen-batch-")
    try:
        while pending:
            if crashes_in_a_row >= MAX_CRASHES_IN_A_ROW:
                for job in pending:
                    record(FileResult(job.input, job.output, "failed", error="not run: worker processes kept dying"))
                return
            size = min(workers, len(pending))
            pool = ProcessPoolExecutor(size, multiprocessing.get_context("spawn"), initializer=_start_worker,
                                       initargs=(temp_dir, initializer, options, 1))  # fmt: skip
            in_flight: dict[Future, BatchJob] = {}
            crashed: list[BatchJob] = []
            try:
                while (pending or in_flight) and not crashed:
                    while pending and len(in_flight) < size:
                        job = pending.popleft()
                        in_flight[pool.submit(task, job)] = job
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                        done, _ = wait(in_flight)  # the pool is dead: every file in flight fails now
                    for future in done:
                        job = in_flight.pop(future)
                        if isinstance(future.exception(), BrokenProcessPool):
                            crashed.append(job)
                        else:
                            record(future.result())  # raises a worker's setup error
                            crashes_in_a_row = 0
            finally:
                stopped = crashed + list(in_flight.values())  # crashed, or interrupted by an exception
                if stopped:
                    _kill_workers(temp_dir)
                pool.shutdown(wait=True, cancel_futures=True)
                if stopped:
                    _kill_workers(temp_dir, WORKER_EXIT_WAIT_S)  # the pool has reaped its workers: wait for the rest
                for job in stopped:
                    remove_partials(job.output)
            if crashed:
                crashes_in_a_row += 1
            for job in crashed:
                record(FileResult(job.input, job.output, "failed", error=CRASHED.format("worker process")))
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


# --- Ray ---------------------------------------------------------------------------------------------------------


class RayWorker:
    """A Ray actor's state: one Scorer for its whole life."""

    def __init__(self, options: ScoreOptions, threads: int):
        init_worker(options, threads)

    def score(self, job: BatchJob) -> FileResult:
        return score_in_worker(job)


def run_on_ray(todo: list[BatchJob], options: ScoreOptions, workers: int, address: str, record: OnResult) -> None:
    """Score ``todo`` on ``workers`` Ray actors at ``address`` ("local": a private instance with ``workers`` CPUs).

    Paths must mean the same on every node (a shared file system). An actor that dies fails its file and is
    replaced. Raises BgmgenError when Ray is not installed or cannot start, or an actor cannot load the model.
    """
    try:
        import ray
        from ray.exceptions import RayActorError, RayTaskError
    except ImportError:
        raise BgmgenError("--ray needs Ray: pip install ray (it is the 'ray' extra of bgmgen)") from None

    local = address == "local"
    try:
        ray.init(address=address, num_cpus=workers if local else None, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
        raise BgmgenError(f"cannot start or reach Ray at {address}: {exc}") from None
    pending = deque(todo)
    in_flight: dict = {}  # ObjectRef -> (actor index, job)
    crashed: list[BatchJob] = []
    crashes_in_a_row = 0
    try:
        actor_class = ray.remote(num_cpus=1)(RayWorker)
        actors = [actor_class.remote(options, 1) for _ in range(workers)]
        idle = list(range(workers))
        while pending or in_flight:
            while pending and idle:
                index, job = idle.pop(), pending.popleft()
                in_flight[actors[index].score.remote(job)] = (index, job)
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            index, job = in_flight.pop(ready[0])
            try:
                result = ray.get(ready[0])
                crashes_in_a_row = 0
            except RayActorError:
                crashed.append(job)
                remove_partials(job.output)
                result = FileResult(job.input, job.output, "failed", error=CRASHED.format("Ray actor"))
                crashes_in_a_row += 1
                if crashes_in_a_row >= MAX_CRASHES_IN_A_ROW:
                    while pending:
                        job = pending.popleft()
                        record(FileResult(job.input, job.output, "failed", error="not run: Ray actors kept dying"))
                actors[index] = actor_class.remote(options, 1)
            except RayTaskError as exc:  # only setup errors escape a task (score_job catches the rest)
                cause = getattr(exc, "cause", None)
                raise cause if isinstance(cause, BgmgenError) else BgmgenError(f"Ray worker failed: {exc}") from None
            idle.append(index)
            record(result)
    finally:
        ray.shutdown()
        # Interrupted files, and again crashed ones: a dead actor's ffmpeg may write on until its pipe breaks.
        for job in crashed + [job for _, job in in_flight.values()]:
            remove_partials(job.output)
