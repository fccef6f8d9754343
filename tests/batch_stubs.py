"""Stand-ins for the batch worker's initializer and task, in a module light enough for spawned workers to import
quickly (test_batch.py itself pulls in pytest and the CLI)."""

from __future__ import annotations

import os
import signal

from bgmgen.batch import BatchJob, FileResult
from bgmgen.files import new_partial


def quiet_init(options, threads) -> None:
    """A worker initializer that loads nothing."""


def dying_task(job: BatchJob) -> FileResult:
    """Stands in for scoring: starts the output, then dies for files named crash*, else finishes it."""
    partial = new_partial(job.output)
    partial.write_bytes(b"half a video")
    if job.input.name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace(partial, job.output)
    return FileResult(job.input, job.output, "scored", 0.01)
