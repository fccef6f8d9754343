"""Tests for the timeline report (bgmgen/report.py) and the --report flags of `bgmgen score` and `bgmgen plan`.

The clips are solid colours joined by hard cuts at known times, so the PNG can be checked pixel by pixel:
the red cut lines must stand at the columns where those times fall, and the strip of frames must show each
shot's colour between them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bgmgen.errors import BgmgenError
from bgmgen.music.plan import Plan, Segment
from bgmgen.music.roll import Note, notes_to_roll
from bgmgen.report import (
    CUT_COLOUR,
    NOTE_COLOURS,
    PICTURE_COLOUR,
    _chord_name,
    draw_report,
    report_layout,
    require_matplotlib,
)

from test_pipeline import ok, run_cli

DURATION = 6.0
CUTS = (2.0, 4.2)  # seconds; 2.0 lies off the bar lines the plan can choose, 4.2 may lie on one
SHOT_COLOURS = {"blue": (0, 0, 255), "green": (0, 128, 0), "yellow": (255, 255, 0)}
COLOUR_TOLERANCE = 40  # per channel, for antialiased and YUV-converted pixels
CUT_TOLERANCE_PX = 4.0  # a line 0.02 s off (under a frame at 25 fps) is 4.9 px away on a 6 s report
FAST = ("--shot-detector", "histogram", "--device", "cpu", "-q")


def rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])


def read_png(path: Path) -> np.ndarray:
    """The PNG as uint8 RGB [height, width, 3]."""
    from matplotlib.image import imread

    image = imread(path)
    return np.round(image[..., :3] * 255).astype(int)


def columns_of(image: np.ndarray, rows: tuple[int, int], colour: np.ndarray, share: float = 0.5) -> list[float]:
    """Centres of the runs of columns where at least `share` of the pixels in `rows` (one at least) have `colour`."""
    band = image[rows[0] : rows[1]]
    matches = (np.abs(band - colour).max(axis=2) <= COLOUR_TOLERANCE).sum(axis=0)
    hits = matches >= max(1.0, share * len(band))
    centres, run = [], []
    for x in np.flatnonzero(hits):
        if run and x != run[-1] + 1:
            centres.append(float(np.mean(run)))
            run = []
        run.append(x)
    if run:
        centres.append(float(np.mean(run)))
    return centres


def assert_cuts_drawn_at(image: np.ndarray, layout, cuts: tuple[float, ...]) -> None:
    """The red lines in the upper half of the levels panel (clear of its legend) stand at the cut times."""
    top, bottom = layout.panels["levels"]
    found = columns_of(image, (top + 4, (top + bottom) // 2), rgb(CUT_COLOUR))
    expected = [layout.x_of(t) for t in cuts]
    assert len(found) == len(expected), (found, expected)
    for got, want in zip(found, expected):
        assert abs(got - want) <= CUT_TOLERANCE_PX, (found, expected)


def assert_frames_follow_the_shots(image: np.ndarray, layout) -> None:
    """Mid-shot, the strip of frames shows that shot's colour: the pictures line up with the time axis."""
    top, bottom = layout.panels["frames"]
    row = (top + bottom) // 2
    bounds = (0.0, *CUTS, DURATION)
    for (start, end), colour in zip(zip(bounds[:-1], bounds[1:]), SHOT_COLOURS.values()):
        # A frame tile spans ~0.4 s here; half a tile from each cut shows the shot itself.
        for t in np.linspace(start + 0.3, end - 0.3, 4):
            pixel = image[row, int(round(layout.x_of(t)))]
            assert np.abs(pixel - colour).max() <= COLOUR_TOLERANCE + 20, (t, pixel, colour)


@pytest.fixture
def cut_clip(clip_factory) -> Path:
    sources = [f"color=c={name}" for name in SHOT_COLOURS]
    return clip_factory("cuts.mp4", duration=DURATION, cuts=CUTS, size=(96, 54), sources=sources)


def test_plan_report_shows_the_cuts_where_they_are(cut_clip, tmp_path):
    png = tmp_path / "plan.png"
    plan_path = ok("plan", cut_clip, "-o", tmp_path / "cuts.plan.json", "--report", png, *FAST)
    plan = Plan.load(plan_path)
    assert [round(c, 2) for c in plan.cuts] == list(CUTS)  # the detector is exact on these clips
    layout = report_layout(plan.duration, with_roll=False)
    image = read_png(png)
    assert image.shape == (layout.height, layout.width, 3)
    assert_cuts_drawn_at(image, layout, CUTS)
    assert_frames_follow_the_shots(image, layout)
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.slow
def test_score_report_shows_the_cuts_and_the_notes(cut_clip, tmp_path):
    png = tmp_path / "report.png"
    ok("score", cut_clip, "-o", tmp_path / "out.mp4", "--report", png, "--steps", "2", "--guidance", "1", *FAST)
    layout = report_layout(DURATION, with_roll=True)
    image = read_png(png)
    assert image.shape == (layout.height, layout.width, 3)
    assert_cuts_drawn_at(image, layout, CUTS)
    assert_frames_follow_the_shots(image, layout)
    top, bottom = layout.panels["roll"]
    onsets = np.abs(image[top:bottom] - rgb(NOTE_COLOURS[1])).max(axis=2) <= COLOUR_TOLERANCE
    assert onsets.sum() > 50  # the generated notes are drawn


def test_report_path_is_checked_before_any_work(cut_clip, tmp_path):
    result = run_cli("plan", cut_clip, "-o", tmp_path / "p.json", "--report", tmp_path / "report.jpg", *FAST)
    assert result.exit_code == 3 and "PNG" in result.output
    assert not (tmp_path / "p.json").exists()
    (tmp_path / "taken.png").write_bytes(b"x")
    result = run_cli("plan", cut_clip, "-o", tmp_path / "p.json", "--report", tmp_path / "taken.png", *FAST)
    assert result.exit_code == 3 and "--force" in result.output


def small_plan(n_bars: int = 4, tempo: float = 120.0, cuts: tuple[float, ...] = (4.0,)) -> Plan:
    return Plan(
        duration=n_bars * 240.0 / tempo - 0.5, tempo=tempo, n_bars=n_bars, key="A minor",
        segments=[Segment(0, 2), Segment(2, n_bars)], chords=["A:min", "A:min", "F:maj7", "G:7"] * (n_bars // 2),
        density=[0.5] * n_bars, energy=[0.6] * n_bars, cuts=list(cuts), cut_alignment_error=0.0,
        mood={"tension": 0.5, "brightness": 0.5}, seed=0,
    )  # fmt: skip


def test_notes_are_drawn_at_their_time(tmp_path):
    plan = small_plan()  # 120 BPM: a step (sixteenth) is 0.125 s, a bar 2 s
    roll = notes_to_roll([Note(8, 12, 60), Note(40, 44, 72)], plan.n_bars * 16)  # at 1.0 s and 5.0 s
    picture = SimpleNamespace(energy=np.full(100, 0.9), frame_times=lambda: np.arange(100) / 25.0)  # 0..4 s
    layout = draw_report(plan, None, roll, tmp_path / "r.png", analysis=picture)
    image = read_png(tmp_path / "r.png")
    top, bottom = layout.panels["roll"]
    found = columns_of(image, (top, bottom), rgb(NOTE_COLOURS[1]), share=0.0)
    starts = [f - 0.125 / 2 * (layout.x1 - layout.x0) / plan.duration for f in found]  # run centre -> onset start
    assert starts == pytest.approx([layout.x_of(1.0), layout.x_of(5.0)], abs=2.0)
    assert_cuts_drawn_at(image, layout, (4.0,))
    top, bottom = layout.panels["levels"]
    grey = np.abs(image[top + 3 : bottom - 3] - rgb(PICTURE_COLOUR)).max(axis=2) <= COLOUR_TOLERANCE
    has_picture_energy = [bool(grey[:, int(layout.x_of(t))].any()) for t in (0.5, 2.0, 3.5, 5.0, 6.5)]
    assert has_picture_energy == [True, True, True, False, False]  # the analysis' energy covers 0..4 s


def test_chord_names_read_like_a_lead_sheet():
    assert [_chord_name(c) for c in ("A:min7", "C:maj", "G:maj/3", "B:hdim7", "N")] == ["Am7", "C", "G/B", "Bm7b5", "N.C."]


def test_missing_matplotlib_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(BgmgenError, match="pip install"):
        require_matplotlib()
