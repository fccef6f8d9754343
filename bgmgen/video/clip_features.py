"""CLIP visual features: image embeddings of sampled frames, zero-shot mood scores, per-bar pooling.

Two backends sit behind the ``ClipBackend`` protocol and the ``BACKENDS`` registry:

- ``transformers`` (default): ``CLIPModel`` and its tokenizer from a ``save_pretrained`` folder. Images are
  prepared here (square crop, bicubic resize, CLIP normalisation), so no torchvision-backed processor loads.
- ``open_clip``: ``open_clip_torch`` (``pip install 'bgmgen[open-clip]'``); it imports torchvision, which
  must match the installed torch.

Zero-shot mood: every frame is compared with the prompts in ``MOOD_PROMPTS``; a softmax over CLIP's scaled
cosine similarities gives per-frame probabilities, from which ``mood_signals`` derives tension, brightness
and energy. ``pool_per_bar`` / ``pool_per_segment`` average any per-frame feature over bars or segments.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from bgmgen.errors import ModelError

log = logging.getLogger("bgmgen")

# Prompt per mood label; the labels become the keys of the plan's ``clip_mood``.
MOOD_PROMPTS: dict[str, str] = {
    "calm": "a calm peaceful scene",
    "intense": "an intense action scene",
    "dark": "a dark gloomy scene",
    "bright": "a bright cheerful scene",
    "sad": "a sad melancholic scene",
    "happy": "a happy joyful scene",
}
TENSE_LABELS, CALM_LABELS = ("intense",), ("calm",)
BRIGHT_LABELS, DARK_LABELS = ("bright", "happy"), ("dark", "sad")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's RGB normalisation (used when no preprocessor config)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BATCH_CPU, BATCH_CUDA = 16, 128  # frames per forward pass


class ClipBackend(Protocol):
    """What the feature code needs from a CLIP implementation."""

    name: str
    image_size: int  # square input side in pixels
    logit_scale: float  # multiplies cosine similarities before the zero-shot softmax

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB [n, H, W, 3] (square) -> float32 [n, D], L2-normalised."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> float32 [m, D], L2-normalised."""
        ...


def prepare_pixels(frames: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float], device: str, dtype):
    """uint8 [n, H, W, 3] -> normalised float tensor [n, 3, size, size]: centre square crop, bicubic resize."""
    import torch
    import torch.nn.functional as F

    n, height, width, _ = frames.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + side, left : left + side]))
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.to(device=device, dtype=dtype)


def _normalised(x) -> np.ndarray:
    x = x.float()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)).cpu().numpy().astype(np.float32)


def _features(output):
    """transformers 5 returns a model output whose pooler_output is the projection; 4.x a tensor."""
    return output if hasattr(output, "norm") else output.pooler_output


def encode_in_batches(backend, frames: np.ndarray, image_features) -> np.ndarray:
    """Frames -> L2-normalised float32 [n, D], ``backend.batch`` frames per ``image_features(pixels)`` call."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), backend.batch):
            pixels = prepare_pixels(frames[i : i + backend.batch], backend.image_size, backend.mean, backend.std,
                                    backend.device, backend.dtype)
            out.append(_normalised(image_features(pixels)))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def load_pretrained(model_class: str, folder: Path, device: str, what: str, half_on_cuda: bool = True):
    """``transformers.<model_class>`` and its tokenizer from a ``save_pretrained`` folder, never the network.

    Returns ``(model, tokenizer, dtype)``: in eval mode on ``device``, half precision on CUDA when
    ``half_on_cuda``. Raises ModelError (one line naming ``what``) when transformers or the files are missing.
    """
    try:
        import torch
        import transformers
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise ModelError(f"{what} needs transformers: pip install transformers") from None
    # Keep transformers' progress bars and advisories off the console: the library never prints.
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        model = getattr(transformers, model_class).from_pretrained(folder, local_files_only=True).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"could not load {what} from {folder}: {str(exc).splitlines()[0]}") from None
    dtype = torch.float16 if half_on_cuda and device.startswith("cuda") else torch.float32
    return model.to(device=device, dtype=dtype), tokenizer, dtype


class TransformersClip:
    """CLIP through ``transformers.CLIPModel``; half precision on CUDA."""

    name = "clip"

    def __init__(self, folder: Path, device: str = "cpu"):
        self.model, self.tokenizer, self.dtype = load_pretrained("CLIPModel", folder, device, "CLIP")
        self.device = device
        self.image_size = int(self.model.config.vision_config.image_size)
        self.logit_scale = float(self.model.logit_scale.exp().item())
        self.mean, self.std = image_normalisation(folder)
        self.batch = BATCH_CUDA if device.startswith("cuda") else BATCH_CPU

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        return encode_in_batches(self, frames, lambda pixels: _features(self.model.get_image_features(pixel_values=pixels)))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        max_length = int(self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            return _normalised(_features(self.model.get_text_features(**tokens.to(self.device))))


class OpenClip:
    """CLIP through ``open_clip``: ``folder`` holds ``open_clip_config.json`` and its weights, or a name."""

    name = "clip-open_clip"

    def __init__(self, folder: Path, device: str = "cpu", arch: str = "ViT-B-32"):
        try:
            import open_clip
            import torch
        except Exception as exc:  # noqa: BLE001 - torchvision mismatches raise RuntimeError, not ImportError
            raise ModelError(
                "the open_clip backend needs open_clip_torch and a torchvision that matches torch: "
                f"pip install 'bgmgen[open-clip]' ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
        weights = Path(folder) / "open_clip_model.safetensors"  # safetensors only: no pickled weights are loaded
        if not weights.exists():
            raise ModelError(f"no open_clip weights (open_clip_model.safetensors) in {folder}")
        self.model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=str(weights), device=device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.device = device
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.model.to(dtype=self.dtype)
        size = self.model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.logit_scale = float(self.model.logit_scale.exp().item())
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        self.batch = BATCH_CUDA if device.startswith("cuda") else BATCH_CPU

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        return encode_in_batches(self, frames, self.model.encode_image)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return _normalised(self.model.encode_text(self.tokenizer(list(texts)).to(self.device)))


BACKENDS = {"transformers": TransformersClip, "open_clip": OpenClip}


def load_clip(folder: Path, device: str = "cpu", backend: str = "transformers") -> ClipBackend:
    """Load a CLIP backend from ``folder`` on ``device`` ("cpu" or "cuda"). Raises ModelError."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown CLIP backend {backend!r}: use {' or '.join(BACKENDS)}")
    return BACKENDS[backend](Path(folder), device)


def image_normalisation(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std from ``preprocessor_config.json`` when the folder has one, else CLIP's."""
    config = Path(folder) / "preprocessor_config.json"
    try:
        data = json.loads(config.read_text())
        return tuple(data["image_mean"]), tuple(data["image_std"])
    except (OSError, ValueError, KeyError, TypeError):
        return CLIP_MEAN, CLIP_STD


def zero_shot(backend: ClipBackend, image_embeddings: np.ndarray, prompts: dict[str, str] = MOOD_PROMPTS) -> np.ndarray:
    """Per-frame probabilities over ``prompts`` (float32 [n, len(prompts)], rows sum to 1)."""
    text = backend.encode_texts(list(prompts.values()))
    logits = backend.logit_scale * image_embeddings @ text.T
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def _share(probs: np.ndarray, labels: Sequence[str], against: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Share of the ``labels`` mass in ``labels + against`` per row (0.5 where both are zero)."""
    pick = lambda group: probs[..., [names.index(n) for n in group]].sum(axis=-1)  # noqa: E731
    a, b = pick(labels), pick(against)
    return np.where(a + b > 0, a / np.maximum(a + b, 1e-12), 0.5)


def mood_signals(probs: np.ndarray, names: Sequence[str] = tuple(MOOD_PROMPTS)) -> dict[str, np.ndarray]:
    """Tension (intense vs calm) and brightness (bright+happy vs dark+sad), 0..1, per row of ``probs``."""
    return {
        "tension": _share(probs, TENSE_LABELS, CALM_LABELS, list(names)),
        "brightness": _share(probs, BRIGHT_LABELS, DARK_LABELS, list(names)),
    }


def mood_summary(probs: np.ndarray, names: Sequence[str] = tuple(MOOD_PROMPTS)) -> dict[str, float]:
    """Whole-video scores for the plan: the mean probability per label plus derived tension/brightness."""
    if len(probs) == 0:
        return {}
    mean = probs.mean(axis=0)
    summary = {name: round(float(p), 4) for name, p in zip(names, mean)}
    for key, value in mood_signals(mean[None], names).items():
        summary[key] = round(float(value[0]), 4)
    return summary


def pool_per_bar(times: np.ndarray, values: np.ndarray, bar_duration: float, n_bars: int) -> np.ndarray:
    """Mean of per-sample ``values`` [n, ...] over each bar -> [n_bars, ...]; empty bars take the nearest sample."""
    times = np.asarray(times, dtype=float)
    values = np.asarray(values, dtype=np.float32)
    if len(times) == 0:
        raise ValueError("no samples to pool")
    bars = np.floor(times / bar_duration).astype(int)
    out = np.empty((n_bars, *values.shape[1:]), np.float32)
    for bar in range(n_bars):
        inside = bars == bar
        if inside.any():
            out[bar] = values[inside].mean(axis=0)
        else:
            out[bar] = values[int(np.argmin(np.abs(times - (bar + 0.5) * bar_duration)))]
    return out


def pool_per_segment(bar_values: np.ndarray, segments: Sequence) -> np.ndarray:
    """Mean of per-bar values over each segment (objects with ``start_bar``/``end_bar``) -> [n_segments, ...]."""
    return np.stack([bar_values[s.start_bar : s.end_bar].mean(axis=0) for s in segments])
