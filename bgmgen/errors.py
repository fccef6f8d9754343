"""Errors bgmgen raises on purpose. The CLI prints them as one line and exits non-zero."""


class BgmgenError(Exception):
    """Base class: anything the user can fix or should be told about in one line."""

    exit_code = 1


class InputError(BgmgenError):
    """The input file is missing, empty, truncated, not a video, or otherwise unusable."""

    exit_code = 2


class OutputError(BgmgenError):
    """The output path is not allowed (equals the input, exists without --force, not writable)."""

    exit_code = 3


class ToolError(BgmgenError):
    """An external program (ffmpeg, ffprobe, FluidSynth) failed; the message carries its stderr."""

    exit_code = 4


class ModelError(BgmgenError):
    """A model checkpoint or external weights could not be found or loaded."""

    exit_code = 5
