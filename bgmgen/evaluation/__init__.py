"""Measuring the music: the paper's metrics and ours, and the ``bgmgen evaluate`` table.

- ``metrics``: PCHE, GPS, chord accuracy, in-key ratio and other symbolic measures
- ``structure``: the structure indicator SI from rendered audio
- ``retrieval``: retrieval precision P@K for paired models
- ``evaluate``: every row of the evaluation table on held-out POP909 windows
"""
