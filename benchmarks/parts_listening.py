"""Listening to the parts: held-out POP909 songs' chords and density through a plan, written by the
melody-then-accompaniment cascade and, for comparison, by a single-roll model split at its top line.

Each example is written as MIDI with the melody on its own track (a flute, so it can be told apart),
rendered with FluidSynth, and drawn as a piano roll with the melody in red over the accompaniment.

    python benchmarks/parts_listening.py --data .cache/pop909 --checkpoint models/bgmgen-music.safetensors \\
        --compare OLD.safetensors --out docs/listening/parts
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listening import plan_from_song  # noqa: E402

from bgmgen.evaluation.metrics import melody_statistics  # noqa: E402
from bgmgen.music.generate import MusicGenerator  # noqa: E402
from bgmgen.music.arrange import step_velocities  # noqa: E402
from bgmgen.music.plan import Plan  # noqa: E402
from bgmgen.music.roll import STEPS_PER_BAR, GeneratedParts, roll_to_notes  # noqa: E402
from bgmgen.sound.render import RenderOptions, render  # noqa: E402
from bgmgen.training.train import load_corpora  # noqa: E402

FLUTE, PIANO = 73, 0


def write_parts(parts: GeneratedParts, plan: Plan, path: Path) -> Path:
    """MIDI with a ``melody`` (flute) and an ``accompaniment`` (piano) track."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(initial_tempo=plan.tempo)
    velocity = step_velocities(plan, parts.melody.shape[1])
    for name, roll, program, lift in (("melody", parts.melody, FLUTE, 10), ("accompaniment", parts.accompaniment, PIANO, -10)):
        track = pretty_midi.Instrument(program=program, name=name)
        for note in roll_to_notes(roll, velocity):
            track.notes.append(pretty_midi.Note(int(np.clip(note.velocity + lift, 1, 127)), note.pitch,
                                                float(plan.step_time(note.start)), float(plan.step_time(note.end))))
        midi.instruments.append(track)
    midi.write(str(path))
    return path


def draw(parts: GeneratedParts, plan: Plan, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots(figsize=(14, 4))
    for roll, colour in ((parts.accompaniment, "0.55"), (parts.melody, "tab:red")):
        for n in roll_to_notes(roll):
            ax.add_patch(plt.Rectangle((n.start / STEPS_PER_BAR, n.pitch - 0.4), (n.end - n.start) / STEPS_PER_BAR, 0.8, color=colour, lw=0))
    for half, label in enumerate(plan.chords):
        if half % 2 == 0 or label != plan.chords[half - 1]:
            ax.text(half / 2, 99, label.replace(":", ""), fontsize=7, color="tab:blue")
    ax.set_xlim(0, plan.n_bars)
    ax.set_ylim(28, 102)
    ax.set_xticks(range(plan.n_bars + 1))
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("bar")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=60)
    plt.close(fig)
    Image.open(buffer).convert("RGB").quantize(64).save(out, optimize=True)


def chords_per_step(plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """The plan's chords on its 16-per-bar grid: chroma [steps, 12] and root [steps] (-1 for no chord)."""
    chords = plan.chord_objects()
    chroma = np.repeat([c.chroma for c in chords], STEPS_PER_BAR // 2, axis=0)
    root = np.repeat([-1 if c.root is None else c.root for c in chords], STEPS_PER_BAR // 2)
    return chroma, root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/pop909/POP909"))
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--melody-checkpoint", type=Path, default=None)
    parser.add_argument("--compare", type=Path, default=None, help="a single-roll checkpoint, split at its top line")
    parser.add_argument("--songs", default="3,17,30")
    parser.add_argument("--out", type=Path, default=Path("docs/listening/parts"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    models = {"cascade": MusicGenerator.from_checkpoint(args.checkpoint, melody_path=args.melody_checkpoint)}
    if args.compare is not None:
        models["top-line"] = MusicGenerator.from_checkpoint(args.compare)
    test = load_corpora(args.data, Path(".cache/pop909"))["test"]
    for song in (int(s) for s in args.songs.split(",")):
        for kind, generator in models.items():
            plan = plan_from_song(test, song, generator.info.feature_quantiles)
            parts = generator.generate_parts(plan, seed=0)
            stats = melody_statistics(parts.melody, *chords_per_step(plan))
            name = f"pop909-{test.song_ids[song]}-{kind}"
            midi = write_parts(parts, plan, args.out / f"{name}.mid")
            render(midi, args.out / f"{name}.wav", plan.duration, RenderOptions())
            title = (f"{name}: melody (red) steps {stats['stepwise']:.2f}, leaps {stats['leaps']:.2f}, range {stats['range']:.0f}, "
                     f"chord tones on 1&3 {stats['strong_chord_tones']:.2f}; {int(parts.accompaniment[0].sum())} accompaniment notes")
            draw(parts, plan, title, args.out / f"{name}.png")
            print(args.out / f"{name}.png", title)


if __name__ == "__main__":
    main()
