"""``bgmgen batch`` and bgmgen.batch: listing a tree, resuming, isolating failures, workers, Ray, and escapes.

A small tree of 1 s clips in nested folders plus broken files runs through the real CLI (histogram shot
detector, two sampling steps) one after another, in two worker processes and on a local Ray instance. A
worker killed mid-file is simulated with a stand-in task, so that test needs no model.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from bgmgen import batch as batch_module
from bgmgen.batch import BatchJob, FileResult, find_jobs, run_batch, run_in_processes
from bgmgen.errors import BgmgenError, ModelError
from bgmgen.files import new_partial, remove_partials
from bgmgen.pipeline import ScoreOptions

from batch_stubs import dying_task, quiet_init
from conftest import make_clip
from test_pipeline import run_cli

QUICK = ("--shot-detector", "histogram", "--steps", "2", "--guidance", "1")
GOOD = {"a.mp4": "a.scored.mp4", "sub/b.mkv": "sub/b.scored.mkv", "sub/deeper/c.mov": "sub/deeper/c.scored.mov"}
BAD = {"empty.mp4": "file is empty", "sub/text.mp4": "not a readable video"}


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> Path:
    """Three good clips in nested folders, two broken ones, and files batch must leave alone."""
    root = tmp_path_factory.mktemp("tree")
    for name in GOOD:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make_clip(root, name, duration=1.0, cuts=[0.5])
    (root / "empty.mp4").write_bytes(b"")
    (root / "sub/text.mp4").write_text("not a video\n")
    (root / "notes.txt").write_text("not named like a video\n")
    (root / ".hidden").mkdir()
    make_clip(root / ".hidden", "d.mp4", duration=1.0)  # hidden folders are skipped
    shutil.copy(root / "a.mp4", root / "a.scored.mp4")  # looks like our output: not an input
    return root


@pytest.fixture
def tree(source_tree, tmp_path) -> tuple[Path, Path, Path]:
    """(in, out, outside): a fresh copy of the tree with a link to a folder outside it holding a video."""
    folder, out, outside = tmp_path / "in", tmp_path / "out", tmp_path / "outside"
    shutil.copytree(source_tree, folder)
    outside.mkdir()
    shutil.copy(source_tree / "a.mp4", outside / "e.mp4")
    (folder / "escape").symlink_to(outside, target_is_directory=True)
    return folder, out, outside


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def check_first_run(result, folder: Path, out: Path, report_path: Path) -> dict:
    """Good clips scored into the mirrored tree, bad ones failed with their reasons, exit 1; returns the report."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert sorted(result.stdout.split()) == sorted(str(out / name) for name in GOOD.values())
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(GOOD.values())
    report = json.loads(report_path.read_text())
    by_name = {str(Path(f["input"]).relative_to(folder)): f for f in report["files"]}
    assert set(by_name) == set(GOOD) | set(BAD)  # nothing hidden, linked out, ours or non-video
    for name in GOOD:
        entry = by_name[name]
        assert entry["status"] == "scored" and entry["error"] is None
        assert entry["seconds"] > 0 and {"analyse", "compose", "mux"} <= set(entry["stages"])
    for name, reason in BAD.items():
        assert by_name[name]["status"] == "failed" and reason in by_name[name]["error"]
    assert report["counts"] == {"scored": 3, "skipped": 0, "failed": 2}
    failed_lines = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(failed_lines) == 2
    return report


def check_resumed(result, out: Path, before: dict[str, int], report_path: Path) -> None:
    """Nothing scored again: outputs untouched, every good file skipped, the bad ones still failed."""
    assert result.exit_code == 1, result.output
    assert result.stdout.strip() == ""
    assert mtimes(out) == before
    counts = json.loads(report_path.read_text())["counts"]
    assert counts == {"scored": 0, "skipped": 3, "failed": 2}


def no_model(monkeypatch) -> None:
    """Make loading the music model fail the test: a resumed run must not need it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded for a batch with nothing to do")

    monkeypatch.setattr("bgmgen.pipeline.Scorer", refuse)


# --- listing -----------------------------------------------------------------------------------------------------


def test_find_jobs_mirrors_the_tree_and_stays_inside(tree, tmp_path):
    folder, out, outside = tree
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "deeper").symlink_to(outside, target_is_directory=True)  # a link in the output tree
    (folder / "linked.mp4").symlink_to(outside / "e.mp4")  # a file linked from outside
    make_clip(folder, "a.flv", duration=1.0, codec="libx264")  # h264 in FLV: its output is a.scored.mp4 too
    jobs = {str(j.input.relative_to(folder)): j for j in find_jobs(folder, out)}
    assert set(jobs) == set(GOOD) | set(BAD) | {"a.flv"}
    assert jobs["a.mp4"] == BatchJob(folder / "a.mp4", out / "a.scored.mp4")
    assert jobs["sub/b.mkv"].output == out / "sub/b.scored.mkv" and jobs["sub/b.mkv"].error is None
    assert "outside the output folder" in jobs["sub/deeper/c.mov"].error
    assert "also the output of" in jobs["a.flv"].error
    assert jobs["empty.mp4"].output is None and "file is empty" in jobs["empty.mp4"].error
    # Without -o outputs go beside the inputs; an output folder inside the input folder is not an input.
    assert BatchJob(folder / "a.mp4", folder / "a.scored.mp4") in find_jobs(folder)
    nested_out = folder / "scored"
    shutil.copytree(folder / "sub", nested_out / "sub", symlinks=True)
    assert not any(nested_out in j.input.parents for j in find_jobs(folder, nested_out))


def test_find_jobs_refuses_a_file(tmp_path):
    with pytest.raises(BgmgenError, match="not a folder"):
        find_jobs(tmp_path / "missing")


def test_remove_partials_removes_only_partials_of_that_output(tmp_path):
    output = tmp_path / "a.scored.mp4"
    partial = new_partial(output)
    others = [tmp_path / ".b.scored.partial-0123abcd.mp4", tmp_path / "a.scored.mp4.partial-0123abcd"]
    for path in others:
        path.write_bytes(b"x")
    remove_partials(output)
    assert not partial.exists() and all(p.exists() for p in others)


# --- the command, end to end -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_batch_scores_resumes_and_forces(tree, tmp_path, monkeypatch):
    folder, out, outside = tree
    report_path = tmp_path / "reports" / "report.json"
    outside_before = mtimes(outside)
    first = run_cli("batch", folder, "-o", out, "--report-json", report_path, *QUICK)
    check_first_run(first, folder, out, report_path)
    assert "empty.mp4" in first.stderr and "3 scored, 0 skipped, 2 failed" in first.stderr  # the table
    assert mtimes(outside) == outside_before and not (out / "escape").exists()

    # A lost output with a partial left by a killed run: redone, the partial gone, the rest untouched.
    (out / "a.scored.mp4").unlink()
    (out / ".a.scored.partial-0123abcd.mp4").write_bytes(b"half a video")
    before = {k: v for k, v in mtimes(out).items() if not k.startswith(".")}
    again = run_cli("batch", folder, "-o", out, "--report-json", report_path, *QUICK, "-q")
    assert again.exit_code == 1 and again.stdout.split() == [str(out / "a.scored.mp4")]
    assert sorted(mtimes(out)) == sorted(GOOD.values())
    assert {k: v for k, v in mtimes(out).items() if k != "a.scored.mp4"} == before

    before = mtimes(out)
    with monkeypatch.context() as patched:
        no_model(patched)
        resumed = run_cli("batch", folder, "-o", out, "--report-json", report_path, *QUICK, "-q")
    check_resumed(resumed, out, before, report_path)

    forced = run_cli("batch", folder, "-o", out, "--report-json", report_path, "--force", *QUICK, "-q")
    assert forced.exit_code == 1
    assert all(mtimes(out)[name] != before[name] for name in GOOD.values())
    assert json.loads(report_path.read_text())["counts"] == {"scored": 3, "skipped": 0, "failed": 2}


@pytest.mark.slow
def test_batch_with_two_worker_processes(tree, tmp_path, monkeypatch):
    folder, out, outside = tree
    report_path = tmp_path / "report.json"
    first = run_cli("batch", folder, "-o", out, "--workers", "2", "--report-json", report_path, *QUICK, "-q")
    report = check_first_run(first, folder, out, report_path)
    assert (report["runner"], report["workers"]) == ("processes", 2)
    assert not (out / "escape").exists() and sorted(p.name for p in outside.iterdir()) == ["e.mp4"]
    before = mtimes(out)
    with monkeypatch.context() as patched:
        no_model(patched)
        resumed = run_cli("batch", folder, "-o", out, "--workers", "2", "--report-json", report_path, *QUICK, "-q")
    check_resumed(resumed, out, before, report_path)


@pytest.mark.slow
def test_batch_on_local_ray(tree, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    folder, out, _ = tree
    report_path = tmp_path / "report.json"
    first = run_cli("batch", folder, "-o", out, "--ray", "local", "--workers", "2", "--report-json", report_path,
                    *QUICK, "-q")  # fmt: skip
    report = check_first_run(first, folder, out, report_path)
    assert report["runner"] == "ray"
    before = mtimes(out)
    with monkeypatch.context() as patched:
        no_model(patched)  # nothing to do: Ray is not even started
        resumed = run_cli("batch", folder, "-o", out, "--ray", "local", "--report-json", report_path, *QUICK, "-q")
    check_resumed(resumed, out, before, report_path)


def test_missing_ray_is_one_line(tree, monkeypatch):
    folder, out, _ = tree
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    result = run_cli("batch", folder, "-o", out, "--ray", "local", *QUICK, "-q")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == "error: --ray needs Ray: pip install ray (it is the 'ray' extra of bgmgen)"


def test_bad_worker_count_is_refused(tree):
    folder, out, _ = tree
    result = run_cli("batch", folder, "-o", out, "--workers", "0", "-q")
    assert result.exit_code == 1 and "--workers must be at least 1" in result.stderr
    assert not out.exists()


# --- worker crashes ----------------------------------------------------------------------------------------------


def test_a_killed_worker_fails_its_file_only_and_leaves_no_partial(tmp_path):
    out = tmp_path / "out"
    jobs = [BatchJob(tmp_path / f"{name}.mp4", out / f"{name}.scored.mp4") for name in ("a", "crash", "b", "c")]
    (tmp_path / "out").mkdir()
    results: list[FileResult] = []
    # No options: unpickling a ScoreOptions would import torch in each new worker.
    run_in_processes(jobs, None, 1, results.append, initializer=quiet_init, task=dying_task)
    status = {r.input.stem: (r.status, r.error) for r in results}
    assert status["crash"][0] == "failed" and "died while scoring" in status["crash"][1]
    assert all(status[name] == ("scored", None) for name in "abc")  # a new worker took the rest
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.scored.mp4", "b.scored.mp4", "c.scored.mp4"]


def test_workers_that_keep_dying_stop_the_batch_with_reasons(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_module, "MAX_CRASHES_IN_A_ROW", 2)  # each new pool costs a spawn
    names = ["crash0", "crash1", "late"]
    jobs = [BatchJob(tmp_path / f"{n}.mp4", tmp_path / f"{n}.scored.mp4") for n in names]
    results: list[FileResult] = []
    # No options: unpickling a ScoreOptions would import torch in each new worker.
    run_in_processes(jobs, None, 1, results.append, initializer=quiet_init, task=dying_task)
    assert [r.status for r in results] == ["failed"] * len(names)
    assert "kept dying" in results[-1].error
    assert list(tmp_path.iterdir()) == []


def test_run_batch_reports_in_job_order_and_fails_listed_errors(tmp_path):
    done = tmp_path / "done.scored.mp4"
    done.write_bytes(b"finished earlier")
    jobs = [BatchJob(tmp_path / "x.mp4", None, "x.mp4: file is empty"), BatchJob(tmp_path / "done.mp4", done)]
    seen: list[FileResult] = []
    report = run_batch(jobs, ScoreOptions(), workers=3, on_result=seen.append)  # nothing to run: no pool either
    assert [r.status for r in report.results] == ["failed", "skipped"] and seen == report.results
    assert report.failed and report.to_json()["counts"] == {"scored": 0, "skipped": 1, "failed": 1}
    saved = json.loads(report.save(tmp_path / "r" / "report.json").read_text())
    assert saved["files"][0] == {"input": str(tmp_path / "x.mp4"), "output": None, "status": "failed",
                                 "seconds": 0.0, "stages": {}, "error": "x.mp4: file is empty"}  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.json"]  # no partial left


def test_a_worker_without_a_model_raises_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_module, "_scorer", None)
    monkeypatch.setattr(batch_module, "_setup_error", None)
    threads = torch_threads()
    try:
        batch_module.init_worker(ScoreOptions(checkpoint=tmp_path / "missing.safetensors"), 1)
    finally:
        set_torch_threads(threads)
    with pytest.raises(ModelError, match="checkpoint not found"):
        batch_module.score_in_worker(BatchJob(tmp_path / "a.mp4", tmp_path / "a.scored.mp4"))


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def test_a_bad_loudness_target_fails_before_any_file_is_touched(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder, "a.mp4", duration=1.0)
    result = run_cli("batch", folder, "-o", tmp_path / "out", "--loudness", "-60")
    assert result.exit_code != 0
    assert "--loudness -60 LUFS is outside -40..-5" in result.stderr
    assert not (tmp_path / "out").exists()


def test_batch_writes_each_videos_stems_in_its_own_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("one.mp4", "two.mp4"):
        make_clip(folder, name, duration=2.0, size=(64, 36))
    stems = tmp_path / "stems"
    missing = run_cli("batch", folder, "-o", tmp_path / "out", "--stems", stems, *QUICK)
    assert missing.exit_code != 0 and "--stems folder does not exist" in missing.stderr
    stems.mkdir()
    result = run_cli("batch", folder, "-o", tmp_path / "out", "--stems", stems, "--style", "pop", *QUICK)
    assert result.exit_code == 0, result.output
    for name in ("one", "two"):
        written = sorted(p.name for p in (stems / name).iterdir())
        assert written == ["accompaniment.wav", "bass.wav", "drums.wav", "melody.wav", "mix.wav", "pad.wav"]
