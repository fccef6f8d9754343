"""How well music lands on the picture: cuts against the written MIDI's downbeats, and hits in the audio.

- ``grid_figures(midi, cuts)``: of the cuts at least one bar after the previous cut, the fraction within
  a sixteenth of a bar of a downbeat of the MIDI file (pretty_midi's own downbeats, so the tempo
  changes written in the file are what is measured); of all cuts, the fraction within a sixteenth of a
  bar of a beat.
- ``onset_ratio(audio, sample_rate, cuts)``: librosa's onset strength, its peak within 50 ms of each
  cut against the median of the strength everywhere else (or, stricter, against its peaks on the
  music's other beats); a hit heard on a cut gives a large ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ON_GRID_BARS = 1.0 / 16  # "on" a downbeat or beat: within a sixteenth of a bar
HIT_WINDOW_S = 0.05  # onset strength is looked for within 50 ms of a cut
ONSET_HOP = 256  # samples between onset-strength frames (5.8 ms at 44.1 kHz)


@dataclass(frozen=True)
class GridFigures:
    far_cuts: int  # cuts at least one bar (of the music at that point) after the previous cut or the start
    far_on_downbeats: float  # fraction of those within a sixteenth of a bar of a downbeat (1 if none)
    on_beats: float  # fraction of all cuts within a sixteenth of a bar of a beat (1 if no cuts)


def grid_figures(midi_path: Path, cuts: list[float]) -> GridFigures:
    """Where ``cuts`` (s) fall on the beats and downbeats of the MIDI file at ``midi_path``."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(str(midi_path))
    downbeats, beats = midi.get_downbeats(), midi.get_beats()
    if len(downbeats) < 2:
        raise ValueError(f"{midi_path} has fewer than two bars")
    on_down, on_beat, previous = [], [], 0.0
    for cut in sorted(cuts):
        bar = int(np.clip(np.searchsorted(downbeats, cut, side="right") - 1, 0, len(downbeats) - 2))
        bar_length = float(downbeats[bar + 1] - downbeats[bar])
        tolerance = ON_GRID_BARS * bar_length + 1e-6
        if cut - previous >= bar_length - 1e-6:
            on_down.append(bool(np.min(np.abs(downbeats - cut)) <= tolerance))
        on_beat.append(bool(np.min(np.abs(beats - cut)) <= tolerance))
        previous = cut
    return GridFigures(len(on_down), float(np.mean(on_down)) if on_down else 1.0,
                       float(np.mean(on_beat)) if on_beat else 1.0)  # fmt: skip


def onset_ratio(audio: np.ndarray, sample_rate: int, cuts: list[float], against: list[float] | None = None) -> float:
    """Median over cuts of the peak onset strength within HIT_WINDOW_S of the cut, divided by the median
    onset strength outside those windows, or with ``against`` (e.g. the music's other beats) by the median
    of the peaks within HIT_WINDOW_S of those times. ``audio`` is mono or (samples, channels). NaN without cuts."""
    import librosa

    mono = np.asarray(audio, dtype=np.float32)
    if mono.ndim == 2:
        mono = mono.mean(axis=1)
    strength = librosa.onset.onset_strength(y=mono, sr=sample_rate, hop_length=ONSET_HOP)
    times = librosa.frames_to_time(np.arange(len(strength)), sr=sample_rate, hop_length=ONSET_HOP)
    cuts = [c for c in cuts if 0 <= c <= times[-1]]
    if not cuts:
        return float("nan")
    near = np.zeros(len(strength), bool)
    peaks = []
    for cut in cuts:
        window = np.abs(times - cut) <= HIT_WINDOW_S
        near |= window
        peaks.append(float(strength[window].max()))
    if against is None:
        elsewhere = float(np.median(strength[~near]))
    else:
        others = [t for t in against if 0 <= t <= times[-1] and min(abs(t - c) for c in cuts) > 2 * HIT_WINDOW_S]
        if not others:
            return float("nan")
        elsewhere = float(np.median([strength[np.abs(times - t) <= HIT_WINDOW_S].max() for t in others]))
    return float(np.median(peaks) / max(elsewhere, 1e-9))
