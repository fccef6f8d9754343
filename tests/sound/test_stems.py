"""Stems with real FluidSynth: one WAV per role plus the mix, same length, summing to the mix; and the melody
stepping back where the original sound has a voice."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pretty_midi")

from bgmgen.music.arrange import arrange  # noqa: E402
from bgmgen.music.midi import write_arrangement  # noqa: E402
from bgmgen.music.plan import Plan, Segment  # noqa: E402
from bgmgen.music.roll import STEPS_PER_BAR, GeneratedParts, Note, notes_to_roll  # noqa: E402
from bgmgen.music.styles import get_style  # noqa: E402
from bgmgen.sound.loudness import integrated_loudness  # noqa: E402
from bgmgen.sound.render import RenderOptions, read_wav, render, render_stems  # noqa: E402
from bgmgen.sound.speech import STEP_BACK_CC, melody_expression, voice_spans_of  # noqa: E402

REPO_DIR = Path(__file__).resolve().parents[2]
FAST_FONT = RenderOptions(soundfont=REPO_DIR / "soundfonts" / "TimGM6mb.sf2")
LSB = 1.0 / 32768


def band_for(style: str, n_bars: int = 4, tempo: float = 120.0):
    plan = Plan(
        duration=n_bars * 240.0 / tempo - 0.3, tempo=tempo, n_bars=n_bars, key="A minor", segments=[Segment(0, 2), Segment(2, n_bars)],
        chords=["A:min", "A:min", "F:maj", "G:maj"] * (n_bars // 2), density=[0.7] * n_bars, energy=[0.8] * n_bars,
        cuts=[], cut_alignment_error=0.0, mood={}, seed=0, style=style,
    )
    plan.validate()
    n = n_bars * STEPS_PER_BAR
    melody = [Note(s, s + 2, 69 + [0, 3, 7, 5][(s // 2) % 4]) for s in range(0, n, 2)]
    accompaniment = [Note(s, s + 8, p) for s in range(0, n, 8) for p in (57, 60, 64)]
    return plan, arrange(plan, GeneratedParts(notes_to_roll(melody, n), notes_to_roll(accompaniment, n)), get_style(style))


def stem_midis(band, plan, folder: Path, expression=None) -> dict:
    return {role: write_arrangement(band, plan, folder / f"{role}.mid", 0, [role], expression) if part.notes else None
            for role, part in band.parts.items()}


def test_stems_are_aligned_and_add_up_to_the_mix(tmp_path):
    plan, band = band_for("pop")
    out = tmp_path / "stems"
    out.mkdir()
    paths = render_stems(stem_midis(band, plan, tmp_path), out, out / "mix.wav", plan.duration, FAST_FONT)
    assert set(paths) == {"melody", "accompaniment", "bass", "drums", "pad", "mix"}
    audio = {role: read_wav(path) for role, path in paths.items()}
    n = int(round(plan.duration * 44100))
    assert all(len(x) == n for x in audio.values())
    for role in ("melody", "accompaniment", "bass", "drums", "pad"):
        assert np.sqrt(np.mean(audio[role] ** 2)) > 1e-3, role  # each stem has its role in it
    total = sum(audio[r] for r in paths if r != "mix")
    assert np.abs(total - audio["mix"]).max() <= 4 * LSB  # 16-bit rounding of five stems, nothing more
    assert abs(integrated_loudness(audio["mix"], 44100) - FAST_FONT.target_lufs) < 1.0
    assert np.abs(audio["mix"]).max() <= 10 ** (FAST_FONT.peak_db / 20) + LSB
    # Rendering the roles apart changes nothing: the ordinary one-pass render of the whole band sounds the same.
    whole = read_wav(render(write_arrangement(band, plan, tmp_path / "all.mid"), tmp_path / "all.wav", plan.duration, FAST_FONT))
    error = np.sqrt(np.mean((whole - audio["mix"]) ** 2)) / np.sqrt(np.mean(whole**2))
    assert error < 0.05, error


@pytest.mark.parametrize("style", ["pop", "lo-fi"])
def test_the_melody_is_balanced_against_the_band_per_piece(tmp_path, style):
    from bgmgen.sound.band import MELODY_AGAINST_BAND_LU

    plan, band = band_for(style)
    out = tmp_path / "stems"
    out.mkdir()
    lead = ("melody", MELODY_AGAINST_BAND_LU)
    paths = render_stems(stem_midis(band, plan, tmp_path), out, out / "mix.wav", plan.duration, FAST_FONT, lead)
    audio = {role: read_wav(path) for role, path in paths.items()}
    rest = sum(audio[r] for r in paths if r not in ("melody", "mix"))
    against = integrated_loudness(audio["melody"], 44100) - integrated_loudness(rest, 44100)
    assert abs(against - MELODY_AGAINST_BAND_LU) < 0.5  # without the balance: -1.3 LU (pop), +2.4 LU (lo-fi)
    total = sum(audio[r] for r in paths if r != "mix")
    assert np.abs(total - audio["mix"]).max() <= 4 * LSB  # still adding up to the mix


def test_a_silent_role_gets_a_silent_stem_of_the_same_length(tmp_path):
    plan, band = band_for("piano")
    midis = stem_midis(band, plan, tmp_path)
    assert midis["drums"] is None
    paths = render_stems(midis, tmp_path, tmp_path / "mix.wav", plan.duration, FAST_FONT)
    drums, mix = read_wav(paths["drums"]), read_wav(paths["mix"])
    assert len(drums) == len(mix) and not drums.any() and mix.any()


def test_voice_spans_find_a_voice_band_burst_over_room_noise():
    sr = 16000
    rng = np.random.default_rng(0)
    t = np.arange(8 * sr) / sr
    audio = 0.001 * rng.standard_normal(len(t))  # room tone, -60 dBFS
    for start, end in ((1.0, 2.5), (4.0, 6.0)):
        inside = (t >= start) & (t < end)
        # A voice-like sound: harmonics of 150 Hz, syllables at 4 Hz.
        syllables = 0.5 * (1 + np.sin(2 * np.pi * 4 * t[inside])) ** 2
        audio[inside] += 0.05 * syllables * sum(np.sin(2 * np.pi * 150 * k * t[inside]) / k for k in range(1, 12))
    spans = voice_spans_of(audio.astype(np.float32), sr)
    assert len(spans) == 2
    for (start, end), (want_start, want_end) in zip(spans, ((1.0, 2.5), (4.0, 6.0))):
        assert abs(start - want_start) < 0.2 and abs(end - want_end) < 0.25
    assert voice_spans_of(0.001 * rng.standard_normal(4 * sr).astype(np.float32), sr) == []


def test_melody_expression_ramps_down_before_a_voice_and_back_after():
    events = melody_expression([(2.0, 3.0), (3.5, 4.0), (8.0, 9.0)], 10.0)
    values = dict(events)
    assert min(v for t, v in events if 2.0 <= t <= 4.0) == STEP_BACK_CC
    # 3.0..3.5 is too short a gap to come back up between the two spans
    assert all(v == STEP_BACK_CC for t, v in events if 2.0 <= t <= 4.0)
    assert values[max(t for t in values if t < 2.0 - 0.25)] > 100  # still (nearly) up well before the first
    assert events[-1] == (9.8, 127) or events[-1][1] == 127


def with_voice(clip: Path, out: Path, start: float, end: float) -> Path:
    """``clip`` with a sound track of faint room noise and a voice-band buzz from ``start`` to ``end``."""
    voice = (f"sine=f=180:sample_rate=44100,aeval=val(0)*(0.5+0.5*sin(2*PI*4*t)):c=same,"
             f"volume=0.3:enable='between(t,{start},{end})',volume='if(between(t,{start},{end}),1,0)':eval=frame")
    noise = "anoisesrc=a=0.001:sample_rate=44100"
    graph = f"{voice}[v];{noise}[n];[v][n]amix=inputs=2:normalize=0,atrim=duration=8[a]"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(clip), "-filter_complex", graph,
                    "-map", "0:v", "-map", "[a]", "-c:v", "copy", "-c:a", "aac", "-shortest", str(out)],
                   check=True, capture_output=True)  # fmt: skip
    return out


def test_melody_steps_back_under_a_voice_with_keep_audio(clip_factory, tmp_path):
    """Score the same clip twice, with stems; the second keeps its original sound, which has a voice from
    3 s to 6 s. There the melody stem is measured well down, while the accompaniment is not."""
    from bgmgen.music.sampler import SamplerOptions
    from bgmgen.pipeline import ScoreOptions, Scorer
    from bgmgen.sound.mux import MuxOptions

    clip = with_voice(clip_factory("silent.mp4", duration=8.0, size=(96, 54)), tmp_path / "talk.mp4", 3.0, 6.0)
    base = dict(shot_detector="histogram", sampler=SamplerOptions(steps=2, guidance=1.0), render=FAST_FONT,
                plan=__import__("bgmgen.music.plan", fromlist=["PlanOptions"]).PlanOptions(style="pop", tempo=120.0))
    plain = Scorer(ScoreOptions(**base, stems_dir=tmp_path / "plain")).score(clip, tmp_path / "a.mp4")
    ducked = Scorer(ScoreOptions(**base, stems_dir=tmp_path / "voice", mux=MuxOptions(keep_audio=True))).score(
        clip, tmp_path / "b.mp4")
    assert plain.arrangement.parts["melody"].notes == ducked.arrangement.parts["melody"].notes  # the same music

    def level(role: str, stems: dict, start: float, end: float) -> float:
        x = read_wav(stems[role])[int(start * 44100) : int(end * 44100)]
        return 10 * np.log10(np.mean(x**2) + 1e-12)

    under = level("melody", ducked.stems, 3.2, 5.9) - level("melody", plain.stems, 3.2, 5.9)
    before = level("melody", ducked.stems, 0.0, 2.5) - level("melody", plain.stems, 0.0, 2.5)
    accompaniment = level("accompaniment", ducked.stems, 3.2, 5.9) - level("accompaniment", plain.stems, 3.2, 5.9)
    print(f"melody under the voice {under:+.1f} dB, before it {before:+.1f} dB; accompaniment {accompaniment:+.1f} dB")
    assert under < -12.0, under  # the melody steps well back under the voice ...
    assert abs(before) < 3.0 and abs(accompaniment) < 4.0, (before, accompaniment)  # ... and only the melody, only there
