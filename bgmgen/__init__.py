"""bgmgen: background music for videos, written by a diffusion model (after Diff-BGM, CVPR 2024).

The folders follow the pipeline that ``pipeline.py`` runs top to bottom:

- ``video/``: probe and decode, shot cuts, visual signals, CLIP/BLIP/BERT features -> a ``VideoAnalysis``
- ``music/``: the plan (tempo, segments, key, chords, levels), the diffusion model and its sampler,
  window-by-window generation, styles and the arrangement (bass, drums, pad), MIDI
- ``sound/``: FluidSynth rendering (and stems), loudness, voice spans, muxing into the video
- ``training/``: POP909 data and the training loops; ``evaluation/``: metrics and ``bgmgen evaluate``

At the top: ``pipeline`` (the stages in order), ``cli`` (arguments only), ``batch`` (many videos),
``report`` (the timeline picture), ``weights`` (where model files are found), ``errors`` and ``files``.
Imports only point down this list: ``video`` knows nothing of ``music``, ``music`` nothing of ``sound``,
and a test walks the imports and fails on a circle.
"""

__version__ = "0.1.0"
