"""CLIP features through a tiny random CLIPModel saved in the standard layout, pooling and zero-shot maths,
the plan integration (mood blend, captions, clip_mood round trip) and `bgmgen plan --weights-dir` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bgmgen import weights
from bgmgen.cli import app
from bgmgen.errors import ModelError
from bgmgen.music.plan import CLIP_ENERGY_WEIGHT, CLIP_MOOD_WEIGHT, Plan, make_plan
from bgmgen.video import clip_features, features
from bgmgen.video.decode import probe
from bgmgen.video.visual import analyze_video

import tiny_models


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    return tiny_models.weights_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def clip(weights_dir):
    return clip_features.load_clip(weights.require("clip", weights_dir))


def test_image_and_text_embeddings_are_unit_vectors(clip):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, 40, 60, 3), dtype=np.uint8)  # 20 > the CPU batch: two batches
    images = clip.encode_images(frames)
    texts = clip.encode_texts(list(clip_features.MOOD_PROMPTS.values()))
    assert images.shape == (20, 16) and texts.shape == (6, 16)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    # Batching does not change a frame's embedding.
    np.testing.assert_allclose(clip.encode_images(frames[17:18]), images[17:18], atol=1e-5)
    probs = clip_features.zero_shot(clip, images)
    assert probs.shape == (20, 6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_prepare_pixels_crops_the_centre_square():
    frames = np.zeros((1, 4, 8, 3), np.uint8)
    frames[:, :, 2:6] = 255  # a white centre square in a black frame
    x = clip_features.prepare_pixels(frames, 4, (0, 0, 0), (1, 1, 1), "cpu", __import__("torch").float32)
    assert tuple(x.shape) == (1, 3, 4, 4)
    assert float(x.min()) == pytest.approx(1.0)


def test_mood_signals_and_summary():
    names = list(clip_features.MOOD_PROMPTS)
    probs = np.zeros((2, 6), np.float32)
    probs[0, names.index("intense")] = 1.0
    probs[1, names.index("calm")] = 0.5
    probs[1, names.index("dark")] = 0.5
    signals = clip_features.mood_signals(probs)
    np.testing.assert_allclose(signals["tension"], [1.0, 0.0])
    np.testing.assert_allclose(signals["brightness"], [0.5, 0.0])  # row 0 has neither: neutral
    summary = clip_features.mood_summary(probs)
    assert summary["intense"] == pytest.approx(0.5) and summary["tension"] == pytest.approx(0.5 / 0.75, abs=1e-4)
    assert set(summary) == set(names) | {"tension", "brightness"}


def test_pool_per_bar_and_segment():
    times = np.array([0.1, 0.9, 1.5, 5.0])
    values = np.array([[0.0], [2.0], [4.0], [8.0]])
    bars = clip_features.pool_per_bar(times, values, bar_duration=1.0, n_bars=4)
    np.testing.assert_allclose(bars[:, 0], [1.0, 4.0, 4.0, 8.0])  # bars 2 and 3 have no sample: nearest one
    seg = clip_features.pool_per_segment(bars, [type("S", (), {"start_bar": 0, "end_bar": 2})(),
                                                type("S", (), {"start_bar": 2, "end_bar": 4})()])
    np.testing.assert_allclose(seg[:, 0], [2.5, 6.0])


def test_open_clip_backend_fails_with_the_install_line(tmp_path):
    try:
        import open_clip  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or its torchvision does not load beside this torch
        with pytest.raises(ModelError, match=r"bgmgen\[open-clip\]"):
            clip_features.load_clip(tmp_path, backend="open_clip")
    else:
        with pytest.raises(ModelError, match="no open_clip weights"):
            clip_features.load_clip(tmp_path, backend="open_clip")
    with pytest.raises(ModelError, match="unknown CLIP backend"):
        clip_features.load_clip(tmp_path, backend="nope")


@pytest.fixture(scope="session")
def analysed(weights_dir, tmp_path_factory):
    from conftest import make_clip

    path = make_clip(tmp_path_factory.mktemp("clip"), duration=6.0, cuts=[2.0, 4.0], size=(96, 54))
    return analyze_video(path, shot_detector="histogram",
                         features=features.FeatureOptions(weights_dir=weights_dir))


def test_analysis_with_weights_adds_extras(analysed):
    extras = analysed.extras
    assert analysed.analysers[-3:] == ["clip", "blip", "bert"]
    n = len(extras[features.CLIP_TIMES_KEY])
    assert n == pytest.approx(6.0 * features.FEATURE_FPS, abs=1)
    assert extras[features.CLIP_EMBEDDINGS_KEY].shape == (n, 16)
    assert extras[features.CLIP_MOOD_KEY].shape == (n, len(clip_features.MOOD_PROMPTS))
    np.testing.assert_allclose(extras[features.CAPTION_TIMES_KEY], [1.0, 3.0, 5.0], atol=0.05)  # shot middles
    assert len(extras[features.CAPTIONS_KEY]) == 3
    assert extras[features.CAPTION_EMBEDDINGS_KEY].shape == (3, 32)


def test_plan_blends_clip_mood_and_carries_captions(analysed):
    plain = make_plan(type(analysed)(**{**analysed.__dict__, "extras": {}, "learned": features.LearnedCues()}))
    plan = make_plan(analysed)
    clip_mood = plan.clip_mood
    assert clip_mood and set(clip_features.MOOD_PROMPTS) <= set(clip_mood)
    expected = (1 - CLIP_MOOD_WEIGHT) * analysed.mood.brightness + CLIP_MOOD_WEIGHT * clip_mood["brightness"]
    assert plan.mood["brightness"] == pytest.approx(expected, abs=1e-6)
    assert plain.clip_mood == {} and plain.captions == []
    assert len(plan.captions) == len(plan.segments) and all(isinstance(c, str) for c in plan.captions)
    assert plan.analysers == analysed.analysers
    # An analysis whose frames all look "intense" raises the energy curve over the embedded-only plan.
    extras = dict(analysed.extras)
    probs = np.zeros_like(extras[features.CLIP_MOOD_KEY])
    probs[:, list(clip_features.MOOD_PROMPTS).index("intense")] = 1.0
    extras[features.CLIP_MOOD_KEY] = probs
    tense = make_plan(type(analysed)(**{**analysed.__dict__, "learned": features.learned_cues(extras)}))
    assert tense.mood["tension"] == pytest.approx((1 - CLIP_MOOD_WEIGHT) * analysed.mood.tension + CLIP_MOOD_WEIGHT)
    assert CLIP_ENERGY_WEIGHT > 0 and np.mean(tense.energy) > np.mean(plain.energy)


def test_segment_features_align_with_the_plan(analysed):
    plan = make_plan(analysed)
    seg = features.segment_features(analysed, plan)
    assert seg.clip_per_bar.shape == (plan.n_bars, 16)
    assert seg.clip_per_segment.shape == (len(plan.segments), 16)
    assert seg.mood_per_bar.shape == (plan.n_bars, 6)
    assert seg.caption_embeddings.shape == (len(plan.segments), 32)
    assert seg.captions == plan.captions


def test_plan_json_round_trip_and_old_plans(analysed, tmp_path):
    plan = make_plan(analysed)
    data = plan.to_dict()
    data["captions"][0] = "an edited caption"
    again = Plan.from_dict(json.loads(json.dumps(data)))
    assert again.captions[0] == "an edited caption" and again.clip_mood == plan.clip_mood
    for key in ("clip_mood", "analysers", "captions"):
        data.pop(key)
    old = Plan.from_dict(data)  # a plan written before these fields existed
    assert old.clip_mood == {} and old.captions == [] and old.analysers == []


def test_without_weights_nothing_changes(tmp_path, monkeypatch, clip_factory):
    monkeypatch.delenv(weights.ENV_DIR, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    path = clip_factory(duration=2.0)
    result = features.extract_features(probe(path), [], features.FeatureOptions(weights_dir=tmp_path))
    assert result.extras == {} and result.analysers == []
    assert any(note.startswith("clip: no weights") for note in result.notes)


def test_cli_plan_with_weights_dir_shows_clip_mood_and_captions(weights_dir, clip_factory, tmp_path):
    video = clip_factory(duration=4.0, cuts=[2.0], size=(96, 54))
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(app, ["plan", str(video), "-o", str(out), "--weights-dir", str(weights_dir),
                                      "--shot-detector", "histogram", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(clip_features.MOOD_PROMPTS) <= set(data["clip_mood"])
    assert len(data["captions"]) == len(data["segments"])
    assert {"clip", "blip", "bert"} <= set(data["analysers"])
    assert "analysers: embedded-signals, histogram, clip, blip, bert" in result.stderr


def test_cli_score_with_weights_dir_uses_them_and_its_plan_carries_them(weights_dir, clip_factory, tmp_path):
    video = clip_factory(duration=4.0, cuts=[2.0], size=(96, 54))
    out, report = tmp_path / "scored.mp4", tmp_path / "report.png"
    result = CliRunner().invoke(app, ["score", str(video), "-o", str(out), "--weights-dir", str(weights_dir),
                                      "--shot-detector", "histogram", "--device", "cpu", "--steps", "2",
                                      "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert out.exists() and report.exists()
    assert "analysers: embedded-signals, histogram, clip, blip, bert" in result.stderr


def test_feature_models_load_each_model_once(weights_dir):
    models = features.FeatureModels()
    folder = weights.require("clip", weights_dir)
    first = models.get("clip", folder, "cpu", "transformers")
    assert models.get("clip", folder, "cpu", "transformers") is first  # kept for the next video
    assert features.FeatureModels().get("clip", folder, "cpu", "transformers") is not first  # no process-wide cache
