"""Chord and key parsing (POP909's Harte labels), chroma, transposition and chord recognition."""

from __future__ import annotations

import pytest

from bgmgen.music.harmony import NO_CHORD, Chord, Key, chord_from_pitch_classes, parse_pitch_class

C, Cs, D, Eb, E, F, Fs, G, Ab, A, Bb, B = range(12)


@pytest.mark.parametrize(
    "name, pc",
    [("C", 0), ("C#", 1), ("Db", 1), ("Eb", 3), ("F#", 6), ("Gb", 6), ("Cb", 11), ("B#", 0), ("Bbb", 9), ("a", 9)],
)
def test_parse_pitch_class(name, pc):
    assert parse_pitch_class(name) == pc


@pytest.mark.parametrize("name", ["", "H", "C+", "Cx"])
def test_parse_pitch_class_rejects_non_names(name):
    with pytest.raises(ValueError):
        parse_pitch_class(name)


@pytest.mark.parametrize(
    "label, root, quality, bass, pcs",
    [
        ("E:min7", E, "min7", E, {E, G, B, D}),
        ("B:maj", B, "maj", B, {B, Eb, Fs}),
        ("F#:maj7/5", Fs, "maj7", Cs, {Fs, Bb, Cs, F}),  # /5: the fifth in the bass
        ("Eb:min/b3", Eb, "min", Fs, {Eb, Fs, Bb}),  # /b3: minor third
        ("E:min7/b7", E, "min7", D, {E, G, B, D}),
        ("Bb:maj/3", Bb, "maj", D, {Bb, D, F}),
        ("F#:7/5", Fs, "7", Cs, {Fs, Bb, Cs, E}),
        ("C:sus4(b7)", C, "sus4(b7)", C, {C, F, G, Bb}),
        ("Bb:sus4", Bb, "sus4", Bb, {Bb, Eb, F}),
        ("A:hdim7", A, "hdim7", A, {A, C, Eb, G}),
        ("G:maj/B", G, "maj", B, {G, B, D}),  # bass as a note name, as Chord.label writes it
        ("D:min/F", D, "min", F, {D, F, A}),
        ("C", C, "maj", C, {C, E, G}),  # no quality: major
    ],
)
def test_chord_parse(label, root, quality, bass, pcs):
    chord = Chord.parse(label)
    assert (chord.root, chord.quality, chord.bass) == (root, quality, bass)
    assert set(chord.pitch_classes) == pcs
    assert chord.chroma == tuple(int(pc in pcs) for pc in range(12))


def test_unknown_qualities_fall_back_to_their_triad():
    assert Chord.parse("C:min11").quality == "min"
    assert Chord.parse("C:maj13").quality == "maj"
    assert Chord.parse("C:(1,3,5)").pitch_classes == (C, E, G)


@pytest.mark.parametrize("label", ["N", "X", "", "  N "])
def test_no_chord(label):
    chord = Chord.parse(label)
    assert chord.is_none and chord == NO_CHORD
    assert chord.pitch_classes == () and chord.chroma == (0,) * 12
    assert chord.label == "N" and chord.harte == "N"
    assert chord.transpose(5) == NO_CHORD


@pytest.mark.parametrize("label", ["F#:maj7/5", "Eb:min/b3", "E:min7/b7", "Bb:maj/3", "A:sus2", "C:maj", "Ab:dim7", "D:7/b7"])
def test_label_and_harte_read_back_to_the_same_chord(label):
    chord = Chord.parse(label)
    assert Chord.parse(chord.label) == chord
    assert Chord.parse(chord.harte) == chord


def test_label_and_harte_spelling():
    chord = Chord(G, "maj", B)
    assert chord.label == "G:maj/B"
    assert chord.harte == "G:maj/3"
    assert str(Chord(A, "min", A)) == "A:min"


def test_transpose_moves_root_bass_and_chroma():
    chord = Chord.parse("A:min/b3")  # A minor over C
    up = chord.transpose(3)
    assert (up.root, up.quality, up.bass) == (C, "min", Eb)
    assert up.chroma == tuple(chord.chroma[(pc - 3) % 12] for pc in range(12))
    assert chord.transpose(-9) == up.transpose(-12)
    assert chord.transpose(12) == chord


@pytest.mark.parametrize(
    "text, tonic, mode",
    [("Gb:maj", Fs, "major"), ("A:min", A, "minor"), ("C major", C, "major"), ("A minor", A, "minor"),
     ("Am", A, "minor"), ("F#m", Fs, "minor"), ("Ebm", Eb, "minor"), ("Eb", Eb, "major"), (" D:minor ", D, "minor")],
)
def test_key_parse(text, tonic, mode):
    assert Key.parse(text) == Key(tonic, mode)


def test_key_parse_rejects_non_keys():
    with pytest.raises(ValueError):
        Key.parse("H major")


def test_key_scales_and_label():
    assert Key(C).scale == (0, 2, 4, 5, 7, 9, 11)
    assert set(Key(A, "minor").scale) == set(Key(C).scale)  # relative keys
    assert set(Key(E, "minor").scale) == {E, Fs, G, A, B, C, D}
    assert set(Key(Eb).scale) == {Eb, F, G, Ab, Bb, C, D}
    assert Key.parse(Key(Fs, "minor").label) == Key(Fs, "minor")
    assert Key(Bb, "major").label == "Bb major"


def weights(*pcs: int, extra: dict[int, float] | None = None) -> list[float]:
    w = [0.0] * 12
    for pc in pcs:
        w[pc] += 1.0
    for pc, v in (extra or {}).items():
        w[pc] += v
    return w


@pytest.mark.parametrize(
    "pcs, root, quality",
    [((C, E, G), C, "maj"), ((A, C, E), A, "min"), ((B, D, F), B, "dim"), ((C, E, Ab), None, "aug"),
     ((A, C, E, G), A, "min7"), ((G, B, D, F), G, "7"), ((Fs, Bb, Cs), Fs, "maj"), ((Eb, Fs, Bb), Eb, "min")],
)
def test_chord_from_pitch_classes_recognises_chords(pcs, root, quality):
    found = chord_from_pitch_classes(weights(*pcs))
    assert found.quality == quality
    if root is not None:  # an augmented triad is symmetric: any of its notes may be named the root
        assert found.root == root
    assert set(found.pitch_classes) == set(pcs)


def test_chord_from_pitch_classes_ignores_a_light_passing_tone_and_silence():
    assert chord_from_pitch_classes(weights(C, E, G, extra={D: 0.3, C: 1.0})) == Chord(C, "maj", C)
    assert chord_from_pitch_classes([0.0] * 12) == NO_CHORD


def test_the_bass_settles_chords_that_share_their_tones():
    # C E G A is both C6 and Am7: the lowest note decides.
    assert chord_from_pitch_classes(weights(C, E, G, A), bass=weights(C)).root == C
    assert chord_from_pitch_classes(weights(C, E, G, A), bass=weights(A)) == Chord(A, "min7", A)
    # C F G is Csus4 or Fsus2.
    assert chord_from_pitch_classes(weights(C, F, G), bass=weights(C)).root == C
    assert chord_from_pitch_classes(weights(C, F, G), bass=weights(F)).root == F
