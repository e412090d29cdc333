"""The splitter: one rule per stage after the first, byte by byte or over a whole string."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

import numpy as np

from aunet.splitting.registry import Rule, Stream, Text, canonical_spec, parse_rule, rule_suffix

#: Ids at or above 256 (BOS/EOS/PAD) split like a newline.
SPECIAL_AS_BYTE = ord("\n")

#: The default rule for each stage index >= 1 (stage 2, 3, 4 of the paper).
DEFAULT_RULES = ("word", "words2", "words4")

_PACKAGE = __name__.rpartition(".")[0]


def default_rules(n_stages: int) -> list[str]:
    """The paper's rules for an n-stage AU-Net: word, then 2 words, then 4 words, doubling on."""
    if n_stages < 1:
        raise ValueError(f"n_stages must be >= 1, got {n_stages}")
    rules = list(DEFAULT_RULES[: n_stages - 1])
    while len(rules) < n_stages - 1:
        rules.append(f"words:{2 ** (len(rules))}")
    return rules


def family_suffix(rules: Sequence[str]) -> str:
    """What a config's rules add to its AU-Net family name: ``_<rule>`` (``_stride4``) when only the
    stage-2 rule differs from the default ones and a family name can write it; else nothing (the
    default rules, or rules no family stands for keep the bare family name)."""
    defaults = default_rules(len(rules) + 1)
    same = [canonical_spec(r) == canonical_spec(d) for r, d in zip(rules, defaults)]
    if not rules or same[0] or not all(same[1:]):
        return ""
    suffix = rule_suffix(rules[0])
    return f"_{suffix}" if suffix else ""


class Splitter:
    """Splitter for an n-stage hierarchy: ``push`` bytes one by one, or ``levels`` of a whole string.

    The level of a byte is the deepest stage index (0-based) that keeps its vector;
    0 means only the byte stage. ``push`` costs O(1) per byte (O(chunk) for a regex
    rule), independent of how much text came before, which is what cached generation
    needs; ``levels`` gives the same levels from a fresh state, fast.
    """

    def __init__(self, n_stages: int, rules: Sequence[str] | None = None):
        rules = list(default_rules(n_stages) if rules is None else rules)
        if len(rules) != n_stages - 1:
            raise ValueError(
                f"{n_stages} stages need {n_stages - 1} splitting rules (one per stage after the first), "
                f"got {len(rules)}: {rules}"
            )
        self.n_stages = n_stages
        self.rules = [parse_rule(r) for r in rules]
        self.reset()

    def reset(self) -> None:
        stream = Stream()
        self._steps = [rule.step(stream) for rule in self.rules]
        self._stream = stream
        self._started = False

    def push(self, byte: int) -> int:
        """Append one byte (or a special id >= 256) and return its level."""
        if byte >= 256:
            byte = SPECIAL_AS_BYTE
        self._stream.push(byte)
        level = 0
        for k, step in enumerate(self._steps, start=1):
            if step(byte):
                level = k
        if not self._started:  # the first byte is kept at every stage
            self._started = True
            return self.n_stages - 1
        return level

    def levels(self, data: bytes | bytearray | list[int]) -> list[int]:
        """Levels of every byte of ``data``, from a fresh state (same as pushing them one by one)."""
        slow = [rule.spec for rule in self.rules if not rule.has_fast_path]
        if slow:
            _warn_no_fast_path(slow)
            self.reset()
            return [self.push(b) for b in data]
        return level_array(_as_bytes(data), self.n_stages, self.rules).tolist()


_WARNED: set[tuple[str, ...]] = set()


def _warn_no_fast_path(specs: list[str]) -> None:
    if tuple(specs) not in _WARNED:
        _WARNED.add(tuple(specs))
        warnings.warn(f"splitting rules {specs} have no fast path: levels are computed byte by byte "
                      "(about 0.5 MB/s); use 'word' / 'words:N' for data-speed splitting",
                      stacklevel=_outside_this_package())


def _outside_this_package() -> int:
    """The stacklevel of the first caller outside this package: the warning names the user's line
    whether they called ``pool_levels`` or ``Splitter.levels``."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_PACKAGE + "."):
        frame, level = frame.f_back, level + 1
    return level


def _as_bytes(data: bytes | bytearray | list[int]) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    try:
        return bytes(data)  # ids all below 256: the common row
    except ValueError:
        pass
    ids = np.asarray(data, dtype=np.int64)
    return np.where(ids >= 256, SPECIAL_AS_BYTE, ids).astype(np.uint8).tobytes()


def level_array(data: bytes, n_stages: int, rules: Sequence[Rule]) -> np.ndarray:
    """Levels of a whole byte string through its rules' fast paths."""
    levels = np.zeros(len(data), dtype=np.int64)
    if not data:
        return levels
    text = Text(data)
    for k, rule in enumerate(rules, start=1):
        levels[rule.marks(text)] = k
    levels[0] = n_stages - 1
    return levels


def pool_levels(data: bytes | list[int], n_stages: int, rules: Sequence[str] | None = None) -> list[int]:
    """For each byte, the deepest stage index (0-based) at which its vector is kept.

    The level of byte ``i`` depends only on ``data[:i + 1]``.
    """
    return Splitter(n_stages, rules).levels(data)
