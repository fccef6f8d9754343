"""One clip in every style: render each, draw its band's piano roll (coloured by role) over the mix's
spectrogram, and print a table of what differs (tempo, notes per role, spectral centroid, loudness).

The clip is analysed once; each style then gets its own plan (its tempo range), music and arrangement,
rendered with the best SoundFont found (``find_soundfont``).

    python benchmarks/style_gallery.py CLIP --out docs/styles [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ROLE_COLOURS = {"melody": "#c85a00", "accompaniment": "#1f3d7a", "bass": "#2a8c3c", "drums": "#7a3d9a", "pad": "#b0a030"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "styles")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.signal import spectrogram

    from bgmgen.music.midi import write_arrangement
    from bgmgen.music.plan import PlanOptions, make_plan
    from bgmgen.music.styles import STYLES
    from bgmgen.pipeline import ScoreOptions, Scorer
    from bgmgen.sound.loudness import integrated_loudness
    from bgmgen.sound.render import find_soundfont, read_wav, render
    from bgmgen.video.visual import analyze_video

    args.out.mkdir(parents=True, exist_ok=True)
    analysis = analyze_video(args.clip)
    print(f"clip {args.clip.name}, SoundFont {find_soundfont(None).name}")
    print("| style | BPM | melody | accompaniment | bass | drums | pad | centroid Hz | LUFS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = ScoreOptions(seed=args.seed, device="cpu")
    for name, style in STYLES.items():
        options = PlanOptions(seed=args.seed, style=name, min_tempo=style.tempo_range[0], max_tempo=style.tempo_range[1])
        plan = make_plan(analysis, options)
        scorer = Scorer(replace(base, plan=options))
        band = scorer.arrange(plan, scorer.compose(plan))
        with tempfile.TemporaryDirectory() as tmp:
            midi = write_arrangement(band, plan, Path(tmp) / "band.mid", args.seed)
            wav = render(midi, args.out / f"{name}.wav", plan.duration)
        audio = read_wav(wav).mean(axis=1)
        freqs, times, power = spectrogram(audio, fs=44100, nperseg=4096, noverlap=3072)
        centroid = float((freqs[:, None] * power).sum() / max(power.sum(), 1e-12))
        counts = {role: len(part.notes) for role, part in band.parts.items()}
        print(f"| {name} | {plan.tempo:.0f} | " + " | ".join(str(counts.get(r, "-")) for r in ROLE_COLOURS)
              + f" | {centroid:.0f} | {integrated_loudness(read_wav(wav), 44100):.1f} |")  # fmt: skip

        fig = Figure(figsize=(12, 6), dpi=100)
        FigureCanvasAgg(fig)
        roll_ax, spec_ax = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
        step = float(plan.step_time(1))
        for role, part in band.parts.items():
            for n in part.notes:
                pitch = n.pitch if not part.is_drum else 100 + (n.pitch - 35) / 2  # drums in a strip above
                width = (n.end - n.start) * step if not part.is_drum else step
                roll_ax.barh(pitch, width, left=n.start * step, height=0.8, color=ROLE_COLOURS[role], linewidth=0)
            roll_ax.bar(0, 0, color=ROLE_COLOURS[role], label=f"{role} ({style.programs.get(role, 'kit')})")
        roll_ax.set_xlim(0, plan.duration)
        roll_ax.set_ylabel("MIDI pitch (drums on top)")
        roll_ax.legend(loc="lower right", fontsize=8, ncol=5)
        roll_ax.set_title(f"{args.clip.name} in the {name} style: {style.description} ({plan.tempo:.0f} BPM)", fontsize=10)
        db = 10 * np.log10(power + 1e-12)
        keep = (freqs > 20) & (freqs < 10000)
        spec_ax.pcolormesh(times, freqs[keep], db[keep], shading="auto", vmin=db.max() - 80, vmax=db.max(), cmap="magma")
        spec_ax.set_yscale("log")
        spec_ax.set_ylabel("Hz")
        spec_ax.set_xlabel("time (s)")
        spec_ax.set_xlim(0, plan.duration)
        fig.tight_layout()
        fig.savefig(args.out / f"{name}.png")
        (args.out / f"{name}.wav").unlink()  # the pictures are kept; the WAVs are large


if __name__ == "__main__":
    main()
