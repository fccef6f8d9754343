"""Tempo maps: bar times, validation, fitting cuts onto downbeats, and the written MIDI's downbeats."""

import json
from types import SimpleNamespace

import numpy as np
import pretty_midi
import pytest

from bgmgen.errors import BgmgenError
from bgmgen.music.midi import write_midi
from bgmgen.music.plan import Plan, PlanOptions, make_plan
from bgmgen.music.roll import STEPS_PER_BAR
from bgmgen.music.tempo import (
    MAX_TEMPO_SPREAD, MAX_TEMPO_STEP, ON_GRID, TempoChange, bar_edges, bar_tempos, cut_alignment,
    fit_tempo_map, hit_steps, position_of_time, time_of_position,
)
from bgmgen.video.features import LearnedCues

LIMITS = (70.0, 140.0)


class FlatAnalysis:
    """What make_plan reads from a VideoAnalysis: flat signals and the given cuts."""

    def __init__(self, duration: float, cuts: list[float], tension: float = 0.3, brightness: float = 0.7):
        self.info = SimpleNamespace(duration=duration)
        self.cuts = cuts
        self.analysis_fps = 4.0
        n = int(np.ceil(duration * self.analysis_fps))
        self.energy = np.full(n, 0.5)
        self.motion = np.full(n, 0.4)
        self.mood = SimpleNamespace(tension=tension, brightness=brightness)
        self.learned = LearnedCues()

    def mean_over(self, signal, start, end) -> float:
        return float(np.mean(signal))


def downbeat_figures(midi_path, cuts):
    """Fractions of far cuts (>= 1 bar after the previous) within a sixteenth of a bar of a downbeat of the
    written file, and of all cuts within a sixteenth of a bar of a beat, as the issue measures them."""
    midi = pretty_midi.PrettyMIDI(str(midi_path))
    downbeats, beats = midi.get_downbeats(), midi.get_beats()
    on_down, on_beat, previous = [], [], 0.0
    for cut in cuts:
        bar = int(np.searchsorted(downbeats, cut, side="right")) - 1
        bar_length = (downbeats[bar + 1] if bar + 1 < len(downbeats) else 2 * downbeats[bar] - downbeats[bar - 1]) - downbeats[bar]
        if cut - previous >= bar_length * (1 - 1e-6):
            on_down.append(np.min(np.abs(downbeats - cut)) <= bar_length / 16)
        on_beat.append(np.min(np.abs(beats - cut)) <= bar_length / 16)
        previous = cut
    return np.mean(on_down), np.mean(on_beat), len(on_down)


def test_bar_times_follow_the_map_and_invert():
    tempos = bar_tempos(120.0, [TempoChange(2, 100.0), TempoChange(3, 108.0)], 5)
    assert tempos.tolist() == [120.0, 120.0, 100.0, 108.0, 108.0]
    edges = bar_edges(tempos)
    assert edges[:4] == pytest.approx([0.0, 2.0, 4.0, 6.4])
    assert time_of_position(2.5, tempos, edges) == pytest.approx(5.2)  # half of a 2.4 s bar after 4.0
    assert time_of_position(6.0, tempos, edges) == pytest.approx(edges[5] + 240 / 108)  # the last tempo continues
    positions = np.array([0.0, 0.3, 1.99, 2.0, 3.7, 5.5])
    assert position_of_time(time_of_position(positions, tempos, edges), tempos, edges) == pytest.approx(positions)


def test_plan_steps_and_bars_follow_the_map():
    plan = make_plan(FlatAnalysis(26.0, [11.8, 15.7, 23.0]), PlanOptions())
    assert plan.tempo_map, "these cuts need a map: no single tempo puts all three on bar lines"
    tempos, beats = plan.bar_tempos(), plan.bar_beats()
    assert plan.step_time(STEPS_PER_BAR * 3 + 4) == pytest.approx(plan.bar_start(3) + 60.0 / tempos[3])
    assert np.diff([plan.bar_start(b) for b in range(plan.n_bars + 1)]) == pytest.approx(60.0 * beats / tempos)
    assert plan.bar_start(plan.n_bars) >= 26.0 > plan.bar_start(plan.n_bars - 1)


def test_one_tempo_stays_when_it_fits():
    # Cuts every 4 s fit 120 BPM exactly: no map.
    plan = make_plan(FlatAnalysis(16.5, [4.0, 8.0, 12.0]), PlanOptions())
    assert plan.tempo_map == [] and plan.tempo == pytest.approx(120.0)
    assert plan.hits == [2 * STEPS_PER_BAR, 4 * STEPS_PER_BAR, 6 * STEPS_PER_BAR]
    assert plan.cut_alignment["far_cuts_on_downbeats"] == 1.0


def test_tempo_option_fixes_one_tempo():
    plan = make_plan(FlatAnalysis(26.0, [11.8, 15.7, 23.0]), PlanOptions(tempo=100.0))
    assert plan.tempo_map == [] and plan.tempo == 100.0
    assert plan.cut_alignment["far_cuts_on_downbeats"] < 1.0  # the user's tempo wins over alignment


@pytest.mark.parametrize("cuts, duration", [
    ([11.8, 15.68, 22.96], 30.0),  # Big Buck Bunny's opening
    ([5.2, 9.9, 17.6, 24.1, 24.6, 31.0], 35.0),  # irregular, with two cuts in quick succession
    ([4.2, 11.5, 17.0, 17.6, 25.3, 33.8, 38.4], 42.0),
])  # fmt: skip
def test_fitted_map_is_gentle_and_puts_cuts_on_the_grid(cuts, duration):
    centre = 104.0
    tempos, beats = fit_tempo_map(cuts, duration, centre, 100.0, LIMITS)
    ratios = tempos[1:] / tempos[:-1]
    assert np.all(np.abs(ratios - 1) <= MAX_TEMPO_STEP)
    assert tempos.max() <= (1 + MAX_TEMPO_SPREAD) * tempos.min()
    assert LIMITS[0] <= tempos.min() and tempos.max() <= LIMITS[1]
    assert set(beats.tolist()) <= {2, 3, 4} and np.sum(beats != 4) <= 2
    assert bar_edges(tempos, beats)[-1] >= duration > bar_edges(tempos, beats)[-2]
    figures = cut_alignment(cuts, tempos, beats=beats).figures()
    assert figures["far_cuts_on_downbeats"] >= 0.9 and figures["cuts_on_beats"] >= 0.9
    single = cut_alignment(cuts, np.full(40, centre)).figures()
    assert single["far_cuts_on_downbeats"] < figures["far_cuts_on_downbeats"]


def test_hits_land_on_beats_or_nearest_step():
    tempos = np.full(8, 120.0)  # 2 s bars, steps of 0.125 s
    alignment = cut_alignment([4.0, 5.02, 5.31], tempos)
    assert hit_steps(alignment) == [32, 40, 42]  # a downbeat, beat 3 of bar 2, the nearest step (5.31 / 0.125)


def test_written_midi_downbeats_are_the_plans(tmp_path):
    cuts = [4.2, 11.5, 17.0, 17.6, 25.3, 33.8, 38.4]
    plan = make_plan(FlatAnalysis(42.0, cuts), PlanOptions())
    assert plan.tempo_map
    roll = np.zeros((2, plan.n_bars * STEPS_PER_BAR, 88), np.float32)
    roll[0, ::4, 40] = 1  # a note on every beat
    path = write_midi(roll, plan, tmp_path / "map.mid")
    midi = pretty_midi.PrettyMIDI(str(path))
    downbeats = midi.get_downbeats()
    expected = [plan.bar_start(b) for b in range(plan.n_bars)]
    assert downbeats[: plan.n_bars] == pytest.approx(expected, abs=2e-3)
    _, tempi = midi.get_tempo_changes()
    assert tempi == pytest.approx([plan.tempo] + [c.tempo for c in plan.tempo_map], abs=1e-3)
    on_down, on_beat, n_far = downbeat_figures(path, cuts)
    assert n_far >= 5 and on_down >= 0.9 and on_beat >= 0.9
    assert plan.cut_alignment["far_cuts_on_downbeats"] == pytest.approx(on_down, abs=0.12)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(tempo_map=[{"bar": 3, "tempo": 130.0}]), "more than 8% at once"),
    (lambda d: d.update(tempo_map=[{"bar": 4, "tempo": 104.0}, {"bar": 2, "tempo": 108.0}]), "bars in order"),
    (lambda d: d.update(tempo_map=[{"bar": 0, "tempo": 104.0}]), "must come after bar 0"),
    (lambda d: d.update(tempo_map=[{"bar": 2, "tempo": 1000.0}]), "outside 30..300"),
    (lambda d: d.update(tempo_map=[{"bar": b, "tempo": 100.0 * 1.07 ** b} for b in range(1, 7)]), "more than 35% apart"),
    (lambda d: d.update(tempo_map=[{"bar": 2}]), "missing the field 'tempo'"),
    (lambda d: d.update(tempo_map=[{"bar": 2, "tempo": 108.0}], n_bars=2, chords=d["chords"][:4],
                        density=d["density"][:2], energy=d["energy"][:2], segments=[{"start_bar": 0, "end_bar": 2}]), "before bar 2"),
    (lambda d: d.update(hits=[10_000]), "hit step 10000 is outside"),
])  # fmt: skip
def test_bad_tempo_maps_get_one_clear_error(tmp_path, edit, message):
    plan = make_plan(FlatAnalysis(20.0, []), PlanOptions(tempo=100.0))
    data = plan.to_dict()
    edit(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BgmgenError, match=message) as info:
        Plan.load(path)
    assert "\n" not in str(info.value)


def test_edited_map_round_trips_and_is_followed(tmp_path):
    plan = make_plan(FlatAnalysis(20.0, []), PlanOptions(tempo=100.0))
    data = plan.to_dict()
    data["tempo_map"] = [{"bar": 4, "tempo": 105.0}, {"bar": 5, "tempo": 110.0}]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    loaded = Plan.load(path)
    assert loaded.tempo_map == [TempoChange(4, 105.0), TempoChange(5, 110.0)]
    assert loaded.bar_start(5) == pytest.approx(4 * 2.4 + 240 / 105)
    assert Plan.from_dict(loaded.to_dict()) == loaded


def test_cut_alignment_figures_count_far_cuts_only_for_downbeats():
    tempos = np.full(10, 120.0)  # 2 s bars
    alignment = cut_alignment([2.0, 2.5, 5.2], tempos)
    assert alignment.far.tolist() == [True, False, True]
    figures = alignment.figures()
    assert figures["far_cuts"] == 2 and figures["far_cuts_on_downbeats"] == 0.5
    assert figures["cuts_on_beats"] == pytest.approx(2 / 3)  # 5.2 s is 0.2 s from a beat, over a sixteenth (0.125 s)
    assert ON_GRID == 1 / 16


@pytest.mark.slow
def test_synthetic_clip_with_irregular_cuts_lands_on_the_written_downbeats(tmp_path):
    from bgmgen.evaluation.sync import grid_figures
    from bgmgen.video.visual import analyze_video
    from conftest import make_clip

    cuts = [4.2, 11.5, 17.0, 17.6, 25.3, 33.8, 38.4]
    clip = make_clip(tmp_path, "irregular.mp4", duration=42.0, cuts=cuts)
    analysis = analyze_video(clip)  # TransNetV2
    assert analysis.cuts == pytest.approx(cuts, abs=0.05)
    plan = make_plan(analysis, PlanOptions(seed=1))
    roll = np.zeros((2, plan.n_bars * STEPS_PER_BAR, 88), np.float32)
    roll[0, ::8, 48] = 1
    figures = grid_figures(write_midi(roll, plan, tmp_path / "irregular.mid"), analysis.cuts)
    # Every far cut reaches a downbeat here (issue 12 asks for 90 %), one of them through a short bar; one
    # tempo gets far fewer.
    assert figures.far_cuts >= 5 and figures.far_on_downbeats >= 0.9 and figures.on_beats >= 0.9
    assert plan.cut_alignment["far_cuts_on_downbeats"] == pytest.approx(figures.far_on_downbeats, abs=0.17)
    one_tempo = make_plan(analysis, PlanOptions(seed=1, tempo=plan.tempo))
    assert one_tempo.cut_alignment["far_cuts_on_downbeats"] < figures.far_on_downbeats - 0.3


def test_short_bars_shorten_their_bar_and_keep_positions_in_4_4_bars():
    tempos, beats = np.full(4, 120.0), np.array([4, 2, 3, 4])  # 2 s, 1 s, 1.5 s, 2 s
    edges = bar_edges(tempos, beats)
    assert edges == pytest.approx([0.0, 2.0, 3.0, 4.5, 6.5])
    assert time_of_position(1.25, tempos, edges, beats) == pytest.approx(2.5)  # beat 2 of the 2/4 bar
    assert time_of_position(1.75, tempos, edges, beats) == pytest.approx(3.0)  # past its last beat: its end
    assert time_of_position(5.0, tempos, edges, beats) == pytest.approx(8.5)  # the last tempo continues
    positions = np.array([0.5, 1.0, 1.4, 2.0, 2.7, 3.5])
    assert position_of_time(time_of_position(positions, tempos, edges, beats), tempos, edges) == pytest.approx(positions)
    # A cut 1.5 bars after the first lands on the bar line after the 2/4 bar: a downbeat, and far.
    alignment = cut_alignment([2.0, 3.0, 3.98], tempos, beats=beats)
    assert alignment.on_downbeat.tolist() == [True, True, False] and alignment.bar_lines.tolist()[:2] == [1, 2]
    assert alignment.far.tolist() == [True, False, False]  # 2 beats after it is not a bar later
    assert hit_steps(alignment) == [16, 32, 40]  # 3.98 s is on the third beat of the 3/4 bar


def test_a_cut_no_gentle_tempo_reaches_gets_a_short_bar():
    # 3.6 s between two cuts at about 100 BPM is 1.5 bars: 2 bars need 133 BPM, 1 bar 67 BPM.
    cuts = [4.8, 9.6, 13.2, 18.0]
    tempos, beats = fit_tempo_map(cuts, 21.0, 100.0, 100.0, LIMITS)
    assert np.all(np.abs(tempos[1:] / tempos[:-1] - 1) <= MAX_TEMPO_STEP)
    assert sorted(beats.tolist()).count(4) >= len(beats) - 1 and set(beats.tolist()) <= {2, 3, 4}
    alignment = cut_alignment(cuts, tempos, beats=beats)
    assert alignment.on_downbeat.all() and alignment.far.all()


def test_written_midi_has_the_short_bars_and_leaves_their_missing_steps_out(tmp_path):
    from bgmgen.music.arrange import arrange
    from bgmgen.music.midi import write_arrangement
    from bgmgen.music.patterns import GROOVES, pattern_hits
    from bgmgen.music.roll import PITCH_LOW, GeneratedParts
    from bgmgen.music.styles import get_style

    plan = make_plan(FlatAnalysis(26.0, [11.8, 15.7, 23.0]), PlanOptions())
    assert plan.short_bars and plan.cut_alignment["far_cuts_on_downbeats"] == 1.0
    short = plan.short_bars[0]
    roll = np.zeros((2, plan.n_bars * STEPS_PER_BAR, 88), np.float32)
    roll[0, ::2, 40] = 1  # a note on every eighth, also on the steps the short bar leaves out
    melody = roll.copy()
    dropped = short.bar * STEPS_PER_BAR + 4 * short.beats  # the short bar's first left-out step
    melody[0, dropped, 60] = 1
    melody[1, dropped : dropped + 8, 60] = 1  # held from a left-out step into the next bar
    parts = GeneratedParts(melody=melody, accompaniment=roll.copy())
    band = arrange(plan, parts, get_style("pop"), seed=0, hit_steps=plan.hits)
    midi = pretty_midi.PrettyMIDI(str(write_arrangement(band, plan, tmp_path / "short.mid")))
    assert midi.get_downbeats()[: plan.n_bars] == pytest.approx([plan.bar_start(b) for b in range(plan.n_bars)], abs=2e-3)
    signatures = [(ts.numerator, round(ts.time, 3)) for ts in midi.time_signature_changes]
    assert signatures == [(4, 0.0), (short.beats, round(plan.bar_start(short.bar), 3)), (4, round(plan.bar_start(short.bar + 1), 3))]
    start, end = plan.bar_start(short.bar), plan.bar_start(short.bar + 1)
    melody = next(t for t in midi.instruments if t.name == "melody")
    in_bar = [n.start for n in melody.notes if start - 0.01 <= n.start < end - 0.01]
    assert len(in_bar) == 2 * short.beats  # the eighths of its beats only, none piled on its bar line
    assert not [n for n in melody.notes if n.pitch == PITCH_LOW + 60]  # a note starting where the bar is cut is not played
    drums = next(t for t in midi.instruments if t.name == "drums")
    assert short.bar + 1 in [s.start_bar for s in plan.segments]  # the cut after it starts a segment
    fill = [n for n in drums.notes if start - 0.01 <= n.start < end - 0.01]
    assert fill and max(n.start for n in fill) > start + 0.5 * (end - start)  # the fill leads into the next bar
    # It is the end of one of the groove's fills, moved to the front so that it ends with the short bar.
    step = (end - start) / (4 * short.beats)
    played = {(round((n.start - start) / step), n.pitch) for n in fill}
    shift = STEPS_PER_BAR - 4 * short.beats
    ends = [{(s - shift, key) for s, key, _ in pattern_hits(f) if s >= shift} for f in GROOVES[get_style("pop").groove].fills]
    assert any(end_of_fill <= played for end_of_fill in ends)


@pytest.mark.parametrize("short_bars, message", [
    ([{"bar": 2, "beats": 5}], "2 or 3 beats, not 5"),
    ([{"bar": 3, "beats": 2}, {"bar": 3, "beats": 3}], "bars in order, once each"),
    ([{"bar": 99, "beats": 2}], "before bar"),
    ([{"bar": 2}], "missing the field 'beats'"),
])  # fmt: skip
def test_bad_short_bars_get_one_clear_error(tmp_path, short_bars, message):
    data = make_plan(FlatAnalysis(20.0, []), PlanOptions(tempo=100.0)).to_dict()
    data["short_bars"] = short_bars
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BgmgenError, match=message) as info:
        Plan.load(path)
    assert "\n" not in str(info.value)
