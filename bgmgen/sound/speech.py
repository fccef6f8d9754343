"""Where the original sound has a voice: spans of seconds, so the melody can step back under it.

``voice_spans(video, duration)`` decodes the first audio stream with ffmpeg (mono, 16 kHz), keeps the
voice band (250-3500 Hz), and marks 50 ms frames whose band level is well over the recording's own
noise floor and over an absolute floor; short gaps (pauses between words) are bridged and very short
blips dropped. It is a level detector in the voice band, not a speech recogniser: loud singing or a
band-limited noise counts too, which suits the purpose (the melody should not fight a foreground sound).
``melody_expression`` turns the spans into CC11 changes that lower the melody before each span and
bring it back after it.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np

from bgmgen.errors import ToolError

log = logging.getLogger("bgmgen")

SAMPLE_RATE = 16000  # Hz, enough for the voice band
VOICE_BAND = (250.0, 3500.0)  # Hz
FRAME_S = 0.05
ABSOLUTE_FLOOR_DB = -45.0  # dBFS band RMS below which nothing counts as a voice
OVER_NOISE_DB = 12.0  # dB over the recording's 10th-percentile band level
BRIDGE_S = 0.6  # pauses shorter than this inside speech stay in the span
MIN_SPAN_S = 0.25  # shorter bursts are not speech
STEP_BACK_CC = 30  # CC11 of the melody under a voice (FluidSynth: about 20 dB down; measured in tests)
RAMP_DOWN_S = 0.3  # the melody starts to leave this long before the voice comes in
RAMP_UP_S = 0.8  # and comes back over this long after it stops
RAMP_POINTS = 6


def decode_mono(video: Path, duration: float) -> np.ndarray:
    """The first audio stream of ``video`` as mono float32 at SAMPLE_RATE, its first ``duration`` seconds."""
    args = [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(Path(video).resolve()),
        "-map", "0:a:0", "-t", f"{duration:.6f}", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-",
    ]  # fmt: skip
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
    except OSError as e:
        raise ToolError(f"could not run ffmpeg (install it with: apt-get install ffmpeg): {e}") from e
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise ToolError(f"ffmpeg could not decode the original sound: {' | '.join(tail)}")
    return np.frombuffer(proc.stdout, dtype="<f4")


def voice_spans_of(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[tuple[float, float]]:
    """``(start, end)`` seconds where ``audio`` (mono) has a voice-band sound well over its noise floor."""
    from scipy.signal import butter, sosfilt

    frame = int(FRAME_S * sample_rate)
    if len(audio) < frame:
        return []
    sos = butter(4, VOICE_BAND, btype="bandpass", fs=sample_rate, output="sos")
    band = sosfilt(sos, audio.astype(np.float64))
    n_frames = len(band) // frame
    rms = np.sqrt(np.mean(band[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1))
    level = 20.0 * np.log10(np.maximum(rms, 1e-9))
    floor = np.percentile(level, 10)
    active = (level > ABSOLUTE_FLOOR_DB) & (level > floor + OVER_NOISE_DB)
    spans: list[list[float]] = []
    for index in np.nonzero(active)[0]:
        start, end = index * FRAME_S, (index + 1) * FRAME_S
        if spans and start - spans[-1][1] < BRIDGE_S:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [(float(s), float(e)) for s, e in spans if e - s >= MIN_SPAN_S]


def voice_spans(video: Path, duration: float) -> list[tuple[float, float]]:
    """The voice spans of ``video``'s original sound (see ``voice_spans_of``)."""
    spans = voice_spans_of(decode_mono(video, duration))
    log.info("original sound: %d voice spans, %.1f s in all", len(spans), sum(e - s for s, e in spans))
    return spans


def melody_expression(spans: list[tuple[float, float]], duration: float) -> list[tuple[float, int]]:
    """CC11 changes ``(time, value)`` that take the melody down to STEP_BACK_CC over each voice span (ramping
    down RAMP_DOWN_S before it) and back to 127 after it; spans closer than the ramps merge."""
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if merged and start - RAMP_DOWN_S <= merged[-1][1] + RAMP_UP_S:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    events: list[tuple[float, int]] = []
    for start, end in merged:
        down = np.linspace(max(0.0, start - RAMP_DOWN_S), max(0.0, start), RAMP_POINTS)
        up = np.linspace(end, min(duration, end + RAMP_UP_S), RAMP_POINTS)
        values_down = np.linspace(127, STEP_BACK_CC, RAMP_POINTS)
        events += [(float(t), int(round(v))) for t, v in zip(down, values_down)]
        events += [(float(t), int(round(v))) for t, v in zip(up, values_down[::-1])]
    return events
