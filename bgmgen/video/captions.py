"""Captions: BLIP (``transformers.BlipForConditionalGeneration``) describes key frames in a few words.

``Captioner(folder, device).caption(frames)`` returns one caption per frame. ``key_frame_times`` picks the
frames worth describing: the middle of every shot, and one more per ``CAPTION_SPAN_S`` in long shots, so
each plan segment finds a caption near its own middle (``plan.caption_for_span``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from bgmgen.video.clip_features import image_normalisation, load_pretrained, prepare_pixels

log = logging.getLogger("bgmgen")

CAPTION_SPAN_S = 10.0  # seconds of a shot one caption may describe
MAX_CAPTION_TOKENS = 24  # new tokens per caption (BLIP captions are ~10 words)
BATCH_CPU, BATCH_CUDA = 4, 32  # key frames per generate() call


class Captioner:
    """BLIP captioning from a ``save_pretrained`` folder; greedy decoding, so captions are deterministic."""

    name = "blip"

    def __init__(self, folder: Path, device: str = "cpu"):
        self.model, self.tokenizer, self.dtype = load_pretrained("BlipForConditionalGeneration", folder, device, "BLIP")
        self.device = device
        self.image_size = int(self.model.config.vision_config.image_size)
        self.mean, self.std = image_normalisation(Path(folder))  # BLIP normalises like CLIP by default
        self.batch = BATCH_CUDA if device.startswith("cuda") else BATCH_CPU

    def caption(self, frames: np.ndarray) -> list[str]:
        """uint8 RGB frames [n, H, W, 3] -> n captions (lower case, no special tokens)."""
        import torch

        captions: list[str] = []
        with torch.inference_mode():
            for i in range(0, len(frames), self.batch):
                pixels = prepare_pixels(frames[i : i + self.batch], self.image_size, self.mean, self.std, self.device, self.dtype)
                ids = self.model.generate(pixel_values=pixels, max_new_tokens=MAX_CAPTION_TOKENS, num_beams=1, do_sample=False)
                texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
                captions.extend(" ".join(t.split()).strip() for t in texts)
        return captions


def key_frame_times(cuts: Sequence[float], duration: float, span: float = CAPTION_SPAN_S) -> list[float]:
    """Times (s) of the frames to caption: shot middles, long shots split into pieces of at most ``span``."""
    bounds = [0.0, *sorted(c for c in cuts if 0.0 < c < duration), duration]
    times = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        pieces = max(1, math.ceil((end - start) / span - 1e-9))
        times.extend(start + (i + 0.5) * (end - start) / pieces for i in range(pieces))
    return times
