"""POP909 loading: beat-grid quantisation, chords per step, window starts; the corpus and its windows.

Uses songs 001 and 002 from tests/data/pop909 and a synthetic song (with a 2-beat bar) whose truth is known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pretty_midi = pytest.importorskip("pretty_midi")
torch = pytest.importorskip("torch")

from bgmgen.evaluation.metrics import chord_tone_ratio  # noqa: E402
from bgmgen.music.conditioning import BAR_FEATURES, bar_features_from_roll  # noqa: E402
from bgmgen.music.harmony import Chord, Key  # noqa: E402
from bgmgen.music.roll import N_PITCHES, PITCH_LOW, STEPS_PER_BAR, WINDOW_STEPS  # noqa: E402
from bgmgen.training.pop909 import SKIPPED_SONGS, Corpus, load_song, song_split  # noqa: E402

from conftest import DATA_DIR

DATA = DATA_DIR / "pop909"


@pytest.fixture(scope="module")
def songs():
    return [load_song(DATA / "001"), load_song(DATA / "002")]


@pytest.fixture(scope="module")
def corpus(songs):
    return Corpus.from_songs(songs)


def beat_times(song_id: str) -> np.ndarray:
    return np.loadtxt(DATA / song_id / "beat_midi.txt", ndmin=2)[:, 0]


def step_at(beats: np.ndarray, t: float) -> int:
    """Nearest sixteenth for time ``t`` with beats interpolated linearly (independent of the code under test)."""
    return int(round(4 * float(np.interp(t, beats, np.arange(len(beats))))))


def midi_notes(song_id: str):
    midi = pretty_midi.PrettyMIDI(str(DATA / song_id / f"{song_id}.mid"))
    return [n for inst in midi.instruments for n in inst.notes]


def test_load_song_shapes_and_key(songs):
    song = songs[0]
    n_steps = 4 * len(beat_times("001"))
    assert song.song_id == "001"
    assert song.roll.shape == (n_steps, 2, N_PITCHES) and song.roll.dtype == np.uint8
    assert song.velocity.shape == (n_steps, N_PITCHES)
    assert song.chroma.shape == (n_steps, 12) and song.root.shape == song.bass.shape == (n_steps,)
    assert song.key == Key.parse("Gb:maj") == Key(6, "major")  # key_audio.txt
    # A velocity exactly where there is an onset.
    assert np.array_equal(song.velocity > 0, song.roll[:, 0] > 0)


@pytest.mark.parametrize("index, song_id", [(0, "001"), (1, "002")])
def test_notes_are_quantised_to_the_beat_grid(songs, index, song_id):
    song, beats, notes = songs[index], beat_times(song_id), midi_notes(song_id)
    onsets = int(song.roll[:, 0].sum())
    # Notes on the same pitch and step (a melody doubled in the piano part) merge; nothing else is lost.
    assert 0.95 * len(notes) <= onsets <= len(notes)
    inside = [n for n in notes if beats[0] <= n.start <= beats[-1]]
    hits = sum(int(song.roll[step_at(beats, n.start), 0, n.pitch - PITCH_LOW]) for n in inside)
    assert hits >= 0.98 * len(inside)
    # A note's sustain runs to its quantised end.
    long_note = max(inside, key=lambda n: n.end - n.start)
    start, end = step_at(beats, long_note.start), step_at(beats, long_note.end)
    assert song.roll[start + 1 : end - 1, 1, long_note.pitch - PITCH_LOW].all()


def test_chords_per_step_match_the_annotation(songs):
    song, beats = songs[0], beat_times("001")
    checked = 0
    for line in (DATA / "001" / "chord_midi.txt").read_text().splitlines():
        start, end, label = line.split()
        if float(end) > beats[-1]:
            continue
        chord = Chord.parse(label)
        middle = step_at(beats, (float(start) + float(end)) / 2)
        assert tuple(song.chroma[middle]) == chord.chroma, line
        assert song.root[middle] == (-1 if chord.is_none else chord.root), line
        assert song.bass[middle] == (-1 if chord.is_none else chord.bass), line
        checked += 1
    assert checked > 140
    # "2.721993 4.055323 B:maj" covers beats 4 and 5 exactly: steps 16..23, after four beats of N.
    assert (song.root[16:24] == 11).all() and song.root[15] == -1 and (song.root[:16] == -1).all()
    # An inversion from the file: "14.055298 14.721963 F#:maj7/5" (beat 21) has C# in the bass.
    assert song.root[4 * 21] == 6 and song.bass[4 * 21] == 1
    assert tuple(song.chroma[4 * 21]) == Chord.parse("F#:maj7").chroma


def test_real_music_mostly_plays_chord_tones(songs):
    for song in songs:
        ratio = chord_tone_ratio(song.roll.transpose(1, 0, 2), song.chroma)
        assert 0.6 < ratio < 1.0, song.song_id


@pytest.mark.parametrize("index, song_id", [(0, "001"), (1, "002")])
def test_window_starts_are_at_bar_starts(songs, index, song_id):
    song = songs[index]
    downbeat = np.loadtxt(DATA / song_id / "beat_midi.txt", ndmin=2)[:, 2] > 0.5
    starts = song.window_starts
    assert len(starts) > 20
    assert (starts % 4 == 0).all() and (starts + WINDOW_STEPS <= len(song.roll)).all()
    for start in starts:
        beat = start // 4
        # Eight whole 4/4 bars: a downbeat every 4 beats and none between.
        assert downbeat[beat : beat + 32].tolist() == ([True, False, False, False] * 8)
    assert (np.diff(starts) == 2 * STEPS_PER_BAR).all()  # every two bars (both songs are regular)


# --- a synthetic song with a 2-beat bar between two runs of whole bars ---------------------------------

BEAT = 0.5  # seconds (120 BPM)
DOWNBEATS = list(range(0, 41, 4)) + list(range(42, 82, 4))  # bars of 4 beats, one of 2 (beats 40-41), then 4 again
N_BEATS = 82


def bar_notes(bar: int) -> int:
    return bar % 5 + 1  # a different number of notes in each bar, so misplaced bars show


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pop909") / "900"
    folder.mkdir()
    lines = [f"{k * BEAT:.6f} {float(k in DOWNBEATS)} {float(k in DOWNBEATS)}" for k in range(N_BEATS)]
    (folder / "beat_midi.txt").write_text("\n".join(lines) + "\n")
    bounds = DOWNBEATS + [N_BEATS]
    labels = ["C:maj", "A:min", "F:maj", "G:7"]
    chords = [f"{a * BEAT:.6f}\t{b * BEAT:.6f}\t{labels[i % 4]}" for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    (folder / "chord_midi.txt").write_text("\n".join(chords) + "\n")
    (folder / "key_audio.txt").write_text(f"0.0\t{N_BEATS * BEAT}\tA:min\n")
    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(0, name="PIANO")
    for bar, beat in enumerate(DOWNBEATS):
        for k in range(bar_notes(bar)):
            t = beat * BEAT  # a chord of n notes on the downbeat, a little late (quantised back), one beat long
            piano.notes.append(pretty_midi.Note(velocity=60 + 10 * k, pitch=48 + 4 * k + bar % 3, start=t + 0.01, end=t + BEAT))
    midi.instruments.append(piano)
    midi.write(str(folder / "900.mid"))
    return folder


def test_synthetic_song_loads_with_known_windows(synthetic):
    song = load_song(synthetic)
    assert song.roll.shape[0] == 4 * N_BEATS
    assert song.key == Key(9, "minor")
    # Run 1 (bars at beats 0..36) has windows at bars 0 and 2; run 2 (from beat 42) one at its first bar.
    assert song.window_starts.tolist() == [0, 32, 4 * 42]
    for bar, beat in enumerate(DOWNBEATS):
        step = 4 * beat
        assert song.roll[step, 0].sum() == bar_notes(bar), bar
        assert song.roll[step + 1 : step + 4, 1].sum() == 3 * bar_notes(bar)  # held for the beat ...
        assert song.roll[step + 4, 1].sum() == 0  # ... and no longer
        assert song.root[step] == [0, 9, 5, 7][bar % 4]


def test_corpus_puts_every_window_on_the_bar_grid(synthetic, songs):
    song = load_song(synthetic)
    corpus = Corpus.from_songs([songs[1], song])
    starts = corpus.window_starts[corpus.window_song == 1]
    assert len(starts) == 3
    assert (corpus.window_starts % STEPS_PER_BAR == 0).all()
    assert len(corpus.roll) % STEPS_PER_BAR == 0 and len(corpus.bar_features) == len(corpus.roll) // STEPS_PER_BAR
    for new, old in zip(starts, song.window_starts):
        assert np.array_equal(corpus.roll[new : new + WINDOW_STEPS], song.roll[old : old + WINDOW_STEPS])
        assert np.array_equal(corpus.root[new : new + WINDOW_STEPS], song.root[old : old + WINDOW_STEPS])
        window = slice(old, old + WINDOW_STEPS)
        roll, velocity = song.roll[window].transpose(1, 0, 2), song.velocity[window]
        want = bar_features_from_roll(roll.astype(np.float32), velocity.astype(np.float32))
        bars = slice(new // STEPS_PER_BAR, new // STEPS_PER_BAR + 8)
        assert np.allclose(corpus.bar_features[bars], want)


# --- the corpus of the two real songs -------------------------------------------------------------------


def test_corpus_concatenates_songs_on_the_bar_grid(songs, corpus):
    assert corpus.song_ids == ["001", "002"]
    assert len(corpus.window_starts) == sum(len(s.window_starts) for s in songs)
    assert (corpus.window_starts % STEPS_PER_BAR == 0).all()
    assert corpus.window_song.tolist() == [0] * len(songs[0].window_starts) + [1] * len(songs[1].window_starts)
    assert corpus.key_tonic.tolist() == [s.key.tonic for s in songs]
    assert corpus.key_minor.tolist() == [False, False]
    for k in (0, len(songs[0].window_starts) + 3):
        song = songs[corpus.window_song[k]]
        old = song.window_starts[k if k < len(songs[0].window_starts) else k - len(songs[0].window_starts)]
        new = corpus.window_starts[k]
        assert np.array_equal(corpus.roll[new : new + WINDOW_STEPS], song.roll[old : old + WINDOW_STEPS])
        assert np.array_equal(corpus.chroma[new : new + WINDOW_STEPS], song.chroma[old : old + WINDOW_STEPS])


def test_windows_as_tensors(corpus):
    index = np.array([0, 7, len(corpus.window_starts) - 1])
    roll, chroma, root, bass, features, segments = corpus.windows(index)
    assert roll.shape == (3, 2, WINDOW_STEPS, N_PITCHES) and roll.dtype == torch.float32
    assert chroma.shape == (3, WINDOW_STEPS, 12) and root.dtype == torch.long
    assert features.shape == (3, 8, len(BAR_FEATURES)) and segments.shape == (3, 8) and segments.sum() == 0
    start = corpus.window_starts[7]
    assert np.array_equal(roll[1].numpy(), corpus.roll[start : start + WINDOW_STEPS].transpose(1, 0, 2))
    assert np.array_equal(root[1].numpy(), corpus.root[start : start + WINDOW_STEPS])
    assert np.allclose(features[1].numpy(), corpus.bar_features[start // 16 : start // 16 + 8])


def test_transposed_windows_shift_notes_and_chords_together(corpus):
    index = np.array([0, 5, 40, 12])
    shift = np.array([3, -4, 0, 5])
    base = corpus.windows(index)
    moved = corpus.windows(index, shift)
    roll0, chroma0, root0, bass0, feat0, _ = (t.numpy() for t in base)
    roll1, chroma1, root1, bass1, feat1, _ = (t.numpy() for t in moved)
    for i, s in enumerate(shift):
        assert roll1[i].sum() == roll0[i].sum()  # nothing pushed off the keyboard here
        assert np.array_equal(np.roll(roll0[i], s, axis=2), roll1[i])
        assert np.array_equal(np.roll(chroma0[i], s, axis=1), chroma1[i])
        assert np.array_equal(root1[i], np.where(root0[i] >= 0, (root0[i] + s) % 12, -1))
        assert np.array_equal(bass1[i], np.where(bass0[i] >= 0, (bass0[i] + s) % 12, -1))
        assert np.allclose(feat1[i][:, 2], np.clip(feat0[i][:, 2] + s / N_PITCHES, 0, 1))
        assert np.array_equal(feat1[i][:, [0, 1, 3]], feat0[i][:, [0, 1, 3]])
        # Harmony is intact: the same share of chord tones before and after.
        assert chord_tone_ratio(roll1[i], chroma1[i]) == pytest.approx(chord_tone_ratio(roll0[i], chroma0[i]))


def test_transposition_drops_notes_pushed_off_the_keyboard(corpus):
    index = np.array([0])
    roll0 = corpus.windows(index)[0].numpy()
    highest = int(np.flatnonzero(roll0[0].sum(axis=(0, 1))).max())
    shift = N_PITCHES - highest  # just enough to push the highest pitch off the top
    roll1 = corpus.windows(index, np.array([shift]))[0].numpy()
    assert roll1.sum() == roll0.sum() - roll0[0, :, :, highest].sum()
    assert roll1[0, :, :, :shift].sum() == 0  # nothing wrapped round to the bottom
    roll2 = corpus.windows(index, np.array([-N_PITCHES]))[0].numpy()
    assert roll2.sum() == 0


def test_save_load_round_trip(corpus, tmp_path):
    corpus.save(tmp_path / "c.npz")
    back = Corpus.load(tmp_path / "c.npz")
    assert back.song_ids == ["001", "002"] and all(isinstance(s, str) for s in back.song_ids)
    for name in ("roll", "chroma", "root", "bass", "bar_features", "window_starts", "window_song", "key_tonic", "key_minor"):
        assert np.array_equal(getattr(back, name), getattr(corpus, name)), name
        assert getattr(back, name).dtype == getattr(corpus, name).dtype, name
    index = np.array([1, 2])
    for a, b in zip(back.windows(index, np.array([2, -2])), corpus.windows(index, np.array([2, -2]))):
        assert torch.equal(a, b)


def test_feature_quantiles(corpus):
    quantiles = corpus.feature_quantiles()
    assert list(quantiles) == list(BAR_FEATURES)
    for low, mid, high in quantiles.values():
        assert 0 <= low <= mid <= high <= 1
    assert quantiles["density"][0] > 0  # empty bars are left out


def test_song_split_is_disjoint_and_skips_bad_songs():
    split = song_split()
    assert set(split) == {"train", "valid", "test"}
    ids = [i for v in split.values() for i in v]
    assert len(ids) == len(set(ids)) > 800
    assert not SKIPPED_SONGS & set(ids)
