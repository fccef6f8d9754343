"""Progression bank: building from POP909 annotations, sampling in a key, JSON, the packaged bank."""


import numpy as np
import pytest

from bgmgen.errors import BgmgenError, ModelError
from bgmgen.music.harmony import Chord, Key
from bgmgen.music.progressions import ModeBank, ProgressionBank, is_tonic, roman
from bgmgen.training.progression_bank import build_progression_bank, song_windows

from conftest import DATA_DIR

POP909 = DATA_DIR / "pop909"


@pytest.fixture(scope="module")
def small_bank() -> ProgressionBank:
    return build_progression_bank(POP909)


def test_song_windows_are_relative_to_the_key():
    # Song 001 is in Gb major; its first window (bar 2, after an N bar and a bar of B C#) is
    # Bbm Ebm | B C# | F# | B C#: iii vi IV V I I IV V.
    windows = song_windows(POP909 / "001")
    assert windows and all(mode == "major" for mode, _ in windows)
    assert all(len(labels) == 8 and "N" not in labels for _, labels in windows)
    first = windows[0][1]
    assert first[:8] == ("E:min", "A:min", "F:maj", "G:maj", "C:maj", "C:maj", "F:maj", "G:maj")


def test_bank_from_two_songs(small_bank):
    assert small_bank.n_songs == 2
    progressions = small_bank.major.progressions
    assert len(progressions) > 5
    counts = [count for _, count in progressions]
    assert counts == sorted(counts, reverse=True) and counts[0] >= 2
    # Relative to C: the tonic and the dominant are the commonest roots.
    roots = [Chord.parse(label).root for labels, _ in progressions for label in labels]
    assert {0, 7} <= set(roots)
    assert all(is_tonic(labels[-1], "major") for labels, _ in small_bank.major.cadences)
    assert small_bank.minor.progressions == ()


def test_sample_transposes_into_the_key(small_bank):
    rng = np.random.default_rng(0)
    chords = small_bank.sample(Key.parse("D major"), 6, rng, cadence=True)
    assert len(chords) == 12
    # Every chord of the C-relative bank, moved up two semitones, must be a drawn chord.
    relative = {Chord.parse(label).root for labels, _ in small_bank.major.progressions for label in labels}
    assert {(c.root - 2) % 12 for c in chords} <= relative | {0, 7, 5}
    assert chords[-1].root == 2 and chords[-1].quality in ("maj", "maj7", "maj6", "maj9")
    in_scale = sum(c.root in Key.parse("D major").scale for c in chords)
    assert in_scale >= 10


def test_sample_is_deterministic_and_seeds_differ(small_bank):
    key = Key.parse("A major")
    a = small_bank.sample(key, 8, np.random.default_rng(3))
    b = small_bank.sample(key, 8, np.random.default_rng(3))
    assert a == b
    others = [small_bank.sample(key, 8, np.random.default_rng(seed)) for seed in range(4, 10)]
    assert any(o != a for o in others)


def test_sample_lengths_and_one_bar_cadence(small_bank):
    key = Key.parse("C major")
    for n_bars in (1, 2, 3, 5, 9):
        assert len(small_bank.sample(key, n_bars, np.random.default_rng(1), cadence=True)) == 2 * n_bars
    for seed in range(10):
        one = small_bank.sample(key, 1, np.random.default_rng(seed), cadence=True)
        assert is_tonic(one[1].harte, "major") and not is_tonic(one[0].harte, "major")
    with pytest.raises(BgmgenError):
        small_bank.sample(Key.parse("A minor"), 4, np.random.default_rng(0))  # no minor songs
    with pytest.raises(BgmgenError):
        small_bank.sample(key, 0, np.random.default_rng(0))


def test_fallback_cadence_without_cadences():
    bank = ProgressionBank(ModeBank(((("D:min",) * 4 + ("G:maj",) * 4, 1),), ()), ModeBank((), ()), 1)
    chords = bank.sample(Key.parse("F major"), 4, np.random.default_rng(0), cadence=True)
    assert chords[-1] == Chord.parse("F:maj") and chords[-3] == Chord.parse("C:maj")
    assert chords[0] == Chord.parse("G:min")


def test_json_round_trip(small_bank, tmp_path):
    path = tmp_path / "bank.json"
    small_bank.save(path)
    assert ProgressionBank.load(path) == small_bank


def test_load_errors(tmp_path):
    with pytest.raises(ModelError, match="cannot read"):
        ProgressionBank.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "n_songs": 1, "major": {"progressions": [["C:maj G:maj", 3]], "cadences": []}}')
    with pytest.raises(ModelError, match="malformed"):
        ProgressionBank.load(bad)


def test_packaged_bank_looks_like_pop():
    bank = ProgressionBank.load()
    assert bank.n_songs > 800
    for mode in ("major", "minor"):
        mode_bank = bank.mode_bank(mode)
        assert len(mode_bank.progressions) == 300 and len(mode_bank.cadences) > 50
        top = {" ".join(roman(label) for label in labels) for labels, _ in mode_bank.progressions[:10]}
        assert top
    major_top = {" ".join(roman(label) for label in labels) for labels, _ in bank.major.progressions[:10]}
    assert "I I vi vi IV IV V V" in major_top
    assert " ".join(roman(label) for label in bank.major.cadences[0][0]) == "V V I I"


def test_roman():
    assert roman("A:min7") == "vi7"
    assert roman("G:maj/3") == "V/3"
    assert roman("Bb:maj") == "bVII"
    assert roman("B:hdim7") == "viio7"
    assert roman("N") == "N"
