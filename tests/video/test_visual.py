"""analyze_video on synthetic clips whose brightness, motion and cuts are known."""

from __future__ import annotations

import numpy as np
import pytest

from bgmgen.errors import BgmgenError, InputError
from bgmgen.video import visual

from conftest import DATA_DIR, make_clip


@pytest.fixture(scope="module")
def analyses(tmp_path_factory) -> dict[str, visual.VideoAnalysis]:
    """Analyses (histogram detector) of small clips, made once for the module."""
    tmp = tmp_path_factory.mktemp("visual")
    spec = {
        "black": dict(sources=["color=c=black"]),
        "white": dict(sources=["color=c=white"]),
        "bars": dict(sources=["smptebars"]),  # colourful and static
        "moving": dict(sources=["mandelbrot"], size=(160, 90)),
        "testsrc2": dict(sources=["testsrc2"], size=(160, 90)),
        # Still colour fields cut every 0.6 s: lots of cuts, no motion inside shots.
        "cuts": dict(sources=["color=c=red", "color=c=navy", "color=c=yellow"], cuts=[0.6, 1.2, 1.8, 2.4]),
    }
    return {
        name: visual.analyze_video(make_clip(tmp, f"{name}.mp4", duration=3.0, **kwargs), shot_detector="histogram")
        for name, kwargs in spec.items()
    }


def test_signals_have_one_value_per_frame_in_range(analyses):
    a = analyses["moving"]
    assert a.analysis_fps == visual.ANALYSIS_FPS
    assert a.info.duration == pytest.approx(3.0, abs=0.05)
    for signal in (a.motion, a.brightness, a.colourfulness, a.energy):
        assert signal.shape == (75,) and signal.dtype == np.float32
        assert signal.min() >= 0.0 and signal.max() <= 1.0
    assert a.frame_times()[:3] == pytest.approx([0.0, 0.04, 0.08])
    assert a.analysers == ["embedded-signals", "histogram"]
    assert a.extras == {}


def test_black_is_dark_and_white_is_bright(analyses):
    black, white, bars = analyses["black"], analyses["white"], analyses["bars"]
    assert black.brightness.max() < 0.1 and black.mood.brightness < 0.1
    assert white.brightness.min() > 0.9 and white.mood.brightness > 0.9
    assert black.colourfulness.max() < 0.05 and white.colourfulness.max() < 0.05
    assert bars.colourfulness.mean() > 0.5
    assert black.mood.brightness < bars.mood.brightness < white.mood.brightness


@pytest.mark.parametrize("moving", ["moving", "testsrc2"])
def test_static_clip_moves_less_than_moving_one(analyses, moving):
    static, active = analyses["bars"], analyses[moving]
    assert static.motion.max() < 0.02
    assert active.motion.mean() > 0.1
    assert active.energy.mean() > static.energy.mean() + 0.05
    assert active.mood.tension > static.mood.tension


def test_cuts_are_found_but_are_not_motion(analyses):
    a = analyses["cuts"]
    assert a.cuts == pytest.approx([0.6, 1.2, 1.8, 2.4], abs=0.041)
    assert a.motion.max() < 0.02  # each shot is a still colour field
    assert a.mood.tension > analyses["bars"].mood.tension + 0.2  # ten cuts a minute and more read as tense
    assert a.energy.mean() > analyses["bars"].energy.mean()


def test_mean_over_spans_and_nearest_frame(analyses):
    a = analyses["cuts"]
    assert a.brightness[14] - a.brightness[15] > 0.1  # the red shot (frames 0-14) is brighter than navy
    assert a.mean_over(a.brightness, 0.0, 0.6) == pytest.approx(float(a.brightness[:15].mean()))
    assert a.mean_over(a.brightness, 0.61, 0.62) == pytest.approx(float(a.brightness[15]))  # no frame inside
    assert a.mean_over(a.brightness, 10.0, 11.0) == pytest.approx(float(a.brightness[-1]))  # past the end


def test_energy_curve_rises_with_motion_and_after_cuts():
    n, fps = 100, 25.0
    still, zeros = np.zeros(n, np.float32), np.zeros(n, np.float32)
    assert visual.energy_curve(still, zeros, zeros, [], fps).max() == 0.0
    with_cut = visual.energy_curve(still, zeros, zeros, [2.0], fps)
    assert with_cut[:25].max() < with_cut[55]  # the cut at frame 50 raises energy after it
    busy = visual.energy_curve(np.full(n, 0.8, np.float32), zeros, zeros, [], fps)
    assert busy.mean() == pytest.approx(0.6 * 0.8)


def test_estimate_mood_from_signals():
    n = 250
    calm = visual.estimate_mood(np.zeros(n), np.full(n, 0.2), np.zeros(n), [], 10.0)
    tense = visual.estimate_mood(np.full(n, 0.9), np.full(n, 0.2), np.zeros(n), [1.0, 2.0, 3.0, 4.0], 10.0)
    assert calm.tension == 0.0 and tense.tension > 0.8
    assert calm.brightness < 0.35  # dim grey and still: sombre, a minor key
    colourful = visual.estimate_mood(np.zeros(n), np.full(n, 0.2), np.full(n, 1.0), [], 10.0)
    assert colourful.brightness > calm.brightness


def test_mood_reads_warmth_and_changing_light():
    n = 250
    grey = np.full(n, 0.3)
    neutral = visual.estimate_mood(np.zeros(n), grey, np.zeros(n), [], 10.0, np.zeros(n))
    warm = visual.estimate_mood(np.zeros(n), grey, np.zeros(n), [], 10.0, np.full(n, 0.2))
    cool = visual.estimate_mood(np.zeros(n), grey, np.zeros(n), [], 10.0, np.full(n, -0.2))
    # A lamp-lit room at ordinary light is cheerful (major), the same light cold and blue is not.
    assert cool.brightness < 0.5 < warm.brightness and warm.warmth == 1.0 and cool.warmth == 0.0
    assert neutral.warmth == 0.5
    flashing = visual.estimate_mood(np.zeros(n), 0.3 + 0.2 * (np.arange(n) // 12 % 2), np.zeros(n), [], 10.0)
    assert flashing.flicker == 1.0 and flashing.tension > neutral.tension + 0.1


def test_colour_warmth_of_frames():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    frames[0, ..., 0] = 255  # red
    frames[1, ..., 2] = 255  # blue
    assert visual.colour_warmth(frames).tolist() == pytest.approx([1.0, -1.0])


def test_progress_is_monotonic_and_ends_at_one(tmp_path):
    seen: list[float] = []
    visual.analyze_video(make_clip(tmp_path, duration=1.0), shot_detector="histogram", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 2


def test_unknown_detector_and_bad_input_fail_early(tmp_path):
    with pytest.raises(BgmgenError, match="unknown shot detector"):
        visual.analyze_video(make_clip(tmp_path, duration=0.5), shot_detector="nope")
    with pytest.raises(InputError, match="no such file"):
        visual.analyze_video(tmp_path / "missing.mp4")


def test_detector_is_prepared_in_a_thread_before_it_detects_and_its_errors_surface(tmp_path, monkeypatch):
    import threading

    from bgmgen.errors import ModelError
    from bgmgen.video import shots

    class Prepared:
        name = "prepared"

        def __init__(self, fail: bool):
            self.fail, self.thread = fail, None

        def prepare(self):
            self.thread = threading.current_thread()
            if self.fail:
                raise ModelError("weights missing")

        def detect(self, frames, fps, progress=None):
            assert self.thread is not None  # prepared before detecting
            return []

    made: list[Prepared] = []
    monkeypatch.setattr(shots, "DETECTORS", dict(shots.DETECTORS))  # undone after the test
    shots.register_detector("prepared", lambda device: made.append(Prepared(fail=len(made) > 0)) or made[-1])
    clip = make_clip(tmp_path, duration=0.5)
    assert visual.analyze_video(clip, shot_detector="prepared").cuts == []
    assert made[0].thread is not threading.main_thread()
    with pytest.raises(ModelError, match="weights missing"):
        visual.analyze_video(clip, shot_detector="prepared")


@pytest.mark.slow
def test_default_detector_on_real_clip():
    a = visual.analyze_video(DATA_DIR / "rocket_launch.webm")
    assert a.analysers == ["embedded-signals", "transnetv2"]
    assert a.cuts == pytest.approx([3.08], abs=0.041)
    assert len(a.motion) == pytest.approx(a.info.duration * visual.ANALYSIS_FPS, abs=2)
    # The wide shot of the pad is calmer than the close-up of the lift-off in flame and smoke.
    assert a.mean_over(a.motion, 0.5, 3.0) < a.mean_over(a.motion, 3.5, 8.0)
