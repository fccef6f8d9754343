"""Render a MIDI file to a loudness-normalised stereo WAV with FluidSynth.

`render(midi, wav, duration)` runs the FluidSynth command-line program (`-F` fast render, float
output so nothing clips before we set the level), then in numpy: trims or pads to exactly
`duration`, fades out, normalises integrated loudness (ITU-R BS.1770, `integrated_loudness`) and
keeps every sample under the peak ceiling with a look-ahead gain envelope, and writes 16-bit PCM
atomically. `find_soundfont` picks the SoundFont: an explicit one, a large system one, or ours.

Why the CLI and not pyfluidsynth: the CLI is what Debian's `fluidsynth` package installs, it needs
no extra Python package or ctypes binding to libfluidsynth, and a crash stays in its own process.
Why numpy loudness and not ffmpeg's loudnorm: loudnorm in one pass is a dynamic compressor, and its
linear mode needs two passes and still falls back to dynamic mode when the peak ceiling binds; a
measured static gain plus a transparent limiter is simpler to reason about and to test.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmgen.errors import InputError, ToolError
from bgmgen.files import atomic_output

log = logging.getLogger("bgmgen")

SOUNDFONT_SUFFIXES = (".sf2", ".sf3")
# Where Linux distributions install SoundFonts (Debian/Ubuntu, Fedora/Arch, hand installs).
SYSTEM_SOUNDFONT_DIRS = (
    Path("/usr/share/sounds/sf2"),
    Path("/usr/share/sounds/sf3"),
    Path("/usr/share/soundfonts"),
    Path("/usr/local/share/soundfonts"),
)
# Known good General MIDI SoundFonts, best first (glob patterns); any other found comes after,
# largest first, because small SoundFonts sound thin ("plastic").
PREFERRED_SOUNDFONTS = (
    "FluidR3_GM.sf2",  # Debian fluid-soundfont-gm, 148 MB
    "FluidR3_GM.sf3",
    "MuseScore_General*.sf2",
    "MuseScore_General*.sf3",
)
SHIPPED_SOUNDFONT = "TimGM6mb.sf2"  # 5.7 MiB, GPL-2, see soundfonts/README.md

FLUIDSYNTH_GAIN = 0.5  # synth master gain; the float output does not clip, we set the level later
BLOCK_S = 0.400  # BS.1770 gating block length, seconds
BLOCK_HOP_S = 0.100  # 75 % overlap between gating blocks
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LIMITER_RAMP_S = 0.040  # limiter attack (look-ahead) and release ramp, seconds
MAX_GAIN_DB = 40.0  # never amplify near-silence into noise
MAX_LIMITING_DB = 6.0  # most gain the limiter may take off peaks; past it we stay below target
LEVEL_PASSES = 3  # gain/limit passes: limiting lowers loudness a little, the next pass makes it up


@dataclass(frozen=True)
class RenderOptions:
    """How to turn MIDI into the music track."""

    soundfont: Path | None = None  # None: find_soundfont(None)
    sample_rate: int = 44100  # Hz, of the WAV written
    target_lufs: float = -16.0  # integrated loudness target of the music (BS.1770, LUFS)
    peak_db: float = -1.0  # sample-peak ceiling in dBFS; nothing goes above it
    fade_out: float = 1.5  # seconds of fade at the end


def find_soundfont(explicit: Path | None, search_dirs: tuple[Path, ...] = SYSTEM_SOUNDFONT_DIRS) -> Path:
    """Choose the SoundFont to render with.

    Takes an explicit path (the `--soundfont` option) or None, and the folders to search.
    Returns the explicit path if given; else the best system SoundFont (FluidR3_GM, then
    MuseScore_General, then the largest other .sf2/.sf3); else the one shipped in `soundfonts/`.
    Raises InputError if the explicit path is missing or not a SoundFont, and ToolError if none
    can be found at all.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.suffix.lower() not in SOUNDFONT_SUFFIXES:
            raise InputError(f"not a SoundFont (expected .sf2 or .sf3): {path}")
        if not path.is_file():
            raise InputError(f"SoundFont not found: {path}")
        if not _is_soundfont(path):
            raise InputError(f"not a valid SoundFont file: {path}")
        return path
    for path in _system_soundfonts(search_dirs):
        log.debug("using system SoundFont %s", path)
        return path
    for path in _shipped_soundfont_paths():
        if _is_soundfont(path):
            log.debug("using shipped SoundFont %s", path)
            return path
    raise ToolError("no SoundFont found; install one with: apt-get install fluid-soundfont-gm")


def _system_soundfonts(search_dirs: tuple[Path, ...]) -> list[Path]:
    """System SoundFonts, best first, each valid and listed once (symlinks resolved)."""
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        real = path.resolve()
        if real not in seen and path.is_file() and _is_soundfont(path):
            seen.add(real)
            found.append(path)

    for pattern in PREFERRED_SOUNDFONTS:
        for folder in search_dirs:
            for path in sorted(folder.glob(pattern)) if folder.is_dir() else ():
                add(path)
    others = [
        p
        for folder in search_dirs
        if folder.is_dir()
        for p in folder.iterdir()
        if p.suffix.lower() in SOUNDFONT_SUFFIXES and p.is_file()
    ]
    for path in sorted(others, key=lambda p: (-p.stat().st_size, p.name)):
        add(path)
    return found


def _shipped_soundfont_paths() -> list[Path]:
    """Where our own SoundFont lives: the repository (source or editable install), or data files."""
    package_dir = Path(__file__).resolve().parent
    return [
        package_dir.parent / "soundfonts" / SHIPPED_SOUNDFONT,
        Path(sys.prefix) / "share" / "bgmgen" / "soundfonts" / SHIPPED_SOUNDFONT,
    ]


def _is_soundfont(path: Path) -> bool:
    """True if the file starts like a SoundFont: a RIFF chunk of form type 'sfbk'."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"sfbk"


def render(midi_path: Path, out_wav: Path, duration: float, options: RenderOptions = RenderOptions()) -> Path:
    """Render `midi_path` to `out_wav`: stereo 16-bit PCM, exactly `duration` seconds long.

    The music is faded out over the last `options.fade_out` seconds, brought to
    `options.target_lufs` and kept under `options.peak_db`. The file is written atomically.
    Returns `out_wav`. Raises InputError (missing MIDI, bad SoundFont, duration <= 0), ToolError
    (FluidSynth missing or failing, with its stderr) and OutputError (cannot write `out_wav`).
    """
    midi_path, out_wav = Path(midi_path), Path(out_wav)
    if not midi_path.is_file():
        raise InputError(f"MIDI file not found: {midi_path}")
    if not duration > 0:
        raise InputError(f"music duration must be positive, got {duration}")
    soundfont = find_soundfont(options.soundfont)
    sr = options.sample_rate

    with tempfile.TemporaryDirectory(prefix="bgmgen-render-") as tmp:
        raw = _run_fluidsynth(midi_path, soundfont, Path(tmp) / "raw.wav", sr)
        audio = _read_wav(raw)

    n = int(round(duration * sr))
    # FluidSynth renders the release tail (~3 s) past the last note: cut it; pad if short.
    audio = audio[:n] if len(audio) >= n else np.pad(audio, ((0, n - len(audio)), (0, 0)))
    audio = apply_fade_out(audio, sr, options.fade_out)
    audio = normalise(audio, sr, options.target_lufs, options.peak_db)
    _write_wav_atomic(out_wav, audio, sr)
    return out_wav


def _run_fluidsynth(midi_path: Path, soundfont: Path, raw_wav: Path, sample_rate: int) -> Path:
    """Run FluidSynth's fast render to a float WAV; return its path or raise ToolError."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise ToolError("fluidsynth is not installed; install it with: apt-get install fluidsynth")
    # Absolute paths: a name starting with '-' would otherwise be read as an option.
    args = [
        exe, "-n", "-i", "-q",
        "-g", str(FLUIDSYNTH_GAIN),
        "-r", str(sample_rate),
        "-T", "wav", "-O", "float",
        "-F", str(raw_wav.resolve()),
        str(soundfont.resolve()), str(midi_path.resolve()),
    ]  # fmt: skip
    log.debug("running %s", " ".join(args))
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    except OSError as e:
        raise ToolError(f"could not run fluidsynth: {e}") from e
    # FluidSynth exits 0 even when it cannot load the SoundFont or open the output: read stderr.
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() or "not a SoundFont" in line]
    if proc.returncode != 0 or errors or not raw_wav.is_file() or raw_wav.stat().st_size <= 44:
        tail = " | ".join((errors or proc.stderr.strip().splitlines())[-5:]) or f"exit code {proc.returncode}"
        raise ToolError(f"fluidsynth failed to render {midi_path.name}: {tail}")
    return raw_wav


def _read_wav(path: Path) -> np.ndarray:
    """Read a WAV as float64 samples of shape (frames, 2) in [-1, 1] full scale."""
    from scipy.io import wavfile

    with warnings.catch_warnings():
        # libsndfile adds chunks (PEAK) that scipy does not know and warns about.
        warnings.simplefilter("ignore", wavfile.WavFileWarning)
        _, data = wavfile.read(path)
    if data.dtype.kind == "i":
        audio = data.astype(np.float64) / float(np.iinfo(data.dtype).max + 1)
    else:
        audio = data.astype(np.float64)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.shape[1] == 1:
        audio = np.repeat(audio, 2, axis=1)
    return audio[:, :2]


def apply_fade_out(audio: np.ndarray, sample_rate: int, fade_s: float) -> np.ndarray:
    """Return `audio` (frames, channels) with a raised-cosine fade to silence over its last `fade_s`."""
    n = min(len(audio), int(round(fade_s * sample_rate)))
    if n <= 0:
        return audio
    # Half a cosine from 1 to 0: smooth at both ends, so neither end clicks.
    ramp = 0.5 * (1.0 + np.cos(np.pi * np.arange(1, n + 1) / n))
    out = audio.copy()
    out[-n:] *= ramp[:, None]
    return out


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


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4: K-weighting, 400 ms blocks, two gates).

    Takes samples of shape (frames,) or (frames, channels), full scale 1.0; every channel is
    weighted 1 (left/right). Returns -inf for silence (nothing above the -70 LUFS gate).
    """
    from scipy.signal import lfilter

    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    for b, a in _k_weighting(sample_rate):
        x = lfilter(b, a, x, axis=0)

    block, hop = int(round(BLOCK_S * sample_rate)), int(round(BLOCK_HOP_S * sample_rate))
    block = min(block, len(x))  # shorter than one block: measure the whole thing
    if block == 0:
        return float("-inf")
    # Mean square per block and channel from a running sum of squares, summed over channels.
    csum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x * x, axis=0)])
    starts = np.arange(0, len(x) - block + 1, hop)
    energy = ((csum[starts + block] - csum[starts]) / block).sum(axis=1)

    def lufs(e: np.ndarray | float) -> np.ndarray | float:
        return -0.691 + 10.0 * np.log10(np.maximum(e, 1e-30))

    energy = energy[lufs(energy) > ABSOLUTE_GATE_LUFS]
    if energy.size == 0:
        return float("-inf")
    energy = energy[lufs(energy) > lufs(energy.mean()) + RELATIVE_GATE_LU]
    return float(lufs(energy.mean()))


def limit_peaks(audio: np.ndarray, sample_rate: int, ceiling: float) -> np.ndarray:
    """Return `audio` with no sample above `ceiling` (linear), by a smooth look-ahead gain.

    The gain needed at each sample is spread by a minimum filter and then smoothed by a moving
    average half as wide, so it ramps down before each peak and back up after it, and by
    construction never exceeds the gain that peak needs.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    peak = np.abs(audio).max(axis=1)
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    if need.min() >= 1.0:
        return audio
    half = max(1, int(round(LIMITER_RAMP_S * sample_rate)))
    gain = minimum_filter1d(need, size=2 * half + 1, mode="nearest")
    gain = uniform_filter1d(gain, size=2 * (half // 2) + 1, mode="nearest")
    # The running-sum average may overshoot by rounding: clip as a last guard.
    return np.clip(audio * gain[:, None], -ceiling, ceiling)


def normalise(audio: np.ndarray, sample_rate: int, target_lufs: float, peak_db: float) -> np.ndarray:
    """Bring `audio` to `target_lufs` integrated loudness, limited to `peak_db` dBFS sample peak.

    Returns new samples. Silence is returned unchanged. The gain is capped at +MAX_GAIN_DB and
    at MAX_LIMITING_DB of limiting; very peaky music stays quieter than the target.
    """
    ceiling = 10.0 ** (peak_db / 20.0)
    measured = integrated_loudness(audio, sample_rate)
    if not np.isfinite(measured):
        log.warning("the rendered music is silent; leaving it silent")
        return audio
    # Squashing peaks by more than a few dB to reach the target sounds worse than being quiet.
    peak_dbfs = 20.0 * np.log10(np.abs(audio).max())
    max_gain_db = min(MAX_GAIN_DB, peak_db - peak_dbfs + MAX_LIMITING_DB)
    gain_db = min(target_lufs - measured, max_gain_db)
    for _ in range(LEVEL_PASSES):
        out = limit_peaks(audio * 10.0 ** (gain_db / 20.0), sample_rate, ceiling)
        reached = integrated_loudness(out, sample_rate)
        if abs(reached - target_lufs) < 0.1 or gain_db >= max_gain_db:
            break
        gain_db = min(gain_db + target_lufs - reached, max_gain_db)
    log.debug("music loudness %.1f LUFS, gain %+.1f dB, now %.1f LUFS", measured, gain_db, reached)
    if reached < target_lufs - 1.0:
        log.info("music is %.1f LU below the loudness target: its peaks limit it", target_lufs - reached)
    return out


def _write_wav_atomic(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM through a hidden temp file in the same folder, then rename over `path`."""
    from scipy.io import wavfile

    pcm = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        wavfile.write(f, sample_rate, pcm)

