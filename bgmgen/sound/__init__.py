"""Making it heard: MIDI -> audio -> the scored video.

- ``render``: FluidSynth renders the MIDI with a General MIDI SoundFont, trimmed and levelled (or per role: stems)
- ``speech``: where the original sound has a voice, so the melody can step back there
- ``loudness``: loudness measurement and a look-ahead limiter, block by block
- ``mux``: the music into the video with ffmpeg (video stream copied; optional ducking under the original)
"""
