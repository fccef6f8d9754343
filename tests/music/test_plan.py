"""Plans: tempo fitted to cuts, bars, segments, key and chords, per-bar levels, JSON and validation."""

import json
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import spearmanr

from bgmgen.errors import BgmgenError, InputError
from bgmgen.music.harmony import Key
from bgmgen.music.plan import Plan, PlanOptions, Segment, alignment_error, choose_tempo, make_plan, make_segments
from bgmgen.music.progressions import ProgressionBank, is_tonic
from bgmgen.video.features import LearnedCues

FPS = 4.0  # analysis frames per second of the fake analyses


@dataclass
class FakeAnalysis:
    """Just what make_plan reads from a VideoAnalysis."""

    duration: float
    cuts: list[float] = field(default_factory=list)
    energy_fn: object = None  # time (s) -> 0..1
    tension: float = 0.5
    brightness: float = 0.7
    analysis_fps: float = FPS

    def __post_init__(self):
        t = self.frame_times()
        fn = self.energy_fn or (lambda x: 0.5 + 0 * x)
        self.energy = np.clip(np.asarray(fn(t), dtype=float), 0, 1)
        self.motion = self.energy.copy()
        self.info = SimpleNamespace(duration=self.duration, fps=25.0, width=64, height=36, has_audio=False)
        self.mood = SimpleNamespace(tension=self.tension, brightness=self.brightness)
        self.learned = LearnedCues()

    def frame_times(self) -> np.ndarray:
        return np.arange(max(1, int(np.ceil(self.duration * self.analysis_fps)))) / self.analysis_fps

    def mean_over(self, signal, start, end) -> float:
        t = self.frame_times()
        inside = (t >= start) & (t < end)
        if not inside.any():
            return float(signal[int(np.argmin(np.abs(t - start)))])
        return float(np.mean(signal[inside]))


@pytest.fixture(scope="module")
def bank() -> ProgressionBank:
    return ProgressionBank.load()


def test_tempo_fits_cuts_on_bar_lines(bank):
    analysis = FakeAnalysis(12.0, cuts=[4.0, 8.0], tension=0.2)
    plan = make_plan(analysis, PlanOptions(), bank)
    assert plan.tempo == pytest.approx(120.0, abs=0.01)
    assert plan.cut_alignment_error < 0.05
    assert plan.n_bars == 6
    assert [s.start_bar for s in plan.segments] == [0, 2, 4]
    assert plan.segments[-1].end_bar == 6


def test_tempo_other_bar_length(bank):
    # Cuts every 7.2 s: 3 bars at 100 BPM or 4 bars at 133.3 BPM; a tense mood (~125) picks the latter.
    cuts = [7.2, 14.4, 21.6]
    plan = make_plan(FakeAnalysis(26.0, cuts=cuts, tension=0.9), PlanOptions(), bank)
    assert plan.tempo == pytest.approx(400 / 3)
    assert plan.cut_alignment_error < 0.05
    assert alignment_error(cuts, plan.bar_duration) == pytest.approx(plan.cut_alignment_error)
    assert {4, 8, 12} <= {s.start_bar for s in plan.segments}
    calm = make_plan(FakeAnalysis(26.0, cuts=cuts, tension=0.0), PlanOptions(), bank)
    assert calm.tempo == pytest.approx(100.0) and calm.cut_alignment_error < 0.05


def test_no_cuts_uses_mood_tempo(bank):
    calm = make_plan(FakeAnalysis(30.0, tension=0.0), PlanOptions(), bank)
    tense = make_plan(FakeAnalysis(30.0, tension=1.0), PlanOptions(), bank)
    assert 70 <= calm.tempo < 90 and 115 < tense.tempo <= 140
    assert calm.cut_alignment_error == 0.0


def test_choose_tempo_stays_in_range():
    tempo = choose_tempo([1.234, 5.67, 9.1], 100.0, 90.0, 95.0)
    assert 90.0 <= tempo <= 95.0


def test_short_clip_gets_one_bar(bank):
    plan = make_plan(FakeAnalysis(0.4), PlanOptions(), bank)
    assert plan.n_bars == 1 and len(plan.chords) == 2 and len(plan.segments) == 1
    assert plan.segments[0] == Segment(0, 1)
    assert is_tonic(plan.chord_objects()[-1].transpose(-plan.key_object().tonic).harte, plan.key_object().mode)


def test_long_video_with_many_cuts_is_covered(bank):
    # Planning speed is a benchmark's business (benchmarks/picture_to_music.py), not a timed test's.
    rng = np.random.default_rng(0)
    cuts = sorted(rng.uniform(1, 599, 150).tolist())
    analysis = FakeAnalysis(600.0, cuts=cuts, energy_fn=lambda t: 0.5 + 0.4 * np.sin(t / 30))
    plan = make_plan(analysis, PlanOptions(), bank)
    assert plan.bar_start(plan.n_bars) >= 600.0 > plan.bar_start(plan.n_bars - 1)
    assert all(s.n_bars >= 1 for s in plan.segments) and max(s.n_bars for s in plan.segments) <= 8


def test_segments_merge_and_split():
    # Every cut starts a segment; 20 bars without a cut become 8 + 8 + 4 phrases.
    segments = make_segments([4, 5, 10], 30)
    lengths = [s.n_bars for s in segments]
    assert [s.start_bar for s in segments][:4] == [0, 4, 5, 10] and sum(lengths) == 30
    assert segments[0].start_bar == 0 and segments[-1].end_bar == 30
    assert [s.start_bar for s in segments][-3:] == [10, 18, 26]
    assert [n for n in lengths[-3:]] == [8, 8, 4]
    assert make_segments([], 9) == [Segment(0, 4), Segment(4, 9)]
    assert make_segments([1], 1) == [Segment(0, 1)]
    assert make_segments([1], 3) == [Segment(0, 1), Segment(1, 3)]
    assert make_segments([2, 2, 0, 7], 4) == [Segment(0, 2), Segment(2, 4)]


def test_chords_in_key_and_end_on_tonic(bank):
    for seed, key in [(0, "A minor"), (1, "Eb major"), (2, None)]:
        plan = make_plan(FakeAnalysis(40.0, cuts=[8.0, 16.0, 24.0]), PlanOptions(key=key, seed=seed), bank)
        key_obj = plan.key_object()
        chords = plan.chord_objects()
        assert len(chords) == 2 * plan.n_bars
        in_scale = sum(c.root in key_obj.scale for c in chords)
        assert in_scale >= 0.8 * len(chords)
        assert is_tonic(chords[-1].transpose(-key_obj.tonic).harte, key_obj.mode)


def test_mode_follows_brightness(bank):
    assert make_plan(FakeAnalysis(10.0, brightness=0.9), PlanOptions(), bank).key_object().mode == "major"
    assert make_plan(FakeAnalysis(10.0, brightness=0.1), PlanOptions(), bank).key_object().mode == "minor"


def test_levels_follow_energy(bank):
    # Energy rises for 20 s, then falls: the plan's levels must rise and fall with it.
    analysis = FakeAnalysis(40.0, energy_fn=lambda t: 1 - np.abs(t - 20) / 20)
    plan = make_plan(analysis, PlanOptions(tempo=120), bank)
    bars = range(plan.n_bars)
    picture = [analysis.mean_over(analysis.energy, plan.bar_start(i), plan.bar_start(i + 1)) for i in bars]
    assert spearmanr(picture, plan.energy).statistic > 0.8
    assert spearmanr(picture, plan.density).statistic > 0.8
    middle = plan.n_bars // 2
    assert plan.energy[middle] > plan.energy[0] + 0.2 and plan.density[middle] > plan.density[0] + 0.2
    assert all(0 <= v <= 1 for v in plan.energy + plan.density)


def test_levels_follow_tension_and_ending(bank):
    calm = make_plan(FakeAnalysis(30.0, tension=0.0), PlanOptions(tempo=100), bank)
    tense = make_plan(FakeAnalysis(30.0, tension=1.0), PlanOptions(tempo=100), bank)
    assert np.mean(tense.energy) > np.mean(calm.energy) + 0.3
    assert np.mean(tense.density) > np.mean(calm.density) + 0.3
    assert max(calm.energy) <= 0.6
    assert calm.energy[-1] < calm.energy[-2] and calm.density[-1] < calm.density[-2]


def test_cut_lifts_level(bank):
    plan = make_plan(FakeAnalysis(16.0, cuts=[8.0]), PlanOptions(tempo=120), bank)
    assert plan.segments[1].start_bar == 4
    assert plan.energy[4] > plan.energy[3] + 0.05


def test_overrides_honoured(bank):
    plan = make_plan(FakeAnalysis(20.0, cuts=[5.1]), PlanOptions(tempo=97.0, key="F#m"), bank)
    assert plan.tempo == 97.0 and plan.key == "F# minor"
    assert plan.cut_alignment_error == pytest.approx(alignment_error([5.1], 240 / 97.0))
    with pytest.raises(BgmgenError, match="tempo"):
        make_plan(FakeAnalysis(20.0), PlanOptions(tempo=400.0), bank)
    with pytest.raises(BgmgenError, match="key"):
        make_plan(FakeAnalysis(20.0), PlanOptions(key="H minor"), bank)


def test_seeds(bank):
    analysis = FakeAnalysis(30.0, cuts=[10.0])
    a = make_plan(analysis, PlanOptions(seed=1), bank)
    assert make_plan(analysis, PlanOptions(seed=1), bank).to_dict() == a.to_dict()
    others = [make_plan(analysis, PlanOptions(seed=s, key="C major"), bank).chords for s in range(2, 6)]
    assert len({tuple(c) for c in others}) > 1
    assert all(p.key == "C major" for p in [make_plan(analysis, PlanOptions(seed=9, key="C"), bank)])


def test_plan_uses_packaged_bank_by_default():
    assert make_plan(FakeAnalysis(8.0)).n_bars >= 1


def test_json_round_trip(bank, tmp_path):
    plan = make_plan(FakeAnalysis(21.3, cuts=[3.3, 9.9, 15.0]), PlanOptions(seed=4), bank)
    plan.captions = [f"shot {i}" for i in range(len(plan.segments))]
    path = tmp_path / "plan.json"
    plan.save(path)
    loaded = Plan.load(path)
    assert loaded == plan
    assert json.loads(path.read_text())["chords"] == plan.chords
    assert loaded.segment_of_bar(plan.n_bars - 1) == len(plan.segments) - 1
    with pytest.raises(IndexError):
        loaded.segment_of_bar(plan.n_bars)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("tempo"), "missing the field 'tempo'"),
        (lambda d: d.update(tempo=10), "outside"),
        (lambda d: d.update(tempo="fast"), "wrong type"),
        (lambda d: d["chords"].pop(), "chords for"),
        (lambda d: d["chords"].__setitem__(0, "Q:maj"), "not a chord label"),
        (lambda d: d["energy"].append(0.5), "energy values"),
        (lambda d: d["density"].__setitem__(0, 1.5), "density values must lie"),
        (lambda d: d["segments"].pop(), "segments cover"),
        (lambda d: d["segments"].__setitem__(0, {"start_bar": 1, "end_bar": 2}), "contiguous"),
        (lambda d: d.update(key="Z major"), "is not a key"),
        (lambda d: d.update(n_bars=1), "do not cover"),
        (lambda d: d.update(captions=["only one"]), "captions"),
        (lambda d: d.update(version=99), "version"),
    ],
)
def test_validation_errors(bank, change, message):
    data = make_plan(FakeAnalysis(12.0, cuts=[4.0, 8.0]), PlanOptions(), bank).to_dict()
    change(data)
    with pytest.raises(BgmgenError, match=message) as info:
        Plan.from_dict(data)
    assert "\n" not in str(info.value)


def test_load_errors(tmp_path):
    with pytest.raises(InputError):
        Plan.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BgmgenError, match="not valid JSON"):
        Plan.load(bad)
    bad.write_text("[]")
    with pytest.raises(BgmgenError, match="JSON object"):
        Plan.load(bad)


def test_key_label_round_trips():
    for text in ("A minor", "Eb major", "F# minor"):
        assert Key.parse(text).label == text


def test_step_time_follows_the_bars(bank):
    plan = make_plan(FakeAnalysis(12.0, cuts=[4.0, 8.0], tension=0.2), PlanOptions(), bank)
    assert plan.step_time(16) == pytest.approx(plan.bar_start(1))
    np.testing.assert_allclose(plan.step_time(np.array([0, 4, 32])), [0.0, plan.beat_duration, plan.bar_start(2)])


def test_energy_builds_into_a_big_cut_and_falls_away_at_the_end(bank):
    # A flat picture: the arc alone shapes the levels.
    plan = make_plan(FakeAnalysis(32.0, cuts=[16.0]), PlanOptions(tempo=120), bank)  # cut at bar 8 of 16
    energy, density = np.array(plan.energy), np.array(plan.density)
    assert energy[5] < energy[6] < energy[7] < energy[8]  # builds over two bars, peaks on the cut
    assert density[5] < density[7] < density[8]
    assert energy[10] < energy[8]  # and settles after it
    assert energy[-1] < energy[-2] < energy[-3] < energy[10]  # falls away over the last bars
    no_cut = make_plan(FakeAnalysis(32.0), PlanOptions(tempo=120), bank)
    assert np.ptp(no_cut.energy[:12]) < 0.02  # no cut, no build


def test_tonic_depends_on_the_video_as_well_as_the_seed(bank):
    videos = [FakeAnalysis(20.0 + 1.3 * i, tension=0.3, brightness=0.7) for i in range(12)]
    keys = [make_plan(v, PlanOptions(seed=1), bank).key for v in videos]
    assert len(set(keys)) >= 4  # one seed, twelve videos: spread over keys
    assert keys == [make_plan(v, PlanOptions(seed=1), bank).key for v in videos]  # same video and seed, same key
    assert all(k.endswith("major") for k in keys)  # the mode still follows the mood
