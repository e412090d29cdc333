"""``words:N`` (``words2``, ``words4``: stages 3 and 4; ``word1``): groups and every N-th word.

The reference code's ``word`` strategy (facebookresearch/lingua,
``apps/aunet/data/regex_cutting.py``), read on the characters of the UTF-8 text, each
mark placed on the last byte of its character:

* every *group*: the first of 1-3 digits (Unicode ``\\p{N}``); the first of 1-3
  punctuation characters (anything not a letter, number or space; line breaks right
  after them join the group); the first line break of a run of whitespace;
* the whitespace character that ends every N-th word, a word being a run of non-space
  characters (punctuation included) followed by one whitespace character. Words are
  counted in runs separated by single whitespace characters: longer whitespace (two
  spaces, a blank line) restarts the count, and the words before it that did not
  complete a group of N get no mark.

So "The cat, which was old, (quietly) in 1999;" keeps ``,`` ``(`` ``1`` ``;`` at every
stage, besides the space after every 2nd (4th) word. ``word1`` (``words:1``: every word's
whitespace) is the reference's ``word1`` strategy, which its released configs use at stage 2
where the paper's App. B describes the ``word`` rule.

Where the reference rules look ahead (documented, tested in tests/test_splitting.py):

* A whitespace run that contains a line break but starts with another space (trailing
  spaces "end  \\n", or spaces after a punctuation's own line breaks ".\\n \\n"): the
  reference marks the run's *first* byte, which is only known to start a line-break
  group once the break arrives. Here the line break itself is marked.
* Invalid UTF-8: the reference decodes it to U+FFFD (punctuation); here each invalid
  byte counts as a letter (never marked, ends no group).

The groups do not depend on N, so all ``words:N`` rules of a splitter share one decoder
and group automaton (a :class:`~aunet.splitting.registry.Stream` part) and, on a whole
string, one analysis (:meth:`~aunet.splitting.registry.Text.shared`).
"""

from __future__ import annotations

import codecs
from functools import lru_cache

import numpy as np
import regex

from aunet.splitting.arrays import NO_CLASS, mark_long_runs, shifted
from aunet.splitting.registry import Rule, Stream, Text

# Character classes: the reference's \p{L}, \p{N}, \s.
LETTER, NUMBER, PUNCT, SPACE, NEWLINE = range(5)

#: Longest run of numbers (or punctuation) in one group.
_GROUP_RUN = 3


@lru_cache(maxsize=4096)
def char_class(ch: str) -> int:
    """Class of one decoded character; a surrogate escape (an invalid UTF-8 byte) is a letter."""
    if regex.match(r"\p{L}", ch) or 0xDC80 <= ord(ch) <= 0xDCFF:
        return LETTER
    if regex.match(r"\p{N}", ch):
        return NUMBER
    if ch in "\r\n":
        return NEWLINE
    if regex.match(r"\s", ch):
        return SPACE
    return PUNCT


_ASCII_CLASSES = [char_class(chr(c)) for c in range(128)]
_ASCII_CLASS = np.array(_ASCII_CLASSES, dtype=np.uint8)


class _Characters:
    """The characters each pushed byte completes, through the group automaton."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._pending = False  # the decoder holds the start of a multibyte character
        self._prev = NO_CLASS
        self._run = 0  # characters so far in the current number or punctuation group
        self._absorbing = False  # line breaks right after punctuation join its group
        self._break_seen = False  # the current whitespace run already had its marked line break
        #: (class, previous class, starts a group) of each character the last byte completed.
        self.completed: list[tuple[int, int, bool]] = []
        #: Whether the last of them ends at the last byte (else all are earlier invalid bytes).
        self.ends_here = False

    def push(self, byte: int) -> None:
        if byte < 128 and not self._pending:
            self.completed = [self._char(_ASCII_CLASSES[byte])]
            self.ends_here = True
            return
        text = self._decoder.decode(bytes((byte,)))
        self._pending = bool(self._decoder.getstate()[0])
        self.ends_here = not self._pending
        self.completed = [self._char(char_class(ch)) for ch in text]

    def _char(self, cls: int) -> tuple[int, int, bool]:
        prev, self._prev = self._prev, cls
        group = False
        if cls in (NUMBER, PUNCT):
            self._run = self._run + 1 if prev == cls else 1
            group = self._run % _GROUP_RUN == 1
        elif cls in (SPACE, NEWLINE):
            if prev not in (SPACE, NEWLINE):
                self._break_seen = False
                self._absorbing = prev == PUNCT
            if cls == SPACE:
                self._absorbing = False
            elif not self._absorbing:
                group = not self._break_seen
                self._break_seen = True
        return cls, prev, group


class _WordCount:
    """One ``words:N`` rule's step: the shared groups, and its own count of words towards N."""

    def __init__(self, every: int, chars: _Characters) -> None:
        self._every, self._chars, self._words = every, chars, 0

    def __call__(self, byte: int) -> bool:
        marked = False
        for cls, prev, group in self._chars.completed:
            word_end = False
            if cls in (SPACE, NEWLINE) and prev != NO_CLASS:
                if prev in (SPACE, NEWLINE):
                    self._words = 0  # longer whitespace: the count restarts
                else:
                    self._words += 1
                    if self._words == self._every:
                        word_end, self._words = True, 0
            marked = group or word_end
        return marked and self._chars.ends_here


class WordsRule(Rule):
    """``words:N``: every group, and the whitespace that ends every N-th word."""

    name = "words"
    params = "N"
    aliases = {"word1": "words:1", "words2": "words:2", "words4": "words:4"}

    def __init__(self, spec: str, every: int) -> None:
        super().__init__(spec)
        self.every = every

    @classmethod
    def parse(cls, spec: str, arg: str) -> Rule:
        try:
            every = int(arg)
        except ValueError:
            every = 0
        if every < 1:
            raise ValueError(f"splitting rule {spec!r}: 'words:N' needs a whole N >= 1")
        return cls(spec, every)

    def step(self, stream: Stream) -> _WordCount:
        return _WordCount(self.every, stream.part(_Characters))

    def marks(self, text: Text) -> np.ndarray:
        last_byte, groups, word_ends, rank = text.shared(_word_count_analysis)
        marks = groups.copy()
        marks[word_ends[rank % self.every == self.every - 1]] = True
        marks = np.flatnonzero(marks)
        return marks if last_byte is None else last_byte[marks]


# ---------------------------------------------------------------------------------------
# The fast path
# ---------------------------------------------------------------------------------------

_GROUP_RUN_LIMIT = np.zeros(256, dtype=np.int64)
_GROUP_RUN_LIMIT[[NUMBER, PUNCT]] = _GROUP_RUN


def _characters(text: Text) -> tuple[np.ndarray, np.ndarray | None]:
    """Class of every character and the index of its last byte (None: ASCII, one byte each)."""
    if text.data.isascii():
        return _ASCII_CLASS[text.array], None
    decoded = text.data.decode("utf-8", errors="surrogateescape")
    cps = np.frombuffer(decoded.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")
    cls = np.empty(len(cps), dtype=np.uint8)
    ascii_ = cps < 128
    cls[ascii_] = _ASCII_CLASS[cps[ascii_]]
    other = np.flatnonzero(~ascii_)
    uniq, inverse = np.unique(cps[other], return_inverse=True)
    cls[other] = np.array([char_class(chr(c)) for c in uniq], dtype=np.uint8)[inverse]
    escaped = (cps >= 0xDC80) & (cps <= 0xDCFF)
    n_bytes = 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000) - 2 * escaped
    return cls, np.cumsum(n_bytes) - 1


def _word_count_analysis(text: Text) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """What every ``words:N`` rule reads, computed once per string.

    Returns the last byte of every character (None: one byte each), the characters that
    start a number, punctuation or line-break group (a mask), the characters (whitespace)
    that end a word, and each word's index in its run of words separated by single
    whitespace characters (longer whitespace restarts the count).
    """
    cls, last_byte = _characters(text)
    prev = shifted(cls, 1, NO_CLASS)
    ws = cls >= SPACE
    prev_ws = (prev >= SPACE) & (prev != NO_CLASS)
    grouped = (cls == NUMBER) | (cls == PUNCT)
    groups = grouped & (cls != prev)
    mark_long_runs(cls, _GROUP_RUN_LIMIT, groups)
    # Line breaks: the first of a whitespace run, unless it follows punctuation (then it joins
    # that group, and the first break after a later space of the run is marked).
    newline = cls == NEWLINE
    groups |= newline & ~prev_ws & (prev != PUNCT)
    after_space = np.flatnonzero(newline & (prev == SPACE))
    if len(after_space):
        ws_runs = np.flatnonzero(ws & ~prev_ws)
        run = np.searchsorted(ws_runs, after_space, side="right") - 1
        first_in_run = np.append(True, run[1:] != run[:-1])
        run_start = ws_runs[run]
        began_with_break = newline[run_start] & (prev[run_start] != PUNCT)
        groups[after_space[first_in_run & ~began_with_break]] = True
    word_ends = np.flatnonzero(ws & ~prev_ws & (prev != NO_CLASS))
    segment = np.searchsorted(np.flatnonzero(ws & prev_ws), word_ends)
    index = np.arange(len(word_ends))
    first = np.maximum.accumulate(np.where(np.append(True, segment[1:] != segment[:-1]), index, 0))
    return last_byte, groups, word_ends, index - first
