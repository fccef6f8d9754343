"""The structure indicator SI: how strongly a piece repeats itself at a given time scale.

This is the audio-based metric of the Jazz Transformer paper (MusDr), built on Müller's fitness
scape plot, rebuilt here step by step:

1. ``chroma_features``: audio at 22.05 kHz -> chroma STFT at 10 Hz -> 21-frame boxcar and every
   5th frame (2 Hz) -> unit-length frames.
2. ``self_similarity``: dot products between frames, one chroma axis cyclically shifted.
3. ``path_enhanced_ssm``: each SSM averaged along lines of 7 relative tempi in [0.5, 2], forwards
   and backwards; the maximum over tempi, directions and the 12 shifts (transposition invariance).
4. ``threshold_ssm``: keep the top 25 % scaled to [0, 1], set the rest to a -2 penalty.
5. ``fitness_scape_plot``: for every segment (start, duration) the harmonic mean of the normalised
   score and normalised coverage of its optimal path family.
6. ``structure_indicator``: SI(low, high) = the largest fitness over segment durations in
   [low, high] seconds.

``structure_indicator_from_roll`` renders a piano roll with FluidSynth first (``roll_to_audio``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from bgmgen.errors import InputError
from bgmgen.music.roll import STEPS_PER_BEAT, roll_to_notes

log = logging.getLogger("bgmgen")

SAMPLE_RATE = 22050  # Hz, the rate the audio is analysed at
N_FFT = 4410  # samples: 200 ms STFT window
HOP_LENGTH = 2205  # samples: 100 ms hop, chroma at 10 Hz
SMOOTH_FRAMES = 21  # boxcar length in 10 Hz frames (2.1 s)
DOWNSAMPLE = 5  # 10 Hz -> 2 Hz
FEATURE_RATE = SAMPLE_RATE / HOP_LENGTH / DOWNSAMPLE  # Hz of the SSM and scape plot (2.0)
N_CHROMA = 12
FILTER_LENGTH = 16  # frames (8 s) averaged along each path-enhancement line
TEMPI = tuple(float(t) for t in 2.0 ** np.linspace(-1.0, 1.0, 7))  # relative tempi, 0.5 .. 2
KEEP_FRACTION = 0.25  # share of (largest) SSM cells kept by the threshold
PENALTY = -2.0  # value of the cells below the threshold
SILENCE_NORM = 1e-3  # frames whose chroma norm is below this count as silence (flat chroma)
SI_BOUNDS = ((3.0, 8.0), (8.0, 15.0), (15.0, None))  # MusDr's SI_short, SI_mid, SI_long, seconds
RENDER_THRESHOLD = 0.5  # roll cells above this are notes


def structure_indicator(audio: np.ndarray, sample_rate: int, low: float = 3, high: float | None = 8) -> float:
    """SI(low, high): the largest fitness of a segment lasting between ``low`` and ``high`` seconds.

    Takes mono ``[samples]`` or multichannel ``[samples, channels]`` audio at any rate. ``high=None``
    means no upper bound. Durations are counted in 2 Hz frames as MusDr does: ``int(2*low)`` to
    ``int(2*high)`` frames inclusive. The default SI(3, 8) is MusDr's "SI_short"; which bounds
    Diff-BGM's reported SI (~0.52) used is not known, and SI_short is the one we compare with it
    (see ``structure_indicators`` for all three). Returns a value in [0, 1]; 0 when the audio is
    shorter than ``low``. Raises InputError for empty audio and ValueError for bad bounds.
    """
    return structure_indicators(audio, sample_rate, ((low, high),))[(low, high)]


def structure_indicators(
    audio: np.ndarray, sample_rate: int, bounds: tuple[tuple[float, float | None], ...] = SI_BOUNDS
) -> dict[tuple[float, float | None], float]:
    """SI for several (low, high) bounds in seconds from one analysis; a dict keyed by the bounds.

    Only the durations inside the bounds are solved, and cost grows with the duration: for a 64-s
    piece SI(3, 8) took 0.3-0.5 s and all three 3-5 s, most of it SI(15, None) (busy 2-core machine).
    """
    ranges = {b: _frame_range(*b) for b in bounds}
    ssm = threshold_ssm(path_enhanced_ssm(chroma_features(audio, sample_rate)))
    n = len(ssm)
    result = {}
    for bound, (lo, hi) in ranges.items():
        if lo > n:
            log.warning("audio of %.1f s is shorter than the SI lower bound of %g s", n / FEATURE_RATE, bound[0])
            result[bound] = 0.0
        else:
            hi = min(hi, n)
            result[bound] = float(fitness_scape_plot(ssm, lo, hi)[lo - 1 : hi].max())
    return result


def _frame_range(low: float, high: float | None) -> tuple[int, int]:
    """Segment durations in frames, first and last inclusive, for bounds in seconds."""
    if not low > 0 or (high is not None and not high >= low):
        raise ValueError(f"SI bounds must satisfy 0 < low <= high, got ({low}, {high})")
    first = max(1, int(low * FEATURE_RATE))
    last = np.iinfo(np.int32).max if high is None else int(high * FEATURE_RATE)
    return first, last


def chroma_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Unit-length chroma vectors at 2 Hz, ``[12, frames]``, from audio at any rate.

    Silent frames get the flat chroma vector, so they are equally (and moderately) similar to all.
    Raises InputError if the audio is empty.
    """
    import librosa
    from scipy.ndimage import convolve1d
    from scipy.signal import resample_poly

    audio = np.asarray(audio, dtype=np.float64)
    mono = audio if audio.ndim == 1 else audio.mean(axis=1)
    if mono.size == 0:
        raise InputError("cannot compute the structure of empty audio")
    if sample_rate != SAMPLE_RATE:
        g = np.gcd(int(sample_rate), SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // g, int(sample_rate) // g)
    # tuning=0: synthesised music is in A440, and estimating the tuning costs seconds per piece.
    chroma = librosa.feature.chroma_stft(
        y=mono.astype(np.float32), sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, tuning=0.0
    ).astype(np.float64)
    smooth = convolve1d(chroma, np.full(SMOOTH_FRAMES, 1.0 / SMOOTH_FRAMES), axis=1, mode="constant")
    frames = smooth[:, ::DOWNSAMPLE]
    norm = np.linalg.norm(frames, axis=0)
    silent = norm < SILENCE_NORM
    frames = frames / np.where(silent, 1.0, norm)
    frames[:, silent] = 1.0 / np.sqrt(N_CHROMA)
    return frames


def self_similarity(chroma: np.ndarray, shift: int = 0) -> np.ndarray:
    """``[frames, frames]`` dot products of ``chroma`` with itself rolled up by ``shift`` semitones."""
    return chroma.T @ np.roll(chroma, shift, axis=0)


def path_enhanced_ssm(
    chroma: np.ndarray,
    filter_length: int = FILTER_LENGTH,
    tempi: tuple[float, ...] = TEMPI,
    shifts: tuple[int, ...] = tuple(range(N_CHROMA)),
) -> np.ndarray:
    """The transposition-invariant, path-enhanced SSM ``[frames, frames]`` of unit-length chroma.

    Each cell becomes the mean of the ``filter_length`` cells on a line through it that moves one
    row per frame and ``tempo`` columns per frame (rounded), forwards or backwards; the result is
    the maximum over tempi, both directions and the chroma ``shifts``. Lines are cut at the matrix
    edge and averaged over the cells inside, so the main diagonal stays exactly 1.
    """
    n = chroma.shape[1]
    stack = np.stack([self_similarity(chroma, s) for s in shifts])  # [shifts, n, n]
    pad_r = filter_length - 1
    pad_c = int(np.ceil(pad_r * max(tempi)))
    padded = np.zeros((len(stack), n + 2 * pad_r, n + 2 * pad_c))
    padded[:, pad_r : pad_r + n, pad_c : pad_c + n] = stack
    inside = np.zeros(padded.shape[1:])
    inside[pad_r : pad_r + n, pad_c : pad_c + n] = 1.0
    best = np.full((n, n), -np.inf)
    for tempo in tempi:
        for direction in (1, -1):
            total = np.zeros_like(stack)
            count = np.zeros((n, n))
            for k in range(filter_length):
                r = pad_r + direction * k
                c = pad_c + direction * int(round(k * tempo))
                total += padded[:, r : r + n, c : c + n]
                count += inside[r : r + n, c : c + n]
            best = np.maximum(best, total.max(axis=0) / count)
    return best


def threshold_ssm(ssm: np.ndarray, keep: float = KEEP_FRACTION, penalty: float = PENALTY) -> np.ndarray:
    """Keep the largest ``keep`` share of cells scaled to [0, 1]; set the others to ``penalty``.

    The threshold is the ``1 - keep`` quantile; kept cells map linearly from [threshold, max] to
    [0, 1]. The main diagonal is set to 1 afterwards, as the fitness measure assumes a segment
    explains itself perfectly.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    cut = np.quantile(ssm, 1.0 - keep)
    top = ssm.max()
    kept = ssm >= cut
    scaled = (ssm - cut) / (top - cut) if top > cut else np.ones_like(ssm)
    out = np.where(kept, scaled, penalty)
    np.fill_diagonal(out, 1.0)
    return out


def fitness_scape_plot(ssm: np.ndarray, min_length: int = 1, max_length: int | None = None) -> np.ndarray:
    """Fitness of every segment: ``plot[duration - 1, start]`` for durations in frames.

    Takes a thresholded SSM (``threshold_ssm``) and optionally the range of durations to compute
    (others stay 0, as do segments running past the end). Fitness is Müller's: the harmonic mean
    of the normalised score ``(score - M) / cells`` and the normalised coverage
    ``(covered - M) / N`` of the segment's optimal path family (M = duration, N = frames); 0 when
    either is not positive. Returns ``[N, N]`` values in [0, 1].
    """
    n = len(ssm)
    max_length = n if max_length is None else min(max_length, n)
    plot = np.zeros((n, n))
    length = max(1, min_length)
    while length <= max_length:
        # Durations are solved in groups of similar length, padded to the longest: far fewer
        # Python-level steps than one duration at a time, at most ~25 % wasted work.
        last = min(max_length, length + max(GROUP_MIN_WIDTH, length // 4))
        lengths = np.arange(length, last + 1)
        starts = np.concatenate([np.arange(n - m + 1) for m in lengths])
        durations = np.repeat(lengths, n - lengths + 1)
        plot[durations - 1, starts] = _fitness(ssm, starts, durations)
        length = last + 1
    return plot


def segment_fitness(ssm: np.ndarray, length: int) -> np.ndarray:
    """Fitness of every segment of ``length`` frames, one value per start (``N - length + 1``)."""
    n = len(ssm)
    return _fitness(ssm, np.arange(n - length + 1), np.full(n - length + 1, length))


GROUP_MIN_WIDTH = 4  # durations solved together at least (see fitness_scape_plot)


def _fitness(ssm: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Fitness of the segments (starts[i], lengths[i]) from their optimal path families."""
    n = len(ssm)
    width = int(lengths.max())
    # columns[r, i, c] = ssm[r, starts[i] + c]; columns past a segment's end are never read.
    padded = np.pad(ssm, ((0, 0), (0, width)), constant_values=PENALTY)
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=1)
    score, cells, covered = _optimal_path_family(np.ascontiguousarray(windows[:, starts, :]), lengths)
    norm_score = (score - lengths) / np.maximum(cells, 1)
    norm_cover = (covered - lengths) / n
    good = (norm_score > 0) & (norm_cover > 0)
    denom = np.where(good, norm_score + norm_cover, 1.0)
    return np.where(good, 2.0 * norm_score * norm_cover / denom, 0.0)


COVER_UNIT = 4096.0  # counts pack as cells + COVER_UNIT * rows covered (both < 4096 frames, exact)
_STEP = 1.0 + COVER_UNIT  # a step that adds one cell and one row: (1, 1), (1, 2), a path's start
_TALL_STEP = 1.0 + 2.0 * COVER_UNIT  # step (2, 1): one cell, two rows


def _optimal_path_family(columns: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score, cell count and rows covered of the optimal path family of each segment.

    ``columns`` is ``[N, segments, W]`` (each segment's SSM columns, padded to W), ``lengths`` the
    segments' durations M <= W. A path family is a set of paths, disjoint in rows, each running
    through all M columns with steps (1, 1), (2, 1) or (1, 2); between paths the family "waits" at
    no cost. Dynamic programming over rows, for all segments and columns at once: state 0 is
    waiting, state m >= 1 is "on a path at segment column m - 1". Each state holds the score and
    the packed counts (cells, rows covered), which ride along with the score: no backtracking.
    """
    n, b, w = columns.shape
    if n >= COVER_UNIT:
        raise InputError(f"too long for the structure indicator: {n} frames (at most {int(COVER_UNIT) - 1})")
    segs = np.arange(b)
    prev = np.zeros((2, b, w + 1))  # row 0: wait (score 0) or start a path at column 0
    prev[0, :, 2:] = -np.inf
    prev[0, :, 1] = columns[0, :, 0]
    prev[1, :, 1] = _STEP
    prev2 = np.zeros((2, b, w + 1))  # row -1: nothing reachable
    prev2[0] = -np.inf
    for r in range(1, n):
        state = np.empty_like(prev)
        # Waiting: keep waiting, or a path ended on the row before.
        end = prev[:, segs, lengths]
        state[:, :, 0] = np.where(end[0] > prev[0, :, 0], end, prev[:, :, 0])
        # A path starts at the segment's first column on this row.
        state[0, :, 1] = state[0, :, 0] + columns[r, :, 0]
        state[1, :, 1] = state[1, :, 0] + _STEP
        if w > 1:
            # Predecessors of states 2..W: (r-1, m-1), (r-2, m-1), (r-1, m-2); the last must be on
            # the path itself, never the waiting state (a path starts at the first column).
            best = prev[:, :, 1:w].copy()
            step = np.full((b, w - 1), _STEP)
            taller = prev2[0, :, 1:w] > best[0]
            np.copyto(best, prev2[:, :, 1:w], where=taller)
            step[taller] = _TALL_STEP
            wider = prev[0, :, : w - 1] > best[0]
            wider[:, 0] = False
            np.copyto(best, prev[:, :, : w - 1], where=wider)
            step[wider] = _STEP
            state[0, :, 2:] = best[0] + columns[r, :, 1:]
            state[1, :, 2:] = best[1] + step
        prev2, prev = prev, state
    end = prev[:, segs, lengths]
    score, counts = np.where(end[0] > prev[0, :, 0], end, prev[:, :, 0])
    covered = np.floor(counts / COVER_UNIT)
    return score, counts - covered * COVER_UNIT, covered


def roll_to_audio(
    roll: np.ndarray, tempo_bpm: float, soundfont: Path | None = None, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Mono float audio of a ``[2, steps, 88]`` roll played on piano at ``tempo_bpm``.

    Cells above 0.5 are notes; the audio lasts exactly the roll's steps. Uses FluidSynth like
    ``audio.render`` but skips its loudness normalisation and limiter, which cost more than the
    whole SI and do not change chroma. An empty roll gives silence. Raises ToolError if FluidSynth
    fails and InputError for a bad SoundFont.
    """
    import pretty_midi

    from bgmgen.sound.render import find_soundfont, read_wav, run_fluidsynth

    seconds_per_step = 60.0 / tempo_bpm / STEPS_PER_BEAT
    n_samples = int(round(roll.shape[1] * seconds_per_step * sample_rate))
    notes = roll_to_notes(roll, threshold=RENDER_THRESHOLD)
    if not notes:
        return np.zeros(n_samples)
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm)
    piano = pretty_midi.Instrument(program=0)
    for note in notes:
        start, end = note.start * seconds_per_step, note.end * seconds_per_step
        piano.notes.append(pretty_midi.Note(velocity=note.velocity, pitch=note.pitch, start=start, end=end))
    midi.instruments.append(piano)
    with tempfile.TemporaryDirectory(prefix="bgmgen-si-") as tmp:
        midi_path = Path(tmp) / "roll.mid"
        midi.write(str(midi_path))
        wav = run_fluidsynth(midi_path, find_soundfont(soundfont), Path(tmp) / "roll.wav", sample_rate)
        samples = read_wav(wav).mean(axis=1)
    # FluidSynth renders the release tail past the last note: cut it, or pad a short render.
    return samples[:n_samples] if len(samples) >= n_samples else np.pad(samples, (0, n_samples - len(samples)))


def structure_indicator_from_roll(
    roll: np.ndarray,
    tempo_bpm: float,
    soundfont: Path | None = None,
    low: float = 3,
    high: float | None = 8,
) -> float:
    """SI(low, high) of a ``[2, steps, 88]`` roll rendered at ``tempo_bpm`` (see ``structure_indicator``)."""
    return structure_indicator(roll_to_audio(roll, tempo_bpm, soundfont), SAMPLE_RATE, low, high)
