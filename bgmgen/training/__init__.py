"""Teaching the music model: POP909 data and the training loops.

- ``pop909``: songs, beats and chords read into piano-roll windows, with the committed split
- ``train``: the music-only training run (resumable, validated)
- ``paired`` (+ ``paired_synthetic``): video-conditioned training on paired feature folders
"""
