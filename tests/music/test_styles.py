"""Style presets, GM instrument names, --instruments parsing, the default style and the plan's style field."""

from __future__ import annotations

import pytest

from bgmgen.errors import BgmgenError
from bgmgen.music.plan import Plan, Segment
from bgmgen.music.styles import STYLES, default_style, get_style, instrument_program, parse_instruments


def test_six_presets_that_differ_in_instruments_and_groove():
    assert len(STYLES) >= 6
    signatures = {(tuple(sorted(s.programs.items(), key=str)), s.groove) for s in STYLES.values()}
    assert len(signatures) == len(STYLES)
    assert {s.groove for s in STYLES.values()} >= {"none", "pop", "lofi", "upbeat", "cinematic"}
    for style in STYLES.values():
        assert style.tempo_range[0] < style.tempo_range[1] and 0 <= style.density_range[0] < style.density_range[1] <= 1


def test_friendly_instrument_names():
    assert instrument_program("flute") == 73
    assert instrument_program("fingered-bass") == 33
    assert instrument_program("Acoustic Grand Piano") == 0
    assert instrument_program("string ensemble 1") == 48
    assert instrument_program("42") == 42
    with pytest.raises(BgmgenError, match="unknown instrument 'kazoo'"):
        instrument_program("kazoo")
    with pytest.raises(BgmgenError, match="did you mean violin"):
        instrument_program("violn")
    with pytest.raises(BgmgenError, match="outside"):
        instrument_program("200")


def test_parse_instruments_and_override_a_style():
    overrides = parse_instruments("melody=flute, bass=fingered-bass")
    assert overrides == {"melody": 73, "bass": 33}
    style = get_style("piano").with_instruments(overrides)
    assert style.programs["melody"] == 73 and style.programs["accompaniment"] == 0 and style.programs["bass"] == 33
    for bad in ("melody", "drums=kit", "melody=", "singer=flute"):
        with pytest.raises(BgmgenError):
            parse_instruments(bad)


def test_unknown_style_names_the_choices():
    with pytest.raises(BgmgenError, match="choose one of piano, cinematic"):
        get_style("polka")
    assert get_style(" Lo-Fi ").name == "lo-fi"


def test_default_style_follows_mood_and_pace():
    assert default_style(0.1, 0.8, 72) == "piano"
    assert default_style(0.1, 0.2, 72) == "ambient"
    assert default_style(0.9, 0.2, 130) == "cinematic"
    assert default_style(0.9, 0.8, 130) == "upbeat"
    assert default_style(0.45, 0.7, 100) == "pop"
    assert default_style(0.45, 0.3, 100) == "lo-fi"


def plan_dict(**extra) -> dict:
    plan = Plan(duration=13.0, tempo=72.0, n_bars=4, key="C major", segments=[Segment(0, 4)], chords=["C:maj"] * 8,
                density=[0.5] * 4, energy=[0.5] * 4, cuts=[], cut_alignment_error=0.0,
                mood={"tension": 0.1, "brightness": 0.9}, seed=0, style="lo-fi")
    return {**plan.to_dict(), **extra}


def test_plan_keeps_validates_and_defaults_its_style():
    assert Plan.from_dict(plan_dict()).style == "lo-fi"
    assert Plan.from_dict(plan_dict(style="ambient")).to_dict()["style"] == "ambient"
    with pytest.raises(BgmgenError, match="plan style 'disco' is not a style"):
        Plan.from_dict(plan_dict(style="disco"))
    old = plan_dict()
    del old["style"]  # a plan from before styles: the mood chooses (calm and bright -> piano)
    assert Plan.from_dict(old).style == "piano"
