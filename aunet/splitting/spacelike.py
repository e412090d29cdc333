"""``spacelike``: SpaceByte's rule: a pool position at every spacelike byte that follows a non-spacelike one.

A byte is spacelike when it is neither an ASCII letter or digit nor a UTF-8 continuation
byte (0x80-0xBF): spaces, punctuation, control bytes and the leading byte of every multibyte
character (0xC0-0xFF) are spacelike. These are the ranges of SpaceByte's own code
(kjslag/spacebyte, ``spacebyte.py``, ``patch_method='utf8'``), where its paper's "letter or
number" means ASCII only. So "the cat, sat" is marked at the space after "the", the comma
(not the space after it) and the space before "sat"; in CJK text each character's leading
byte follows the previous character's continuation bytes, so every character is a patch.
SpaceByte also starts a patch at its BOS token; here the first byte is kept at every stage,
and special ids split like a newline, which is spacelike.
"""

from __future__ import annotations

import numpy as np

from aunet.splitting.registry import Rule, Stream, Text


def _spacelike_table() -> np.ndarray:
    table = np.ones(256, dtype=bool)
    for low, high in ((ord("0"), ord("9")), (ord("A"), ord("Z")), (ord("a"), ord("z")), (0x80, 0xBF)):
        table[low: high + 1] = False
    return table


#: Whether each byte value is spacelike.
SPACELIKE = _spacelike_table()
_SPACELIKE_BY_BYTE = SPACELIKE.tolist()


class _SpacelikeStep:
    def __init__(self) -> None:
        self._previous = False  # SpaceByte's first byte has no spacelike predecessor

    def __call__(self, byte: int) -> bool:
        spacelike = _SPACELIKE_BY_BYTE[byte]
        marked = spacelike and not self._previous
        self._previous = spacelike
        return marked


class SpacelikeRule(Rule):
    """``spacelike``: the first spacelike byte of every run of them."""

    name = "spacelike"

    def step(self, stream: Stream) -> _SpacelikeStep:
        return _SpacelikeStep()

    def marks(self, text: Text) -> np.ndarray:
        spacelike = SPACELIKE[text.array]
        marks = spacelike.copy()
        marks[1:] &= ~spacelike[:-1]
        return marks
