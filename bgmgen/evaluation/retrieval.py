"""Video-to-music retrieval precision (Diff-BGM's P@20), on a symbolic music embedding.

Diff-BGM embeds 3-second audio chunks with musicnn and asks, for every generated chunk, whether the
ground-truth chunk of the same video ranks in the top 20 of 60 candidates by cosine similarity.
musicnn is not available here, so chunks are embedded from the piano roll directly
(``music_embedding``); the protocol keeps the paper's shape but fixes its pitfalls: the candidate
draw is seeded, candidates come from the whole ground-truth set (not its first 500 chunks), and
features are standardised with the ground truth's statistics before the cosine, so no single
feature block dominates.
"""

from __future__ import annotations

import numpy as np

from bgmgen.errors import InputError
from bgmgen.music.roll import ONSET, STEPS_PER_BAR

CHUNK_BARS = 2  # bars per retrieval chunk: 4 s at 120 BPM, near musicnn's ~3 s
EMBEDDING_DIM = 12 + STEPS_PER_BAR + 4


def music_embedding(roll: np.ndarray, chunk_bars: int = CHUNK_BARS) -> np.ndarray:
    """Embed a roll ``[2, steps, 88]`` chunk by chunk; returns ``[chunks, EMBEDDING_DIM]`` float32.

    Per chunk: the pitch-class histogram of onsets (12, sums to 1), the histogram of onset positions
    within the bar (16, sums to 1), and four scalars: log onset density per bar, mean onset pitch,
    pitch spread and mean polyphony, each scaled to about 0..1. An empty chunk embeds as zeros.
    A trailing partial chunk is dropped.
    """
    from bgmgen.music.roll import PITCH_LOW

    chunk = chunk_bars * STEPS_PER_BAR
    n = roll.shape[1] // chunk
    out = np.zeros((n, EMBEDDING_DIM), dtype=np.float32)
    pitch_class = (np.arange(roll.shape[2]) + PITCH_LOW) % 12
    for i in range(n):
        onsets = roll[ONSET, i * chunk : (i + 1) * chunk] > 0.5  # [steps, 88]
        sounding = (roll[:, i * chunk : (i + 1) * chunk] > 0.5).any(axis=0)
        steps, cols = np.nonzero(onsets)
        if len(cols) == 0:
            continue
        out[i, :12] = np.bincount(pitch_class[cols], minlength=12) / len(cols)
        out[i, 12:28] = np.bincount(steps % STEPS_PER_BAR, minlength=STEPS_PER_BAR) / len(cols)
        out[i, 28] = np.log1p(len(cols) / chunk_bars) / np.log1p(64)
        out[i, 29] = cols.mean() / roll.shape[2]
        out[i, 30] = cols.std() / 24.0
        out[i, 31] = sounding.sum(axis=1).mean() / 8.0
    return out


def retrieval_precision_at_k(
    music_feats: np.ndarray,
    gt_feats: np.ndarray,
    k: int = 20,
    candidates: int = 60,
    seed: int = 0,
) -> float:
    """Share of queries whose own ground truth ranks in the top ``k`` of ``candidates`` (P@k).

    ``music_feats`` [N, D] are embeddings of generated chunks and ``gt_feats`` [N, D] those of the
    ground-truth chunks they were generated for (row i belongs with row i). For each query i the
    candidates are chunk i plus ``candidates - 1`` others drawn without replacement from all N (seeded);
    they are ranked by cosine similarity after standardising both sides with the ground truth's mean
    and standard deviation; ties count against the query. With fewer than ``candidates`` chunks
    every chunk is a candidate. Chance level is ``k / min(candidates, N)``.
    Raises InputError if the shapes differ or there are fewer than ``k + 1`` chunks.
    """
    music = np.asarray(music_feats, dtype=np.float64)
    gt = np.asarray(gt_feats, dtype=np.float64)
    if music.shape != gt.shape or music.ndim != 2:
        raise InputError(f"retrieval needs two [N, D] arrays of one shape, got {music.shape} and {gt.shape}")
    n = len(gt)
    if n <= k:
        raise InputError(f"retrieval P@{k} needs more than {k} chunks, got {n}")
    pool = min(candidates, n)
    mean, std = gt.mean(axis=0), gt.std(axis=0) + 1e-6

    def unit(x: np.ndarray) -> np.ndarray:
        z = (x - mean) / std
        return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-9)

    similarity = unit(music) @ unit(gt).T  # [queries, gt]
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(n):
        others = rng.choice(n - 1, size=pool - 1, replace=False)
        others = others + (others >= i)  # skip i itself
        own = similarity[i, i]
        # Rank = how many other candidates score at least as high (ties count against the query).
        rank = int((similarity[i, others] >= own).sum())
        hits += rank < k
    return hits / n


def chance_level(n_chunks: int, k: int = 20, candidates: int = 60) -> float:
    """P@k of a random ranking over ``n_chunks`` ground-truth chunks."""
    return k / min(candidates, n_chunks)
