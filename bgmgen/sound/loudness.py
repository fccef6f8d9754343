"""Loudness in bounded memory: BS.1770 integrated loudness, a look-ahead peak limiter, and the gain that
brings a track to a loudness target under a peak ceiling.

Each works on a whole array (``integrated_loudness``, ``limit_peaks``, ``normalise``) or on a track read
block by block through a ``Reader`` (``read(start, stop)`` -> float64 samples [stop - start, channels]):
``render`` reads FluidSynth's output from a memory-mapped file, so levelling ten minutes of music needs a
few blocks of memory, not several copies of the whole track. Both paths run the same code and agree to
rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import numpy as np

log = logging.getLogger("bgmgen")

Reader = Callable[[int, int], np.ndarray]

CHUNK_FRAMES = 1 << 18  # frames processed at once (5.9 s at 44.1 kHz; 4 MiB of float64 stereo)
BLOCK_S = 0.400  # BS.1770 gating block length, seconds
BLOCK_HOP_S = 0.100  # 75 % overlap between gating blocks
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LIMITER_RAMP_S = 0.040  # limiter attack (look-ahead) and release ramp, seconds
MAX_GAIN_DB = 40.0  # never amplify near-silence into noise
MAX_LIMITING_DB = 6.0  # most gain the limiter may take off peaks; past it we stay below target
LEVEL_PASSES = 3  # gain/limit passes: limiting lowers loudness a little, the next pass makes it up


def array_reader(audio: np.ndarray) -> Reader:
    """A Reader over an in-memory array (frames,) or (frames, channels)."""
    x = np.asarray(audio, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    return lambda start, stop: x[start:stop]


def blocks(read: Reader, n: int, chunk: int = CHUNK_FRAMES) -> Iterator[np.ndarray]:
    """The track's ``n`` frames, in consecutive blocks of at most ``chunk``."""
    for start in range(0, n, chunk):
        yield read(start, min(n, start + chunk))


def _k_weighting(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two BS.1770 K-weighting biquads (high shelf, then high pass) as (b, a) for any rate.

    The standard gives coefficients at 48 kHz only; these come from the analogue prototypes
    behind them (shelf at 1681.97 Hz, +4 dB, Q 0.7072; high pass at 38.14 Hz, Q 0.5003) by the
    bilinear transform, and reproduce the standard's table at 48 kHz.
    """
    k = np.tan(np.pi * 1681.974450955533 / sample_rate)
    q = 0.7071752369554196
    vh = 10.0 ** (3.999843853973347 / 20.0)  # shelf gain at high frequencies
    vb = vh**0.4996667741545416  # gain at the shelf's midpoint
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([vh + vb * k / q + k * k, 2.0 * (k * k - vh), vh - vb * k / q + k * k]) / a0
    shelf_a = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / q + k * k]) / a0

    k = np.tan(np.pi * 38.13547087602444 / sample_rate)
    q = 0.5003270373238773
    a0 = 1.0 + k / q + k * k
    hp_b = np.array([1.0, -2.0, 1.0])
    hp_a = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / q + k * k]) / a0
    return [(shelf_b, shelf_a), (hp_b, hp_a)]


def loudness_of(chunks: Iterable[np.ndarray], n: int, sample_rate: int) -> float:
    """Integrated loudness in LUFS of a track of ``n`` frames given as consecutive float blocks [frames, channels].

    ITU-R BS.1770-4: K-weighting (filter state carried across blocks), 400 ms gating blocks every 100 ms,
    absolute and relative gates; every channel weighted 1. Returns -inf for silence. Memory: the blocks
    passed in, plus one running sum per gating block boundary.
    """
    from scipy.signal import sosfilt

    block, hop = int(round(BLOCK_S * sample_rate)), int(round(BLOCK_HOP_S * sample_rate))
    block = min(block, n)  # shorter than one block: measure the whole thing
    if block == 0:
        return float("-inf")
    starts = np.arange(0, n - block + 1, hop)
    # Running sums of squares are kept only where a gating block starts or ends.
    wanted = np.union1d(starts, starts + block)
    sums: np.ndarray | None = None
    # Both biquads in one pass (second-order sections): half the time of two lfilter calls.
    sos = np.array([np.concatenate([b, a]) / a[0] for b, a in _k_weighting(sample_rate)])
    state = np.zeros(0)
    total, position = 0.0, 0
    for x in chunks:
        if sums is None:
            sums = np.zeros((len(wanted), x.shape[1]))
            state = np.zeros((len(sos), 2, x.shape[1]))  # filter state, zero before the start
        x, state = sosfilt(sos, x, axis=0, zi=state)
        running = total + np.cumsum(x * x, axis=0)  # running[j]: sum over the first position + j + 1 frames
        end = position + len(x)
        lo, hi = np.searchsorted(wanted, position, side="right"), np.searchsorted(wanted, end, side="right")
        sums[lo:hi] = running[wanted[lo:hi] - position - 1]
        total, position = running[-1], end
    if sums is None:
        return float("-inf")
    at = np.searchsorted(wanted, starts)
    energy = ((sums[np.searchsorted(wanted, starts + block)] - sums[at]) / block).sum(axis=1)

    def lufs(e: np.ndarray | float) -> np.ndarray | float:
        return -0.691 + 10.0 * np.log10(np.maximum(e, 1e-30))

    energy = energy[lufs(energy) > ABSOLUTE_GATE_LUFS]
    if energy.size == 0:
        return float("-inf")
    energy = energy[lufs(energy) > lufs(energy.mean()) + RELATIVE_GATE_LU]
    return float(lufs(energy.mean()))


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4) of samples (frames,) or (frames, channels), full scale 1.0.

    Returns -inf for silence (nothing above the -70 LUFS gate).
    """
    return loudness_of(blocks(array_reader(audio), len(audio)), len(audio), sample_rate)


def _limiter_gain(audio: np.ndarray, sample_rate: int, ceiling: float) -> np.ndarray | None:
    """The limiter's gain per frame of one array (None where nothing needs limiting): minimum filter of the
    needed gain, then a moving average half as wide."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    peak = np.abs(audio).max(axis=1)
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    if need.min() >= 1.0:
        return None
    half = max(1, int(round(LIMITER_RAMP_S * sample_rate)))
    gain = minimum_filter1d(need, size=2 * half + 1, mode="nearest")
    return uniform_filter1d(gain, size=2 * (half // 2) + 1, mode="nearest")


def _limit_block(audio: np.ndarray, sample_rate: int, ceiling: float) -> np.ndarray:
    """The limiter on one array."""
    gain = _limiter_gain(audio, sample_rate, ceiling)
    if gain is None:
        return audio
    # The running-sum average may overshoot by rounding: clip as a last guard.
    return np.clip(audio * gain[:, None], -ceiling, ceiling)


def limited_stems(
    reads: list[Reader], n: int, sample_rate: int, gain: float, ceiling: float
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """The sum of several tracks (stems) times ``gain``, peak-limited to ``ceiling``, and each stem with the
    very same gain and limiter envelope, in consecutive blocks ``(mix, [stem, ...])``: the stems add up to
    the mix (the limiter's envelope is computed on the mix and shared)."""
    half = max(1, int(round(LIMITER_RAMP_S * sample_rate)))
    reach = half + half // 2
    for start in range(0, n, CHUNK_FRAMES):
        stop = min(n, start + CHUNK_FRAMES)
        lo, hi = max(0, start - reach), min(n, stop + reach)
        stems = [read(lo, hi) * gain for read in reads]
        mix = np.sum(stems, axis=0)
        envelope = _limiter_gain(mix, sample_rate, ceiling)
        if envelope is not None:
            stems = [stem * envelope[:, None] for stem in stems]
            mix = mix * envelope[:, None]
        cut = slice(start - lo, stop - lo)
        yield np.clip(mix[cut], -ceiling, ceiling), [stem[cut] for stem in stems]


def sum_reader(reads: list[Reader]) -> Reader:
    """A Reader of the sum of several tracks."""
    return lambda start, stop: np.sum([read(start, stop) for read in reads], axis=0)


def limited(read: Reader, n: int, sample_rate: int, gain: float, ceiling: float) -> Iterator[np.ndarray]:
    """The track times ``gain`` (linear), peak-limited to ``ceiling``, in consecutive blocks.

    Each block is limited together with the frames the limiter's two filters reach beyond it, so the result
    is the one the whole track at once would give.
    """
    half = max(1, int(round(LIMITER_RAMP_S * sample_rate)))
    reach = half + half // 2  # minimum filter, then moving average
    for start in range(0, n, CHUNK_FRAMES):
        stop = min(n, start + CHUNK_FRAMES)
        lo, hi = max(0, start - reach), min(n, stop + reach)
        yield _limit_block(read(lo, hi) * gain, sample_rate, ceiling)[start - lo : stop - lo]


def limit_peaks(audio: np.ndarray, sample_rate: int, ceiling: float) -> np.ndarray:
    """Return `audio` (frames, channels) with no sample above `ceiling` (linear), by a smooth look-ahead gain.

    The gain needed at each sample is spread by a minimum filter and then smoothed by a moving
    average half as wide, so it ramps down before each peak and back up after it, and by
    construction never exceeds the gain that peak needs.
    """
    if len(audio) == 0:
        return audio
    return np.concatenate(list(limited(array_reader(audio), len(audio), sample_rate, 1.0, ceiling)))


def level_gain(read: Reader, n: int, sample_rate: int, target_lufs: float, peak_db: float) -> float | None:
    """The gain in dB that brings the track to `target_lufs` once limited to `peak_db` dBFS; None for silence.

    The gain is capped at +MAX_GAIN_DB and at MAX_LIMITING_DB of limiting, so very peaky music stays quieter
    than the target. Reads the track once to measure it and once per levelling pass.
    """
    ceiling = 10.0 ** (peak_db / 20.0)
    peak = 0.0

    def measured_blocks() -> Iterator[np.ndarray]:
        nonlocal peak
        for x in blocks(read, n):
            peak = max(peak, float(np.abs(x).max(initial=0.0)))
            yield x

    measured = loudness_of(measured_blocks(), n, sample_rate)
    if not np.isfinite(measured):
        log.warning("the rendered music is silent; leaving it silent")
        return None
    # Squashing peaks by more than a few dB to reach the target sounds worse than being quiet.
    max_gain_db = min(MAX_GAIN_DB, peak_db - 20.0 * np.log10(peak) + MAX_LIMITING_DB)
    gain_db = min(target_lufs - measured, max_gain_db)
    for _ in range(LEVEL_PASSES):
        used = gain_db
        reached = loudness_of(limited(read, n, sample_rate, 10.0 ** (used / 20.0), ceiling), n, sample_rate)
        if abs(reached - target_lufs) < 0.1 or gain_db >= max_gain_db:
            break
        gain_db = min(gain_db + target_lufs - reached, max_gain_db)
    log.debug("music loudness %.1f LUFS, gain %+.1f dB, now %.1f LUFS", measured, used, reached)
    if reached < target_lufs - 1.0:
        log.info("music is %.1f LU below the loudness target: its peaks limit it", target_lufs - reached)
    return used


def normalise(audio: np.ndarray, sample_rate: int, target_lufs: float, peak_db: float) -> np.ndarray:
    """Bring `audio` to `target_lufs` integrated loudness, limited to `peak_db` dBFS sample peak.

    Returns new samples. Silence is returned unchanged. See `level_gain` for the caps on the gain.
    """
    read = array_reader(audio)
    gain_db = level_gain(read, len(audio), sample_rate, target_lufs, peak_db)
    if gain_db is None:
        return audio
    ceiling = 10.0 ** (peak_db / 20.0)
    return np.concatenate(list(limited(read, len(audio), sample_rate, 10.0 ** (gain_db / 20.0), ceiling)))
