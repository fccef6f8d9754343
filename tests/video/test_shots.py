"""Shot detectors: one contract for every registered detector on synthetic clips with known cuts, plus
TransNetV2 specifics (windowed inference, global state) and real clips (slow)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from bgmgen.errors import BgmgenError
from bgmgen.video import decode, shots

from conftest import DATA_DIR, make_clip

FPS = 25.0
FRAME = 1.0 / FPS


def _frames(path: Path) -> np.ndarray:
    return np.concatenate(list(decode.iter_frames(decode.probe(path), fps=FPS, size=(48, 27))))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, tuple[np.ndarray, list[float]]]:
    """name -> (frames at 25 fps, true cut times). Made once for all detectors."""
    tmp = tmp_path_factory.mktemp("shots")
    spec = {
        # Patterned shots at 30 fps (not the analysis rate); the second cut falls between analysis frames.
        "patterns": dict(duration=4.0, fps=30, cuts=[2.0, 2.9]),
        "colours": dict(
            duration=3.6, fps=25, cuts=[1.2, 2.4], sources=["color=c=red", "color=c=blue", "color=c=green"]
        ),
        "moving": dict(duration=3.0, fps=25, size=(160, 90), sources=["mandelbrot"]),
        "testsrc2": dict(duration=3.0, fps=25, size=(160, 90), sources=["testsrc2"]),
    }
    out = {}
    for name, kwargs in spec.items():
        out[name] = (_frames(make_clip(tmp, f"{name}.mp4", **kwargs)), list(kwargs.get("cuts", [])))
    return out


@pytest.fixture(scope="module")
def transnet() -> shots.TransNetV2Detector:
    return shots.TransNetV2Detector()  # one instance, so the model loads once for the module


@pytest.fixture(params=["histogram", "transnetv2"])
def detector(request, transnet) -> shots.ShotDetector:
    return transnet if request.param == "transnetv2" else shots.get_detector(request.param)


def _assert_cuts_match(found: list[float], truth: list[float], tolerance: float = FRAME + 1e-6) -> None:
    assert len(found) == len(truth), f"found {found}, expected {truth}"
    for f, t in zip(found, truth):
        assert abs(f - t) <= tolerance, f"found {found}, expected {truth}"


@pytest.mark.parametrize("name", ["patterns", "colours"])
def test_detector_finds_hard_cuts_within_one_frame(detector, clips, name):
    frames, truth = clips[name]
    found = detector.detect(frames, FPS)
    assert found == sorted(found) and all(isinstance(t, float) for t in found)
    _assert_cuts_match(found, truth)


def test_detector_puts_cut_on_first_frame_of_new_shot(detector, clips):
    # At 25 fps these cuts fall exactly on analysis frames, so there is no rounding to allow for.
    frames, truth = clips["colours"]
    assert detector.detect(frames, FPS) == pytest.approx(truth, abs=1e-9)


@pytest.mark.parametrize("name", ["moving", "testsrc2"])
def test_detector_finds_no_cut_in_one_moving_shot(detector, clips, name):
    frames, _ = clips[name]
    assert np.abs(np.diff(frames.astype(int), axis=0)).mean() > 0.5  # the shot does move
    assert detector.detect(frames, FPS) == []


def test_detector_handles_empty_and_single_frame_input(detector, clips):
    frames, _ = clips["colours"]
    assert detector.detect(frames[:0], FPS) == []
    assert detector.detect(frames[:1], FPS) == []


def test_get_detector_names_and_unknown_name():
    assert shots.get_detector("histogram").name == "histogram"
    assert shots.get_detector("transnetv2").name == "transnetv2"
    with pytest.raises(BgmgenError, match="unknown shot detector 'magic'.*histogram, transnetv2"):
        shots.get_detector("magic")


def test_register_detector_adds_a_backend(monkeypatch):
    class EveryTwoSeconds:
        name = "every-two-seconds"

        def detect(self, frames, fps, progress=None):
            return [t / fps for t in range(int(2 * fps), len(frames), int(2 * fps))]

    monkeypatch.setattr(shots, "DETECTORS", dict(shots.DETECTORS))  # undone after the test
    shots.register_detector("every-two-seconds", lambda device: EveryTwoSeconds())
    detector = shots.get_detector("every-two-seconds")
    assert detector.detect(np.zeros((125, 27, 48, 3), np.uint8), 25.0) == [2.0, 4.0]


def test_transition_times_groups_runs_and_applies_offset():
    scores = np.array([0.0, 0.1, 0.9, 0.0, 0.6, 0.8, 0.7, 0.0, 0.0, 1.0])
    # Runs: frame 2; frames 4-6 (peak 5); frame 9 (the last frame: its new shot would start past the end).
    assert shots.transition_times(scores, 0.5, fps=10.0, offset=1) == [0.3, 0.6]
    assert shots.transition_times(scores, 0.5, fps=10.0, offset=0) == [0.2, 0.5, 0.9]
    assert shots.transition_times(np.array([0.9, 0.0]), 0.5, fps=10.0, offset=0) == []  # no cut at t=0


def test_histogram_scores_are_histogram_distances(monkeypatch):
    frames = np.zeros((5, 27, 48, 3), np.uint8)
    frames[1:, :, :24] = 255  # half the picture turns white at frame 1
    frames[3:] = 255  # and all of it at frame 3
    expected = [0.0, 0.5, 0.0, 0.5, 0.0]
    assert shots.HistogramDetector().scores(frames) == pytest.approx(expected)
    monkeypatch.setattr(shots, "_HISTOGRAM_CHUNK", 2)  # chunk borders between frames 1|2 and 3|4
    assert shots.HistogramDetector().scores(frames) == pytest.approx(expected)


def test_transnet_windows_agree_with_each_other(transnet, clips):
    # Short windows force several window boundaries inside the clip; the cuts must not move.
    frames, truth = clips["patterns"][0][:75], clips["patterns"][1]  # cuts at frames 50 and 73
    short = shots.TransNetV2Detector(max_window=75, cascade=False)  # three windows of 25 frames plus 2 x 25 of context
    short._model = transnet._get_model()  # share the loaded weights
    full = shots.TransNetV2Detector(cascade=False)
    full._model = short._model
    long_probs, short_probs = full.predict(frames), short.predict(frames)
    assert long_probs.shape == short_probs.shape == (len(frames),)
    assert np.abs(long_probs - short_probs).max() < 0.1
    _assert_cuts_match(short.detect(frames, FPS), truth)


def test_transnet_loading_leaves_global_state_alone():
    import torch

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    deterministic = torch.are_deterministic_algorithms_enabled()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    shots.TransNetV2Detector()._get_model()
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_transnet_rejects_bad_precision():
    with pytest.raises(BgmgenError, match="unknown precision"):
        shots.TransNetV2Detector(precision="fp8")


def test_bf16_is_not_native_under_a_onednn_isa_cap_without_it(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # as on a CPU with bf16
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert shots._cpu_has_native_bf16(torch)
    assert shots.TransNetV2Detector().resolved_precision(torch) == "bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # oneDNN would emulate bf16 there, far slower than fp32
    assert not shots._cpu_has_native_bf16(torch)
    assert shots.TransNetV2Detector().resolved_precision(torch) == "int8"  # the next fastest there


def test_transnet_rejects_wrong_frame_size(transnet):
    with pytest.raises(BgmgenError, match=r"\[N, 27, 48, 3\]"):
        transnet.detect(np.zeros((10, 36, 64, 3), np.uint8), FPS)


# --- real clips -------------------------------------------------------------------------------------------

# First frames of the new shots, from ffmpeg's scene score (select='gt(scene,0.3)', showinfo).
ROCKET_CUTS = [3.086]
BBB_CUTS = [11.795, 15.670, 22.961]
BBB_FADE_IN_END = 2.0  # the opening fade-in brightens in steps; TransNetV2 calls one of them a transition


@pytest.mark.slow
def test_transnet_on_real_clip_with_one_cut(transnet):
    found = transnet.detect(_frames(DATA_DIR / "rocket_launch.webm"), FPS)
    _assert_cuts_match(found, ROCKET_CUTS)


@pytest.mark.slow
def test_transnet_on_real_clip_with_three_cuts(transnet):
    found = transnet.detect(_frames(DATA_DIR / "bbb_opening_cuts.webm"), FPS)
    _assert_cuts_match([t for t in found if t > BBB_FADE_IN_END], BBB_CUTS)
    assert len([t for t in found if t <= BBB_FADE_IN_END]) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_transnet_matches_reference_inference(transnet, precision):
    import torch

    frames = _frames(DATA_DIR / "bbb_opening_cuts.webm")[:400]  # the fade-in and the first cut
    with torch.inference_mode():
        reference, _ = shots.load_reference_transnet("cpu").predict_frames(torch.from_numpy(frames), quiet=True)
    reference = reference.numpy()
    ours = shots.TransNetV2Detector(precision=precision, cascade=False)  # every frame scored, as the reference
    ours._model = transnet._get_model()
    probs = ours.predict(frames)
    assert np.abs(probs - reference).max() < 0.05  # longer windows see a little more context
    assert shots.transition_times(probs, 0.5, FPS, 1) == shots.transition_times(reference, 0.5, FPS, 1)
