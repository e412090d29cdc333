"""Splitting rules: where each AU-Net stage keeps a vector.

A rule marks *pool positions*: the bytes whose contextual vector is handed to the
next stage. A byte's *level* is the deepest stage whose rule marks it, and a stage
keeps every byte of its level or deeper (as the paper's reference code does: a digit
kept by the 4-word stage is kept at stages 2 and 3 too). Byte 0 is kept at every
stage, so the first segment always has a coarse context. Everything works on raw bytes
(invalid UTF-8, control bytes, any length) and is causal: the level of byte ``i``
depends on bytes ``0..i`` only, so appending bytes never changes an earlier level
("stable to rightward insertion", Sec. 2.2). Special ids (BOS/EOS/PAD, >= 256) split
like a newline here; the reference restarts its rules after them and gives them level 0.

A config names one rule per stage after the first (``splits: [word, words:2]``):

* ``word`` (stage 2, App. B): chunks of App. B's pattern (:mod:`aunet.splitting.word`);
* ``words:N`` (``words2``, ``words4``: stages 3 and 4): the reference code's groups of
  digits, punctuation and line breaks, and every N-th word (:mod:`aunet.splitting.words`);
  ``word1`` (``words:1``) is the reference code's own stage-2 rule;
* ``regex:<pattern>``: chunks of any byte pattern (:mod:`aunet.splitting.word`);
* ``stride:k``: every k-th byte, MegaByte's fixed patches (:mod:`aunet.splitting.stride`);
* ``spacelike``: SpaceByte's rule, the first of every run of spacelike bytes
  (:mod:`aunet.splitting.spacelike`);
* ``entropy:<global|monotonic>:c=C`` (``entropy``, ``entropy_monotonic``): BLT's entropy patches, from
  a small byte model trained once per corpus (:mod:`aunet.splitting.entropy`);
* ``learned:c=C``: H-Net's dynamic chunking, a router inside the model scoring the stage's input
  hidden states (:mod:`aunet.splitting.learned`); the byte splitter runs only the fixed rules before it.

A family name adds a stage-2 rule to an AU-Net family (``aunet2_stride4``, ``aunet3_word1``:
deeper stages keep their default rules); :func:`rule_suffix` and :func:`rule_from_suffix`
write and read that suffix, :func:`family_suffix` gives a config's.

Each rule is a class in the registry (:mod:`aunet.splitting.registry`); the built-in
ones are registered below, and ``docs/extending.md`` says how to add one.

Two ways to the same levels
---------------------------
:class:`Splitter` ``.push`` decides byte by byte in O(1) per byte: it is the reference
that generation uses. :func:`pool_levels` and ``Splitter.levels`` compute a whole byte
string at once through the rules' fast paths, vectorised over the document (numpy over
byte or character classes, the rare long runs one by one); the tests assert that both
give identical levels on random, adversarial and real text (benchmarks/bench_splitting.py
measures the speed). A rule without a fast path (``regex:<pattern>``) falls back to
``push`` with a one-time warning.
"""

# Besides the public names: the word rule's byte classes, which tests/test_splitting.py reads here.
from aunet.splitting.entropy import EntropyRule
from aunet.splitting.learned import LearnedRule, fixed_splitter, is_learned, learned_targets
from aunet.splitting.registry import (
    Rule,
    Stream,
    Text,
    canonical_spec,
    parse_rule,
    register,
    rule_from_suffix,
    rule_suffix,
    unregister,
)
from aunet.splitting.spacelike import SPACELIKE, SpacelikeRule
from aunet.splitting.splitter import (
    DEFAULT_RULES,
    SPECIAL_AS_BYTE,
    Splitter,
    default_rules,
    family_suffix,
    level_array,
    pool_levels,
)
from aunet.splitting.stride import StrideRule
from aunet.splitting.word import _B_DIGIT as _B_DIGIT
from aunet.splitting.word import _B_LETTER as _B_LETTER
from aunet.splitting.word import _B_NEWLINE as _B_NEWLINE
from aunet.splitting.word import _B_OTHER_WS as _B_OTHER_WS
from aunet.splitting.word import _B_PUNCT as _B_PUNCT
from aunet.splitting.word import _B_SPACE as _B_SPACE
from aunet.splitting.word import WORD_PATTERN, RegexRule, WordRule
from aunet.splitting.word import _word_byte_classes as _word_byte_classes
from aunet.splitting.words import WordsRule, char_class

# The built-in rules (in the order the error for an unknown spec lists their forms).
register(WordRule)
register(WordsRule)
register(StrideRule)
register(SpacelikeRule)
register(EntropyRule)
register(LearnedRule)
register(RegexRule)

__all__ = [
    "DEFAULT_RULES",
    "EntropyRule",
    "LearnedRule",
    "SPECIAL_AS_BYTE",
    "WORD_PATTERN",
    "RegexRule",
    "Rule",
    "SPACELIKE",
    "SpacelikeRule",
    "Splitter",
    "Stream",
    "StrideRule",
    "Text",
    "WordRule",
    "WordsRule",
    "canonical_spec",
    "char_class",
    "default_rules",
    "family_suffix",
    "fixed_splitter",
    "is_learned",
    "learned_targets",
    "level_array",
    "parse_rule",
    "pool_levels",
    "register",
    "rule_from_suffix",
    "rule_suffix",
    "unregister",
]
