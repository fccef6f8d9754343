"""Writing the music: from a video's analysis to notes in a MIDI file.

- ``plan`` (+ ``harmony``, ``progressions``): tempo, bars, segments, key, chords, per-bar levels
- ``roll``: the piano-roll format (onset and sustain over 88 pitches, 16 steps a bar)
- ``conditioning``: what the model is told about each 8-bar window (chords, levels, segments)
- ``unet`` and ``unet2d``: the denoising networks (the 2D one builds on the shared skeleton in ``unet``);
  ``checkpoint``: building one from its configuration, saving and loading safetensors files
- ``sampler``: noise schedules and sampling loops (diffusers' schedulers), separate from the networks
- ``generate``: window after window over a whole plan
- ``styles``: the style presets (GM programs per role, groove, tempo and density ranges, the mix)
- ``patterns``: our own drum and bass pattern library, by groove family and energy
- ``arrange``: the band around the generated parts (bass, drums, pad), on the step grid
- ``midi``: piano roll or arrangement -> MIDI, one named track per role (pretty_midi)
"""
