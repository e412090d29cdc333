"""``stride:k``: a pool position every k bytes (MegaByte's fixed patches, BLT's "static" baseline).

The marks are bytes 0, k, 2k, ...: the first byte of each patch, as AU-Net's word chunks are
marked at their first byte and SpaceByte's periodic patching takes every k-th byte from the
first. Counting starts afresh with each splitter, so a model's pooled stage holds exactly
``ceil(T / k)`` vectors for ``T`` bytes and its contraction is ``k`` on whole patches.
"""

from __future__ import annotations

import numpy as np

from aunet.splitting.registry import Rule, Stream, Text


class _StrideStep:
    def __init__(self, every: int) -> None:
        self._every, self._count = every, 0

    def __call__(self, byte: int) -> bool:
        marked = self._count == 0
        self._count = (self._count + 1) % self._every
        return marked


class StrideRule(Rule):
    """``stride:k``: every k-th byte, from the first."""

    name = "stride"
    params = "k"

    def __init__(self, spec: str, every: int) -> None:
        super().__init__(spec)
        self.every = every

    @classmethod
    def parse(cls, spec: str, arg: str) -> Rule:
        every = int(arg) if arg.isdigit() else 0
        if every < 1:
            raise ValueError(f"splitting rule {spec!r}: 'stride:k' needs a whole number of bytes k >= 1")
        return cls(spec, every)

    def step(self, stream: Stream) -> _StrideStep:
        return _StrideStep(self.every)

    def marks(self, text: Text) -> np.ndarray:
        return np.arange(0, len(text.array), self.every)
