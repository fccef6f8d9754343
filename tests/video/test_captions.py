"""BLIP captions through a tiny random BlipForConditionalGeneration saved in the standard layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bgmgen import weights
from bgmgen.errors import ModelError
from bgmgen.music.plan import caption_for_span
from bgmgen.video import captions, features

import tiny_models


@pytest.fixture(scope="session")
def captioner(tmp_path_factory):
    folder = weights.require("blip", tiny_models.weights_dir(tmp_path_factory.mktemp("tiny")))
    return captions.Captioner(folder)


def test_captions_one_per_frame_and_deterministic(captioner):
    frames = np.random.default_rng(1).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)  # 5 > batch of 4
    first = captioner.caption(frames)
    assert len(first) == 5 and all(isinstance(c, str) and c for c in first)
    assert not any("[DEC]" in c or "[SEP]" in c for c in first)  # special tokens are dropped
    assert captioner.caption(frames[:2]) == first[:2]


def test_key_frame_times_are_shot_middles_split_when_long():
    assert captions.key_frame_times([2.0, 4.0], 6.0) == pytest.approx([1.0, 3.0, 5.0])
    # A 25 s shot gets three captions (at most CAPTION_SPAN_S = 10 s each), evenly spaced.
    assert captions.key_frame_times([], 25.0) == pytest.approx([25 / 6, 25 / 2, 25 * 5 / 6])
    assert captions.key_frame_times([0.0, 9.0], 3.0) == pytest.approx([1.5])  # cuts outside are ignored


def test_caption_for_span_picks_the_nearest_key_frame():
    cues = features.LearnedCues(caption_times=np.array([1.0, 3.0, 5.0]), captions=("a", "b", "c"))
    assert caption_for_span(cues, 2.5, 4.0) == "b"
    assert caption_for_span(cues, 5.0, 8.0) == "c"
    assert caption_for_span(features.LearnedCues(), 0.0, 1.0) == ""


def test_bad_folder_is_a_model_error(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="could not load BLIP"):
        captions.Captioner(tmp_path)
