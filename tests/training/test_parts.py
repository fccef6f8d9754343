"""The melody kept apart: POP909's MELODY track vs BRIDGE + PIANO, per-part windows, and training the
cascade's two models (the melody model, and the accompaniment model widened from a single-roll one)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pretty_midi = pytest.importorskip("pretty_midi")
torch = pytest.importorskip("torch")

from bgmgen.errors import BgmgenError  # noqa: E402
from bgmgen.music.checkpoint import ModelInfo, load_checkpoint, load_widened, save_checkpoint  # noqa: E402
from bgmgen.music.conditioning import build_batch  # noqa: E402
from bgmgen.music.roll import N_PITCHES, PITCH_LOW  # noqa: E402
from bgmgen.music.unet import MusicUNet, UNetConfig  # noqa: E402
from bgmgen.training.pop909 import Corpus, load_song  # noqa: E402
from bgmgen.training.train import TrainConfig, make_batch, train  # noqa: E402

from conftest import DATA_DIR

TINY = UNetConfig(channels=(16, 32, 32), groups=8, token_dim=16, time_dim=16)


@pytest.fixture(scope="module")
def song():
    return load_song(DATA_DIR / "pop909" / "001")


def track_pitches(name: str) -> set[int]:
    midi = pretty_midi.PrettyMIDI(str(DATA_DIR / "pop909" / "001" / "001.mid"))
    return {n.pitch for inst in midi.instruments if inst.name.upper() == name for n in inst.notes}


def test_the_melody_track_is_kept_apart(song):
    assert song.melody.shape == song.accompaniment.shape == song.roll.shape
    melody_onsets = song.melody[:, 0].sum()
    midi = pretty_midi.PrettyMIDI(str(DATA_DIR / "pop909" / "001" / "001.mid"))
    n_melody_notes = sum(len(i.notes) for i in midi.instruments if i.name.upper() == "MELODY")
    assert 0.95 * n_melody_notes <= melody_onsets <= n_melody_notes  # a few notes may share a cell
    # The parts hold their own tracks' pitches only...
    assert set(np.nonzero(song.melody[:, 0])[1] + PITCH_LOW) <= track_pitches("MELODY")
    assert set(np.nonzero(song.accompaniment[:, 0])[1] + PITCH_LOW) <= track_pitches("BRIDGE") | track_pitches("PIANO")
    # ...and together they are the merged roll's onsets.
    merged = np.maximum(song.melody[:, 0], song.accompaniment[:, 0])
    assert np.array_equal(merged, song.roll[:, 0])
    # The melody is (nearly) one voice: at most one onset in almost every step.
    per_step = song.melody[:, 0].sum(axis=1)
    assert (per_step <= 1).mean() > 0.99


def test_corpus_windows_by_part(song):
    corpus = Corpus.from_songs([song])
    index = np.arange(3)
    melody, *_, melody_features, _ = corpus.windows(index, part="melody")
    accompaniment, *_, accompaniment_features, _ = corpus.windows(index, part="accompaniment")
    merged, *_ = corpus.windows(index)
    assert torch.equal(torch.maximum(melody, accompaniment)[:, 0], merged[:, 0])
    # Each part's bar features are its own: the melody is much sparser than the accompaniment.
    assert melody_features[:, :, 0].mean() < accompaniment_features[:, :, 0].mean()
    assert corpus.feature_quantiles("melody")["density"][1] < corpus.feature_quantiles("accompaniment")["density"][1]
    # Transposed alike.
    up, *_ = corpus.windows(index, np.full(3, 2), part="melody")
    assert torch.equal(up[:, :, :, 2:], melody[:, :, :, :-2])


def test_widened_model_starts_as_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    old = MusicUNet(TINY)
    torch.nn.init.normal_(old.conv_out.weight, std=0.3)
    save_checkpoint(old, ModelInfo(config=TINY), tmp_path / "old.safetensors", half=False)
    new = MusicUNet(replace(TINY, melody_channels=2 * N_PITCHES))
    load_widened(new, tmp_path / "old.safetensors")
    steps = 128
    cond = build_batch(torch.rand(1, steps, 12).round(), torch.zeros(1, steps, dtype=torch.long),
                       torch.zeros(1, steps, dtype=torch.long), torch.rand(1, 8, 4), torch.zeros(1, 8, dtype=torch.long),
                       melody_roll=torch.rand(1, 2, steps, N_PITCHES).round())
    x, t = torch.randn(1, 2 * N_PITCHES, steps), torch.tensor([500])
    with torch.no_grad():
        assert torch.allclose(new(x, t, cond), old(x, t, cond), atol=1e-5)  # the new channels start at zero
    cond.melody = None
    with pytest.raises(BgmgenError, match="needs the melody"):
        new(x, t, cond)


def test_accompaniment_batches_carry_the_melody(prepared):
    corpus = Corpus.load(prepared / "pop909_train.npz")
    cfg = TrainConfig(data=prepared, part="accompaniment", model=replace(TINY, melody_channels=2 * N_PITCHES))
    rng = np.random.default_rng(0)
    roll, cond, _ = make_batch(corpus, np.arange(2), rng, cfg, augment=False, device="cpu")
    melody = corpus.windows(np.arange(2), part="melody")[0]
    accompaniment = corpus.windows(np.arange(2), part="accompaniment")[0]
    assert torch.equal(roll, accompaniment)  # the target is BRIDGE + PIANO only
    assert torch.equal(cond.melody, melody.permute(0, 1, 3, 2).reshape(2, 2 * N_PITCHES, -1))


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_train_the_cascade(prepared, tmp_path):
    base = dict(data=prepared, steps=2, batch_size=2, warmup_steps=1, checkpoint_every=1000, eval_every=1000)
    melody_out = train(TrainConfig(out=tmp_path / "melody.safetensors", part="melody", model=TINY, **base), cache=tmp_path)
    _, info = load_checkpoint(melody_out)
    assert info.part == "melody" and info.training_steps == 2
    corpus = Corpus.load(prepared / "pop909_train.npz")
    assert info.feature_quantiles == corpus.feature_quantiles("melody")
    single = train(TrainConfig(out=tmp_path / "single.safetensors", model=TINY, **base), cache=tmp_path)
    wide = replace(TINY, melody_channels=2 * N_PITCHES)
    out = train(TrainConfig(out=tmp_path / "acc.safetensors", part="accompaniment", model=wide, init_from=single, **base), cache=tmp_path)
    model, info = load_checkpoint(out)
    assert info.part == "accompaniment" and info.config.melody_channels == 2 * N_PITCHES
    # Started from the single-roll model: its weights moved only by two small steps.
    start, _ = load_checkpoint(single)
    a, b = model.state_dict()["conv_out.bias"], start.state_dict()["conv_out.bias"]
    assert (a - b).abs().max() < 0.05
    with pytest.raises(BgmgenError, match="melody as input"):
        train(TrainConfig(out=tmp_path / "bad.safetensors", part="accompaniment", model=TINY, **base), cache=tmp_path)


def test_train_cli_rejects_a_bad_part_or_start_in_one_line(prepared, tmp_path):
    from typer.testing import CliRunner

    from bgmgen.cli import app

    for extra, message in ((["--part", "bass"], "unknown part 'bass'"),
                           (["--part", "accompaniment", "--init-from", str(tmp_path / "none.safetensors")], "no such checkpoint"),
                           (["--part", "melody", "--backbone", "paper2d"], "uses the temporal1d backbone")):
        result = CliRunner().invoke(app, ["train", "--data", str(prepared), "--out", str(tmp_path / "m.safetensors"), "-q", *extra])
        assert result.exit_code != 0, extra
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m.safetensors").exists()
