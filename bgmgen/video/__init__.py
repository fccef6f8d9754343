"""Reading the picture: everything bgmgen learns from the video before any music is planned.

- ``decode``: probe with ffprobe, stream small RGB frames through an ffmpeg pipe
- ``shots``: shot cuts (TransNetV2, or a colour-histogram fallback)
- ``visual``: per-frame motion, brightness, colourfulness, energy and a coarse mood -> ``VideoAnalysis``
- ``features`` (+ ``clip_features``, ``captions``, ``text_features``): CLIP embeddings and mood, BLIP
  captions and their BERT embeddings, when their weights are found (``bgmgen.weights``)

Nothing here imports ``bgmgen.music``: the plan reads a ``VideoAnalysis`` as data.
"""
