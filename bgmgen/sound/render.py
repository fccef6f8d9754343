"""Render a MIDI file to a loudness-normalised stereo WAV with FluidSynth.

`render(midi, wav, duration)` runs the FluidSynth command-line program (`-F` fast render, float
output so nothing clips before we set the level), then in numpy: trims or pads to exactly
`duration`, fades out, normalises integrated loudness (ITU-R BS.1770, `integrated_loudness`) and
keeps every sample under the peak ceiling with a look-ahead gain envelope (`bgmgen.sound.loudness`), and
writes 16-bit PCM atomically. All of it reads FluidSynth's file block by block, so memory does not
grow with the length of the music. `find_soundfont` picks the SoundFont: an explicit one, a large
system one, or ours.

Why the CLI and not pyfluidsynth: the CLI is what Debian's `fluidsynth` package installs, it needs
no extra Python package or ctypes binding to libfluidsynth, and a crash stays in its own process.
Why numpy loudness and not ffmpeg's loudnorm: loudnorm in one pass is a dynamic compressor, and its
linear mode needs two passes and still falls back to dynamic mode when the peak ceiling binds; a
measured static gain plus a transparent limiter is simpler to reason about and to test.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmgen.errors import InputError, ToolError
from bgmgen.files import atomic_output, shipped_path
from bgmgen.sound.loudness import Reader, blocks, level_gain, limited, limited_stems, loudness_of, sum_reader

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
# largest first, because small SoundFonts sound thin ("plastic"). SF2 before SF3: FluidSynth decodes an
# SF3's Ogg samples on load, measured 23.1 s for MuseScore_General_Full.sf3 (86 MB) against 0.63 s for
# FluidR3_GM.sf2 (148 MB) on this project's 2-core machine (docs/benchmarks.md).
PREFERRED_SOUNDFONTS = (
    "FluidR3_GM.sf2",  # Debian fluid-soundfont-gm, 148 MB
    "MuseScore_General*.sf2",
    "FluidR3_GM.sf3",
    "MuseScore_General*.sf3",
)
SHIPPED_SOUNDFONT = "TimGM6mb.sf2"  # 5.7 MiB, GPL-2, see soundfonts/README.md

FLUIDSYNTH_GAIN = 0.5  # synth master gain; the float output does not clip, we set the level later


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
    path = shipped_path("soundfonts", SHIPPED_SOUNDFONT)
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

    n = int(round(duration * sr))
    with tempfile.TemporaryDirectory(prefix="bgmgen-render-") as tmp:
        raw = run_fluidsynth(midi_path, soundfont, Path(tmp) / "raw.wav", sr)
        # Read block by block from the memory-mapped file: the whole track never sits in memory.
        read = _track_reader(raw, n, sr, options.fade_out)
        gain_db = level_gain(read, n, sr, options.target_lufs, options.peak_db)
        if gain_db is None:  # silence stays silence
            music = blocks(read, n)
        else:
            music = limited(read, n, sr, 10.0 ** (gain_db / 20.0), 10.0 ** (options.peak_db / 20.0))
        _write_wav_atomic(out_wav, music, sr)
    return out_wav


def render_stems(
    midis: dict[str, Path | None], out_dir: Path | None, mix_wav: Path, duration: float,
    options: RenderOptions = RenderOptions(), lead: tuple[str, float] | None = None,
) -> dict[str, Path]:
    """Render each role's MIDI alone (``None``: a role with no notes, silent) and write ``out_dir/ROLE.wav``
    for each plus ``mix_wav``, all ``duration`` long and sample-aligned (``out_dir`` None: the mix only).

    The mix is the sum of the role renders, levelled and limited as ``render`` does; every stem gets the
    same gain and the same limiter envelope, so the stems add up to the mix (to 16-bit rounding).
    ``lead = (role, lu)`` first sets that role's render to ``lu`` loudness units against the sum of the
    others (within +-``MAX_LEAD_GAIN_DB``): the tune's balance is set per piece, since how loud a line sounds
    against a band depends on the notes as much as on the instruments' levels.
    FluidSynth runs two at a time, so on two cores a band split in two parts renders faster than in one
    piece (the synthesis is linear: the sum sounds as one render would). Returns ``{role: wav path}`` with
    ``"mix"`` among them.
    """
    from concurrent.futures import ThreadPoolExecutor

    if not duration > 0:
        raise InputError(f"music duration must be positive, got {duration}")
    for path in midis.values():
        if path is not None and not Path(path).is_file():
            raise InputError(f"MIDI file not found: {path}")
    soundfont = find_soundfont(options.soundfont)
    sr = options.sample_rate
    n = int(round(duration * sr))
    roles = list(midis)
    with tempfile.TemporaryDirectory(prefix="bgmgen-stems-") as tmp:
        with ThreadPoolExecutor(max_workers=2) as pool:
            renders = [
                None if midis[role] is None
                else pool.submit(run_fluidsynth, Path(midis[role]), soundfont, Path(tmp) / f"{role}.raw.wav", sr)
                for role in roles
            ]  # fmt: skip
            # The levelling's modules (scipy.signal alone is 0.3 s) are imported while FluidSynth renders: one
            # core is free once the short melody part is done, and elsewhere they would slow the shot detection.
            import scipy.io.wavfile  # noqa: F401
            import scipy.ndimage  # noqa: F401
            import scipy.signal  # noqa: F401

            raws = [None if render is None else render.result() for render in renders]
        silent = lambda start, stop: np.zeros((stop - start, 2))  # noqa: E731
        reads = [silent if raw is None else _track_reader(raw, n, sr, options.fade_out) for raw in raws]
        if lead is not None and lead[0] in roles:  # a silent lead is left as it is (see ``balanced``)
            index = roles.index(lead[0])
            reads[index] = balanced(reads[index], [r for i, r in enumerate(reads) if i != index], lead[1], n, sr)
        gain_db = level_gain(sum_reader(reads), n, sr, options.target_lufs, options.peak_db)
        gain = 1.0 if gain_db is None else 10.0 ** (gain_db / 20.0)
        music = limited_stems(reads, n, sr, gain, 10.0 ** (options.peak_db / 20.0))
        if out_dir is None:
            _write_wav_atomic(Path(mix_wav), (mix for mix, _ in music), sr)
            return {"mix": Path(mix_wav)}
        paths = {role: Path(out_dir) / f"{role}.wav" for role in roles} | {"mix": Path(mix_wav)}
        _write_wavs_atomic(list(paths.values()), music, sr)
    return paths


MAX_LEAD_GAIN_DB = 12.0  # the balance moves a lead by at most this much either way


def balanced(read: Reader, others: list[Reader], lu: float, n: int, sample_rate: int) -> Reader:
    """``read`` scaled so its integrated loudness is ``lu`` LU against the sum of ``others`` (within
    +-MAX_LEAD_GAIN_DB; unchanged when either is silent)."""
    own = loudness_of(blocks(read, n), n, sample_rate)
    rest = loudness_of(blocks(sum_reader(others), n), n, sample_rate) if others else float("-inf")
    if not (np.isfinite(own) and np.isfinite(rest)):
        return read
    gain_db = float(np.clip(rest + lu - own, -MAX_LEAD_GAIN_DB, MAX_LEAD_GAIN_DB))
    log.debug("lead balanced by %+.1f dB", gain_db)
    gain = 10.0 ** (gain_db / 20.0)
    return lambda start, stop: read(start, stop) * gain


def _write_wavs_atomic(paths: list[Path], music, sample_rate: int) -> None:
    """Write blocks ``(mix, [stem, ...])`` to ``paths`` (the stems' files, then the mix's) as 16-bit PCM, each
    through a hidden temp file renamed over it only when all are written."""
    import contextlib
    import wave

    with contextlib.ExitStack() as stack:
        outs = []
        for path in paths:
            tmp = stack.enter_context(atomic_output(path))
            out = stack.enter_context(wave.open(str(tmp), "wb"))
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            outs.append(out)
        for mix, stems in music:
            for out, x in zip(outs, [*stems, mix]):
                out.writeframes(_pcm16(x))


def _pcm16(x: np.ndarray) -> bytes:
    return np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def run_fluidsynth(midi_path: Path, soundfont: Path, raw_wav: Path, sample_rate: int) -> Path:
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
        # Load only the samples the song plays: FluidR3_GM's 148 MB become ~10 MB, 0.1 s less per render.
        "-o", "synth.dynamic-sample-loading=1",
        "-F", str(raw_wav.resolve()),
        str(soundfont.resolve()), str(midi_path.resolve()),
    ]  # fmt: skip
    log.debug("running %s", " ".join(args))
    # Debian's FluidSynth starts SDL's audio at launch even to render a file; SDL's ALSA hotplug thread sleeps
    # 100 ms at a time, and the exit waits for it: 50 ms a render on average. SDL's dummy driver has no thread.
    env = {**os.environ, "SDL_AUDIODRIVER": "dummy"}
    try:
        proc = subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", env=env
        )  # fmt: skip
    except OSError as e:
        raise ToolError(f"could not run fluidsynth: {e}") from e
    # FluidSynth exits 0 even when it cannot load the SoundFont or open the output: read stderr.
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() or "not a SoundFont" in line]
    if proc.returncode != 0 or errors or not raw_wav.is_file() or raw_wav.stat().st_size <= 44:
        tail = " | ".join((errors or proc.stderr.strip().splitlines())[-5:]) or f"exit code {proc.returncode}"
        raise ToolError(f"fluidsynth failed to render {midi_path.name}: {tail}")
    return raw_wav


def read_wav(path: Path) -> np.ndarray:
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
    out = audio.copy()
    out[-n:] *= _fade_ramp(n)[:, None]
    return out


def _fade_ramp(n: int) -> np.ndarray:
    """Gains of an n-sample fade: half a cosine from 1 to 0, smooth at both ends, so neither end clicks."""
    return 0.5 * (1.0 + np.cos(np.pi * np.arange(1, n + 1) / n))


def _track_reader(raw_wav: Path, n: int, sample_rate: int, fade_s: float):
    """A Reader (see bgmgen.sound.loudness) over FluidSynth's WAV: stereo float64, cut or padded to ``n`` frames,
    faded out over the last ``fade_s`` seconds. Each call reads only the frames asked for from the file."""
    from scipy.io import wavfile

    with warnings.catch_warnings():
        # libsndfile adds chunks (PEAK) that scipy does not know and warns about.
        warnings.simplefilter("ignore", wavfile.WavFileWarning)
        _, mapped = wavfile.read(raw_wav, mmap=True)  # parses the header; the samples are not read
    # Plain reads, not the memory map: mapped pages would count as this process's memory once touched.
    dtype, offset, length = mapped.dtype, mapped.offset, len(mapped)
    width = 1 if mapped.ndim == 1 else mapped.shape[1]
    del mapped
    scale = float(np.iinfo(dtype).max + 1) if dtype.kind == "i" else 1.0
    channels = [0, 1] if width >= 2 else [0, 0]  # mono is played on both sides
    fade = min(n, int(round(fade_s * sample_rate)))
    ramp = _fade_ramp(fade) if fade > 0 else np.ones(0)

    def read(start: int, stop: int) -> np.ndarray:
        out = np.zeros((stop - start, 2))  # past FluidSynth's output: silence (padding)
        end = min(stop, length)
        if end > start:
            with open(raw_wav, "rb") as f:
                f.seek(offset + start * width * dtype.itemsize)
                data = np.fromfile(f, dtype, count=(end - start) * width).reshape(-1, width)
            out[: len(data)] = data[:, channels].astype(np.float64) / scale
        # FluidSynth renders the release tail (~3 s) past the last note: frames past n are never asked for.
        if stop > n - fade:
            first = max(start, n - fade)
            out[first - start :] *= ramp[first - (n - fade) : stop - (n - fade), None]
        return out

    return read


def _write_wav_atomic(path: Path, music, sample_rate: int) -> None:
    """Write float blocks [frames, 2] as 16-bit PCM through a hidden temp file in the same folder, then
    rename it over `path`; one block at a time, so the file can be longer than memory."""
    import wave

    with atomic_output(path) as tmp, wave.open(str(tmp), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        for x in music:
            out.writeframes(_pcm16(x))
