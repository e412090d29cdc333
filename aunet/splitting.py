"""Splitting rules: where each AU-Net stage keeps a vector.

A rule marks *pool positions*: the bytes whose contextual vector is handed to the
next stage. Byte 0 is a pool position at every stage, so the first segment always
has a coarse context. Everything here works on raw bytes (invalid UTF-8, control
bytes, any length) and is causal by construction: the decision for byte ``i`` is
taken when byte ``i`` arrives, from bytes ``0..i`` only, so appending bytes never
changes an earlier decision ("stable to rightward insertion", Sec. 2.2).

Stage 2 (index 1) uses a chunking regex (App. B): a byte is a pool position when it
cannot extend the current chunk, i.e. it starts a new chunk. Chunks carry their
leading space (" cat"), so the vector kept at the space after "sat" summarises
"sat_" and, through upsampling, helps predict "on_" (Fig. 2).

Deeper stages keep every N-th stage-2 word, or the first word after a sentence end.
"""

from __future__ import annotations

from dataclasses import dataclass

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

#: Bytes that end a sentence when they are the last non-space bytes of a chunk.
SENTENCE_END = frozenset(b".!?\n\r")

#: Ids at or above 256 (BOS/EOS/PAD) split like a newline: a hard sentence end.
SPECIAL_AS_BYTE = ord("\n")

NAMED_RULES = {"word": "regex:word", "words2": "words:2", "words4": "words:4"}

#: The default rule for each stage index >= 1 (stage 2, 3, 4 of the paper).
DEFAULT_RULES = ("word", "words2", "words4")


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


class Splitter:
    """Incremental splitter for an n-stage hierarchy: feed bytes, get each byte's level.

    The level of a byte is the deepest stage index (0-based) that keeps its vector;
    0 means only the byte stage. Levels are nested: a stage keeps a subset of the
    previous stage's positions. ``push`` costs O(current chunk length), independent of
    how much text came before, which is what cached generation needs.
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
        if self.rules and self.rules[0].pattern is None:
            raise ValueError(f"the first pooling stage needs a regex rule (e.g. 'word'), got {rules[0]!r}")
        self.reset()

    def reset(self) -> None:
        self._buffer = bytearray()
        self._chunk_start = [0] * len(self.rules)
        self._words_since = [0] * len(self.rules)
        self._chunk_is_word = False
        self._chunk_ends_sentence = False

    def push(self, byte: int) -> int:
        """Append one byte (or a special id >= 256) and return its level."""
        if byte >= 256:
            byte = SPECIAL_AS_BYTE
        i = len(self._buffer)
        self._buffer.append(byte)
        if i == 0:
            self._start_chunk(byte)
            return self.n_stages - 1
        level = 0
        for k, rule in enumerate(self.rules):
            if rule.pattern is not None:
                starts = self._regex_starts_chunk(k, rule.pattern, i)
            else:
                starts = self._words_reached(k, rule.every)
            if not starts:
                break
            level = k + 1
        # Word counters track completed stage-2 chunks; update after deciding.
        if level >= 1:
            finished_word = self._chunk_is_word
            for k in range(len(self.rules)):
                self._words_since[k] = 0 if k < level else self._words_since[k] + finished_word
            self._start_chunk(byte)
        else:
            self._extend_chunk(byte)
        # Trim the buffer to what the open chunks need, so memory stays bounded.
        keep_from = min((s for s, r in zip(self._chunk_start, self.rules) if r.pattern is not None), default=i)
        if keep_from > 4096:
            del self._buffer[:keep_from]
            self._chunk_start = [s - keep_from for s in self._chunk_start]
        return level

    def _regex_starts_chunk(self, k: int, pattern: regex.Pattern, i: int) -> bool:
        start = self._chunk_start[k]
        match = pattern.match(self._buffer, start, i + 1)
        extends = match is not None and match.end() == i + 1
        if not extends:
            self._chunk_start[k] = i
        return not extends

    def _words_reached(self, k: int, every: int) -> bool:
        # Decided when a stage-2 chunk starts: enough completed words, or a sentence just ended.
        return self._words_since[k] + self._chunk_is_word >= every or self._chunk_ends_sentence

    def _start_chunk(self, byte: int) -> None:
        self._chunk_is_word = _is_alnum(byte)
        self._chunk_ends_sentence = byte in SENTENCE_END

    def _extend_chunk(self, byte: int) -> None:
        self._chunk_is_word = self._chunk_is_word or _is_alnum(byte)
        if byte in SENTENCE_END:
            self._chunk_ends_sentence = True
        elif not chr(byte).isspace() or byte >= 128:
            self._chunk_ends_sentence = False

    def levels(self, data: bytes | list[int]) -> list[int]:
        """Levels of every byte of ``data``, from a fresh state."""
        self.reset()
        return [self.push(b) for b in data]


def _is_alnum(byte: int) -> bool:
    return byte >= 128 or chr(byte).isalnum()


def pool_levels(data: bytes, n_stages: int, rules: list[str] | None = None) -> list[int]:
    """For each byte, the deepest stage index (0-based) at which its vector is kept.

    The level of byte ``i`` depends only on ``data[:i + 1]``.
    """
    return Splitter(n_stages, rules).levels(data)
