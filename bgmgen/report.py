"""A picture of why the music does what it does: one PNG timeline of the video and its score.

``draw_report(plan, video, roll, output)`` stacks panels that share one time axis in seconds:
a strip of frames from the video, the plan's per-bar energy and density (with bar lines and the
picture's own energy when an analysis is given), the tempo map, the segments, the chords and the generated piano
roll (left out when there is no roll yet, as for ``bgmgen plan``). The cuts are drawn as red lines
through every panel. Geometry is fixed (no tight bounding box), so every report of a plan has the
same size and ``ReportLayout.x_of`` says where any time lands in the image.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bgmgen.errors import BgmgenError
from bgmgen.files import atomic_output
from bgmgen.music.harmony import PITCH_NAMES, Chord
from bgmgen.music.plan import Plan
from bgmgen.music.roll import ONSET, PITCH_LOW, STEPS_PER_BAR, SUSTAIN, notes_to_roll, roll_to_notes

log = logging.getLogger("bgmgen")

DPI = 100  # pixels per inch of the PNG
WIDTH_PX = 1600
LEFT_PX, RIGHT_PX = 110, 30  # margins beside the time axis
TOP_PX, BOTTOM_PX, GAP_PX = 84, 50, 14  # above the first panel, below the last, between panels
# Panel heights in pixels, top to bottom; "roll" only when there is a roll.
PANEL_PX = {"frames": 110, "levels": 170, "tempo": 60, "segments": 34, "chords": 34, "roll": 300}
MAX_THUMBNAILS = 40
CUT_COLOUR = "#e0102a"  # the cut markers; nothing else in the report uses this red
ENERGY_COLOUR = "#f28e2b"
DENSITY_COLOUR = "#4e79a7"
TEMPO_COLOUR = "#59a14f"
PICTURE_COLOUR = "#9c9c9c"
NOTE_COLOURS = ("#9fb7d6", "#1f3d7a")  # sustained step, onset (the accompaniment, or all notes)
MELODY_COLOURS = ("#f5c48f", "#c85a00")  # sustained step, onset of the melody, drawn over the accompaniment
SEGMENT_COLOURS = ("#cfe3f6", "#fde0c5", "#d5ecd4", "#eed9f2", "#fbf3c4", "#d9e2e3")
CHORD_SUFFIX = {
    "maj": "", "min": "m", "dim": "dim", "aug": "+", "sus2": "sus2", "sus4": "sus4", "maj6": "6",
    "min6": "m6", "7": "7", "maj7": "maj7", "min7": "m7", "minmaj7": "m(maj7)", "dim7": "dim7", "hdim7": "m7b5",
}  # fmt: skip
LABEL_GAP_PX = 6  # least space between two chord labels
BAR_LABEL_PX = 26  # least room for one bar number
PITCH_MARGIN = 2  # semitones shown above and below the highest and lowest notes


@dataclass(frozen=True)
class ReportLayout:
    """Where a report's panels are and how its time axis maps to pixels (columns from the left)."""

    width: int  # pixels
    height: int
    duration: float  # seconds spanned by the time axis, from 0
    x0: float  # pixel column of t = 0
    x1: float  # pixel column of t = duration
    panels: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (top row, bottom row)

    def x_of(self, seconds: float) -> float:
        """Pixel column (from the left edge) where time ``seconds`` is drawn."""
        return self.x0 + (self.x1 - self.x0) * seconds / self.duration


def report_layout(duration: float, with_roll: bool) -> ReportLayout:
    """The fixed geometry of a report over ``duration`` seconds, with or without the piano roll panel."""
    names = [n for n in PANEL_PX if n != "roll" or with_roll]
    height = TOP_PX + BOTTOM_PX + sum(PANEL_PX[n] for n in names) + GAP_PX * (len(names) - 1)
    panels, top = {}, TOP_PX
    for name in names:
        panels[name] = (top, top + PANEL_PX[name])
        top += PANEL_PX[name] + GAP_PX
    return ReportLayout(WIDTH_PX, height, float(duration), float(LEFT_PX), float(WIDTH_PX - RIGHT_PX), panels)


def require_matplotlib() -> None:
    """Raise BgmgenError with the fix if matplotlib is missing; call it before heavy work."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BgmgenError("--report needs matplotlib, which is missing: pip install 'matplotlib==3.11.2'") from None


def check_report_path(video: Path, path: Path, force: bool) -> None:
    """Refuse a report path before any heavy work: not a .png, not writable (see
    mux.check_output_path), or matplotlib missing. Raises OutputError or BgmgenError."""
    from bgmgen.errors import OutputError
    from bgmgen.sound.mux import check_output_path

    if Path(path).suffix.lower() != ".png":
        raise OutputError(f"--report writes a PNG image; name it NAME.png, not {Path(path).name}")
    check_output_path(video, path, force, video=False)
    require_matplotlib()


def draw_report(
    plan: Plan,
    video: Path | None,
    roll: np.ndarray | None,
    output: Path,
    *,
    analysis: Any = None,
    title: str | None = None,
    parts: Any = None,
) -> ReportLayout:
    """Draw the timeline of ``plan`` (and ``roll``, the generated [2, steps, 88] piano roll) as a PNG.

    ``parts`` (a GeneratedParts) draws the melody and the accompaniment in their own colours instead of
    ``roll`` in one. ``video`` supplies the strip of frames (None: no strip is filled). ``analysis``, a
    VideoAnalysis, adds the picture's per-frame energy under the plan's per-bar curves. The PNG is
    written atomically to ``output``. Returns its geometry. Raises BgmgenError if matplotlib is
    missing, InputError if ``video`` cannot be probed (a frame ffmpeg cannot seek to stays blank), OutputError if ``output`` cannot be written.
    """
    require_matplotlib()
    # The Agg canvas directly, not pyplot: no window, and the caller's matplotlib backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layout = report_layout(plan.duration, roll is not None)
    names, height = list(layout.panels), layout.height
    fig = Figure(figsize=(WIDTH_PX / DPI, height / DPI), dpi=DPI)
    renderer = FigureCanvasAgg(fig).get_renderer()  # measures labels, so crowded ones can be left out
    axes_width = layout.x1 - layout.x0
    axes = {}
    for name, (top, bottom) in layout.panels.items():
        rect = (layout.x0 / WIDTH_PX, 1 - bottom / height, axes_width / WIDTH_PX, (bottom - top) / height)
        axes[name] = fig.add_axes(rect, sharex=axes.get("frames"))
    duration = plan.duration
    for name, ax in axes.items():
        ax.set_xlim(0, duration)
        ax.tick_params(labelbottom=name == names[-1], labelsize=9)
    axes[names[-1]].set_xlabel("time (s)", fontsize=10)

    _draw_frames(axes["frames"], video, duration, (int(axes_width), PANEL_PX["frames"]))
    _draw_bar_numbers(axes["frames"], plan, axes_width)
    _draw_levels(axes["levels"], plan, analysis)
    _draw_tempo(axes["tempo"], plan)
    _draw_segments(axes["segments"], plan, renderer)
    _draw_chords(axes["chords"], plan, renderer)
    if parts is not None:
        _draw_roll(axes["roll"], plan, [(parts.accompaniment, NOTE_COLOURS, "accompaniment"), (parts.melody, MELODY_COLOURS, "melody")])
    elif roll is not None:
        _draw_roll(axes["roll"], plan, [(roll, NOTE_COLOURS, None)])
    for ax in axes.values():
        for cut in plan.cuts:
            ax.axvline(cut, color=CUT_COLOUR, linewidth=1.6, zorder=10)
    fig.suptitle(title or _title(plan, video), x=LEFT_PX / WIDTH_PX, y=1 - 14 / height, ha="left", fontsize=13)

    output = Path(output)
    with atomic_output(output) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return layout


def _title(plan: Plan, video: Path | None) -> str:
    name = f"{Path(video).name}: " if video is not None else ""
    cuts = f"{len(plan.cuts)} cut{'s' if len(plan.cuts) != 1 else ''}"
    figures = plan.cut_alignment
    if plan.cuts and figures:
        far = int(figures["far_cuts"])
        cuts += (f": {round(figures['far_cuts_on_downbeats'] * far)}/{far} a bar or more apart on downbeats, "
                 f"{round(figures['cuts_on_beats'] * len(plan.cuts))}/{len(plan.cuts)} on beats")  # fmt: skip
    elif plan.cuts:
        cuts += f", {plan.cut_alignment_error:.2f} s off their bar lines on average"
    tempos = plan.bar_tempos()
    tempo = f"{plan.tempo:.1f} BPM" if not plan.tempo_map else f"{tempos.min():.1f}-{tempos.max():.1f} BPM"
    return f"{name}{plan.n_bars} bars at {tempo} in {plan.key}, {len(plan.segments)} segments, {cuts}"


def _draw_frames(ax, video: Path | None, duration: float, size_px: tuple[int, int]) -> None:
    """Tile the panel with frames, each taken at the middle of the time span it covers."""
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel("frames", fontsize=10)
    if video is None:
        return
    from bgmgen.video.decode import probe

    info = probe(Path(video))
    tile_h = size_px[1]
    tile_w = max(8, int(round(tile_h * info.width / max(info.height, 1))))
    count = int(np.clip(round(size_px[0] / tile_w), 1, MAX_THUMBNAILS))
    span = duration / count
    for i in range(count):
        frame = _frame_at(Path(video), (i + 0.5) * span, (tile_w - tile_w % 2, tile_h - tile_h % 2))
        if frame is not None:
            ax.imshow(frame, extent=(i * span, (i + 1) * span, 0, 1), aspect="auto", interpolation="antialiased")
    ax.set_xlim(0, duration)  # imshow resets the limits


def _draw_bar_numbers(ax, plan: Plan, axes_width: float) -> None:
    """Bar numbers (from 1) above the frames, at each bar line; every k-th bar when they are dense."""
    shortest_bar = float(np.min(np.diff(plan.bar_start(np.arange(plan.n_bars + 1)))))
    every = max(1, int(np.ceil(BAR_LABEL_PX / (shortest_bar * axes_width / plan.duration))))
    every = next(k for k in (1, 2, 4, 8, 16, 32, 64, every) if k >= every)
    top = ax.secondary_xaxis("top", functions=(plan.bar_position, plan.bar_start))
    bars = np.arange(0, plan.n_bars, every)
    top.set_xticks(bars, [str(b + 1) for b in bars])
    top.tick_params(labelsize=8, pad=1)
    top.set_xlabel("bar", fontsize=9, labelpad=3)


def _frame_at(video: Path, seconds: float, size: tuple[int, int]) -> np.ndarray | None:
    """One RGB frame of ``video`` at ``seconds``, scaled to ``size``; None if ffmpeg returns none."""
    import ffmpeg

    width, height = size
    # Absolute path: a name starting with "-" is never read as an option.
    stream = (
        ffmpeg.input(str(video.resolve()), ss=f"{max(seconds, 0.0):.3f}")
        .video.filter("scale", width, height)
        .output("pipe:", vframes=1, format="rawvideo", pix_fmt="rgb24")
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
    )
    proc = subprocess.run(stream.compile(), stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0 or len(proc.stdout) < width * height * 3:
        log.debug("no frame at %.2f s of %s: %s", seconds, video, proc.stderr[-200:])
        return None
    return np.frombuffer(proc.stdout[: width * height * 3], np.uint8).reshape(height, width, 3)


def _draw_levels(ax, plan: Plan, analysis: Any) -> None:
    """Per-bar energy and density as steps over the bar lines; the picture's energy behind them."""
    edges = np.array([plan.bar_start(b) for b in range(plan.n_bars + 1)])
    for edge in edges[1:-1]:
        ax.axvline(edge, color="#e4e4e4", linewidth=0.8, zorder=0)
    if analysis is not None and len(analysis.energy):
        ax.plot(analysis.frame_times(), analysis.energy, color=PICTURE_COLOUR, linewidth=0.9, label="picture energy")
    ax.stairs(plan.energy, edges, color=ENERGY_COLOUR, linewidth=2.2, label="music energy")
    ax.stairs(plan.density, edges, color=DENSITY_COLOUR, linewidth=2.2, label="note density")
    ax.plot([], [], color=CUT_COLOUR, linewidth=1.6, label="cut")
    ax.set_ylim(0, 1.05)
    ax.set_yticks([0, 0.5, 1])
    ax.set_ylabel("per bar", fontsize=10)
    ax.legend(loc="lower left", fontsize=8, ncol=4, framealpha=0.85)


def _draw_tempo(ax, plan: Plan) -> None:
    """The tempo map: BPM per bar as steps, labelled with its range (a flat line for one tempo)."""
    tempos = plan.bar_tempos()
    edges = np.asarray(plan.bar_start(np.arange(plan.n_bars + 1)))
    ax.stairs(tempos, edges, color=TEMPO_COLOUR, linewidth=2.0, baseline=None)
    low, high = float(tempos.min()), float(tempos.max())
    pad = max(2.0, 0.15 * (high - low))
    ax.set_ylim(low - pad, high + pad)
    ax.set_yticks([low, high] if high - low > 0.05 else [low], [f"{low:.0f}", f"{high:.0f}"] if high - low > 0.05 else [f"{low:.0f}"])
    ax.set_ylabel("BPM", fontsize=10)
    changes = len(plan.tempo_map)
    text = "one tempo" if not changes else f"{changes} tempo change{'s' if changes != 1 else ''} on bar lines"
    if plan.short_bars:
        text += f", {len(plan.short_bars)} short bar{'s' if len(plan.short_bars) != 1 else ''}"
    ax.text(0.005, 0.9, text, transform=ax.transAxes, ha="left", va="top", fontsize=8, color="#444444")
    for short in plan.short_bars:  # a 2/4 or 3/4 bar, marked where it is
        middle = 0.5 * (edges[short.bar] + edges[short.bar + 1])
        ax.text(middle, low, f"{short.beats}/4", ha="center", va="bottom", fontsize=7, color=TEMPO_COLOUR)


def _fits(text, renderer, left: float, right: float) -> bool:
    """Whether a drawn label lies within pixel columns left..right; removes it if not."""
    box = text.get_window_extent(renderer)
    if box.x0 >= left and box.x1 <= right:
        return True
    text.remove()
    return False


def _draw_segments(ax, plan: Plan, renderer) -> None:
    """Segments as coloured spans, labelled with their number, length and caption where they fit."""
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel("segments", fontsize=10, rotation=0, ha="right", va="center")
    for index, segment in enumerate(plan.segments):
        start = plan.bar_start(segment.start_bar)
        end = min(plan.bar_start(segment.end_bar), plan.duration)
        ax.axvspan(start, end, color=SEGMENT_COLOURS[index % len(SEGMENT_COLOURS)], zorder=0)
        ax.axvline(start, color="#555555", linewidth=0.8, zorder=1)
        caption = plan.captions[index] if index < len(plan.captions) else ""
        bars = f"{segment.n_bars} bar{'s' if segment.n_bars != 1 else ''}"
        left, right = (ax.transData.transform((t, 0))[0] for t in (start, end))
        for text in (f"{index + 1} · {bars}" + (f" · {caption}" if caption else ""), f"{index + 1} · {bars}", f"{index + 1}"):
            label = ax.text((start + end) / 2, 0.5, text, ha="center", va="center", fontsize=9, zorder=11)
            if _fits(label, renderer, left + 3, right - 3):
                break


def _chord_name(label: str) -> str:
    """Lead-sheet spelling of a Harte label: 'A:min7' -> 'Am7', 'G:maj/3' -> 'G/B', 'N' -> 'N.C.'."""
    chord = Chord.parse(label)
    if chord.is_none:
        return "N.C."
    name = PITCH_NAMES[chord.root] + CHORD_SUFFIX.get(chord.quality, chord.quality)
    if chord.bass is not None and chord.bass != chord.root:
        name += "/" + PITCH_NAMES[chord.bass]
    return name


def _draw_chords(ax, plan: Plan, renderer) -> None:
    """A label at each chord change (per half bar), skipping any that would overlap the previous one."""
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel("chords", fontsize=10, rotation=0, ha="right", va="center")
    free_from = -np.inf  # pixel column where the next label may start
    axes_right = ax.transData.transform((plan.duration, 0))[0]
    previous = None
    for index, label in enumerate(plan.chords):
        start = float(plan.step_time(index * STEPS_PER_BAR // 2))
        if start >= plan.duration:
            break
        if label == previous:
            continue
        previous = label
        ax.axvline(start, color="#bbbbbb", linewidth=0.6, zorder=0)
        text = ax.annotate(_chord_name(label), (start, 0.5), xytext=(2, 0), textcoords="offset points",
                           ha="left", va="center", fontsize=9, zorder=11)  # fmt: skip
        if _fits(text, renderer, free_from, axes_right):
            free_from = text.get_window_extent(renderer).x1 + LABEL_GAP_PX


def _draw_roll(ax, plan: Plan, layers: list[tuple[np.ndarray, tuple[str, str], str | None]]) -> None:
    """The generated notes, one layer per part (later layers on top), each in its colours: onsets dark,
    sustained steps light; pitch range cut to the notes played; a legend when the layers are named."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    played_any = np.zeros(0, dtype=int)
    n_steps = n_pitches = 0
    for roll, colours, _ in layers:
        n_steps, n_pitches = roll.shape[1], roll.shape[2]
        # The notes as midi.py reads them (a sustain with no onset before it plays nothing).
        notes = notes_to_roll(roll_to_notes(roll, threshold=0.5), n_steps)
        image = np.zeros((n_pitches, n_steps))
        image[notes[SUSTAIN].T > 0] = 1
        image[notes[ONSET].T > 0] = 2
        played_any = np.union1d(played_any, np.flatnonzero(image.any(axis=1)))
        image = np.ma.masked_equal(image, 0)  # empty cells stay transparent over the grid
        ax.imshow(
            image, origin="lower", aspect="auto", interpolation="nearest", cmap=ListedColormap(colours),
            vmin=1, vmax=2, extent=(0, plan.step_time(n_steps), PITCH_LOW - 0.5, PITCH_LOW + n_pitches - 0.5),
        )  # fmt: skip
    played = played_any
    low, high = (played[0], played[-1]) if played.size else (39, 51)  # C4 region when silent
    named = [(colours, label) for _, colours, label in layers if label]
    if named:
        ax.legend(handles=[Patch(color=c[1], label=label) for c, label in named[::-1]], loc="upper right",
                  fontsize=8, framealpha=0.8)  # fmt: skip
    c_notes = [p for p in range(PITCH_LOW, PITCH_LOW + n_pitches) if p % 12 == 0]
    ax.set_yticks(c_notes, [f"C{p // 12 - 1}" for p in c_notes])
    # After the ticks: setting ticks widens the view to hold them all.
    ax.set_xlim(0, plan.duration)
    ax.set_ylim(PITCH_LOW + low - PITCH_MARGIN - 0.5, PITCH_LOW + high + PITCH_MARGIN + 0.5)
    ax.grid(axis="y", color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_ylabel("piano roll", fontsize=10)
    if not played.size:
        ax.text(plan.duration / 2, PITCH_LOW + 45, "no notes", ha="center", va="center", color="#888888")
