"""Styles: which instrument plays each role, how the band grooves, and at what tempo and density.

A ``Style`` is a preset (``STYLES``): a General MIDI program per role (``melody``, ``accompaniment``,
``bass``, ``pad``; ``None`` leaves the pad out), a groove family for the drums and the bass
(``bgmgen.music.patterns``; ``none`` means no drums), the tempo range it is played in, the density range
it maps the plan's per-bar density into, and per-role mix settings (CC7 level, CC91 reverb, CC93
chorus, CC10 pan). ``default_style`` picks one from the video's mood and pace; the plan stores the
name, so the user can change it there. ``instrument_program`` reads friendly GM names such as
``flute`` or ``fingered-bass`` for ``--instruments``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace

from bgmgen.errors import BgmgenError

ROLES = ("melody", "accompaniment", "bass", "drums", "pad")
PITCHED_ROLES = ("melody", "accompaniment", "bass", "pad")

# The 128 General MIDI level-1 program names, in program order.
GM_PROGRAMS = (
    "acoustic grand piano", "bright acoustic piano", "electric grand piano", "honky-tonk piano",
    "electric piano 1", "electric piano 2", "harpsichord", "clavinet", "celesta", "glockenspiel", "music box",
    "vibraphone", "marimba", "xylophone", "tubular bells", "dulcimer", "drawbar organ", "percussive organ",
    "rock organ", "church organ", "reed organ", "accordion", "harmonica", "tango accordion",
    "acoustic guitar nylon", "acoustic guitar steel", "electric guitar jazz", "electric guitar clean",
    "electric guitar muted", "overdriven guitar", "distortion guitar", "guitar harmonics", "acoustic bass",
    "electric bass finger", "electric bass pick", "fretless bass", "slap bass 1", "slap bass 2", "synth bass 1",
    "synth bass 2", "violin", "viola", "cello", "contrabass", "tremolo strings", "pizzicato strings",
    "orchestral harp", "timpani", "string ensemble 1", "string ensemble 2", "synth strings 1", "synth strings 2",
    "choir aahs", "voice oohs", "synth voice", "orchestra hit", "trumpet", "trombone", "tuba", "muted trumpet",
    "french horn", "brass section", "synth brass 1", "synth brass 2", "soprano sax", "alto sax", "tenor sax",
    "baritone sax", "oboe", "english horn", "bassoon", "clarinet", "piccolo", "flute", "recorder", "pan flute",
    "blown bottle", "shakuhachi", "whistle", "ocarina", "lead 1 square", "lead 2 sawtooth", "lead 3 calliope",
    "lead 4 chiff", "lead 5 charang", "lead 6 voice", "lead 7 fifths", "lead 8 bass and lead", "pad 1 new age",
    "pad 2 warm", "pad 3 polysynth", "pad 4 choir", "pad 5 bowed", "pad 6 metallic", "pad 7 halo", "pad 8 sweep",
    "fx 1 rain", "fx 2 soundtrack", "fx 3 crystal", "fx 4 atmosphere", "fx 5 brightness", "fx 6 goblins",
    "fx 7 echoes", "fx 8 sci-fi", "sitar", "banjo", "shamisen", "koto", "kalimba", "bagpipe", "fiddle", "shanai",
    "tinkle bell", "agogo", "steel drums", "woodblock", "taiko drum", "melodic tom", "synth drum", "reverse cymbal",
    "guitar fret noise", "breath noise", "seashore", "bird tweet", "telephone ring", "helicopter", "applause",
    "gunshot",
)  # fmt: skip
# Short names people use, beside the full ones.
GM_ALIASES = {
    "piano": 0, "grand-piano": 0, "bright-piano": 1, "rhodes": 4, "electric-piano": 4, "epiano": 4, "organ": 16,
    "nylon-guitar": 24, "guitar": 24, "steel-guitar": 25, "jazz-guitar": 26, "clean-guitar": 27,
    "fingered-bass": 33, "finger-bass": 33, "electric-bass": 33, "picked-bass": 34, "synth-bass": 38,
    "strings": 48, "string-ensemble": 48, "slow-strings": 49, "harp": 46, "choir": 52, "brass": 61,
    "horn": 60, "sax": 65, "warm-pad": 89, "new-age-pad": 88, "choir-pad": 91, "square-lead": 80, "saw-lead": 81,
}  # fmt: skip


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


_PROGRAM_BY_SLUG = {_slug(name): program for program, name in enumerate(GM_PROGRAMS)} | GM_ALIASES


def instrument_program(name: str) -> int:
    """A General MIDI program (0..127) from a friendly name (``flute``, ``fingered-bass``,
    ``acoustic grand piano``) or a number; raises BgmgenError naming close matches otherwise."""
    text = name.strip()
    if text.isdigit():
        program = int(text)
        if 0 <= program <= 127:
            return program
        raise BgmgenError(f"instrument program {program} is outside 0..127")
    slug = _slug(text)
    if slug in _PROGRAM_BY_SLUG:
        return _PROGRAM_BY_SLUG[slug]
    close = difflib.get_close_matches(slug, list(_PROGRAM_BY_SLUG), n=4, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else " (a General MIDI name like flute or fingered-bass, or 0..127)"
    raise BgmgenError(f"unknown instrument {name!r}{hint}")


def program_name(program: int) -> str:
    return _slug(GM_PROGRAMS[program])


@dataclass(frozen=True)
class Mix:
    """One role's place in the mix: CC7 level, CC91 reverb and CC93 chorus sends, CC10 pan (64 = centre)."""

    level: int = 100
    reverb: int = 40
    chorus: int = 0
    pan: int = 64


@dataclass(frozen=True)
class Style:
    """A preset sound: instruments per role, groove family, tempo and density ranges, the mix."""

    name: str
    description: str
    programs: dict[str, int | None]  # per pitched role; None = the role is left out
    groove: str  # a groove family in bgmgen.music.patterns; "none": no drums
    tempo_range: tuple[float, float]  # BPM the style is played in
    density_range: tuple[float, float]  # the plan's density 0..1 is mapped into this for bass and drums
    mix: dict[str, Mix] = field(default_factory=dict)
    swing: float = 0.0  # 0 straight .. 1 full triplet swing of the off-beat sixteenths
    melody_octave: int = 0  # octaves the melody is moved (a flute sits higher than a piano's right hand)

    @property
    def has_drums(self) -> bool:
        return self.groove != "none"

    def with_instruments(self, overrides: dict[str, int]) -> Style:
        """This style with some roles' programs replaced (``--instruments``)."""
        unknown = sorted(set(overrides) - set(PITCHED_ROLES))
        if unknown:
            raise BgmgenError(f"no role {unknown[0]!r} to set an instrument for (roles: {', '.join(PITCHED_ROLES)})")
        return replace(self, programs={**self.programs, **overrides})

    def mix_of(self, role: str) -> Mix:
        return self.mix.get(role, Mix())


STYLES: dict[str, Style] = {
    style.name: style
    for style in (
        Style(
            "piano", "solo piano, a left-hand bass and no drums: calm, intimate",
            {"melody": 0, "accompaniment": 0, "bass": 0, "pad": None}, "none", (64.0, 100.0), (0.1, 0.6),
            {"melody": Mix(112, 45), "accompaniment": Mix(92, 45), "bass": Mix(84, 40)},
        ),
        Style(
            "cinematic", "horn over strings, contrabass, choir pad, big toms and cymbals into each scene",
            {"melody": 60, "accompaniment": 48, "bass": 43, "pad": 52}, "cinematic", (60.0, 100.0), (0.2, 0.8),
            {"melody": Mix(110, 70), "accompaniment": Mix(92, 75, 10), "bass": Mix(96, 55), "pad": Mix(72, 90, 20),
             "drums": Mix(96, 70)},
        ),
        Style(
            "pop", "bright lead over piano, fingered bass, warm pad and a full pop kit",
            {"melody": 80, "accompaniment": 0, "bass": 33, "pad": 89}, "pop", (92.0, 128.0), (0.4, 1.0),
            {"melody": Mix(90, 35, 30, 60), "accompaniment": Mix(92, 40, 0, 72), "bass": Mix(104, 10),
             "pad": Mix(66, 60, 40, 56), "drums": Mix(102, 30)},
        ),
        Style(
            "ambient", "pan flute over harp, slow strings pad, a soft bass and no drums",
            {"melody": 75, "accompaniment": 46, "bass": 32, "pad": 49}, "none", (56.0, 84.0), (0.0, 0.4),
            {"melody": Mix(100, 100, 40), "accompaniment": Mix(90, 100, 30), "bass": Mix(80, 70),
             "pad": Mix(84, 110, 50)},
            melody_octave=0,
        ),
        Style(
            "lo-fi", "vibraphone over Rhodes, round bass, a soft swung kit with side stick",
            {"melody": 11, "accompaniment": 4, "bass": 33, "pad": None}, "lofi", (68.0, 92.0), (0.2, 0.6),
            {"melody": Mix(100, 55, 40, 70), "accompaniment": Mix(96, 50, 50, 58), "bass": Mix(100, 20),
             "drums": Mix(84, 35)},
            swing=0.55,
        ),
        Style(
            "upbeat", "marimba over steel guitar, picked bass, brass stabs pad and a busy four-on-the-floor kit",
            {"melody": 12, "accompaniment": 25, "bass": 34, "pad": 61}, "upbeat", (112.0, 140.0), (0.5, 1.0),
            {"melody": Mix(110, 35, 0, 70), "accompaniment": Mix(92, 35, 30, 52), "bass": Mix(104, 10),
             "pad": Mix(60, 45, 0, 76), "drums": Mix(100, 25)},
        ),
    )
}


def get_style(name: str) -> Style:
    """The preset called ``name``; BgmgenError listing the presets otherwise."""
    style = STYLES.get(name.strip().lower())
    if style is None:
        raise BgmgenError(f"unknown style {name!r}: choose one of {', '.join(STYLES)}")
    return style


def default_style(tension: float, brightness: float, tempo: float | None = None) -> str:
    """The style the video's mood and pace suggest: calm pictures get piano or ambient, tense ones cinematic
    or upbeat, the middle pop or lo-fi; bright pictures lean towards the brighter preset of each pair."""
    pace = tension if tempo is None else 0.6 * tension + 0.4 * min(max((tempo - 70.0) / 60.0, 0.0), 1.0)
    bright = brightness >= 0.5
    if pace < 0.3:
        return "piano" if bright else "ambient"
    if pace < 0.55:
        return "pop" if bright else "lo-fi"
    return "upbeat" if bright else "cinematic"


def parse_instruments(text: str | None) -> dict[str, int]:
    """``"melody=flute,bass=fingered-bass"`` -> ``{"melody": 73, "bass": 33}``; BgmgenError when malformed."""
    if not text:
        return {}
    overrides: dict[str, int] = {}
    for item in text.split(","):
        role, sep, name = item.partition("=")
        role = role.strip().lower()
        if not sep or not role or not name.strip():
            raise BgmgenError(f"--instruments wants ROLE=INSTRUMENT pairs like melody=flute, got {item.strip()!r}")
        if role not in PITCHED_ROLES:
            raise BgmgenError(f"--instruments: no role {role!r} (roles: {', '.join(PITCHED_ROLES)})")
        overrides[role] = instrument_program(name)
    return overrides
