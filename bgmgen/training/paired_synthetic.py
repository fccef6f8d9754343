"""A small synthetic paired set in the BGM909 layout, whose video features say what the music is.

Each synthetic "video" is cut into segments (2, 4 or 6 bars by default); each segment has a style (chord root,
major or minor, note density, register) that decides its music (an arpeggiated triad over a bass
root at 120 BPM) and, through fixed random linear maps plus noise, its per-frame "CLIP" features and
its "caption" feature. A model that reads the features can therefore write music that retrieves its
own video's ground truth well above chance; one that ignores them cannot. Used by the tests and to
try ``bgmgen train --paired`` without the real BGM909 features.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bgmgen.music.roll import N_PITCHES, PITCH_LOW, STEPS_PER_BAR
from bgmgen.training.paired import MUSIC_FILE, PAIR_FILE, SPLIT_NAME, TEXT_FEATURES, VIDEO_FEATURES, VIDEO_TIMES

SECONDS_PER_STEP = 0.125  # 120 BPM on the sixteenth-note grid: one bar = 2 s
FRAMES_PER_SECOND = 2.0  # feature frames sampled per second of video
DENSITY_INTERVALS = (8, 4, 2, 1)  # steps between onsets for the four density levels
REGISTERS = (48, 60, 72)  # MIDI pitch of the arpeggio's lowest root
STYLE_DIM = 12 + 2 + len(DENSITY_INTERVALS) + len(REGISTERS)


def _style_vector(root: int, minor: int, density: int, register: int) -> np.ndarray:
    v = np.zeros(STYLE_DIM, dtype=np.float32)
    v[root] = v[12 + minor] = v[14 + density] = v[14 + len(DENSITY_INTERVALS) + register] = 1.0
    return v


def _segment_music(roll: np.ndarray, first_bar: int, n_bars: int, root: int, minor: int, density: int, register: int) -> None:
    """Draw one segment's arpeggio and bass into ``roll`` [steps, 2, 88] (uint8, in place)."""
    triad = (0, 3 if minor else 4, 7)
    interval = DENSITY_INTERVALS[density]
    for bar in range(first_bar, first_bar + n_bars):
        start = bar * STEPS_PER_BAR
        bass = 36 + root - PITCH_LOW
        roll[start, 0, bass] = 1
        roll[start + 1 : start + STEPS_PER_BAR, 1, bass] = 1
        for j, offset in enumerate(range(0, STEPS_PER_BAR, interval)):
            col = REGISTERS[register] + root + triad[j % 3] - PITCH_LOW
            roll[start + offset, 0, col] = 1
            roll[start + offset + 1 : start + offset + interval, 1, col] = 1


def make_synthetic_paired_set(
    directory: Path,
    n_videos: int = 24,
    seed: int = 0,
    bars: int = 32,
    video_dim: int = 512,
    text_dim: int = 768,
    noise: float = 0.5,
    segment_bars: tuple[int, ...] = (2, 4, 6),
    roots: int = 12,
) -> Path:
    """Write ``n_videos`` synthetic pairs (and a split.json) under ``directory``; returns it.

    Videos are ``bars`` bars long (2 s each), cut into segments whose lengths are drawn from
    ``segment_bars``; roots are drawn from ``roots`` evenly spaced pitch classes. Features are ``W @ style + noise * N(0, 1)`` with one
    fixed ``W`` per modality, so ``noise`` sets how informative they are. The split puts a third of
    the videos in test, a sixth in valid and the rest in train.
    """
    rng = np.random.default_rng(seed)
    video_map = rng.normal(size=(video_dim, STYLE_DIM)).astype(np.float32) / np.sqrt(STYLE_DIM)
    text_map = rng.normal(size=(text_dim, STYLE_DIM)).astype(np.float32) / np.sqrt(STYLE_DIM)
    directory.mkdir(parents=True, exist_ok=True)
    steps = bars * STEPS_PER_BAR
    ids = [f"video{i:03d}" for i in range(n_videos)]
    for i, video_id in enumerate(ids):
        roll = np.zeros((steps, 2, N_PITCHES), dtype=np.uint8)
        bar_style = np.zeros((bars, STYLE_DIM), dtype=np.float32)
        segments, text = [], []
        first = 0
        while first < bars:
            n = min(int(rng.choice(segment_bars)), bars - first)
            style = (int(rng.integers(roots)) * (12 // roots), int(rng.integers(2)), int(rng.integers(len(DENSITY_INTERVALS))), int(rng.integers(len(REGISTERS))))
            _segment_music(roll, first, n, *style)
            vector = _style_vector(*style)
            bar_style[first : first + n] = vector
            segments.append([first * STEPS_PER_BAR * SECONDS_PER_STEP, (first + n) * STEPS_PER_BAR * SECONDS_PER_STEP])
            text.append(text_map @ vector + noise * rng.normal(size=text_dim))
            first += n
        times = np.arange(0.0, steps * SECONDS_PER_STEP, 1.0 / FRAMES_PER_SECOND) + 0.5 / FRAMES_PER_SECOND
        frame_bar = (times / (STEPS_PER_BAR * SECONDS_PER_STEP)).astype(int)
        frames = bar_style[frame_bar] @ video_map.T + noise * rng.normal(size=(len(times), video_dim))
        folder = directory / video_id
        folder.mkdir(exist_ok=True)
        np.save(folder / VIDEO_FEATURES, frames.astype(np.float32))
        np.save(folder / VIDEO_TIMES, times)
        np.save(folder / TEXT_FEATURES, np.asarray(text, dtype=np.float32))
        starts = np.arange(0, steps - 8 * STEPS_PER_BAR + 1, 2 * STEPS_PER_BAR)
        np.savez_compressed(folder / MUSIC_FILE, roll=roll, step_times=np.arange(steps) * SECONDS_PER_STEP, window_starts=starts)
        (folder / PAIR_FILE).write_text(json.dumps({"song_id": f"synthetic{i:03d}", "segments": segments, "offset": 0.0}))
    n_test, n_valid = max(2, n_videos // 3), max(1, n_videos // 6)
    split = {"train": ids[: n_videos - n_test - n_valid], "valid": ids[n_videos - n_test - n_valid : n_videos - n_test], "test": ids[n_videos - n_test :]}
    (directory / SPLIT_NAME).write_text(json.dumps(split, indent=1))
    return directory
