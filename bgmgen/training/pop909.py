"""POP909 as training data: beat-aligned quantisation, chords per step, 8-bar windows.

``prepare(root)`` reads every song once (MIDI notes of all three tracks, beat and chord annotations)
into a compact ``Corpus`` of per-step arrays, saved as one ``.npz``; ``Corpus.windows`` then cuts
8-bar windows (with transposition) straight into tensors on any device.

The MELODY track is kept apart from BRIDGE + PIANO (the accompaniment), so a model can learn either
part: ``Corpus.windows(..., part="melody" | "accompaniment" | "all")``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from bgmgen.errors import InputError
from bgmgen.music.conditioning import bar_features_from_roll
from bgmgen.music.harmony import Chord, Key
from bgmgen.music.roll import BARS_PER_WINDOW, N_PITCHES, PITCH_LOW, STEPS_PER_BAR, STEPS_PER_BEAT, WINDOW_STEPS

log = logging.getLogger("bgmgen")

SKIPPED_SONGS = {"034", "203", "215", "254", "280", "328"}  # known bad alignments (as Diff-BGM skips them)
WINDOW_HOP_BARS = 2
SPLIT_FILE = Path(__file__).resolve().parents[1] / "data" / "pop909_split.json"


@dataclass
class Song:
    """One song on its own step grid (4 steps per beat, 4/4 bars from the downbeat annotations)."""

    song_id: str
    roll: np.ndarray  # [steps, 2, 88] uint8, all three tracks
    velocity: np.ndarray  # [steps, 88] uint8, velocity at onsets
    chroma: np.ndarray  # [steps, 12] uint8
    root: np.ndarray  # [steps] int8, -1 none
    bass: np.ndarray  # [steps] int8, -1 none
    window_starts: np.ndarray  # steps where an 8-bar window of whole 4/4 bars begins
    key: Key
    melody: np.ndarray | None = None  # [steps, 2, 88] uint8, the MELODY track alone
    melody_velocity: np.ndarray | None = None  # [steps, 88] uint8
    accompaniment: np.ndarray | None = None  # [steps, 2, 88] uint8, BRIDGE + PIANO
    accompaniment_velocity: np.ndarray | None = None  # [steps, 88] uint8


def load_song(song_dir: Path) -> Song:
    """Quantise one POP909 song folder (``NNN.mid``, ``beat_midi.txt``, ``chord_midi.txt``, ``key_audio.txt``)."""
    import pretty_midi

    song_id = song_dir.name
    beats = np.loadtxt(song_dir / "beat_midi.txt", ndmin=2)
    beat_times = beats[:, 0]
    downbeat = beats[:, 2] > 0.5
    intervals = np.diff(beat_times, append=beat_times[-1] + (beat_times[-1] - beat_times[-2]))
    # Step times interpolate linearly between annotated beats, so tempo drift is followed.
    step_times = (beat_times[:, None] + intervals[:, None] * np.arange(STEPS_PER_BEAT) / STEPS_PER_BEAT).ravel()
    n_steps = len(step_times)

    midi = pretty_midi.PrettyMIDI(str(song_dir / f"{song_id}.mid"))
    tracks = [inst for inst in midi.instruments if not inst.is_drum]
    melody_notes = [n for inst in tracks if inst.name.strip().upper() == "MELODY" for n in inst.notes]
    other_notes = [n for inst in tracks if inst.name.strip().upper() != "MELODY" for n in inst.notes]
    roll, velocity = _quantise(melody_notes + other_notes, step_times)
    melody, melody_velocity = _quantise(melody_notes, step_times)
    accompaniment, accompaniment_velocity = _quantise(other_notes, step_times)

    chroma = np.zeros((n_steps, 12), dtype=np.uint8)
    root = np.full(n_steps, -1, dtype=np.int8)
    bass = np.full(n_steps, -1, dtype=np.int8)
    for line in (song_dir / "chord_midi.txt").read_text().splitlines():
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 3:
            continue
        chord = Chord.parse(parts[2])
        span = (step_times >= float(parts[0]) - 1e-3) & (step_times < float(parts[1]) - 1e-3)
        if chord.is_none or not span.any():
            continue
        chroma[span] = chord.chroma
        root[span] = chord.root
        bass[span] = chord.bass

    key_line = (song_dir / "key_audio.txt").read_text().split("\n")[0].split()
    key = Key.parse(key_line[2]) if len(key_line) >= 3 else Key(0)
    return Song(song_id, roll, velocity, chroma, root, bass, _window_starts(downbeat), key,
                melody, melody_velocity, accompaniment, accompaniment_velocity)


def _quantise(notes: list, step_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A roll ``[steps, 2, 88]`` and onset velocities ``[steps, 88]`` of ``notes`` on the step grid."""
    n_steps = len(step_times)
    roll = np.zeros((n_steps, 2, N_PITCHES), dtype=np.uint8)
    velocity = np.zeros((n_steps, N_PITCHES), dtype=np.uint8)
    if not notes:
        return roll, velocity
    starts = _nearest_step(step_times, np.array([n.start for n in notes]))
    ends = _nearest_step(step_times, np.array([n.end for n in notes]))
    for note, s, e in zip(notes, starts, ends):
        col = note.pitch - PITCH_LOW
        if not 0 <= col < N_PITCHES:
            continue
        e = max(e, s + 1)
        roll[s + 1 : e, 1, col] = 1
        roll[s, 0, col] = 1
        roll[s, 1, col] = 0  # a re-struck note ends the previous one's sustain here
        velocity[s, col] = max(velocity[s, col], note.velocity)
    return roll, velocity


def _nearest_step(step_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    idx = np.clip(np.searchsorted(step_times, times), 1, len(step_times) - 1)
    left_closer = (times - step_times[idx - 1]) < (step_times[idx] - times)
    return np.where(left_closer, idx - 1, idx)


def _window_starts(downbeat: np.ndarray) -> np.ndarray:
    """Start steps of 8 consecutive whole 4/4 bars, every ``WINDOW_HOP_BARS`` bars of each run."""
    down = np.flatnonzero(downbeat)
    whole = np.diff(down) == 4  # bar i (from down[i]) lasts exactly four beats
    starts, run = [], 0
    for i, ok in enumerate(whole):
        run = run + 1 if ok else 0
        first = i - run + 1  # first bar of the current run
        if run >= BARS_PER_WINDOW and (i + 1 - BARS_PER_WINDOW - first) % WINDOW_HOP_BARS == 0:
            starts.append(down[i + 1 - BARS_PER_WINDOW] * STEPS_PER_BEAT)
    return np.array(starts, dtype=np.int64)


def song_split(split_file: Path = SPLIT_FILE) -> dict[str, list[str]]:
    """The committed song-level ``{"train": [...], "valid": [...], "test": [...]}`` split."""
    return json.loads(split_file.read_text())


@dataclass
class Corpus:
    """All songs of one split, concatenated along time, plus where windows may start."""

    roll: np.ndarray  # [total_steps, 2, 88] uint8, all tracks
    chroma: np.ndarray  # [total_steps, 12] uint8
    root: np.ndarray  # [total_steps] int8
    bass: np.ndarray  # [total_steps] int8
    bar_features: np.ndarray  # [total_steps // 16, F] float32, for bars starting at multiples of 16 steps
    window_starts: np.ndarray  # [windows] global start steps (multiples of 16)
    window_song: np.ndarray  # [windows] index into song_ids
    song_ids: list[str]
    key_tonic: np.ndarray  # [songs]
    key_minor: np.ndarray  # [songs] bool
    melody: np.ndarray | None = None  # [total_steps, 2, 88] uint8, POP909's MELODY track
    accompaniment: np.ndarray | None = None  # [total_steps, 2, 88] uint8, BRIDGE + PIANO
    melody_features: np.ndarray | None = None  # [total_steps // 16, F] bar features of the melody alone
    accompaniment_features: np.ndarray | None = None  # [total_steps // 16, F] of the accompaniment alone

    @classmethod
    def from_songs(cls, songs: list[Song]) -> Corpus:
        parts: dict[str, list] = {k: [] for k in ("roll", "chroma", "root", "bass", "feat", "starts", "song",
                                                  "melody", "accompaniment", "melody_feat", "accompaniment_feat")}
        offset = 0
        for i, song in enumerate(songs):
            # Re-lay each song on whole bars so its windows start on multiples of 16 steps.
            source, starts = _bar_grid(song.window_starts, song.roll.shape[0])

            def lay(a: np.ndarray, fill: int = 0) -> np.ndarray:
                out = a[np.maximum(source, 0)]
                out[source < 0] = fill
                return out

            roll, velocity = lay(song.roll), lay(song.velocity)
            parts["roll"].append(roll)
            parts["chroma"].append(lay(song.chroma))
            parts["root"].append(lay(song.root, -1))
            parts["bass"].append(lay(song.bass, -1))
            parts["feat"].append(bar_features_from_roll(roll.transpose(1, 0, 2).astype(np.float32), velocity.astype(np.float32)))
            for part in ("melody", "accompaniment"):
                part_roll = getattr(song, part)
                if part_roll is None:  # a song built without parts: everything is accompaniment
                    part_roll = np.zeros_like(song.roll) if part == "melody" else song.roll
                    part_velocity = np.zeros_like(song.velocity) if part == "melody" else song.velocity
                else:
                    part_velocity = getattr(song, part + "_velocity")
                part_roll, part_velocity = lay(part_roll), lay(part_velocity)
                parts[part].append(part_roll)
                parts[part + "_feat"].append(bar_features_from_roll(part_roll.transpose(1, 0, 2).astype(np.float32), part_velocity.astype(np.float32)))
            parts["starts"].append(starts + offset)
            parts["song"].append(np.full(len(starts), i))
            offset += len(source)
        return cls(
            roll=np.concatenate(parts["roll"]),
            chroma=np.concatenate(parts["chroma"]),
            root=np.concatenate(parts["root"]),
            bass=np.concatenate(parts["bass"]),
            bar_features=np.concatenate(parts["feat"]),
            window_starts=np.concatenate(parts["starts"]).astype(np.int64),
            window_song=np.concatenate(parts["song"]).astype(np.int64),
            song_ids=[s.song_id for s in songs],
            key_tonic=np.array([s.key.tonic for s in songs]),
            key_minor=np.array([s.key.mode == "minor" for s in songs]),
            melody=np.concatenate(parts["melody"]),
            accompaniment=np.concatenate(parts["accompaniment"]),
            melody_features=np.concatenate(parts["melody_feat"]),
            accompaniment_features=np.concatenate(parts["accompaniment_feat"]),
        )

    def save(self, path: Path) -> None:
        # Only the fields: ``windows`` caches device tensors in the instance too.
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "song_ids"}
        np.savez_compressed(path, **arrays, song_ids=np.array(self.song_ids))

    @classmethod
    def load(cls, path: Path) -> Corpus:
        with np.load(path) as data:
            fields = {k: data[k] for k in data.files}
        fields["song_ids"] = [str(s) for s in fields["song_ids"]]
        return cls(**fields)

    def part_roll(self, part: str = "all") -> np.ndarray:
        """The roll of one part: ``all`` (every track), ``melody`` or ``accompaniment``."""
        return {"all": self.roll, "melody": self.melody, "accompaniment": self.accompaniment}[part]

    def part_features(self, part: str = "all") -> np.ndarray:
        """The bar features measured on one part alone."""
        return {"all": self.bar_features, "melody": self.melody_features, "accompaniment": self.accompaniment_features}[part]

    def feature_quantiles(self, part: str = "all") -> dict[str, list[float]]:
        """5th, 50th and 95th percentiles of each bar feature of ``part`` over its non-empty bars."""
        from bgmgen.music.conditioning import BAR_FEATURES

        features = self.part_features(part)
        busy = features[features[:, 0] > 0]
        return {name: np.percentile(busy[:, i], [5, 50, 95]).round(4).tolist() for i, name in enumerate(BAR_FEATURES)}

    def windows(self, index: np.ndarray, transpose: np.ndarray | None = None, device="cpu", part: str = "all"):
        """Windows ``index`` (into ``window_starts``) as tensors, transposed by ``transpose`` semitones.

        Returns ``(roll [B, 2, T, 88] float, chroma, root, bass, bar_features, segment_ids)`` of
        ``part`` (see ``part_roll``; the bar features are that part's); segment ids are left to the
        caller (all zeros here).
        """
        import torch

        starts = torch.as_tensor(self.window_starts[index], device=device)
        steps = starts[:, None] + torch.arange(WINDOW_STEPS, device=device)
        bars = starts[:, None] // STEPS_PER_BAR + torch.arange(BARS_PER_WINDOW, device=device)
        tensors = self._device_tensors(device)
        roll = tensors[part][steps].float().permute(0, 2, 1, 3)  # [B, 2, T, 88]
        chroma = tensors["chroma"][steps].float()
        root = tensors["root"][steps].long()
        bass = tensors["bass"][steps].long()
        features = tensors[part + "_features"][bars].clone()
        if transpose is not None:
            shift = torch.as_tensor(transpose, device=device)
            roll = _shift_pitch(roll, shift)
            pcs = (torch.arange(12, device=device)[None, :] - shift[:, None]) % 12
            chroma = torch.gather(chroma, 2, pcs[:, None, :].expand_as(chroma))
            root = torch.where(root >= 0, (root + shift[:, None]) % 12, root)
            bass = torch.where(bass >= 0, (bass + shift[:, None]) % 12, bass)
            features[:, :, 2] = (features[:, :, 2] + shift[:, None] / N_PITCHES).clamp(0, 1)
        segments = torch.zeros(len(index), BARS_PER_WINDOW, dtype=torch.long, device=device)
        return roll, chroma, root, bass, features, segments

    def _device_tensors(self, device) -> dict:
        import torch

        cache = self.__dict__.setdefault("_tensor_cache", {})
        key = str(device)
        if key not in cache:
            cache[key] = {
                "all": torch.as_tensor(self.roll, device=device),
                "melody": torch.as_tensor(self.melody, device=device),
                "accompaniment": torch.as_tensor(self.accompaniment, device=device),
                "all_features": torch.as_tensor(self.bar_features, device=device),
                "melody_features": torch.as_tensor(self.melody_features, device=device),
                "accompaniment_features": torch.as_tensor(self.accompaniment_features, device=device),
                "chroma": torch.as_tensor(self.chroma, device=device),
                "root": torch.as_tensor(self.root, device=device),
                "bass": torch.as_tensor(self.bass, device=device),
            }
        return cache[key]


def _bar_grid(window_starts: np.ndarray, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Lay a song out so every window starts on a multiple of 16 steps and it ends on a whole bar.

    Returns the source step of every new step (-1 = inserted silence) and the new window starts.
    Windows lie inside runs of whole 4/4 bars, so within a run they share one phase; a bar of
    another length between runs shifts the next run's phase, and silence is inserted just before its
    first window (never inside a window), which keeps ``bar_features`` rows on the windows' bars.
    """
    pieces, new_starts = [], []
    src = out = 0  # steps of the song consumed, steps laid out
    for start in window_starts:
        pad = -(out + start - src) % STEPS_PER_BAR
        if pad:
            pieces += [np.arange(src, start), np.full(pad, -1)]
            out, src = out + start - src + pad, start
        new_starts.append(out + start - src)
    pieces.append(np.arange(src, n_steps))
    out += n_steps - src
    pieces.append(np.full(-out % STEPS_PER_BAR, -1))
    return np.concatenate(pieces).astype(np.int64), np.array(new_starts, dtype=np.int64)


def _shift_pitch(roll, shift):
    """Shift rolls [B, 2, T, 88] up by ``shift`` [B] semitones, dropping notes pushed off the keyboard."""
    import torch

    cols = torch.arange(N_PITCHES, device=roll.device)[None, :] - shift[:, None]  # source column
    valid = (cols >= 0) & (cols < N_PITCHES)
    gathered = torch.gather(roll, 3, cols.clamp(0, N_PITCHES - 1)[:, None, None, :].expand_as(roll))
    return gathered * valid[:, None, None, :]


def prepare(root: Path, out_dir: Path, progress: Callable[[int, int], None] | None = None) -> dict[str, Path]:
    """Quantise every POP909 song into one corpus file per split under ``out_dir``."""
    split = song_split()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    all_ids = [i for ids in split.values() for i in ids]
    done = 0
    for name, ids in split.items():
        songs = []
        for song_id in ids:
            song_dir = root / song_id
            try:
                songs.append(load_song(song_dir))
            except (OSError, ValueError, IndexError) as exc:
                log.warning("skipping POP909 song %s: %s", song_id, exc)
            done += 1
            if progress:
                progress(done, len(all_ids))
        if not songs:
            raise InputError(f"{root}: none of the {name} split's POP909 songs were found (point --data at POP909)")
        paths[name] = out_dir / f"pop909_{name}.npz"
        Corpus.from_songs(songs).save(paths[name])
    return paths
