"""Array helpers the fast paths share: neighbours of a class array, and long runs of one class."""

from __future__ import annotations

import numpy as np

#: The class of "before the first byte (or character)".
NO_CLASS = 255


def shifted(a: np.ndarray, by: int, fill: int) -> np.ndarray:
    """``a`` moved ``by`` places to the right, ``fill`` in front: each element's ``by``-th predecessor."""
    out = np.full_like(a, fill)
    out[by:] = a[:-by] if by < len(a) else a[:0]
    return out


def mark_long_runs(cls: np.ndarray, limit: np.ndarray, marks: np.ndarray) -> None:
    """In runs of one class longer than its limit, mark every limit-th element after the first."""
    bounds = np.flatnonzero(cls[1:] != cls[:-1]) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(cls)]))
    every = limit[cls[starts]]
    long = np.flatnonzero((every > 0) & (ends - starts > every))
    for s, e, m in zip(starts[long].tolist(), ends[long].tolist(), every[long].tolist()):  # rare
        marks[s + m: e: m] = True
