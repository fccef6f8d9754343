"""Synthetic benchmark clips: patterned lavfi sources joined by hard cuts at known frames."""

from __future__ import annotations


def shots_filter(frame_bounds: list[int], sources: tuple[str, ...], size: tuple[int, int], fps: int) -> list[str]:
    """filter_complex chains joining shot i (``sources[i % len]``, frames ``bounds[i]..bounds[i+1]``) into ``[v]``.

    Each source is a lavfi spec with ``{w}``, ``{h}`` and ``{fps}`` placeholders.
    """
    chains, labels = [], []
    for i, (a, b) in enumerate(zip(frame_bounds[:-1], frame_bounds[1:])):
        source = sources[i % len(sources)].format(w=size[0], h=size[1], fps=fps)
        chains.append(f"{source},trim=end_frame={b - a},setpts=PTS-STARTPTS,format=yuv420p[s{i}]")
        labels.append(f"[s{i}]")
    chains.append(f"{''.join(labels)}concat=n={len(labels)}:v=1:a=0[v]")
    return chains
