"""Five 30-second listening examples, drawn as piano roll + spectrogram so they can be judged by eye.

Three come from held-out POP909 songs (the model gets the real song's chords and per-bar density
through a plan, as a video's plan would give them), two from real clips through the whole pipeline.
Writes ``NAME.mid``, ``NAME.wav`` and ``NAME.png`` per example into ``--out``.

    python benchmarks/listening.py --data ../shared/data/pop909/POP909 --videos ../shared/data/videos --out docs/listening
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from bgmgen.music.generate import MusicGenerator
from bgmgen.music.harmony import QUALITY_INTERVALS, Chord
from bgmgen.music.midi import write_midi
from bgmgen.music.plan import Plan, Segment
from bgmgen.music.roll import STEPS_PER_BAR
from bgmgen.pipeline import ScoreOptions, Scorer
from bgmgen.sound.mux import MuxOptions
from bgmgen.sound.render import RenderOptions, render
from bgmgen.training.train import load_corpora
from bgmgen.weights import default_checkpoint

TEMPO = 100.0
BARS = 13  # 31 s at 100 BPM


def chord_label(chroma: np.ndarray, root: int) -> str:
    """The Harte label whose tones match ``chroma`` exactly (major or minor triad otherwise)."""
    if root < 0:
        return "N"
    intervals = {(pc - root) % 12 for pc in np.flatnonzero(chroma)}
    for quality, tones in QUALITY_INTERVALS.items():
        if set(tones) == intervals:
            return Chord(root, quality, root).label
    return Chord(root, "min" if 3 in intervals and 4 not in intervals else "maj", root).label


def plan_from_song(corpus, song: int, quantiles: dict[str, list[float]]) -> Plan:
    """A plan carrying ``BARS`` bars of a test song's chords and density (from the middle of the song)."""
    windows = np.flatnonzero(corpus.window_song == song)
    start = int(corpus.window_starts[windows[len(windows) // 2]])
    chords = []
    for half in range(2 * BARS):
        mid = start + half * STEPS_PER_BAR // 2 + STEPS_PER_BAR // 4
        chords.append(chord_label(corpus.chroma[mid], int(corpus.root[mid])))
    low, _, high = quantiles["density"]
    bars = start // STEPS_PER_BAR + np.arange(BARS)
    density = np.clip((corpus.bar_features[bars, 0] - low) / (high - low), 0, 1)
    energy = np.clip((corpus.bar_features[bars, 1] - quantiles["energy"][0]) / (quantiles["energy"][2] - quantiles["energy"][0]), 0, 1)
    tonic, minor = int(corpus.key_tonic[song]), bool(corpus.key_minor[song])
    from bgmgen.music.harmony import PITCH_NAMES

    return Plan(
        duration=BARS * 4 * 60 / TEMPO, tempo=TEMPO, n_bars=BARS, key=f"{PITCH_NAMES[tonic]} {'minor' if minor else 'major'}",
        segments=[Segment(0, 8), Segment(8, BARS)], chords=chords, density=density.tolist(), energy=energy.tolist(),
        cuts=[], cut_alignment_error=0.0, mood={"tension": 0.5, "brightness": 0.5}, seed=0,
    )


def draw(midi: Path, plan: Plan, wav: Path, title: str, out: Path) -> None:
    """Piano roll of the MIDI as played (darker = louder), chords and bar lines over it, spectrogram under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    from scipy.io import wavfile

    rate, audio = wavfile.read(wav)
    mono = audio.astype(np.float32).mean(axis=1) if audio.ndim == 2 else audio.astype(np.float32)
    step = plan.beat_duration / 4
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    import pretty_midi

    played = pretty_midi.PrettyMIDI(str(midi)).get_piano_roll(fs=1 / step)  # [128, steps] velocities
    top.imshow(played, origin="lower", aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=127,
               extent=(0, played.shape[1] * step, -0.5, 127.5))
    for bar in range(plan.n_bars + 1):
        top.axvline(bar * plan.bar_duration, color="tab:blue", lw=0.5, alpha=0.4)
    for half, label in enumerate(plan.chords):
        if half % 2 == 0 or label != plan.chords[half - 1]:
            top.text(half * plan.bar_duration / 2, 100, label.replace(":", ""), fontsize=7, color="tab:red")
    top.set_ylim(28, 104)
    top.set_ylabel("MIDI pitch")
    top.set_title(title, fontsize=10)
    bottom.specgram(mono, NFFT=2048, Fs=rate, noverlap=1536, cmap="magma", vmin=-60)
    bottom.set_yscale("symlog", linthresh=200)
    bottom.set_ylim(30, 6000)
    bottom.set_ylabel("Hz")
    bottom.set_xlabel("seconds")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=60)
    plt.close(fig)
    # A 128-colour palette keeps each committed picture small without losing what matters to the eye.
    Image.open(buffer).convert("RGB").quantize(128).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/pop909/POP909"))
    parser.add_argument("--videos", type=Path, default=Path("../shared/data/videos"))
    parser.add_argument("--checkpoint", type=Path, default=default_checkpoint())
    parser.add_argument("--out", type=Path, default=Path("docs/listening"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    generator = MusicGenerator.from_checkpoint(args.checkpoint)
    test = load_corpora(args.data, Path(".cache/pop909"))["test"]
    examples: list[tuple[str, Plan, np.ndarray]] = []
    for song in (3, 17, 30):
        plan = plan_from_song(test, song, generator.info.feature_quantiles)
        examples.append((f"pop909-{test.song_ids[song]}", plan, generator.generate(plan, seed=0)))
    scorer = Scorer(ScoreOptions(checkpoint=args.checkpoint, mux=MuxOptions(force=True)))
    for clip in ("bbb_opening_cuts.webm", "tree_calm.avi"):
        result = scorer.midi(args.videos / clip, args.out / f"{Path(clip).stem}.mid")
        examples.append((Path(clip).stem, result.plan, scorer.compose(result.plan)))

    for name, plan, roll in examples:
        midi = write_midi(roll, plan, args.out / f"{name}.mid")
        wav = render(midi, args.out / f"{name}.wav", plan.duration, RenderOptions())
        notes = int(roll[0].sum())
        title = f"{name}: {plan.tempo:.0f} BPM, {plan.key}, {plan.n_bars} bars, {notes} notes"
        draw(midi, plan, wav, title, args.out / f"{name}.png")
        print(args.out / f"{name}.png", title)


if __name__ == "__main__":
    main()
