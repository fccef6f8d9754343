"""The arrangement: bass on the chords, drums by groove and energy with fills and variety, the pad, hits,
and the MIDI it writes (one named track per role, GM drum channel, CC sends, humanisation)."""

from __future__ import annotations

import numpy as np
import pytest

pretty_midi = pytest.importorskip("pretty_midi")
mido = pytest.importorskip("mido")

from bgmgen.music.arrange import arrange  # noqa: E402
from bgmgen.music.harmony import Chord  # noqa: E402
from bgmgen.music.midi import arrangement_to_midi, write_arrangement  # noqa: E402
from bgmgen.music.patterns import CRASH, GROOVES, KICK  # noqa: E402
from bgmgen.music.plan import Plan, Segment  # noqa: E402
from bgmgen.music.roll import STEPS_PER_BAR, GeneratedParts, Note, notes_to_roll  # noqa: E402
from bgmgen.music.styles import STYLES, get_style  # noqa: E402

PROGRESSION = ["C:maj", "C:maj", "A:min", "A:min", "F:maj", "G:7", "C:maj/3", "C:maj"]


def make_plan(n_bars=32, tempo=120.0, segments=(8, 8, 8, 8), style="pop", energy=None) -> Plan:
    bounds = np.cumsum((0, *segments))
    plan = Plan(
        duration=n_bars * 240.0 / tempo - 0.5, tempo=tempo, n_bars=n_bars, key="C major",
        segments=[Segment(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])],
        chords=(PROGRESSION * n_bars)[: 2 * n_bars], density=list(np.linspace(0.2, 0.9, n_bars)),
        energy=list(energy if energy is not None else np.linspace(0.2, 0.95, n_bars)), cuts=[],
        cut_alignment_error=0.0, mood={"tension": 0.5, "brightness": 0.6}, seed=0, style=style,
    )
    plan.validate()
    return plan


def make_parts(n_bars: int) -> GeneratedParts:
    rng = np.random.default_rng(0)
    n = n_bars * STEPS_PER_BAR
    melody = [Note(s, s + 3, int(rng.choice([72, 74, 76, 79]))) for s in range(0, n, 4)]
    accompaniment = [Note(s, s + 8, p) for s in range(0, n, 8) for p in (36, 48, 52, 55)]
    return GeneratedParts(notes_to_roll(melody, n), notes_to_roll(accompaniment, n))


def test_bass_plays_each_half_bars_chord_bass_in_a_bass_register():
    plan = make_plan()
    band = arrange(plan, make_parts(plan.n_bars), get_style("pop"), seed=0)
    chords = plan.chord_objects()
    notes = band.parts["bass"].notes
    assert notes and all(28 <= n.pitch <= 60 for n in notes)
    on_downbeats = [n for n in notes if n.start % (STEPS_PER_BAR // 2) == 0]
    for n in on_downbeats:  # every half bar's first note is its chord's bass note (C/3 -> E), or that an octave up
        chord = chords[n.start // (STEPS_PER_BAR // 2)]
        assert n.pitch % 12 == (chord.bass if chord.bass is not None else chord.root), n
    assert {chords[n.start // 8].bass for n in on_downbeats} >= {0, 9, 5, 7, 4}


def test_pop_drums_vary_fill_into_segments_and_crash_on_them():
    plan = make_plan()
    band = arrange(plan, make_parts(plan.n_bars), get_style("pop"), seed=3)
    drums = band.parts["drums"]
    assert drums.is_drum and len(drums.notes) > 8 * plan.n_bars
    bars = [frozenset((n.start % STEPS_PER_BAR, n.pitch) for n in drums.notes if n.start // STEPS_PER_BAR == b)
            for b in range(plan.n_bars)]
    # Not a loop: over a minute (32 bars at 120 BPM) the bars take many different shapes, and no
    # 4-bar block repeats the one before it exactly all the way through.
    assert len(set(bars)) >= 10
    assert any(bars[b : b + 4] != bars[b + 4 : b + 8] for b in range(0, plan.n_bars - 8, 4))
    fills = {frozenset(p for p in GROOVES["pop"].fills[i]) for i in range(len(GROOVES["pop"].fills))}
    assert fills  # the fill bars (before bars 8, 16, 24) use toms or snare rolls: more snare/tom hits than a groove bar
    for start in (8, 16, 24):
        before = [n for n in drums.notes if n.start // STEPS_PER_BAR == start - 1 and n.start % STEPS_PER_BAR >= 8]
        assert sum(n.pitch in (38, 41, 43, 45, 47, 50) for n in before) >= 3, start
        assert any(n.start == start * STEPS_PER_BAR and n.pitch == CRASH for n in drums.notes), start
    # Quiet bars play less than driving ones.
    first, last = len([n for n in drums.notes if n.start < 4 * 16]), len([n for n in drums.notes if 26 * 16 <= n.start < 30 * 16])
    assert last > first


def test_calm_styles_play_no_drums_and_keep_a_bass():
    plan = make_plan(style="piano")
    for name in ("piano", "ambient"):
        band = arrange(plan, make_parts(plan.n_bars), get_style(name), seed=0)
        assert band.parts["drums"].notes == [] and band.parts["bass"].notes


def test_pad_holds_the_chord_tones():
    plan = make_plan(style="cinematic")
    band = arrange(plan, make_parts(plan.n_bars), get_style("cinematic"), seed=0)
    pad = band.parts["pad"].notes
    chords = plan.chord_objects()
    for n in pad:
        assert n.pitch % 12 in chords[n.start // 8].pitch_classes and 52 <= n.pitch < 64
    assert len({n.start for n in pad}) >= plan.n_bars  # the chords change, the pad follows
    assert "pad" not in arrange(plan, make_parts(plan.n_bars), get_style("lo-fi"), seed=0).parts


def test_hit_steps_get_a_crash_and_a_bass_root():
    plan = make_plan()
    hits = [37, 150]
    band = arrange(plan, make_parts(plan.n_bars), get_style("pop"), seed=0, hit_steps=hits)
    chords = plan.chord_objects()
    for hit in hits:
        assert {CRASH, KICK} <= {n.pitch for n in band.parts["drums"].notes if n.start == hit}
        bass = [n for n in band.parts["bass"].notes if n.start == hit]
        assert len(bass) == 1 and bass[0].pitch % 12 == Chord.parse(plan.chords[hit // 8]).root
        assert not any(n.start < hit < n.end for n in band.parts["bass"].notes)  # nothing rings over it
    assert chords  # and a step off the plan is ignored
    arrange(plan, make_parts(plan.n_bars), get_style("pop"), seed=0, hit_steps=[-1, 10**6])


def test_same_seed_same_arrangement_other_seed_other_drums():
    plan = make_plan()
    parts = make_parts(plan.n_bars)
    a, b = (arrange(plan, parts, get_style("pop"), seed=5) for _ in range(2))
    assert a.parts["drums"].notes == b.parts["drums"].notes and a.parts["bass"].notes == b.parts["bass"].notes
    assert arrange(plan, parts, get_style("pop"), seed=6).parts["drums"].notes != a.parts["drums"].notes


def test_midi_has_one_named_track_per_role_with_program_sends_and_meta(tmp_path):
    plan = make_plan(n_bars=8, segments=(4, 4))
    style = get_style("pop").with_instruments({"melody": 73})
    band = arrange(plan, make_parts(plan.n_bars), style, seed=0)
    path = write_arrangement(band, plan, tmp_path / "band.mid", seed=0)
    midi = mido.MidiFile(path)
    names = {}
    for track in midi.tracks:
        name = next((m.name for m in track if m.type == "track_name"), None)
        if name:
            names[name] = track
    assert list(names) == ["melody", "accompaniment", "bass", "drums", "pad"]
    drum_channels = {m.channel for m in names["drums"] if m.type == "note_on"}
    assert drum_channels == {9}  # GM percussion: channel 10
    for role, track in names.items():
        programs = [m.program for m in track if m.type == "program_change"]
        controls = {m.control: m.value for m in track if m.type == "control_change"}
        if role != "drums":
            want = {"melody": 73, "accompaniment": 0, "bass": 33, "pad": 89}[role]
            assert programs == [want], role
            assert {n for n in (m.channel for m in track if m.type == "note_on")} != {9}
        mix = style.mix_of(role)
        assert controls[7] == mix.level and controls[91] == mix.reverb and controls[93] == mix.chorus, role
    metas = {m.type for m in midi.tracks[0] if m.is_meta}
    assert {"set_tempo", "key_signature", "time_signature"} <= metas


def test_humanisation_is_small_seeded_and_keeps_the_grid():
    plan = make_plan(n_bars=8, segments=(4, 4))
    band = arrange(plan, make_parts(plan.n_bars), get_style("pop"), seed=0)
    a, b, c = (arrangement_to_midi(band, plan, seed=s) for s in (1, 1, 2))
    starts = lambda m: np.array([n.start for n in m.instruments[2].notes])  # noqa: E731  bass
    assert np.array_equal(starts(a), starts(b)) and not np.array_equal(starts(a), starts(c))
    grid = np.array([float(plan.step_time(n.start)) for n in band.parts["bass"].notes])
    offset = starts(a) - grid[: len(starts(a))]
    assert 0.0005 < np.abs(offset).std() and np.abs(offset).max() <= 0.0081
    velocities = np.array([n.velocity for n in a.instruments[2].notes]) - np.array([n.velocity for n in band.parts["bass"].notes])
    assert np.abs(velocities).max() <= 6 and velocities.std() > 0.5


def test_swing_delays_only_the_off_beat_sixteenths():
    plan = make_plan(n_bars=8, segments=(4, 4), tempo=80.0)
    band = arrange(plan, make_parts(plan.n_bars), get_style("lo-fi"), seed=0)
    midi = arrangement_to_midi(band, plan, seed=0)
    drums = next(i for i in midi.instruments if i.name == "drums")
    step = float(plan.step_time(1))
    late = [n.start / step % 1 for n in drums.notes]
    assert max(late) > 0.1  # some hits sit after their grid step (swung), not just jittered


@pytest.mark.parametrize("name", list(STYLES))
def test_every_style_arranges_and_writes(name, tmp_path):
    plan = make_plan(n_bars=8, segments=(4, 4), style=name)
    band = arrange(plan, make_parts(plan.n_bars), get_style(name), seed=0)
    path = write_arrangement(band, plan, tmp_path / f"{name}.mid")
    names = [m.name for track in mido.MidiFile(path).tracks for m in track if m.type == "track_name"]
    assert names[:4] == ["melody", "accompaniment", "bass", "drums"]  # the drums track even when it is silent
    midi = pretty_midi.PrettyMIDI(str(path))
    by_role = {i.name: i for i in midi.instruments}
    assert bool(by_role.get("drums") and by_role["drums"].notes) == get_style(name).has_drums
    assert max(n.end for i in midi.instruments for n in i.notes) <= plan.duration + 1e-9
