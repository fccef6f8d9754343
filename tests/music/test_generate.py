"""Writing music for a plan: window conditions, continued windows, seeds; the shipped model's quality."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bgmgen.music.generate as generate_module  # noqa: E402
from bgmgen.errors import ModelError  # noqa: E402
from bgmgen.evaluation.metrics import chord_tone_ratio, in_key_ratio, onset_counts_per_bar  # noqa: E402
from bgmgen.music.checkpoint import ModelInfo, save_checkpoint  # noqa: E402
from bgmgen.music.conditioning import N_BAR_FEATURES  # noqa: E402
from bgmgen.music.generate import (
    MusicGenerator,
    level_to_feature,
    tune_level_to_feature,
    window_conditions,
)  # noqa: E402
from bgmgen.music.harmony import Chord, Key  # noqa: E402
from bgmgen.music.plan import Plan, Segment  # noqa: E402
from bgmgen.music.roll import N_PITCHES, PITCH_LOW, STEPS_PER_BAR, WINDOW_STEPS  # noqa: E402
from bgmgen.music.sampler import SamplerOptions  # noqa: E402
from bgmgen.music.unet import MusicUNet, UNetConfig  # noqa: E402
from bgmgen.weights import default_checkpoint  # noqa: E402

TINY = UNetConfig(channels=(16, 32, 32), groups=8, token_dim=16, time_dim=16)
QUANTILES = {"density": [0.2, 0.5, 0.8], "energy": [0.3, 0.6, 0.9], "register": [0.4, 0.5, 0.6], "polyphony": [0.1, 0.3, 0.5]}
POP = ["C:maj", "C:maj", "A:min", "A:min", "F:maj", "F:maj", "G:maj", "G:maj"]  # I-vi-IV-V, a bar each
HALF = STEPS_PER_BAR // 2


def make_plan(n_bars, chords=POP, density=0.5, energy=0.5, segments=None, key="C major", brightness=0.5) -> Plan:
    """A valid plan at 120 BPM (2 s bars); ``chords`` repeat to fill the half bars; levels per bar or one value."""
    levels = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * n_bars  # noqa: E731
    plan = Plan(
        duration=2.0 * n_bars,
        tempo=120.0,
        n_bars=n_bars,
        key=key,
        segments=[Segment(a, b) for a, b in (segments or [(0, n_bars)])],
        chords=[chords[i % len(chords)] for i in range(2 * n_bars)],
        density=levels(density),
        energy=levels(energy),
        cuts=[],
        cut_alignment_error=0.0,
        mood={"tension": 0.5, "brightness": brightness},
        seed=0,
    )
    plan.validate()
    return plan


def tiny_generator(options=SamplerOptions(steps=2, guidance=3.0)) -> MusicGenerator:
    torch.manual_seed(0)
    model = MusicUNet(TINY)
    torch.nn.init.normal_(model.conv_out.weight, std=0.5)  # output depends on input
    torch.nn.init.constant_(model.conv_out.bias, -1.0)
    return MusicGenerator(model, ModelInfo(config=TINY, feature_quantiles=QUANTILES), "cpu", options)


def test_level_to_feature_maps_onto_the_training_range():
    assert level_to_feature(0.0, [0.2, 0.5, 0.8]) == pytest.approx(0.2)
    assert level_to_feature(1.0, [0.2, 0.5, 0.8]) == pytest.approx(0.8)
    assert level_to_feature(0.5, [0.2, 0.4, 0.8]) == pytest.approx(0.5)
    assert level_to_feature(7.0, [0.2, 0.5, 0.8]) == pytest.approx(0.8)  # clipped
    assert level_to_feature(-1.0, [0.2, 0.5, 0.8]) == pytest.approx(0.2)


def test_window_conditions_follow_the_plan():
    chords = ["C:maj", "G:maj/B", "A:min", "N", "F:maj7", "D:min7/b7", "G:7", "E:min"]
    density = [i / 9 for i in range(10)]
    plan = make_plan(10, chords, density=density, energy=0.25, segments=[(0, 3), (3, 7), (7, 10)], brightness=1.0)
    cond = window_conditions(plan, 1, QUANTILES)
    assert cond.chroma.shape == (WINDOW_STEPS, 12)
    for step in range(WINDOW_STEPS):
        chord = Chord.parse(plan.chords[2 + step // HALF])  # window starts at bar 1 = half bar 2
        assert tuple(cond.chroma[step]) == chord.chroma, step
        assert cond.root[step] == (-1 if chord.is_none else chord.root)
        assert cond.bass[step] == (-1 if chord.is_none else chord.bass)
    assert cond.bass[HALF * 3] == 0  # D:min7/b7 has C in the bass (window half bar 3 = plan half bar 5)
    assert cond.segment_ids.tolist() == [0, 0, 1, 1, 1, 1, 2, 2]  # bars 1..8
    assert cond.bar_features.shape == (8, N_BAR_FEATURES)
    density = [level_to_feature(plan.density[b], QUANTILES["density"]) for b in range(1, 9)]
    assert np.allclose(cond.bar_features[:, 0], density)
    assert np.allclose(cond.bar_features[:, 1], level_to_feature(0.25, QUANTILES["energy"]))
    assert np.allclose(cond.bar_features[:, 2], level_to_feature(0.7, QUANTILES["register"]))  # bright: higher
    polyphony = [level_to_feature(plan.density[b], QUANTILES["polyphony"]) for b in range(1, 9)]
    assert np.allclose(cond.bar_features[:, 3], polyphony)


def test_the_tune_is_asked_for_a_typical_melody_that_the_plan_moves_half_as_far():
    from bgmgen.music.generate import MELODY_LEVEL_CENTRE

    q = [0.2, 0.4, 0.8]
    assert tune_level_to_feature(MELODY_LEVEL_CENTRE, q) == pytest.approx(0.4)  # the median at the usual level
    assert tune_level_to_feature(MELODY_LEVEL_CENTRE + 0.2, q) == pytest.approx(0.4 + 0.5 * 0.2 * 0.6)
    assert tune_level_to_feature(-5.0, q) == pytest.approx(0.2) and tune_level_to_feature(5.0, q) == pytest.approx(0.8)
    plan = make_plan(8, density=0.2, energy=0.3, brightness=1.0)
    tune, accompaniment = window_conditions(plan, 0, QUANTILES, tune=True), window_conditions(plan, 0, QUANTILES)
    assert np.allclose(tune.bar_features[:, 0], tune_level_to_feature(0.2, QUANTILES["density"]))
    assert np.allclose(tune.bar_features[:, 1], tune_level_to_feature(0.3, QUANTILES["energy"]))
    assert np.allclose(tune.bar_features[:, 2], accompaniment.bar_features[:, 2])  # register: brightness, as before
    assert (tune.bar_features[:, 0] > accompaniment.bar_features[:, 0]).all()  # a calm plan still gets a tune


def test_window_conditions_past_the_plan_repeat_its_last_bar():
    chords = ["C:maj", "G:maj", "A:min", "F:maj", "D:min", "E:min"]
    plan = make_plan(10, chords, density=[i / 9 for i in range(10)], segments=[(0, 6), (6, 10)])
    cond = window_conditions(plan, 6, QUANTILES)  # bars 6..13 of a 10-bar plan
    last = Chord.parse(plan.chords[-1])
    assert (cond.chroma[4 * STEPS_PER_BAR :] == last.chroma).all()
    assert (cond.root[4 * STEPS_PER_BAR :] == last.root).all()
    assert np.allclose(cond.bar_features[3:], cond.bar_features[3])  # bars 9, 10, 11, ... = bar 9
    assert cond.segment_ids.tolist() == [1] * 8


@pytest.fixture
def spied(monkeypatch):
    """Record what every window was given and what the sampler returned."""
    calls = []
    real = generate_module.sample_rolls

    def spy(model, batch, options, generator):
        out = real(model, batch, options, generator)
        calls.append((batch, out[0].numpy().copy()))
        return out

    monkeypatch.setattr(generate_module, "sample_rolls", spy)
    return calls


def test_generate_covers_the_plan_and_continues_each_window(spied):
    plan = make_plan(20, segments=[(0, 8), (8, 20)])
    progress = []
    roll = tiny_generator().generate(plan, seed=3, progress=progress.append)
    assert roll.shape == (2, 20 * STEPS_PER_BAR, N_PITCHES)
    assert set(np.unique(roll)) == {0.0, 1.0}
    assert progress == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert len(spied) == 3  # windows at bars 0, 6 and 12, each 8 bars
    starts = [0, 6 * STEPS_PER_BAR, 12 * STEPS_PER_BAR]
    overlap = 2 * STEPS_PER_BAR
    (first_batch, w0), (b1, w1), (b2, w2) = spied
    assert first_batch.context.sum() == 0  # nothing to continue
    # The final roll is window 0, then the new part of each later window.
    assert np.array_equal(roll[:, :WINDOW_STEPS], w0)
    assert np.array_equal(roll[:, starts[1] + overlap : starts[2] + overlap], w1[:, overlap:])
    assert np.array_equal(roll[:, starts[2] + overlap :], w2[:, overlap:])
    for (batch, _), start in ((spied[1], starts[1]), (spied[2], starts[2])):
        context = batch.context[0].numpy()
        # Each later window is told the two bars before it, exactly as they stand in the roll.
        assert np.flatnonzero(context[-1]).tolist() == list(range(overlap))
        assert np.array_equal(context[:N_PITCHES, :overlap], roll[0, start : start + overlap].T)
        assert np.array_equal(context[N_PITCHES : 2 * N_PITCHES, :overlap], roll[1, start : start + overlap].T)
        assert context[: 2 * N_PITCHES, overlap:].sum() == 0
        assert roll[:, start : start + overlap].sum() > 0  # the check above is not on silence
        # ... and gets the plan's chords and segments for its own bars.
        token_chroma = batch.tokens[0, :, :12].numpy()
        half_bars = [Chord.parse(plan.chords[2 * start // STEPS_PER_BAR + j]).chroma for j in range(16)]
        assert np.array_equal(token_chroma, np.array(half_bars))
        bars = range(start // STEPS_PER_BAR, start // STEPS_PER_BAR + 8)
        assert batch.segment_ids[0].tolist() == [plan.segment_of_bar(b) for b in bars]
    # The overlap bars of window 1 are window 0's, not window 1's own attempt at them.
    assert np.array_equal(roll[:, starts[1] : starts[1] + overlap], w0[:, starts[1] : starts[1] + overlap])
    for bar in range(20):
        assert roll[:, bar * STEPS_PER_BAR : (bar + 1) * STEPS_PER_BAR].sum() > 0, bar


def test_same_seed_same_roll():
    generator = tiny_generator()
    plan = make_plan(9)
    a, b = generator.generate(plan, seed=5), generator.generate(plan, seed=5)
    c = generator.generate(plan, seed=6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("n_bars, windows", [(1, 1), (3, 1), (8, 1), (9, 2), (14, 2), (15, 3)])
def test_window_count_and_length_for_short_plans(spied, n_bars, windows):
    roll = tiny_generator(SamplerOptions(steps=1, guidance=1.0)).generate(make_plan(n_bars))
    assert roll.shape == (2, n_bars * STEPS_PER_BAR, N_PITCHES)
    assert len(spied) == windows


def test_from_checkpoint(tmp_path):
    model = MusicUNet(TINY)
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(model, ModelInfo(config=TINY, training_steps=9, feature_quantiles=QUANTILES), path)
    generator = MusicGenerator.from_checkpoint(path, options=SamplerOptions(steps=1))
    assert generator.info.training_steps == 9 and generator.options.steps == 1
    assert generator.generate(make_plan(2)).shape == (2, 32, N_PITCHES)
    with pytest.raises(ModelError):
        MusicGenerator.from_checkpoint(tmp_path / "absent.safetensors")


# --- the shipped model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> MusicGenerator:
    if not default_checkpoint().is_file():
        pytest.skip("shipped checkpoint not present")
    return MusicGenerator.from_checkpoint()  # the default sampler, as users get it


def test_shipped_model_follows_chords_and_key(shipped):
    plan = make_plan(8, segments=[(0, 4), (4, 8)])
    roll = shipped.generate(plan, seed=0)
    chroma = window_conditions(plan, 0, shipped.info.feature_quantiles).chroma
    assert chord_tone_ratio(roll, chroma) >= 0.7
    assert in_key_ratio(roll, Key.parse(plan.key).scale) >= 0.9
    assert (onset_counts_per_bar(roll) > 0).all()


def test_shipped_model_obeys_density(shipped):
    sparse = shipped.generate(make_plan(8, density=0.1), seed=1)
    busy = shipped.generate(make_plan(8, density=0.9), seed=1)
    assert sparse[0].sum() > 0
    assert sparse[0].sum() < 0.5 * busy[0].sum()  # measured 0.20-0.27 over seeds 0-5


def test_shipped_model_is_a_cascade_with_a_one_voice_tune_on_the_chords(shipped):
    from bgmgen.evaluation.metrics import melody_statistics
    from bgmgen.music.generate import MELODY_HIGH, MELODY_LOW

    assert shipped.info.part == "accompaniment" and shipped.melody_info.part == "melody"
    plan = make_plan(8, segments=[(0, 4), (4, 8)])
    parts = shipped.generate_parts(plan, seed=0)
    melody = parts.melody
    assert (melody[0].sum(axis=1) <= 1).all() and melody[0].sum() >= 4  # one voice, and a tune at all
    pitches = np.flatnonzero(melody[0].any(axis=0)) + PITCH_LOW
    assert pitches.min() >= MELODY_LOW and pitches.max() <= MELODY_HIGH
    cond = window_conditions(plan, 0, shipped.melody_info.feature_quantiles)
    stats = melody_statistics(melody, cond.chroma, cond.root)
    assert stats["strong_chord_tones"] >= 0.7 and stats["leaps"] <= 0.2 and stats["range"] <= 24
    assert parts.accompaniment[0].sum() > 0 and chord_tone_ratio(parts.accompaniment, cond.chroma) >= 0.7


def test_shipped_melody_under_a_calm_plan_is_a_tune_not_a_stream_nor_silence(shipped):
    plan = make_plan(8, density=0.3, energy=0.3, segments=[(0, 4), (4, 8)])
    per_bar = np.mean([shipped.generate_parts(plan, seed=seed).melody[0].sum() / 8 for seed in (0, 1)])
    # Measured 3.6 notes a bar; the previous melody model wrote a note on nearly every sixteenth (15 a bar),
    # and this one with the accompaniment's level mapping about one a bar.
    assert 2.0 <= per_bar <= 8.0


# ----------------------------------------------------------------------------- the melody cascade


def tiny_cascade(options=SamplerOptions(steps=2, guidance=3.0)) -> MusicGenerator:
    from dataclasses import replace

    torch.manual_seed(0)
    melody = MusicUNet(TINY)
    torch.nn.init.normal_(melody.conv_out.weight, std=0.5)
    torch.nn.init.constant_(melody.conv_out.bias, -1.0)
    wide = replace(TINY, melody_channels=2 * N_PITCHES)
    accompaniment = MusicUNet(wide)
    torch.nn.init.normal_(accompaniment.conv_out.weight, std=0.5)
    torch.nn.init.constant_(accompaniment.conv_out.bias, -1.0)
    return MusicGenerator(accompaniment, ModelInfo(config=wide, feature_quantiles=QUANTILES, part="accompaniment"), "cpu", options,
                          melody, ModelInfo(config=TINY, feature_quantiles=QUANTILES, part="melody"))


def test_one_voice_keeps_the_highest_onset_within_the_register():
    from bgmgen.music.generate import MELODY_HIGH, MELODY_LOW, one_voice
    from bgmgen.music.roll import Note, notes_to_roll, roll_to_notes

    roll = notes_to_roll([Note(0, 8, 60), Note(0, 3, 64), Note(4, 6, 40), Note(10, 12, 100)], 16)
    notes = roll_to_notes(one_voice(roll))
    assert [(n.start, n.end, n.pitch) for n in notes] == [(0, 3, 64), (4, 6, 52 + 12 * ((MELODY_LOW - 52 + 11) // 12)), (10, 12, 100 - 12 * ((100 - MELODY_HIGH + 11) // 12))]
    assert all(MELODY_LOW <= n.pitch <= MELODY_HIGH for n in notes)


def test_returning_segments_with_the_same_chords():
    from bgmgen.music.generate import returning_phrases

    plan = make_plan(12, segments=[(0, 4), (4, 8), (8, 12)])  # POP repeats every 4 bars: all three alike
    assert returning_phrases(plan) == {1: 0, 2: 0}
    other = make_plan(12, chords=POP + ["D:min"] * 2, segments=[(0, 4), (4, 8), (8, 12)])  # 10 labels: no repeats
    assert returning_phrases(other) == {}


def test_cascade_writes_one_voice_melody_and_an_accompaniment_under_it(monkeypatch):
    generator = tiny_cascade()
    seen = []
    original = generator.model.forward

    def spy(x, t, cond, **kwargs):
        batch = cond.cond  # the sampler passes the window's conditions prepared
        seen.append(None if batch.melody is None else batch.melody.clone())
        return original(x, t, cond, **kwargs)

    monkeypatch.setattr(generator.model, "forward", spy)
    plan = make_plan(14, segments=[(0, 4), (4, 8), (8, 14)])
    parts = generator.generate_parts(plan, seed=1)
    assert parts.melody.shape == parts.accompaniment.shape == (2, 14 * STEPS_PER_BAR, N_PITCHES)
    assert (parts.melody[0].sum(axis=1) <= 1).all() and parts.melody[0].sum() > 0  # one voice
    assert parts.accompaniment[0].sum() > 0
    # The accompaniment model saw the melody of its window: the first window's is the first 8 bars'.
    assert seen and all(m is not None for m in seen)
    first = torch.as_tensor(parts.melody[:, :WINDOW_STEPS]).permute(0, 2, 1).reshape(2 * N_PITCHES, -1)
    assert torch.equal(seen[0][0], first)
    # Segment 1 (bars 4-7) returns with segment 0's chords and takes up its melody.
    bar = STEPS_PER_BAR
    assert np.array_equal(parts.melody[:, 4 * bar : 8 * bar], parts.melody[:, 0 : 4 * bar])
    # generate() is both parts in one roll, and the seed decides.
    assert np.array_equal(generator.generate(plan, seed=1), parts.combined())
    assert not np.array_equal(generator.generate(plan, seed=2), parts.combined())


def test_cascade_from_checkpoint_finds_its_melody_model(tmp_path):
    from bgmgen.music.generate import MELODY_CHECKPOINT_NAME

    cascade = tiny_cascade()
    save_checkpoint(cascade.model, cascade.info, tmp_path / "acc.safetensors")
    with pytest.raises(ModelError, match="not found"):
        MusicGenerator.from_checkpoint(tmp_path / "acc.safetensors")
    save_checkpoint(cascade.melody_model, cascade.melody_info, tmp_path / MELODY_CHECKPOINT_NAME)
    loaded = MusicGenerator.from_checkpoint(tmp_path / "acc.safetensors", options=SamplerOptions(steps=1))
    assert loaded.melody_info.part == "melody"
    assert loaded.generate_parts(make_plan(2)).melody.shape == (2, 32, N_PITCHES)
    with pytest.raises(ModelError, match="is a melody model"):
        MusicGenerator.from_checkpoint(tmp_path / MELODY_CHECKPOINT_NAME)


def test_decode_one_voice_takes_the_likeliest_pitch_of_each_onset():
    from bgmgen.music.generate import decode_one_voice
    from bgmgen.music.roll import PITCH_LOW, roll_to_notes

    soft = np.zeros((2, 16, N_PITCHES), dtype=np.float32)
    soft[0, 0, 60 - PITCH_LOW], soft[0, 0, 64 - PITCH_LOW] = 0.3, 0.25  # spread certainty: 60 is likelier
    soft[1, 1:4, 60 - PITCH_LOW] = 0.4
    soft[0, 8, 67 - PITCH_LOW] = 0.15  # below the threshold: no note
    soft[0, 10, 30 - PITCH_LOW] = 0.9  # outside the melody's register: ignored
    notes = roll_to_notes(decode_one_voice(soft, 0.2))
    assert [(n.start, n.end, n.pitch) for n in notes] == [(0, 4, 60)]
