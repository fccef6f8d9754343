"""Rendering the band: its MIDI written per group of roles, rendered by FluidSynth and summed into the mix,
or with ``--stems`` one WAV per role beside the mix (``render.render_stems`` makes them add up to it)."""

from __future__ import annotations

from pathlib import Path

from bgmgen.errors import OutputError
from bgmgen.files import new_partial
from bgmgen.music.arrange import Arrangement
from bgmgen.music.midi import write_arrangement
from bgmgen.music.plan import Plan
from bgmgen.music.styles import ROLES
from bgmgen.sound.render import RenderOptions, render_stems

# Without stems, the band is rendered in two parts side by side and summed: on two cores about half the wall
# time. The melody is one of them, so its balance can be set against the rest.
RENDER_GROUPS = {"melody": ["melody"], "band": ["accompaniment", "pad", "bass", "drums"]}
# The tune's loudness against the rest of the band (LU): heard on top of it, as a lead line is. Under a voice
# (``expression``, with --keep-audio) the melody keeps the style's level, so its stepping back is not undone.
MELODY_AGAINST_BAND_LU = -3.0


def render_band(
    band: Arrangement, plan: Plan, work_dir: Path, duration: float, options: RenderOptions, seed: int,
    expression: dict[str, list[tuple[float, int]]] | None = None, stems_dir: Path | None = None, force: bool = False,
) -> dict[str, Path]:
    """Render ``band`` to ``work_dir/music.wav`` (or, with ``stems_dir``, one WAV per role and ``mix.wav``
    there). Returns ``{role: wav}`` with ``"mix"`` among them; MIDI files go to ``work_dir``."""
    if stems_dir is None:
        groups = RENDER_GROUPS
    else:
        groups = {role: [role] for role in band.parts}
    midis = {
        name: write_arrangement(band, plan, work_dir / f"{name}.mid", seed, roles, expression)
        if any(band.parts[r].notes for r in roles if r in band.parts) else None
        for name, roles in groups.items()
    }
    lead = None if (expression or {}).get("melody") else ("melody", MELODY_AGAINST_BAND_LU)  # no voice found: balanced
    if stems_dir is None:
        return render_stems(midis, None, work_dir / "music.wav", duration, options, lead)
    stems_dir = prepare_stems_dir(stems_dir, force)
    return render_stems(midis, stems_dir, stems_dir / "mix.wav", duration, options, lead)


def stems_files(folder: Path) -> list[Path]:
    """The files ``--stems`` writes in ``folder``: one WAV per role and the mix."""
    return [Path(folder) / f"{name}.wav" for name in (*ROLES, "mix")]


def check_stems_dir(folder: Path, force: bool) -> None:
    """Refuse a stems folder that cannot be written, before any heavy work: its parent must exist (the folder
    itself is made), and without ``force`` none of the stem files may exist yet."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--stems must name a folder, not a file: {folder}")
    parent = folder if folder.is_dir() else folder.parent
    if not parent.is_dir():
        raise OutputError(f"stems folder's parent does not exist: {parent}")
    if not force:
        for path in stems_files(folder):
            if path.exists():
                raise OutputError(f"stem exists (use --force to overwrite): {path}")
    if folder.is_dir():
        try:
            new_partial(folder / "mix.wav").unlink()
        except (OSError, OutputError):
            raise OutputError(f"stems folder is not writable: {folder}") from None


def prepare_stems_dir(folder: Path, force: bool) -> Path:
    """Check the stems folder again (things may have changed during the run) and make it."""
    check_stems_dir(folder, force)
    try:
        Path(folder).mkdir(exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot make the stems folder {folder}: {e.strerror or e}") from None
    return Path(folder)
