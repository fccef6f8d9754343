"""``bgmgen evaluate``: rows, metrics and baselines on the two bundled POP909 songs, with the shipped model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from bgmgen.cli import app
from bgmgen.evaluation.evaluate import EvalOptions, chord_arpeggio, density_spearman, evaluate, random_in_key
from bgmgen.evaluation.metrics import chord_accuracy, in_key_ratio, onset_counts_per_bar
from bgmgen.music.conditioning import DENSITY_SCALE
from bgmgen.music.harmony import Chord, Key
from bgmgen.music.sampler import SamplerOptions


def density_for(counts: list[int]) -> np.ndarray:
    return np.log1p(np.array(counts, dtype=float)) / DENSITY_SCALE


def test_random_in_key_plays_the_key_at_the_requested_density():
    density = density_for([0, 4, 16, 8])
    scale = Key.parse("D major").scale
    roll = random_in_key(density, scale, np.random.default_rng(0))
    assert in_key_ratio(roll, scale) == 1.0
    counts = onset_counts_per_bar(roll)
    assert counts[0] == 0 and counts[2] > counts[3] > counts[1] > 0


def test_chord_arpeggio_plays_its_chords_and_follows_density():
    chords = [Chord.parse(c) for c in ("C:maj", "C:maj", "A:min", "F:maj", "G:7", "G:7")]
    roll = chord_arpeggio(density_for([4, 16, 10]), chords)
    assert chord_accuracy(roll, chords) == 1.0
    counts = onset_counts_per_bar(roll)
    assert counts[1] > counts[2] > counts[0]


def test_density_spearman_follows_the_ranks_of_the_bars():
    counts = [1, 2, 3, 4, 6, 8, 12, 16]
    rolls = np.zeros((1, 2, 128, 88), dtype=np.float32)
    for bar, count in enumerate(counts):
        rolls[0, 0, bar * 16 : bar * 16 + count, 40] = 1
    assert density_spearman(density_for(counts)[None], rolls) == pytest.approx(1.0)
    assert density_spearman(density_for(counts[::-1])[None], rolls) == pytest.approx(-1.0)


def test_evaluate_rows_with_the_shipped_model(prepared):
    rows = ("ground_truth", "model", "no_guidance", "random_in_key", "chord_arpeggio")
    results = evaluate(EvalOptions(data=prepared, rows=rows, windows=6, si_pieces=0, batch_size=6))
    assert all(math.isnan(values["si"]) for values in results.values())  # SI skipped
    assert list(results) == list(rows)
    truth, model = results["ground_truth"], results["model"]
    assert truth["density_spearman"] > 0.99  # the requested density was measured on this very music
    assert math.isnan(truth["seconds_per_8_bars"]) and model["seconds_per_8_bars"] > 0
    assert results["chord_arpeggio"]["chord_acc"] == 1.0
    assert results["random_in_key"]["in_key"] == 1.0
    # The model follows the chords far better than random notes of the key, and follows the density.
    assert model["chord_acc"] > results["random_in_key"]["chord_acc"] + 0.3
    assert model["density_spearman"] > 0.3
    assert 2.0 < model["pche"] < 3.5 and 0.3 < model["gps"] <= 1.0


def test_cli_writes_the_json_table(prepared, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["evaluate", "--data", str(prepared), "--json", str(out), "--windows", "3",
                                      "--si-pieces", "1", "--rows", "ground_truth,chord_arpeggio", "-q"])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert set(document["rows"]) == {"ground_truth", "chord_arpeggio"}
    assert set(document["rows"]["ground_truth"]) == {
        "pche", "gps", "si", "chord_acc", "in_key", "density_spearman", "notes_per_8_bars", "seconds_per_8_bars"}
    assert 0 < document["rows"]["ground_truth"]["si"] <= 1  # one 32-bar piece rendered and measured
    assert "chord_arpeggio" in result.output


def test_model_pieces_continue_window_after_window(prepared):
    from bgmgen.evaluation.evaluate import load_test_windows, sample_pieces
    from bgmgen.music.generate import MusicGenerator
    from bgmgen.music.sampler import SamplerOptions

    windows = load_test_windows(EvalOptions(data=prepared, windows=2, si_pieces=2))
    assert len(windows.piece_starts) == 2  # one 32-bar piece from each song
    pieces = sample_pieces(MusicGenerator.from_checkpoint(), windows, SamplerOptions(steps=4), seed=0)
    assert pieces.shape == (2, 2, 32 * 16, 88)
    notes_per_bar = pieces[:, 0].reshape(2, 32, -1).sum(axis=2)
    assert (notes_per_bar[:, 24:].sum(axis=1) > 0).all()  # the last window was written too


def test_cli_rejects_an_unknown_row_in_one_line(prepared):
    result = CliRunner().invoke(app, ["evaluate", "--data", str(prepared), "--rows", "model,magic", "-q"])
    assert result.exit_code != 0
    assert "unknown evaluation row(s) magic" in result.output


def _tiny_checkpoints(folder):
    """A tiny cascade (accompaniment + melody model beside it) and a tiny single-roll model, untrained."""
    from dataclasses import replace

    import torch

    from bgmgen.music.checkpoint import ModelInfo, save_checkpoint
    from bgmgen.music.generate import MELODY_CHECKPOINT_NAME
    from bgmgen.music.unet import MusicUNet, UNetConfig

    tiny = UNetConfig(channels=(16, 32, 32), groups=8, token_dim=16, time_dim=16)
    quantiles = {"density": [0.2, 0.5, 0.8], "energy": [0.3, 0.6, 0.9], "register": [0.4, 0.5, 0.6], "polyphony": [0.1, 0.3, 0.5]}
    torch.manual_seed(0)
    for name, config, part in (("acc.safetensors", replace(tiny, melody_channels=176), "accompaniment"),
                               (MELODY_CHECKPOINT_NAME, tiny, "melody"), ("single.safetensors", tiny, "all")):
        model = MusicUNet(config)
        torch.nn.init.normal_(model.conv_out.weight, std=0.5)
        torch.nn.init.constant_(model.conv_out.bias, -1.5)
        save_checkpoint(model, ModelInfo(config=config, feature_quantiles=quantiles, part=part), folder / name)
    return folder / "acc.safetensors", folder / "single.safetensors"


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_per_part_rows(prepared, tmp_path):
    from bgmgen.evaluation.evaluate import PART_ROWS

    cascade, single = _tiny_checkpoints(tmp_path)
    options = EvalOptions(data=prepared, rows=PART_ROWS, windows=4, si_pieces=0, batch_size=4, checkpoint=cascade,
                          compare_checkpoint=single, sampler=SamplerOptions(steps=2))
    results = evaluate(options)
    assert list(results) == list(PART_ROWS)
    real, low, high = results["melody_pop909"], results["melody_pop909_p10"], results["melody_pop909_p90"]
    # POP909's melodies move mostly by step, rarely leap, and sit on chord tones on beats 1 and 3.
    assert real["stepwise"] > 0.5 and real["leaps"] < 0.15 and 5 <= real["range"] <= 24 and real["strong_chord_tones"] > 0.6
    assert all(low[m] <= high[m] for m in low)
    assert results["accompaniment_pop909"]["density_spearman"] > 0.99
    assert results["accompaniment_pop909_p10"]["chord_acc"] <= results["accompaniment_pop909_p90"]["chord_acc"]
    # The untrained cascade is measured too: random notes, read as one voice, leap far more than real melodies.
    assert results["melody_model"]["leaps"] > real["leaps"]
    assert results["accompaniment_model"]["notes_per_8_bars"] > 0


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_cli_prints_the_part_tables(prepared, tmp_path):
    cascade, _ = _tiny_checkpoints(tmp_path)
    result = CliRunner().invoke(app, ["evaluate", "--data", str(prepared), "--rows", "melody_pop909,accompaniment_pop909,melody_model",
                                      "--windows", "2", "--checkpoint", str(cascade), "-q"])
    assert result.exit_code == 0, result.output
    assert "chord tones 1&3" in result.output and "melody_model" in result.output and "density rho" in result.output


def test_top_line_rows_need_a_single_roll_model(prepared, tmp_path):
    # The shipped model is a cascade: its default rows leave the top-line rows out instead of failing
    # after every other row, and asking for them by name fails before any music is written.
    from bgmgen.errors import BgmgenError
    from bgmgen.evaluation.evaluate import ALL_ROWS, TOP_LINE_ROWS, _with_top_line_rows_settled

    cascade, single = _tiny_checkpoints(tmp_path)
    settled = _with_top_line_rows_settled(EvalOptions(data=prepared, checkpoint=cascade))
    assert settled.rows == tuple(r for r in ALL_ROWS if r not in TOP_LINE_ROWS)
    assert _with_top_line_rows_settled(EvalOptions(data=prepared)).rows == settled.rows  # the shipped cascade
    kept = EvalOptions(data=prepared, checkpoint=cascade, compare_checkpoint=single)
    assert _with_top_line_rows_settled(kept).rows == ALL_ROWS
    assert _with_top_line_rows_settled(EvalOptions(data=prepared, checkpoint=single)).rows == ALL_ROWS
    with pytest.raises(BgmgenError, match="--compare-checkpoint"):
        evaluate(EvalOptions(data=prepared, checkpoint=cascade, rows=("ground_truth", "melody_top_line"), windows=2))
