"""Learned visual features: CLIP embeddings and mood per sampled frame, BLIP captions of key frames and
their sentence embeddings, gathered in one extra decode pass.

``extract_features(info, cuts, options) -> FeatureResult`` uses whichever models ``bgmgen.weights`` finds
(``--weights-dir``, ``$BGMGEN_MODELS``, the Hugging Face cache) and skips the rest, saying why in ``notes``.
Its ``extras`` go into ``VideoAnalysis.extras`` under the ``*_KEY`` names below. ``learned_cues`` reduces
them to the plain data the plan reads (``VideoAnalysis.learned``); after planning, ``segment_features``
pools them onto the plan's bars and segments for paired training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bgmgen.video import decode
from bgmgen.video.captions import key_frame_times
from bgmgen.video.clip_features import MOOD_PROMPTS, mood_signals, mood_summary, pool_per_bar, pool_per_segment

log = logging.getLogger("bgmgen")

FEATURE_FPS = 2.0  # frames per second sampled for CLIP (3-5 per bar at usual tempos)
CHUNK_FRAMES = 32  # frames decoded and encoded at a time
CLIP_TIMES_KEY = "clip_times"  # [N] seconds of each sampled frame
CLIP_EMBEDDINGS_KEY = "clip_embeddings"  # [N, D] unit CLIP image embeddings
CLIP_MOOD_KEY = "clip_mood_probs"  # [N, len(MOOD_PROMPTS)] zero-shot probabilities
CAPTION_TIMES_KEY = "caption_times"  # [K] seconds of each captioned key frame
CAPTIONS_KEY = "captions"  # [K] str
CAPTION_EMBEDDINGS_KEY = "caption_embeddings"  # [K, 384] unit sentence embeddings


@dataclass(frozen=True)
class FeatureOptions:
    """Which learned analysers to try and where their weights are."""

    weights_dir: Path | None = None  # searched before $BGMGEN_MODELS and the Hugging Face cache
    device: str = "cpu"  # "cpu" or "cuda" (resolved already; CUDA runs the vision models in half precision)
    clip_backend: str = "transformers"  # or "open_clip" (optional extra)
    use_clip: bool = True  # use CLIP when its weights are found
    use_captions: bool = True  # use BLIP and the text encoder when BLIP's weights are found
    fps: float = FEATURE_FPS
    models: FeatureModels | None = field(default=None, compare=False)  # loaded models to reuse (None: load here)


@dataclass
class FeatureResult:
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    analysers: list[str] = field(default_factory=list)  # e.g. ["clip", "blip", "bert"]
    notes: list[str] = field(default_factory=list)  # one line per analyser that was skipped, and why


class FeatureModels:
    """Loaded CLIP, BLIP and text models, kept so that scoring many videos loads each only once.

    A ``Scorer`` holds one; ``extract_features`` without one loads what it needs for that call.
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str, str, str], Any] = {}

    def get(self, kind: str, folder: Path, device: str, backend: str = ""):
        """The ``kind`` ("clip", "blip" or "bert") model from ``folder``, loading it on first use."""
        key = (kind, str(folder), device, backend)
        if key not in self._loaded:
            self._loaded[key] = _load(kind, folder, device, backend)
        return self._loaded[key]


def _load(kind: str, folder: Path, device: str, backend: str = ""):
    if kind == "clip":
        from bgmgen.video.clip_features import load_clip

        return load_clip(folder, device, backend)
    if kind == "blip":
        from bgmgen.video.captions import Captioner

        return Captioner(folder, device)
    from bgmgen.video.text_features import SentenceEncoder

    return SentenceEncoder(folder, device)


def _decode_size(info: decode.VideoInfo, side: int) -> tuple[int, int]:
    """(width, height) with the short side ``side`` and the picture's aspect (even sizes for ffmpeg)."""
    w, h = info.width, info.height
    if w >= h:
        return max(side, 2 * round(side * w / h / 2)), side
    return side, max(side, 2 * round(side * h / w / 2))


def extract_features(
    info: decode.VideoInfo, cuts: list[float], options: FeatureOptions = FeatureOptions(),
    progress: Callable[[float], None] | None = None,
) -> FeatureResult:
    """Run the learned analysers whose weights are found over the video described by ``info``.

    ``cuts`` (seconds) choose the key frames to caption. Returns a FeatureResult (empty extras when no
    weights are found: nothing is decoded then). Raises ModelError if found weights fail to load and
    InputError if the video cannot be decoded.
    """
    from bgmgen.weights import find

    result = FeatureResult()
    report = progress or (lambda fraction: None)
    clip_dir = find("clip", options.weights_dir) if options.use_clip else None
    blip_dir = find("blip", options.weights_dir) if options.use_captions else None
    for name, folder, wanted in (("clip", clip_dir, options.use_clip), ("blip", blip_dir, options.use_captions)):
        if wanted and folder is None:
            result.notes.append(f"{name}: no weights found (see `bgmgen models`)")
    if clip_dir is None and blip_dir is None:
        return result
    models = options.models or FeatureModels()
    clip = models.get("clip", clip_dir, options.device, options.clip_backend) if clip_dir else None
    captioner = models.get("blip", blip_dir, options.device) if blip_dir else None
    side = max(m.image_size for m in (clip, captioner) if m is not None)

    key_times = key_frame_times(cuts, info.duration) if captioner else []
    key_index = {int(np.clip(round(t * options.fps), 0, None)): i for i, t in enumerate(key_times)}
    key_frames: dict[int, np.ndarray] = {}
    embeddings, n = [], 0
    expected = max(1, int(info.duration * options.fps))
    for chunk in decode.iter_frames(info, fps=options.fps, size=_decode_size(info, side), chunk=CHUNK_FRAMES):
        for j in range(len(chunk)):
            if n + j in key_index:
                key_frames[n + j] = chunk[j].copy()
        if clip is not None:
            embeddings.append(clip.encode_images(chunk))
        n += len(chunk)
        report(0.8 * min(1.0, n / expected))
    times = np.arange(n, dtype=np.float32) / options.fps

    if clip is not None:
        emb = np.concatenate(embeddings)
        from bgmgen.video.clip_features import zero_shot

        result.extras[CLIP_TIMES_KEY] = times
        result.extras[CLIP_EMBEDDINGS_KEY] = emb
        result.extras[CLIP_MOOD_KEY] = zero_shot(clip, emb)
        result.analysers.append(clip.name)
    if captioner is not None and n:
        # A key frame past the last decoded frame (rounding at the end) falls back to the last one.
        indices = [min(int(round(t * options.fps)), n - 1) for t in key_times]
        frames = np.stack([key_frames.get(i, key_frames[max(key_frames)]) for i in indices])
        captions = captioner.caption(frames)
        result.extras[CAPTION_TIMES_KEY] = np.asarray(key_times, np.float32)
        result.extras[CAPTIONS_KEY] = np.asarray(captions, dtype=str)
        result.analysers.append(captioner.name)
        bert_dir = find("bert", options.weights_dir)
        if bert_dir is not None:
            result.extras[CAPTION_EMBEDDINGS_KEY] = models.get("bert", bert_dir, options.device).encode(captions)
            result.analysers.append("bert")
        else:
            result.notes.append("bert: no weights found; captions are not embedded")
    report(1.0)
    return result


@dataclass(frozen=True)
class LearnedCues:
    """What CLIP and BLIP saw, as plain data for the plan (empty where an analyser did not run)."""

    mood: dict[str, float] = field(default_factory=dict)  # whole-video zero-shot scores + tension/brightness
    frame_times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # seconds of each CLIP-sampled frame
    frame_tension: np.ndarray = field(default_factory=lambda: np.zeros(0))  # zero-shot tension 0..1 of each
    caption_times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # seconds of each captioned key frame
    captions: tuple[str, ...] = ()


def learned_cues(extras: dict[str, np.ndarray]) -> LearnedCues:
    """Reduce ``extract_features``' extras to the cues the plan uses."""
    probs, times = extras.get(CLIP_MOOD_KEY), extras.get(CLIP_TIMES_KEY)
    cues: dict[str, Any] = {}
    if probs is not None and times is not None and len(probs):
        cues.update(mood=mood_summary(probs), frame_times=np.asarray(times, float), frame_tension=mood_signals(probs)["tension"])
    captions, caption_times = extras.get(CAPTIONS_KEY), extras.get(CAPTION_TIMES_KEY)
    if captions is not None and caption_times is not None and len(captions):
        cues.update(caption_times=np.asarray(caption_times, float), captions=tuple(str(c) for c in captions))
    return LearnedCues(**cues)


@dataclass
class SegmentFeatures:
    """Learned features aligned with a plan (for paired training and conditioning); None where missing."""

    clip_per_bar: np.ndarray | None  # [n_bars, D] mean CLIP embedding per bar
    clip_per_segment: np.ndarray | None  # [n_segments, D]
    mood_per_bar: np.ndarray | None  # [n_bars, len(MOOD_PROMPTS)] zero-shot probabilities
    caption_embeddings: np.ndarray | None  # [n_segments, dim] embedding of each segment's caption
    captions: list[str]  # per segment ([] without captions)


def segment_features(analysis: Any, plan: Any) -> SegmentFeatures:
    """Pool an analysis's extras onto ``plan``'s bars and segments."""
    extras = getattr(analysis, "extras", {})
    times = extras.get(CLIP_TIMES_KEY)
    clip_bar = clip_seg = mood_bar = None
    if times is not None and len(times):
        positions = np.atleast_1d(plan.bar_position(np.asarray(times, float)))  # in bars, so the tempo map is followed
        clip_bar = pool_per_bar(positions, extras[CLIP_EMBEDDINGS_KEY], 1.0, plan.n_bars)
        clip_bar /= np.maximum(np.linalg.norm(clip_bar, axis=1, keepdims=True), 1e-8)
        clip_seg = pool_per_segment(clip_bar, plan.segments)
        mood_bar = pool_per_bar(positions, extras[CLIP_MOOD_KEY], 1.0, plan.n_bars)
    captions = list(plan.captions)
    caption_emb = None
    if captions and CAPTION_EMBEDDINGS_KEY in extras:
        lookup = {str(c): e for c, e in zip(extras[CAPTIONS_KEY], extras[CAPTION_EMBEDDINGS_KEY])}
        if all(c in lookup for c in captions):  # edited captions need text_features.encode_texts
            caption_emb = np.stack([lookup[c] for c in captions])
    return SegmentFeatures(clip_bar, clip_seg, mood_bar, caption_emb, captions)


__all__ = [
    "FeatureOptions", "FeatureResult", "LearnedCues", "SegmentFeatures", "extract_features", "learned_cues",
    "segment_features", "MOOD_PROMPTS",
]
