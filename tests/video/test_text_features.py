"""Sentence embeddings: the shipped all-MiniLM-L6-v2 with its real weights, and a tiny BERT found first
in --weights-dir."""

from __future__ import annotations

import numpy as np
import pytest

from bgmgen import weights
from bgmgen.video import text_features

import tiny_models


@pytest.fixture(scope="session")
def minilm():
    return text_features.load_encoder()  # no weights dir: the package's copy


@pytest.fixture(autouse=True)
def no_model_env(monkeypatch, tmp_path):
    monkeypatch.delenv(weights.ENV_DIR, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))


def test_minilm_is_the_default_and_its_weights_verify():
    state = weights.status("bert")
    assert state.source == "package" and state.checksum == "verified"


def test_minilm_similar_sentences_are_closer(minilm):
    emb = minilm.encode([
        "a man rides a bicycle down the street",
        "a person cycling on a road",
        "a bowl of soup on a kitchen table",
    ])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    similar, different = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > different + 0.2, (similar, different)


def test_padding_does_not_change_an_embedding(minilm):
    alone = minilm.encode(["a dog"])
    padded = minilm.encode(["a dog", "a much longer sentence about a dog running on the beach at sunset"])
    np.testing.assert_allclose(padded[0], alone[0], atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_weights_dir_bert_comes_first(tmp_path_factory):
    folder = tiny_models.weights_dir(tmp_path_factory.mktemp("tiny"))
    encoder = text_features.load_encoder(folder)
    assert encoder.dim == 32
    emb = text_features.encode_texts(["a red car", "a blue car"], folder)
    assert emb.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
