"""Video understanding: one decode pass gives per-frame signals (motion, brightness, colourfulness, energy),
shot cuts and an overall mood.

``analyze_video(path) -> VideoAnalysis`` is the entry point. The embedded signals need nothing but numpy;
the shot detector comes from ``bgmgen.video.shots``. Optional learned analysers (CLIP, BLIP) can add their
features to ``VideoAnalysis.extras`` and their names to ``analysers`` without changing the fields here.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from bgmgen.video import decode, shots
from bgmgen.video.features import LearnedCues, learned_cues

if TYPE_CHECKING:
    from bgmgen.video.features import FeatureOptions

log = logging.getLogger("bgmgen")

ANALYSIS_FPS = 25.0  # frames per second of the analysis stream
ANALYSIS_SIZE = (48, 27)  # (width, height): what TransNetV2 reads, enough for global signals
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601 weights
MOTION_SCALE = 0.02  # mean absolute luma change per frame (0..1 units) that maps to motion 1 - 1/e
MOTION_SMOOTH_S = 0.2  # seconds; spans a source frame interval, so frames repeated by resampling don't read as still
COLOURFULNESS_FULL = 150.0  # Hasler-Suesstrunk value (0..255 RGB) mapped to 1; 109 is "extremely colourful"
CHANGE_SPAN_S = 0.5  # seconds over which brightness/colour changes are measured for energy
CHANGE_FULL = 0.25  # change in (brightness + colourfulness) over that span that counts as full energy
ENERGY_SMOOTH_S = 1.0  # seconds of the moving average that smooths energy
CUT_DECAY_S = 1.0  # seconds over which a cut's contribution to energy fades
CUTS_PER_MINUTE_SCALE = 20.0  # cut rate that maps to 1 - 1/e of cut tension
FLICKER_FULL = 0.05  # mean brightness change over CHANGE_SPAN_S that counts as fully changing light
WARMTH_FULL = 0.15  # mean (red - blue) / 255 that counts as fully warm (tungsten light); minus it fully cool
ORDINARY_LIGHT = 0.35  # mean light of ordinary footage: neither bright nor dark for the key's mode
_DECODE_SHARE = {"transnetv2": 0.4}  # progress share of decoding when the detector is slow; 0.95 otherwise


@dataclass(frozen=True)
class Mood:
    """Overall character of the video, each 0..1, and the cues it was judged from."""

    tension: float  # 0 calm .. 1 tense (motion pace, cut rate, changes of light over time)
    brightness: float  # 0 dark/sombre .. 1 bright/cheerful: picks the key's mode (light, warmth, colour, pace)
    pace: float = 0.5  # mean motion 0..1
    cut_rate: float = 0.0  # 0..1 from cuts per minute (1 - exp(-cpm / CUTS_PER_MINUTE_SCALE))
    warmth: float = 0.5  # colour temperature 0 cool/blue .. 0.5 neutral .. 1 warm/orange
    saturation: float = 0.0  # mean colourfulness 0..1
    flicker: float = 0.0  # 0..1, how much the light changes over half-second spans


@dataclass
class VideoAnalysis:
    """Everything later stages need to know about the picture. Per-frame arrays are float32 [N] at analysis_fps."""

    info: decode.VideoInfo
    analysis_fps: float
    motion: np.ndarray  # 0..1, mean absolute luma change between frames, smoothed and softly saturated
    brightness: np.ndarray  # mean luma 0..1
    colourfulness: np.ndarray  # Hasler-Suesstrunk colourfulness / 150, clipped to 0..1
    energy: np.ndarray  # 0..1, smoothed mix of motion, brightness/colour changes and recent cuts
    cuts: list[float]  # seconds, the first frame of each new shot
    mood: Mood
    analysers: list[str]  # what produced this analysis, e.g. ["embedded-signals", "transnetv2"]
    # Features from optional analysers (e.g. "clip_embedding": [N_segments, D]), keyed by feature name.
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    learned: LearnedCues = field(default_factory=LearnedCues)  # what the plan takes from the extras

    def frame_times(self) -> np.ndarray:
        """Time in seconds of each analysed frame: i / analysis_fps."""
        return np.arange(len(self.motion)) / self.analysis_fps

    def mean_over(self, signal: np.ndarray, start: float, end: float) -> float:
        """Mean of a per-frame signal over frames with start <= t < end (the frame nearest the span if none)."""
        if len(signal) == 0:
            return 0.0
        times = np.arange(len(signal)) / self.analysis_fps
        inside = (times >= start) & (times < end)
        if inside.any():
            return float(signal[inside].mean())
        nearest = int(np.clip(round(0.5 * (start + end) * self.analysis_fps), 0, len(signal) - 1))
        return float(signal[nearest])


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average with edge values repeated; same length as x."""
    if width <= 1 or len(x) == 0:
        return x.astype(np.float32)
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="valid").astype(np.float32)


def frame_signals(frames: np.ndarray, previous_luma: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Raw per-frame signals for uint8 frames [n, H, W, 3].

    Returns (abs_luma_change, brightness, colourfulness, last_luma): the first three are float32 [n]; the
    luma change of the first frame is against ``previous_luma`` (0 without one); last_luma is for the next call.
    """
    rgb = frames.astype(np.float32)
    luma = rgb @ _LUMA
    prev = luma[:1] if previous_luma is None else previous_luma[None]
    change = np.abs(np.diff(np.concatenate([prev, luma]), axis=0)).mean(axis=(1, 2)) / 255.0
    brightness = luma.mean(axis=(1, 2)) / 255.0
    # Hasler & Suesstrunk (2003): spread and mean of the red-green and yellow-blue opponent channels.
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    spread = np.hypot(rg.std(axis=(1, 2)), yb.std(axis=(1, 2)))
    centre = np.hypot(rg.mean(axis=(1, 2)), yb.mean(axis=(1, 2)))
    colourfulness = np.clip((spread + 0.3 * centre) / COLOURFULNESS_FULL, 0.0, 1.0)
    return change.astype(np.float32), brightness.astype(np.float32), colourfulness.astype(np.float32), luma[-1]


def motion_from_changes(change: np.ndarray, cuts: list[float], fps: float) -> np.ndarray:
    """Motion 0..1 from raw frame changes: cut frames are not motion, then smooth and saturate softly."""
    change = change.copy()
    if len(change) > 1:
        change[0] = change[1]  # the first frame has nothing before it
    for cut in cuts:
        i = int(round(cut * fps))
        if 0 < i < len(change):
            change[i] = change[i - 1]
    smooth = _moving_average(change, max(1, round(MOTION_SMOOTH_S * fps)))
    return (1.0 - np.exp(-smooth / MOTION_SCALE)).astype(np.float32)


def energy_curve(
    motion: np.ndarray, brightness: np.ndarray, colourfulness: np.ndarray, cuts: list[float], fps: float
) -> np.ndarray:
    """Energy 0..1 per frame: 0.6 motion + 0.25 brightness/colour change + 0.15 recent cuts, smoothed."""
    n = len(motion)
    span = max(1, round(CHANGE_SPAN_S * fps))
    look = brightness + colourfulness
    change = np.zeros(n, np.float32)
    if n > span:
        change[span:] = np.abs(look[span:] - look[:-span])
    change = np.clip(change / CHANGE_FULL, 0.0, 1.0)
    cut_pulse = np.zeros(n, np.float32)
    times = np.arange(n) / fps
    for cut in cuts:
        after = times >= cut
        cut_pulse[after] = np.maximum(cut_pulse[after], np.exp(-(times[after] - cut) / CUT_DECAY_S))
    raw = 0.6 * motion + 0.25 * change + 0.15 * cut_pulse
    return np.clip(_moving_average(raw, max(1, round(ENERGY_SMOOTH_S * fps))), 0.0, 1.0)


def colour_warmth(frames: np.ndarray) -> np.ndarray:
    """Colour temperature per frame of uint8 RGB frames [n, H, W, 3]: mean (red - blue) / 255, -1 .. 1
    (daylight blue skies are negative, tungsten-lit rooms and sunsets positive)."""
    rgb = frames.reshape(len(frames), -1, 3)
    return ((rgb[..., 0].mean(axis=1) - rgb[..., 2].mean(axis=1)) / 255.0).astype(np.float32)


def light_changes(brightness: np.ndarray, fps: float) -> float:
    """Mean |change of brightness| over CHANGE_SPAN_S, scaled so FLICKER_FULL counts as 1."""
    span = max(1, round(CHANGE_SPAN_S * fps))
    if len(brightness) <= span:
        return 0.0
    return float(np.clip(np.abs(brightness[span:] - brightness[:-span]).mean() / FLICKER_FULL, 0.0, 1.0))


def estimate_mood(
    motion: np.ndarray, brightness: np.ndarray, colourfulness: np.ndarray, cuts: list[float], duration: float,
    warmth: np.ndarray | None = None, fps: float = ANALYSIS_FPS,
) -> Mood:
    """Mood from the picture's signals (per-frame arrays at ``fps``; ``warmth`` from ``colour_warmth``).

    Tension: motion pace, cut rate and how much the light changes. Brightness (which picks major or
    minor): light relative to ordinary footage (mean luma 0.35, not 0.5: most video is darker than mid
    grey, and a lamp-lit room is not sad), raised by warm colour, saturated colour and lively motion.
    """
    pace = float(motion.mean()) if len(motion) else 0.0
    cuts_per_minute = 60.0 * len(cuts) / max(duration, 1.0)
    cut_rate = float(1.0 - np.exp(-cuts_per_minute / CUTS_PER_MINUTE_SCALE))
    flicker = light_changes(brightness, fps)
    tension = 0.65 * pace + 0.35 * cut_rate + 0.15 * flicker
    saturation = float(colourfulness.mean()) if len(colourfulness) else 0.0
    # Colour makes a dim picture feel lighter, but cannot make white brighter.
    light = float((brightness + 0.3 * colourfulness * (1.0 - brightness)).mean()) if len(brightness) else 0.5
    warm = float(np.mean(warmth)) if warmth is not None and len(warmth) else 0.0
    warm_score = float(np.clip(warm / WARMTH_FULL, -1.0, 1.0))
    valence = (0.5 + 1.2 * (light - ORDINARY_LIGHT) + 0.15 * warm_score + 0.1 * (saturation - 0.15)
               + 0.08 * (pace - 0.3))  # fmt: skip
    return Mood(
        tension=float(np.clip(tension, 0, 1)), brightness=float(np.clip(valence, 0, 1)), pace=pace,
        cut_rate=cut_rate, warmth=float(0.5 + 0.5 * warm_score), saturation=saturation, flicker=flicker,
    )


def analyze_video(
    path: Path,
    *,
    shot_detector: str = "transnetv2",
    device: str = "cpu",
    progress: Callable[[float], None] | None = None,
    info: decode.VideoInfo | None = None,
    features: FeatureOptions | None = None,
) -> VideoAnalysis:
    """Probe, decode once (25 fps, 48x27 RGB) and analyse the video at ``path``.

    Returns a VideoAnalysis. Raises InputError for unusable files, BgmgenError for an unknown detector name
    and ModelError if the detector's model cannot be loaded. ``progress`` gets fractions 0..1. With
    ``features``, the learned analysers whose weights are found (CLIP, BLIP, BERT) add their ``extras``
    in a second decode pass (``bgmgen.video.features``); without weights nothing changes.
    """
    info = info or decode.probe(path)  # callers that probed already pass it in
    detector = shots.get_detector(shot_detector, device)  # unknown names fail before decoding
    fps = ANALYSIS_FPS
    report = progress or (lambda fraction: None)
    decode_share = _DECODE_SHARE.get(detector.name, 0.95)
    expected = max(1, int(round(info.duration * fps)))

    # The detector's weights load beside the decode (ffmpeg and numpy leave the GIL free), not after it.
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bgmgen-shots-load")
    prepared = loader.submit(getattr(detector, "prepare", lambda: None))
    loader.shutdown(wait=False)
    # Small frames are kept for the detector (a 10-minute clip is ~58 MB); signals are reduced per chunk.
    frames = np.empty((expected + 8, ANALYSIS_SIZE[1], ANALYSIS_SIZE[0], 3), np.uint8)
    changes, lumas, colours = [], [], []
    n, last_luma = 0, None
    for chunk in decode.iter_frames(info, fps=fps, size=ANALYSIS_SIZE):
        if n + len(chunk) > len(frames):
            frames = np.concatenate([frames, np.empty_like(frames[: max(len(chunk), len(frames) // 2)])])
        frames[n : n + len(chunk)] = chunk
        n += len(chunk)
        change, luma, colour, last_luma = frame_signals(chunk, last_luma)
        changes.append(change)
        lumas.append(luma)
        colours.append(colour)
        report(decode_share * min(1.0, n / expected))
    frames = frames[:n]
    log.debug("decoded %d frames of %s at %.0f fps", n, info.path, fps)

    prepared.result()  # raises what loading raised (ModelError)
    cuts = detector.detect(frames, fps, progress=lambda f: report(decode_share + (1 - decode_share) * f))
    warmth = colour_warmth(frames)
    del frames
    brightness, colourfulness = np.concatenate(lumas), np.concatenate(colours)
    motion = motion_from_changes(np.concatenate(changes), cuts, fps)
    energy = energy_curve(motion, brightness, colourfulness, cuts, fps)
    mood = estimate_mood(motion, brightness, colourfulness, cuts, info.duration, warmth, fps)
    analysers, extras = ["embedded-signals", detector.name], {}
    if features is not None:
        from bgmgen.video.features import extract_features

        learned = extract_features(info, cuts, features)
        analysers += learned.analysers
        extras.update(learned.extras)
        for note in learned.notes:
            log.info("analyser skipped: %s", note)
    report(1.0)
    return VideoAnalysis(
        info=info,
        analysis_fps=fps,
        motion=motion,
        brightness=brightness,
        colourfulness=colourfulness,
        energy=energy,
        cuts=cuts,
        mood=mood,
        analysers=analysers,
        extras=extras,
        learned=learned_cues(extras),
    )
