"""bgmgen: background music for videos, written by a diffusion model (after Diff-BGM, CVPR 2024).

Stages, one module each, called in order by ``pipeline.py``:

- ``video``: probe with ffprobe, stream small frames through an ffmpeg pipe
- ``shots``: shot cuts (TransNetV2, or a colour-histogram fallback)
- ``visual``: per-frame motion, brightness, colourfulness, energy and a coarse mood
- ``plan`` (+ ``progressions``, ``harmony``): tempo, bars, segments, key, chords, per-bar levels
- ``generate`` (+ ``model``, ``sampler``, ``conditioning``, ``roll``): the diffusion model writes a piano roll
- ``midi``: roll -> MIDI (pretty_midi)
- ``audio``: MIDI -> WAV (FluidSynth), trimmed and loudness-normalised
- ``mux``: music into the video (ffmpeg), video stream copied

Training and data: ``pop909``, ``train``, ``metrics``. Command line: ``cli``.
"""

__version__ = "0.1.0"
