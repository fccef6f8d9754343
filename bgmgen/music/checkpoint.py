"""Checkpoints of the music model: one safetensors file holding the weights and a ``ModelInfo``.

``build_model(config)`` picks the backbone a configuration names (``unet.MusicUNet`` or
``unet2d.PaperUNet2D``); ``save_checkpoint`` and ``load_checkpoint`` write and read the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from bgmgen.errors import ModelError
from bgmgen.files import atomic_output
from bgmgen.music.unet import MusicUNet, UNetConfig
from bgmgen.music.unet2d import PaperUNet2D

CHECKPOINT_FORMAT = 1


@dataclass
class ModelInfo:
    """What a checkpoint says about itself besides its weights."""

    config: UNetConfig
    training_steps: int = 0
    feature_quantiles: dict[str, list[float]] = field(default_factory=dict)  # of the training bar features
    schedule: dict = field(default_factory=dict)  # noise schedule the model was trained with (diffusers config)
    notes: str = ""
    format: int = CHECKPOINT_FORMAT
    part: str = "all"  # what the model writes: all (one roll), melody, or accompaniment (under a given melody)


def build_model(config: UNetConfig) -> nn.Module:
    """The network a configuration describes."""
    if config.backbone == "temporal1d":
        return MusicUNet(config)
    if config.backbone == "paper2d":
        return PaperUNet2D(config)
    raise ModelError(f"unknown backbone {config.backbone!r}: use temporal1d or paper2d")


def save_checkpoint(model: MusicUNet, info: ModelInfo, path: Path, half: bool = True) -> None:
    """Write weights and ``info`` as one safetensors file (fp16 weights keep shipped files small)."""
    from safetensors.torch import save_file

    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    meta = asdict(info)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={"bgmgen": json.dumps(meta)})


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Load a checkpoint written by ``save_checkpoint``; raises ModelError if missing or mismatched."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise ModelError(f"music model checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["bgmgen"])
        tensors = load_file(str(path))
        meta["config"] = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
        info = ModelInfo(**meta)
    except Exception as exc:  # noqa: BLE001 - any parse failure means an unusable file
        raise ModelError(f"cannot read music model checkpoint {path}: {exc}") from exc
    model = build_model(info.config)
    try:
        model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {path} does not match its configuration: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), info



def load_widened(model: nn.Module, path: Path) -> None:
    """Start ``model`` from the checkpoint at ``path`` where shapes allow.

    The first convolution may take more input channels than the checkpoint's (an accompaniment
    model's melody channels): the old channels keep their weights and the new ones start at zero, so
    the widened model begins by computing exactly what the checkpoint did.
    """
    old, _ = load_checkpoint(path)
    source = old.state_dict()
    target = model.state_dict()
    for name, value in target.items():
        if name not in source:
            raise ModelError(f"{path} has no weights for {name}: not the same architecture")
        src = source[name]
        if src.shape == value.shape:
            target[name] = src.clone()
        elif src.dim() == value.dim() and src.shape[0] == value.shape[0] and src.shape[2:] == value.shape[2:] and src.shape[1] < value.shape[1]:
            widened = torch.zeros_like(value)
            widened[:, : src.shape[1]] = src
            target[name] = widened
        else:
            raise ModelError(f"{path}: {name} has shape {tuple(src.shape)}, the model wants {tuple(value.shape)}")
    model.load_state_dict(target)
