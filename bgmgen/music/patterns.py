"""Our own pattern library for the drums and the bass, one bar (16 sixteenths) each, by groove family.

Every pattern here was written for bgmgen (none is taken from a sample pack or another program).
A drum pattern maps a kit piece to a 16-character line: ``X`` accented hit, ``x`` hit, ``o`` ghost
(soft) hit, ``.`` rest. Patterns come in three energy levels (quiet, steady, driving), each with
variants, so the arranger can change bars within a phrase; fills lead into a new segment. A bass
pattern is a list of ``(step, length, degree)``: ``root`` (the chord's bass note), ``fifth``,
``octave``, ``third`` or ``approach`` (a semitone under the next chord's bass, leading into it).
"""

from __future__ import annotations

from dataclasses import dataclass

# General MIDI percussion keys (channel 10).
KICK, SIDE_STICK, SNARE, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 39, 42, 44, 46
LOW_FLOOR_TOM, HIGH_FLOOR_TOM, LOW_TOM, MID_TOM, HIGH_TOM = 41, 43, 45, 47, 50
CRASH, RIDE, TAMBOURINE, SHAKER, SPLASH = 49, 51, 54, 70, 55
KIT = {
    "kick": KICK, "stick": SIDE_STICK, "snare": SNARE, "clap": CLAP, "hat": CLOSED_HAT, "pedal": PEDAL_HAT,
    "open": OPEN_HAT, "floor": LOW_FLOOR_TOM, "tom_low": LOW_TOM, "tom_mid": MID_TOM, "tom_high": HIGH_TOM,
    "crash": CRASH, "ride": RIDE, "tamb": TAMBOURINE, "shaker": SHAKER,
}  # fmt: skip
HIT_VELOCITY = {"X": 1.0, "x": 0.78, "o": 0.45}  # of the bar's drum velocity

DrumPattern = dict[str, str]
BassPattern = list[tuple[int, int, str]]


@dataclass(frozen=True)
class Groove:
    """A groove family: drum patterns per energy level (quiet, steady, driving), fills, bass patterns per level."""

    drums: tuple[tuple[DrumPattern, ...], ...]
    fills: tuple[DrumPattern, ...]
    bass: tuple[tuple[BassPattern, ...], ...]


# Bass lines shared by calm styles: long notes that change with the chords.
CALM_BASS: tuple[tuple[BassPattern, ...], ...] = (
    ([(0, 16, "root")], [(0, 8, "root"), (8, 8, "root")]),
    ([(0, 8, "root"), (8, 8, "root")], [(0, 6, "root"), (6, 2, "fifth"), (8, 8, "root")]),
    ([(0, 6, "root"), (6, 2, "fifth"), (8, 6, "root"), (14, 2, "approach")], [(0, 4, "root"), (4, 4, "fifth"), (8, 8, "root")]),
)

GROOVES: dict[str, Groove] = {
    "none": Groove(drums=((), (), ()), fills=(), bass=CALM_BASS),
    "pop": Groove(
        drums=(
            (
                {"kick": "X.......x.......", "stick": "....x.......x...", "hat": "x...x...x...x..."},
                {"kick": "X.........x.....", "stick": "....x.......x...", "hat": "x...x...x...x.o."},
            ),
            (
                {"kick": "X.....x.x.......", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
                {"kick": "X.......x.x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.o."},
                {"kick": "X.....x...x.....", "snare": "....X.......X..o", "hat": "x.x.x.x.x.x.x.x.", "open": "..............x."},
            ),
            (
                {"kick": "X.....x.x.x.....", "snare": "....X.......X...", "hat": "xoxoxoxoxoxoxoxo", "tamb": "....x.......x..."},
                {"kick": "X.x...x...x..x..", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x.", "open": "......x.......x."},
                {"kick": "X.....x.x.....x.", "snare": "....X..o....X...", "clap": "....x.......x...", "hat": "xoxoxoxoxoxoxoxo"},
            ),
        ),
        fills=(
            {"kick": "X.......", "snare": "....X...xoxoXxXx", "hat": "x.x.x.x........."},
            {"kick": "X.....x.", "snare": "....X.......", "tom_high": "........Xx", "tom_mid": "..........Xx", "floor": "............XxXx"},
            {"kick": "X.......x.......", "snare": "....X...x.x.XXXX"},
        ),
        bass=(
            ([(0, 8, "root"), (8, 8, "root")], [(0, 6, "root"), (6, 2, "root"), (8, 8, "root")]),
            ([(0, 3, "root"), (6, 2, "root"), (8, 3, "root"), (14, 2, "fifth")],
             [(0, 3, "root"), (3, 3, "root"), (8, 4, "root"), (12, 2, "fifth"), (14, 2, "approach")]),
            ([(0, 2, "root"), (2, 2, "root"), (4, 2, "octave"), (6, 2, "root"), (8, 2, "root"), (10, 2, "root"),
              (12, 2, "fifth"), (14, 2, "approach")],
             [(0, 3, "root"), (3, 3, "root"), (6, 2, "octave"), (8, 3, "root"), (11, 3, "fifth"), (14, 2, "root")]),
        ),
    ),
    "lofi": Groove(
        drums=(
            (
                {"kick": "X.........x.....", "stick": "....x.......x...", "hat": "x...x...x...x..."},
                {"kick": "X......x..x.....", "stick": "....x.......x...", "hat": "x...x...x...x..o"},
            ),
            (
                {"kick": "X......x..x.....", "snare": "....x.......x...", "hat": "x.o.x.o.x.o.x.o.", "shaker": "..x...x...x...x."},
                {"kick": "X.x.......x.....", "snare": "....x..o....x...", "hat": "x.o.x.o.x.o.x.oo"},
            ),
            (
                {"kick": "X.x....x..x.....", "snare": "....X..o....X.o.", "hat": "x.x.x.x.x.x.x.x.", "shaker": "..x...x...x...x."},
                {"kick": "X......x.xx.....", "snare": "....X.......X...", "hat": "xoxoxoxoxoxoxoxo"},
            ),
        ),
        fills=(
            {"kick": "X.........", "snare": "....x.....o.x.oo", "hat": "x.o.x.o.x......."},
            {"kick": "X.......", "stick": "....x...", "tom_mid": "........x.o.", "floor": "............x.x."},
        ),
        bass=(
            ([(0, 10, "root"), (10, 6, "fifth")], [(0, 7, "root"), (7, 1, "root"), (8, 8, "root")]),
            ([(0, 6, "root"), (7, 3, "fifth"), (10, 4, "root"), (14, 2, "approach")],
             [(0, 4, "root"), (6, 2, "third"), (8, 6, "fifth"), (14, 2, "approach")]),
            ([(0, 3, "root"), (3, 3, "octave"), (7, 3, "fifth"), (10, 4, "root"), (14, 2, "approach")],
             [(0, 4, "root"), (4, 2, "fifth"), (7, 3, "octave"), (10, 2, "fifth"), (12, 4, "root")]),
        ),
    ),
    "upbeat": Groove(
        drums=(
            (
                {"kick": "X...x...X...x...", "hat": "..x...x...x...x.", "clap": "....x.......x..."},
                {"kick": "X...x...X...x...", "hat": "..x...x...x...x.", "stick": "....x.......x..."},
            ),
            (
                {"kick": "X...x...X...x...", "snare": "....X.......X...", "open": "..x...x...x...x.", "hat": "x...x...x...x..."},
                {"kick": "X...x...X...x.x.", "clap": "....X.......X...", "hat": "xxx.xxx.xxx.xxx.", "open": "...x.......x...."},
                {"kick": "X...x...X...x...", "snare": "....X.......X..o", "hat": "xoxxxoxxxoxxxoxx"},
            ),
            (
                {"kick": "X...x...X...x...", "snare": "....X.......X...", "clap": "....x.......x...", "hat": "xxxxxxxxxxxxxxxx",
                 "open": "..x...x...x...x.", "tamb": "x.x.x.x.x.x.x.x."},
                {"kick": "X...x...X...x.x.", "snare": "....X..o....X.o.", "open": "..x...x...x...x.", "ride": "x...x...x...x...",
                 "shaker": "xoxoxoxoxoxoxoxo"},
            ),
        ),
        fills=(
            {"kick": "X...x...X...", "snare": "....X...XxXxXXXX", "open": "..x...x........."},
            {"kick": "X...x...", "snare": "....X...", "tom_high": "........XX", "tom_mid": "..........XX", "floor": "............XXXX"},
            {"kick": "X...x...X.X.X.X.", "clap": "....X.......XXXX"},
        ),
        bass=(
            ([(0, 2, "root"), (4, 2, "root"), (8, 2, "root"), (12, 2, "root")],
             [(2, 2, "root"), (6, 2, "root"), (10, 2, "root"), (14, 2, "octave")]),
            ([(2, 2, "root"), (6, 2, "root"), (8, 2, "octave"), (10, 2, "root"), (14, 2, "root")],
             [(0, 2, "root"), (2, 2, "octave"), (6, 2, "root"), (10, 2, "fifth"), (14, 2, "approach")]),
            ([(0, 2, "root"), (2, 2, "octave"), (4, 2, "root"), (6, 2, "octave"), (8, 2, "root"), (10, 2, "octave"),
              (12, 2, "fifth"), (14, 2, "approach")],
             [(0, 1, "root"), (2, 2, "root"), (3, 1, "octave"), (6, 2, "root"), (8, 1, "root"), (10, 2, "octave"),
              (12, 2, "fifth"), (14, 2, "root")]),
        ),
    ),
    "cinematic": Groove(
        drums=(
            (
                {"floor": "X...............", "ride": "........o......."},
                {"floor": "X.......o.......", "kick": "X..............."},
            ),
            (
                {"kick": "X.......X.......", "floor": "X.....x.x.......", "tom_low": "..........x.....", "ride": "x...x...x...x..."},
                {"kick": "X.........x.....", "floor": "X..x..x.........", "snare": "............x...", "ride": "x...x...x...x..."},
            ),
            (
                {"kick": "X.....x.X.......", "floor": "X.x.X.x.X.x.X.x.", "snare": "....X.......X...", "tom_low": "..............xx"},
                {"kick": "X.......X..x....", "floor": "X..X..X.X..X..X.", "snare": "....X.......X...", "ride": "x.x.x.x.x.x.x.x."},
            ),
        ),
        fills=(
            {"floor": "X.......x.x.XxXx", "tom_low": "........x.x.....", "snare": "............oxXX"},
            {"kick": "X.......", "tom_mid": "........x.x.", "tom_low": "..........x.x.", "floor": "............XXXX"},
        ),
        bass=(
            ([(0, 16, "root")], [(0, 8, "root"), (8, 8, "root")]),
            ([(0, 8, "root"), (8, 6, "root"), (14, 2, "approach")], [(0, 6, "root"), (6, 2, "fifth"), (8, 8, "root")]),
            ([(0, 3, "root"), (3, 3, "root"), (6, 2, "root"), (8, 3, "root"), (11, 3, "root"), (14, 2, "fifth")],
             [(0, 2, "root"), (2, 2, "root"), (4, 2, "root"), (6, 2, "octave"), (8, 2, "root"), (10, 2, "root"),
              (12, 2, "fifth"), (14, 2, "approach")]),
        ),
    ),
}


def energy_level(energy: float) -> int:
    """0 quiet, 1 steady, 2 driving, from a bar's 0..1 energy (after the style's density mapping)."""
    return 0 if energy < 0.4 else 1 if energy < 0.7 else 2


def pattern_hits(pattern: DrumPattern) -> list[tuple[int, int, float]]:
    """``(step, GM key, velocity factor)`` for each hit of a drum pattern, in step order."""
    hits = []
    for piece, line in pattern.items():
        for step, mark in enumerate(line[:16]):
            if mark in HIT_VELOCITY:
                hits.append((step, KIT[piece], HIT_VELOCITY[mark]))
    return sorted(hits)
