"""Splitting rules: where each AU-Net stage keeps a vector.

A rule marks *pool positions*: the bytes whose contextual vector is handed to the
next stage. A byte's *level* is the deepest stage whose rule marks it, and a stage
keeps every byte of its level or deeper (as the paper's reference code does: a digit
kept by the 4-word stage is kept at stages 2 and 3 too). Byte 0 is kept at every
stage, so the first segment always has a coarse context. Everything works on raw bytes
(invalid UTF-8, control bytes, any length) and is causal: the level of byte ``i``
depends on bytes ``0..i`` only, so appending bytes never changes an earlier level
("stable to rightward insertion", Sec. 2.2).

The rules
---------
``word`` (stage 2, App. B): a byte is a pool position when it cannot extend the current
chunk of :data:`WORD_PATTERN`, i.e. it starts a new chunk. Chunks carry their leading
space (" cat"), so the vector kept at the space after "sat" summarises "sat_" and,
through upsampling, helps predict "on_" (Fig. 2).

``words:N`` (``words2``, ``words4``: stages 3 and 4), the reference code's ``word``
strategy (facebookresearch/lingua, ``apps/aunet/data/regex_cutting.py``), read on the
characters of the UTF-8 text, each mark placed on the last byte of its character:

* every *group*: the first of 1-3 digits (Unicode ``\\p{N}``); the first of 1-3
  punctuation characters (anything not a letter, number or space; line breaks right
  after them join the group); the first line break of a run of whitespace;
* the whitespace character that ends every N-th word, a word being a run of non-space
  characters (punctuation included) followed by one whitespace character. Words are
  counted in runs separated by single whitespace characters: longer whitespace (two
  spaces, a blank line) restarts the count, and the words before it that did not
  complete a group of N get no mark.

So "The cat, which was old, (quietly) in 1999;" keeps ``,`` ``(`` ``1`` ``;`` at every
stage, besides the space after every 2nd (4th) word.

Where the reference rules look ahead (documented, tested in tests/test_splitting.py):

* A whitespace run that contains a line break but starts with another space (trailing
  spaces "end  \\n", or spaces after a punctuation's own line breaks ".\\n \\n"): the
  reference marks the run's *first* byte, which is only known to start a line-break
  group once the break arrives. Here the line break itself is marked.
* Invalid UTF-8: the reference decodes it to U+FFFD (punctuation); here each invalid
  byte counts as a letter (never marked, ends no group).
* Special ids (BOS/EOS/PAD, >= 256) split like a newline here; the reference restarts
  its rules after them and gives them level 0.

Two ways to the same levels
---------------------------
:class:`Splitter` ``.push`` decides byte by byte in O(1) per byte: it is the reference
that generation uses. :func:`pool_levels` and ``Splitter.levels`` compute a whole byte
string at once, vectorised over the document (numpy over character classes, the rare
long runs one by one), over 100x faster (benchmarks/bench_splitting.py); the tests
assert that both give identical levels on random, adversarial and real text. A ``regex:<pattern>``
rule has no fast path: it falls back to ``push`` with a one-time warning.
"""

from __future__ import annotations

import codecs
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import regex

# Byte-level version of App. B's regex. Non-ASCII bytes count as letters, so UTF-8
# text in Latin scripts splits at spaces and invalid UTF-8 still gets a class.
WORD_PATTERN = (
    rb" ?[A-Za-z\x80-\xff]{1,16}"  # letters, with their leading space
    rb"| ?[0-9]{1,3}"  # numbers, 1 to 3 digits
    rb"| ?[^\sA-Za-z0-9\x80-\xff]{1,3}"  # punctuation groups
    rb"|\s*[\r\n]+"  # line breaks with their indentation
    rb"|\s+"  # other whitespace
)

#: Ids at or above 256 (BOS/EOS/PAD) split like a newline.
SPECIAL_AS_BYTE = ord("\n")

NAMED_RULES = {"word": "regex:word", "words2": "words:2", "words4": "words:4"}

#: The default rule for each stage index >= 1 (stage 2, 3, 4 of the paper).
DEFAULT_RULES = ("word", "words2", "words4")

#: Longest run of numbers (or punctuation) in one ``words:N`` group.
_GROUP_RUN = 3


def default_rules(n_stages: int) -> list[str]:
    """The paper's rules for an n-stage AU-Net: word, then 2 words, then 4 words, doubling on."""
    if n_stages < 1:
        raise ValueError(f"n_stages must be >= 1, got {n_stages}")
    rules = list(DEFAULT_RULES[: n_stages - 1])
    while len(rules) < n_stages - 1:
        rules.append(f"words:{2 ** (len(rules))}")
    return rules


@dataclass(frozen=True)
class _Rule:
    """One stage's rule, parsed. ``pattern`` for a regex rule, ``every`` for a word-count rule."""

    spec: str
    pattern: regex.Pattern | None = None
    every: int = 0

    @property
    def is_word(self) -> bool:
        return self.pattern is not None and self.pattern.pattern == WORD_PATTERN


def parse_rule(spec: str) -> _Rule:
    """Parse ``word`` / ``words2`` / ``words4`` / ``words:N`` / ``regex:<pattern>``.

    Raises ValueError naming the spec and the accepted forms.
    """
    resolved = NAMED_RULES.get(spec, spec)
    if resolved == "regex:word":
        return _Rule(spec, pattern=regex.compile(WORD_PATTERN))
    if resolved.startswith("words:"):
        try:
            every = int(resolved.split(":", 1)[1])
        except ValueError:
            every = 0
        if every < 1:
            raise ValueError(f"splitting rule {spec!r}: 'words:N' needs a whole N >= 1")
        return _Rule(spec, every=every)
    if resolved.startswith("regex:"):
        source = resolved.split(":", 1)[1]
        if not source:
            raise ValueError(f"splitting rule {spec!r}: the regex is empty")
        try:
            pattern = regex.compile(source.encode("utf-8"))
        except regex.error as err:
            raise ValueError(f"splitting rule {spec!r}: invalid regex ({err})") from err
        return _Rule(spec, pattern=pattern)
    raise ValueError(
        f"unknown splitting rule {spec!r}: use one of {sorted(NAMED_RULES)}, 'words:N' or 'regex:<pattern>'"
    )


# ---------------------------------------------------------------------------------------
# Character classes of the word-count rules (the reference's \p{L}, \p{N}, \s)
# ---------------------------------------------------------------------------------------

LETTER, NUMBER, PUNCT, SPACE, NEWLINE = range(5)
_NO_CHAR = 255  # "before the first character"


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


_ASCII_CHARS = [chr(c) for c in range(128)]
_ASCII_CLASS = np.array([char_class(chr(c)) for c in range(128)], dtype=np.uint8)


class Splitter:
    """Splitter for an n-stage hierarchy: ``push`` bytes one by one, or ``levels`` of a whole string.

    The level of a byte is the deepest stage index (0-based) that keeps its vector;
    0 means only the byte stage. ``push`` costs O(1) per byte (O(chunk) for a regex
    rule), independent of how much text came before, which is what cached generation
    needs; ``levels`` gives the same levels from a fresh state, fast.
    """

    def __init__(self, n_stages: int, rules: list[str] | tuple[str, ...] | None = None):
        rules = list(default_rules(n_stages) if rules is None else rules)
        if len(rules) != n_stages - 1:
            raise ValueError(
                f"{n_stages} stages need {n_stages - 1} splitting rules (one per stage after the first), "
                f"got {len(rules)}: {rules}"
            )
        self.n_stages = n_stages
        self.rules = [parse_rule(r) for r in rules]
        self.reset()

    # ---------------------------------------------------------------- byte by byte
    def reset(self) -> None:
        self._buffer = bytearray()
        self._chunk_start = [0] * len(self.rules)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._pending = False  # the decoder holds the start of a multibyte character
        self._prev_class = _NO_CHAR
        self._run = 0  # characters so far in the current number or punctuation group
        self._absorbing = False  # line breaks right after punctuation join its group
        self._break_seen = False  # the current whitespace run already had its marked line break
        self._words = [0] * len(self.rules)  # words counted towards the next group of N

    def push(self, byte: int) -> int:
        """Append one byte (or a special id >= 256) and return its level."""
        if byte >= 256:
            byte = SPECIAL_AS_BYTE
        i = len(self._buffer)
        self._buffer.append(byte)
        marked = [False] * len(self.rules)
        if any(r.every for r in self.rules):
            self._push_characters(byte, marked)
        for k, rule in enumerate(self.rules):
            if rule.pattern is not None:
                marked[k] = self._regex_starts_chunk(k, rule.pattern, i)
        # Trim the buffer to what the open chunks need, so memory stays bounded.
        keep_from = min((s for s, r in zip(self._chunk_start, self.rules) if r.pattern is not None), default=i)
        if keep_from > 4096:
            del self._buffer[:keep_from]
            self._chunk_start = [s - keep_from for s in self._chunk_start]
        if i == 0:
            return self.n_stages - 1
        return max((k + 1 for k, m in enumerate(marked) if m), default=0)

    def _regex_starts_chunk(self, k: int, pattern: regex.Pattern, i: int) -> bool:
        start = self._chunk_start[k]
        match = pattern.match(self._buffer, start, i + 1)
        extends = match is not None and match.end() == i + 1
        if not extends:
            self._chunk_start[k] = i
        return not extends

    def _push_characters(self, byte: int, marked: list[bool]) -> None:
        """Feed the word-count rules the characters this byte completes; mark the one ending here."""
        if byte < 128 and not self._pending:
            text, ends_here = _ASCII_CHARS[byte], True
        else:
            text = self._decoder.decode(bytes((byte,)))
            self._pending = bool(self._decoder.getstate()[0])
            ends_here = not self._pending  # else every character is an earlier invalid byte
        for j, ch in enumerate(text):
            group, word_end = self._step(char_class(ch))
            if j == len(text) - 1 and ends_here:
                for k, rule in enumerate(self.rules):
                    if rule.every:
                        marked[k] = group or word_end[k]

    def _step(self, cls: int) -> tuple[bool, list[bool]]:
        """One character through the group automaton and the word counters."""
        prev, self._prev_class = self._prev_class, cls
        prev_ws = prev in (SPACE, NEWLINE)
        group = False
        if cls in (NUMBER, PUNCT):
            self._run = self._run + 1 if prev == cls else 1
            group = self._run % _GROUP_RUN == 1
        elif cls in (SPACE, NEWLINE):
            if not prev_ws:
                self._break_seen = False
                self._absorbing = prev == PUNCT
            if cls == SPACE:
                self._absorbing = False
            elif not self._absorbing:
                group = not self._break_seen
                self._break_seen = True
        word_end = [False] * len(self.rules)
        if cls in (SPACE, NEWLINE) and prev != _NO_CHAR:
            for k, rule in enumerate(self.rules):
                if not rule.every:
                    continue
                if prev_ws:
                    self._words[k] = 0  # longer whitespace: the count restarts
                    continue
                self._words[k] += 1
                if self._words[k] == rule.every:
                    word_end[k], self._words[k] = True, 0
        return group, word_end

    # ---------------------------------------------------------------- a whole string
    def levels(self, data: bytes | bytearray | list[int]) -> list[int]:
        """Levels of every byte of ``data``, from a fresh state (same as pushing them one by one)."""
        if not all(r.every or r.is_word for r in self.rules):
            _warn_no_fast_path([r.spec for r in self.rules if not (r.every or r.is_word)])
            self.reset()
            return [self.push(b) for b in data]
        return level_array(_as_bytes(data), self.n_stages, self.rules).tolist()


_WARNED: set[tuple[str, ...]] = set()


def _warn_no_fast_path(specs: list[str]) -> None:
    if tuple(specs) not in _WARNED:
        _WARNED.add(tuple(specs))
        warnings.warn(f"splitting rules {specs} have no fast path: levels are computed byte by byte "
                      "(about 0.5 MB/s); use 'word' / 'words:N' for data-speed splitting",
                      stacklevel=_outside_this_module())


def _outside_this_module() -> int:
    """The stacklevel of the first caller outside this module: the warning names the user's line
    whether they called ``pool_levels`` or ``Splitter.levels``."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
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


# ---------------------------------------------------------------------------------------
# The fast path: whole strings at once
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
#: Longest run of one byte class in a ``word`` chunk, by class (0: unlimited); same for ``words:N`` groups.
_WORD_RUN_LIMIT = np.zeros(256, dtype=np.int64)
_WORD_RUN_LIMIT[[_B_LETTER, _B_DIGIT, _B_PUNCT]] = 16, 3, 3
_GROUP_RUN_LIMIT = np.zeros(256, dtype=np.int64)
_GROUP_RUN_LIMIT[[NUMBER, PUNCT]] = _GROUP_RUN


def _mark_long_runs(cls: np.ndarray, limit: np.ndarray, marks: np.ndarray) -> None:
    """In runs of one class longer than its limit, mark every limit-th element after the first."""
    bounds = np.flatnonzero(cls[1:] != cls[:-1]) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(cls)]))
    every = limit[cls[starts]]
    long = np.flatnonzero((every > 0) & (ends - starts > every))
    for s, e, m in zip(starts[long].tolist(), ends[long].tolist(), every[long].tolist()):  # rare
        marks[s + m: e: m] = True


def _shifted(a: np.ndarray, by: int, fill: int) -> np.ndarray:
    out = np.full_like(a, fill)
    out[by:] = a[:-by] if by < len(a) else a[:0]
    return out


def _word_starts(data: bytes, arr: np.ndarray) -> np.ndarray:
    """Byte positions where the ``word`` rule starts a chunk (App. B's chunks, decided causally).

    A letter, digit or punctuation byte starts a chunk when its run of that class starts,
    unless a single space that began a chunk precedes it (" cat"); a run longer than 16
    letters (3 digits, 3 punctuation) starts a new chunk every 16 (3). Whitespace starts a
    chunk after a non-space, and a non-break space after a line break (chunks are spaces
    then line breaks: "  \\n\\n").
    """
    cls = _WORD_BYTE_CLASS[arr]
    prev = _shifted(cls, 1, _NO_CHAR)
    prev2 = _shifted(cls, 2, _NO_CHAR)
    ws = cls >= _B_SPACE
    prev_ws = (prev >= _B_SPACE) & (prev != _NO_CHAR)
    prev2_ws = (prev2 >= _B_SPACE) & (prev2 != _NO_CHAR)
    space_chunk_before = (prev == _B_SPACE) & (~prev2_ws | (prev2 == _B_NEWLINE))
    starts = np.where(ws, ~prev_ws | ((prev == _B_NEWLINE) & (cls != _B_NEWLINE)),
                      (cls != prev) & ~space_chunk_before)
    _mark_long_runs(cls, _WORD_RUN_LIMIT, starts)
    return starts


def _characters(data: bytes, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Class of every character and the index of its last byte (None: ASCII, one byte each)."""
    if data.isascii():
        return _ASCII_CLASS[arr], None
    text = data.decode("utf-8", errors="surrogateescape")
    cps = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")
    cls = np.empty(len(cps), dtype=np.uint8)
    ascii_ = cps < 128
    cls[ascii_] = _ASCII_CLASS[cps[ascii_]]
    other = np.flatnonzero(~ascii_)
    uniq, inverse = np.unique(cps[other], return_inverse=True)
    cls[other] = np.array([char_class(chr(c)) for c in uniq], dtype=np.uint8)[inverse]
    escaped = (cps >= 0xDC80) & (cps <= 0xDCFF)
    n_bytes = 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000) - 2 * escaped
    return cls, np.cumsum(n_bytes) - 1


def _word_count_marks(cls: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What every ``words:N`` rule needs, computed once per string.

    Returns the characters that start a number, punctuation or line-break group (a mask),
    the characters (whitespace) that end a word, and each word's index in its run of words
    separated by single whitespace characters (longer whitespace restarts the count).
    """
    prev = _shifted(cls, 1, _NO_CHAR)
    ws = cls >= SPACE
    prev_ws = (prev >= SPACE) & (prev != _NO_CHAR)
    grouped = (cls == NUMBER) | (cls == PUNCT)
    groups = grouped & (cls != prev)
    _mark_long_runs(cls, _GROUP_RUN_LIMIT, groups)
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
    word_ends = np.flatnonzero(ws & ~prev_ws & (prev != _NO_CHAR))
    segment = np.searchsorted(np.flatnonzero(ws & prev_ws), word_ends)
    index = np.arange(len(word_ends))
    first = np.maximum.accumulate(np.where(np.append(True, segment[1:] != segment[:-1]), index, 0))
    return groups, word_ends, index - first


def level_array(data: bytes, n_stages: int, rules: list[_Rule]) -> np.ndarray:
    """Levels of a whole byte string with ``word`` and ``words:N`` rules (the fast path)."""
    levels = np.zeros(len(data), dtype=np.int64)
    if not data:
        return levels
    arr = np.frombuffer(data, dtype=np.uint8)
    chars = None
    for k, rule in enumerate(rules, start=1):
        if rule.is_word:
            levels[_word_starts(data, arr)] = k
            continue
        if chars is None:
            cls, last_byte = _characters(data, arr)
            chars = last_byte, *_word_count_marks(cls)
        last_byte, groups, word_ends, rank = chars
        marks = groups.copy()
        marks[word_ends[rank % rule.every == rule.every - 1]] = True
        marks = np.flatnonzero(marks)
        levels[marks if last_byte is None else last_byte[marks]] = k
    levels[0] = n_stages - 1
    return levels


def pool_levels(data: bytes | list[int], n_stages: int, rules: list[str] | None = None) -> list[int]:
    """For each byte, the deepest stage index (0-based) at which its vector is kept.

    The level of byte ``i`` depends only on ``data[:i + 1]``.
    """
    return Splitter(n_stages, rules).levels(data)
