"""Hits on cuts: an accented chord struck on each hit step, heard in FluidSynth's audio at the cut."""

from types import SimpleNamespace

import numpy as np
import pretty_midi
import pytest

from bgmgen.evaluation.sync import grid_figures, onset_ratio
from bgmgen.music.harmony import Chord
from bgmgen.music.hits import HIT_VELOCITY, accent_hits, hit_voicing
from bgmgen.music.midi import write_midi
from bgmgen.music.plan import PlanOptions, make_plan
from bgmgen.music.roll import N_PITCHES, PITCH_LOW, STEPS_PER_BAR, Note
from bgmgen.sound.render import RenderOptions, read_wav, render
from bgmgen.video.features import LearnedCues


class FlatAnalysis:
    def __init__(self, duration: float, cuts: list[float]):
        self.info = SimpleNamespace(duration=duration)
        self.cuts, self.analysis_fps = cuts, 4.0
        self.energy = self.motion = np.full(int(duration * 4), 0.4)
        self.mood = SimpleNamespace(tension=0.3, brightness=0.7)
        self.learned = LearnedCues()

    def mean_over(self, signal, start, end) -> float:
        return float(np.mean(signal))


def busy_roll(plan) -> np.ndarray:
    """A steady accompaniment: a chord tone struck on every eighth note, so the hit has to stand out."""
    roll = np.zeros((2, plan.n_bars * STEPS_PER_BAR, N_PITCHES), np.float32)
    for step in range(0, roll.shape[1], 2):
        chord = Chord.parse(plan.chords[step // 8])
        pitch = 60 + chord.pitch_classes[step // 2 % len(chord.pitch_classes)] - PITCH_LOW
        roll[0, step, pitch] = 1
        roll[1, step : step + 2, pitch] = 1
    return roll


def test_voicing_has_a_low_bass_and_the_chord_tones():
    pitches = hit_voicing(Chord.parse("A:min/b3"))  # A minor over C
    assert pitches[0] % 12 == 0 and pitches[0] < 48  # C in the bass
    assert {p % 12 for p in pitches} == {9, 0, 4}
    assert hit_voicing(Chord.parse("N")) == []


def test_hit_strikes_and_restrikes_notes():
    plan = make_plan(FlatAnalysis(16.0, [8.0]), PlanOptions(tempo=120.0))
    assert plan.hits == [64]
    chord = plan.chord_objects()[8]
    held = Note(60, 70, hit_voicing(chord)[-1], 70)  # a chord tone sounding through the hit
    other = Note(64, 66, 100, 60)  # a note starting on the hit
    notes = accent_hits([held, other], plan)
    on_hit = [n for n in notes if n.start == 64]
    assert {n.pitch for n in on_hit} == set(hit_voicing(chord)) | {100}
    assert all(n.velocity >= HIT_VELOCITY for n in on_hit)
    assert Note(60, 64, held.pitch, 70) in notes  # the held note stops where it is struck again


def test_hits_are_heard_on_the_cuts(tmp_path):
    cuts = [5.2, 9.9, 17.6, 24.1, 24.6, 31.0]
    plan = make_plan(FlatAnalysis(35.0, cuts), PlanOptions())
    roll = busy_roll(plan)
    ratios = {}
    for label, hits in (("with", plan.hits), ("without", [])):
        plan.hits = list(hits)
        midi = write_midi(roll, plan, tmp_path / f"{label}.mid")
        wav = render(midi, tmp_path / f"{label}.wav", plan.duration, RenderOptions())
        beats = pretty_midi.PrettyMIDI(str(midi)).get_beats().tolist()
        audio = read_wav(wav)
        ratios[label] = onset_ratio(audio, RenderOptions().sample_rate, cuts, against=beats)
        ratios[label + " vs elsewhere"] = onset_ratio(audio, RenderOptions().sample_rate, cuts)
        grid = grid_figures(midi, cuts)
        assert grid.far_on_downbeats >= 0.9 and grid.on_beats >= 0.9
    # The measure: onset strength at the cuts against the median elsewhere.
    assert ratios["with vs elsewhere"] >= 2.0
    # Stricter, against the accompaniment's own beats: the hits stand out; without them a cut is an ordinary beat.
    assert ratios["with"] >= 1.5 * ratios["without"] and ratios["without"] < 1.3, ratios


def test_grid_figures_count_far_cuts_on_the_files_downbeats(tmp_path):
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)  # 2 s bars, 0.5 s beats
    piano = pretty_midi.Instrument(0)
    piano.notes.append(pretty_midi.Note(80, 60, 0.0, 20.0))
    midi.instruments.append(piano)
    midi.write(str(tmp_path / "x.mid"))
    figures = grid_figures(tmp_path / "x.mid", [4.05, 4.6, 9.0, 15.3])
    assert figures.far_cuts == 3  # 4.6 s is under a bar after 4.05 s
    assert figures.far_on_downbeats == pytest.approx(1 / 3)  # 4.05 yes (0.05 <= 0.125), 9.0 (a beat) and 15.3 no
    assert figures.on_beats == pytest.approx(3 / 4)  # 15.3 is 0.2 s from a beat
