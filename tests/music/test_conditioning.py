"""Window conditions -> network inputs: channel layout, tokens, context; transposition; bar features."""

from __future__ import annotations

import numpy as np
import pytest

from bgmgen.music.conditioning import (
    DENSITY_SCALE,
    HALF_BARS,
    N_ALIGNED_CHANNELS,
    N_BAR_FEATURES,
    N_CONTEXT_CHANNELS,
    N_TOKEN_FEATURES,
    POLYPHONY_SCALE,
    WindowConditions,
    bar_features_from_roll,
    stack_windows,
)
from bgmgen.music.harmony import Chord
from bgmgen.music.roll import N_PITCHES, PITCH_LOW, STEPS_PER_BAR, WINDOW_STEPS, Note, notes_to_roll

torch = pytest.importorskip("torch")

PC_OF_COL = (np.arange(N_PITCHES) + PITCH_LOW) % 12
HALF = STEPS_PER_BAR // 2
# Channel offsets of the aligned input (see conditioning.N_ALIGNED_CHANNELS).
CHORD, BASS, FEATURES = 0, N_PITCHES, 2 * N_PITCHES
SEGMENT_START = FEATURES + N_BAR_FEATURES
PHASE = SEGMENT_START + 1
# Token feature offsets.
T_CHROMA, T_ROOT, T_BASS, T_FEATURES = 0, 12, 25, 38
T_START = T_FEATURES + N_BAR_FEATURES

# One chord per half bar over the 8-bar window; "N" leaves a hole.
LABELS = ["C:maj", "G:maj/B", "A:min", "N", "F:maj7", "G:7", "E:min/b3", "C:maj"] * 2


def conditions(labels=LABELS, segment_ids=(0, 0, 0, 1, 1, 1, 2, 2)) -> WindowConditions:
    chords = [Chord.parse(label) for label in labels]
    per_step = [c for c in chords for _ in range(HALF)]
    rng = np.random.default_rng(0)
    return WindowConditions(
        chroma=np.array([c.chroma for c in per_step], dtype=np.float32),
        root=np.array([-1 if c.root is None else c.root for c in per_step]),
        bass=np.array([-1 if c.bass is None else c.bass for c in per_step]),
        bar_features=rng.random((8, N_BAR_FEATURES)).astype(np.float32),
        segment_ids=np.array(segment_ids),
    )


def test_shapes():
    batch = stack_windows([conditions(), conditions()])
    assert batch.aligned.shape == (2, N_ALIGNED_CHANNELS, WINDOW_STEPS)
    assert batch.tokens.shape == (2, HALF_BARS, N_TOKEN_FEATURES)
    assert batch.segment_ids.shape == (2, 8) and batch.segment_ids.dtype == torch.long
    assert batch.context.shape == (2, N_CONTEXT_CHANNELS, WINDOW_STEPS)
    assert N_ALIGNED_CHANNELS == PHASE + 2 and N_TOKEN_FEATURES == T_START + 1


def test_chord_mask_is_one_exactly_at_chord_tone_pitches():
    aligned = stack_windows([conditions()]).aligned[0].numpy()
    for half_bar, label in enumerate(LABELS):
        chord = Chord.parse(label)
        step = half_bar * HALF + 3
        want = np.isin(PC_OF_COL, chord.pitch_classes).astype(np.float32)
        assert np.array_equal(aligned[CHORD : CHORD + N_PITCHES, step], want), label
        want_bass = (PC_OF_COL == chord.bass).astype(np.float32) if chord.bass is not None else np.zeros(N_PITCHES)
        assert np.array_equal(aligned[BASS : BASS + N_PITCHES, step], want_bass), label
    # C major at step 0: middle C (60), E4 and G4 on; C#4 off; seven or eight octaves of each tone.
    assert aligned[CHORD + 60 - PITCH_LOW, 0] == 1 and aligned[CHORD + 64 - PITCH_LOW, 0] == 1
    assert aligned[CHORD + 61 - PITCH_LOW, 0] == 0
    assert aligned[CHORD : CHORD + N_PITCHES, 0].sum() == (np.isin(PC_OF_COL, [0, 4, 7])).sum()
    # G/B: the bass mask marks every B, not G.
    assert aligned[BASS + 71 - PITCH_LOW, HALF] == 1 and aligned[BASS + 67 - PITCH_LOW, HALF] == 0


def test_features_segment_start_and_phase_channels():
    cond = conditions()
    aligned = stack_windows([cond]).aligned[0].numpy()
    steps = np.arange(WINDOW_STEPS)
    assert np.allclose(aligned[FEATURES : FEATURES + N_BAR_FEATURES].T, cond.bar_features[steps // STEPS_PER_BAR])
    # Segments start at bars 0, 3 and 6: only their first steps are flagged.
    assert np.flatnonzero(aligned[SEGMENT_START]).tolist() == [0, 3 * STEPS_PER_BAR, 6 * STEPS_PER_BAR]
    phase = 2 * np.pi * (steps % STEPS_PER_BAR) / STEPS_PER_BAR
    assert np.allclose(aligned[PHASE], np.sin(phase), atol=1e-6)
    assert np.allclose(aligned[PHASE + 1], np.cos(phase), atol=1e-6)


def test_tokens_carry_chord_one_hots_features_and_segment_starts():
    cond = conditions()
    tokens = stack_windows([cond]).tokens[0].numpy()
    for j, label in enumerate(LABELS):
        chord = Chord.parse(label)
        token = tokens[j]
        assert np.array_equal(token[T_CHROMA : T_CHROMA + 12], chord.chroma), label
        assert np.flatnonzero(token[T_ROOT : T_ROOT + 13]).tolist() == [12 if chord.is_none else chord.root], label
        assert np.flatnonzero(token[T_BASS : T_BASS + 13]).tolist() == [12 if chord.is_none else chord.bass], label
        assert np.allclose(token[T_FEATURES : T_FEATURES + N_BAR_FEATURES], cond.bar_features[j // 2])
    # First half of bars 0, 3 and 6.
    assert np.flatnonzero(tokens[:, T_START]).tolist() == [0, 6, 12]


def test_context_is_the_known_prefix_of_the_roll_and_its_mask():
    rng = np.random.default_rng(1)
    rolls = (rng.random((2, 2, WINDOW_STEPS, N_PITCHES)) < 0.1).astype(np.float32)
    batch = stack_windows([conditions(), conditions()], rolls, [32, 0])
    ctx = batch.context.numpy()
    # Channels: onsets of the 88 pitches, then sustains, then the known mask.
    assert np.array_equal(ctx[0, :N_PITCHES, :32], rolls[0, 0, :32].T)
    assert np.array_equal(ctx[0, N_PITCHES : 2 * N_PITCHES, :32], rolls[0, 1, :32].T)
    assert ctx[0, : 2 * N_PITCHES, 32:].sum() == 0  # the rest is to be generated: hidden
    assert np.flatnonzero(ctx[0, -1]).tolist() == list(range(32))
    assert ctx[1].sum() == 0  # nothing known
    assert stack_windows([conditions()]).context.sum() == 0


def test_repeat_and_to():
    batch = stack_windows([conditions()])
    twice = batch.repeat(2).to("cpu")
    for name in ("aligned", "tokens", "segment_ids", "context"):
        a, b = getattr(batch, name), getattr(twice, name)
        assert b.shape[0] == 2 and torch.equal(b[0], a[0]) and torch.equal(b[1], a[0])


def test_transpose_moves_chords_and_register_only():
    cond = conditions()
    up = cond.transpose(2)
    assert np.array_equal(up.chroma[0], Chord.parse("D:maj").chroma)
    assert np.array_equal(up.chroma[:, 2:], cond.chroma[:, :10])
    assert up.root[0] == 2 and up.bass[HALF] == 1  # G/B -> A/C#
    assert np.array_equal(up.root == -1, cond.root == -1)  # no chord stays no chord
    assert np.allclose(up.bar_features[:, 2], np.clip(cond.bar_features[:, 2] + 2 / N_PITCHES, 0, 1))
    assert np.array_equal(up.bar_features[:, [0, 1, 3]], cond.bar_features[:, [0, 1, 3]])
    assert np.array_equal(up.segment_ids, cond.segment_ids)
    back = up.transpose(-2)
    assert np.array_equal(back.chroma, cond.chroma) and np.array_equal(back.root, cond.root)
    high = WindowConditions(cond.chroma, cond.root, cond.bass, np.ones_like(cond.bar_features), cond.segment_ids)
    assert high.transpose(5).bar_features[:, 2].max() == 1.0  # clipped


def test_bar_features_on_a_hand_made_roll():
    # Bar 0: two 4-step notes at step 0 (velocity 127, 100) and one 8-step note at step 8 (velocity 50).
    # Bar 1: empty. Bar 2: 100 one-step onsets (more than the scale's 64) -> density clips to 1.
    notes = [Note(0, 4, 40, 127), Note(0, 4, 60, 100), Note(8, 16, 80, 50)]
    busy = [Note(32 + s, 33 + s, 30 + p, 64) for s in range(16) for p in range(0, 60, 9)][:100]
    roll = notes_to_roll(notes + busy, 3 * STEPS_PER_BAR)
    velocity = np.zeros((3 * STEPS_PER_BAR, N_PITCHES), dtype=np.float32)
    for n in notes + busy:
        velocity[n.start, n.pitch - PITCH_LOW] = n.velocity
    features = bar_features_from_roll(roll, velocity)
    assert features.shape == (3, N_BAR_FEATURES) and features.dtype == np.float32
    density, energy, register, polyphony = features[0]
    assert density == pytest.approx(np.log1p(3) / DENSITY_SCALE)
    assert energy == pytest.approx((127 + 100 + 50) / 3 / 127)
    assert register == pytest.approx((19 + 39 + 59) / 3 / N_PITCHES)
    assert polyphony == pytest.approx((4 * 2 + 8) / STEPS_PER_BAR / POLYPHONY_SCALE)
    assert features[1].tolist() == [0.0, 0.0, 0.5, 0.0]  # silence sits mid-register
    assert len(busy) == 100 and features[2, 0] == 1.0  # log1p(100) > log1p(64): clipped
    assert np.all((features >= 0) & (features <= 1))


def test_bar_features_ignore_a_trailing_partial_bar():
    roll = notes_to_roll([Note(16, 18, 60)], 20)
    assert bar_features_from_roll(roll, np.full((20, N_PITCHES), 80.0)).shape == (1, N_BAR_FEATURES)
