"""``regex:<pattern>`` and ``word``: a byte is a pool position when it cannot extend the current chunk.

A chunk is a match of the pattern that starts where the previous chunk started and ends
at the byte being read; a byte that no such match reaches starts a new chunk. ``word``
(stage 2, App. B) is the regex rule with :data:`WORD_PATTERN`. Chunks carry their
leading space (" cat"), so the vector kept at the space after "sat" summarises "sat_"
and, through upsampling, helps predict "on_" (Fig. 2). ``word`` has a fast path; any
other pattern is pushed byte by byte (O(chunk) per byte).
"""

from __future__ import annotations

import numpy as np
import regex

from aunet.splitting.arrays import NO_CLASS, mark_long_runs, shifted
from aunet.splitting.registry import Rule, Stream, Text

# Byte-level version of App. B's regex. Non-ASCII bytes count as letters, so UTF-8
# text in Latin scripts splits at spaces and invalid UTF-8 still gets a class.
WORD_PATTERN = (
    rb" ?[A-Za-z\x80-\xff]{1,16}"  # letters, with their leading space
    rb"| ?[0-9]{1,3}"  # numbers, 1 to 3 digits
    rb"| ?[^\sA-Za-z0-9\x80-\xff]{1,3}"  # punctuation groups
    rb"|\s*[\r\n]+"  # line breaks with their indentation
    rb"|\s+"  # other whitespace
)
_WORD_REGEX = regex.compile(WORD_PATTERN)

#: The buffer is trimmed once every open chunk starts more than this many bytes into it.
_TRIM_AFTER = 4096


class _Chunks:
    """The bytes the regex rules of one splitter still read: from the earliest open chunk on."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.starts: list[int] = []  # each regex rule's open chunk, an index into ``data``

    def push(self, byte: int) -> None:
        keep_from = min(self.starts)
        if keep_from > _TRIM_AFTER:
            del self.data[:keep_from]
            self.starts = [s - keep_from for s in self.starts]
        self.data.append(byte)


class _ChunkStep:
    def __init__(self, pattern: regex.Pattern, chunks: _Chunks) -> None:
        self._pattern, self._chunks, self._slot = pattern, chunks, len(chunks.starts)
        chunks.starts.append(0)

    def __call__(self, byte: int) -> bool:
        chunks = self._chunks
        end = len(chunks.data)
        match = self._pattern.match(chunks.data, chunks.starts[self._slot], end)
        if match is not None and match.end() == end:
            return False
        chunks.starts[self._slot] = end - 1
        return True


class RegexRule(Rule):
    """``regex:<pattern>``: chunks of a byte pattern (UTF-8 of the text after ``regex:``)."""

    name = "regex"
    params = "<pattern>"

    def __init__(self, spec: str, pattern: regex.Pattern) -> None:
        super().__init__(spec)
        self.pattern = pattern

    @classmethod
    def parse(cls, spec: str, arg: str) -> Rule:
        if arg == "word":
            return WordRule(spec)
        if not arg:
            raise ValueError(f"splitting rule {spec!r}: the regex is empty")
        try:
            pattern = regex.compile(arg.encode("utf-8"))
        except regex.error as err:
            raise ValueError(f"splitting rule {spec!r}: invalid regex ({err})") from err
        return WordRule(spec) if pattern.pattern == WORD_PATTERN else cls(spec, pattern)

    def step(self, stream: Stream) -> _ChunkStep:
        return _ChunkStep(self.pattern, stream.part(_Chunks))


class WordRule(RegexRule):
    """``word`` (also ``regex:word``): chunks of :data:`WORD_PATTERN`, with a fast path."""

    name = "word"
    params = ""

    def __init__(self, spec: str) -> None:
        super().__init__(spec, _WORD_REGEX)

    @classmethod
    def parse(cls, spec: str, arg: str) -> Rule:
        return cls(spec)

    def marks(self, text: Text) -> np.ndarray:
        return _word_starts(text.array)


# ---------------------------------------------------------------------------------------
# The fast path
# ---------------------------------------------------------------------------------------

_B_LETTER, _B_DIGIT, _B_PUNCT, _B_SPACE, _B_OTHER_WS, _B_NEWLINE = range(6)


def _word_byte_classes() -> np.ndarray:
    table = np.empty(256, dtype=np.uint8)
    for b in range(256):
        one = bytes((b,))
        if regex.fullmatch(rb"[A-Za-z\x80-\xff]", one):
            table[b] = _B_LETTER
        elif regex.fullmatch(rb"[0-9]", one):
            table[b] = _B_DIGIT
        elif one in (b"\r", b"\n"):
            table[b] = _B_NEWLINE
        elif one == b" ":
            table[b] = _B_SPACE
        elif regex.fullmatch(rb"\s", one):
            table[b] = _B_OTHER_WS
        else:
            table[b] = _B_PUNCT
    return table


_WORD_BYTE_CLASS = _word_byte_classes()
#: Longest run of one byte class in a ``word`` chunk, by class (0: unlimited).
_WORD_RUN_LIMIT = np.zeros(256, dtype=np.int64)
_WORD_RUN_LIMIT[[_B_LETTER, _B_DIGIT, _B_PUNCT]] = 16, 3, 3


def _word_starts(arr: np.ndarray) -> np.ndarray:
    """Byte positions where the ``word`` rule starts a chunk (App. B's chunks, decided causally).

    A letter, digit or punctuation byte starts a chunk when its run of that class starts,
    unless a single space that began a chunk precedes it (" cat"); a run longer than 16
    letters (3 digits, 3 punctuation) starts a new chunk every 16 (3). Whitespace starts a
    chunk after a non-space, and a non-break space after a line break (chunks are spaces
    then line breaks: "  \\n\\n").
    """
    cls = _WORD_BYTE_CLASS[arr]
    prev = shifted(cls, 1, NO_CLASS)
    prev2 = shifted(cls, 2, NO_CLASS)
    ws = cls >= _B_SPACE
    prev_ws = (prev >= _B_SPACE) & (prev != NO_CLASS)
    prev2_ws = (prev2 >= _B_SPACE) & (prev2 != NO_CLASS)
    space_chunk_before = (prev == _B_SPACE) & (~prev2_ws | (prev2 == _B_NEWLINE))
    starts = np.where(ws, ~prev_ws | ((prev == _B_NEWLINE) & (cls != _B_NEWLINE)),
                      (cls != prev) & ~space_chunk_before)
    mark_long_runs(cls, _WORD_RUN_LIMIT, starts)
    return starts
