"""Writing outputs safely: every file bgmgen writes goes through a hidden temporary file beside it
and is renamed into place at the end, so a failed or interrupted run never leaves a partial file."""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bgmgen.errors import OutputError

REPO_DIR = Path(__file__).resolve().parents[1]  # the source tree, when bgmgen runs from a checkout


def shipped_path(folder: str, name: str) -> Path:
    """A file bgmgen ships outside the package (``models/``, ``soundfonts/``): the checkout's copy (source
    or editable install) when it exists, else the one a wheel installs under ``<prefix>/share/bgmgen``."""
    in_repo = REPO_DIR / folder / name
    installed = Path(sys.prefix) / "share" / "bgmgen" / folder / name
    return in_repo if in_repo.exists() or not installed.exists() else installed


def new_partial(path: Path) -> Path:
    """Create an empty hidden file `.NAME.partial-XXXXXXXX.EXT` beside `path` and return it.

    Same extension, so ffmpeg picks the right muxer; O_EXCL makes the name ours alone; mode
    0o666 lets the umask set the final permissions. Raises OutputError if the folder is missing
    or not writable.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(f"output folder does not exist: {path.parent}")
    for _ in range(100):
        tmp = path.parent / f".{path.stem}.partial-{secrets.token_hex(4)}{path.suffix}"  # see remove_partials
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as e:
            raise OutputError(f"cannot write to {path.parent}: {e}") from e
    raise OutputError(f"cannot create a temporary file in {path.parent}")


def remove_partials(path: Path) -> None:
    """Delete the partial files ``new_partial`` made for ``path`` and a killed run left behind."""
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.partial-[0-9a-f]{{8}}{re.escape(path.suffix)}")
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            if pattern.fullmatch(candidate.name):
                candidate.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """``with atomic_output(path) as tmp: write(tmp)``: renamed over ``path`` only if the block succeeds.

    The temporary file is removed on every exit path; OSError becomes OutputError.
    """
    tmp = new_partial(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
