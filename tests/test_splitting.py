"""Splitting rules: what each rule keeps (stated by hand), the reference code's rules, causality,
and the fast whole-string path against the byte-by-byte reference."""

import itertools
import os
import warnings

import numpy as np
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from aunet.splitting import Splitter, default_rules, parse_rule, pool_levels
from tests.helpers.data import default_corpus_samples

# Bytes that stress the rules: prose, long runs of spaces and digits, CJK, invalid UTF-8, controls,
# multibyte spaces and punctuation, a UTF-8 character cut in two, Arabic-Indic digits.
TRICKY = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.sampled_from([b" ", b"  ", b"\n", b"\r\n", b"\r", b"a", b"word", b"12345", b".", b"!?", b"\xe4\xb8\xad",
                         b"\xff", b"\x00", b"\t", b"caf\xc3\xa9", b"...", b"\x80\x80", b"\xc2\xa0", b"\xe2\x80\x94",
                         b",\n", b"\x1c", b"\xe2\x80", b"a" * 20, b"\xd9\xa3", b"------", b"\xf0\x9f\x98\x80"]),
        max_size=80,
    ).map(b"".join),
)

# A fixed text mixing prose, numbers, punctuation, code, tabs, non-ASCII and line breaks.
MIXED = (
    "The cat, which was old, sat (quietly) in 1999; nobody knew why.\n"
    "Prices rose 12.5% to $1,234,567 in Q3 -- a record!\n\n"
    "def pool(x, k=2):\n"
    "    return [v for v in x if v % k == 0]  # keep every k-th\n"
    "\n"
    "Trailing spaces here  \n"
    "Done.\n \nNext para\ttab  two spaces. «Quoted» naïve café — end\r\n"
).encode()

#: Rule sets with a fast path: the defaults for 2-5 stages and the reference code's own configuration.
RULE_SETS = [(2, None), (3, None), (4, None), (5, None), (4, ["words:1", "words:2", "words:4"]),
             (3, ["word", "words:3"]), (2, ["words:1"])]


def pushed(data, n_stages, rules=None):
    splitter = Splitter(n_stages, rules)
    return [splitter.push(b) for b in data]


def kept(levels, stage):
    """Byte positions kept at 0-based ``stage`` (byte 0, always kept, left out)."""
    return [i for i, lv in enumerate(levels) if lv >= stage and i > 0]


# ---- the reference code's rules, read on whole text --------------------------------------
# Written from what facebookresearch/lingua's `word` strategy does (apps/aunet/data/regex_cutting.py):
# the start of every number / punctuation / line-break match, and the end of every match of N words
# (each a non-space run and one whitespace character), on the decoded text; a mark goes to the last
# byte of its character. These regexes may look ahead; the splitter may not.
REFERENCE_GROUPS = regex.compile(r"\p{N}{1,3}|[^\s\p{L}\p{N}]{1,3}[\r\n]*|\s*[\r\n]")


def reference_marks(data: bytes, every: int) -> set[int]:
    text = data.decode()
    last_byte = [n - 1 for n in itertools.accumulate(len(c.encode()) for c in text)]
    marks = {m.start() for m in REFERENCE_GROUPS.finditer(text)}
    marks |= {m.end() - 1 for m in regex.finditer(r"(?:\S+?\s){" + str(every) + "}", text)}
    return {last_byte[i] for i in marks} - {0}


def test_deep_stages_keep_the_reference_positions_except_where_it_looks_ahead():
    levels = pool_levels(MIXED, 4)
    # The documented causality cases: a whitespace run with a line break that starts with a
    # space. The reference marks its first space (known only once the break comes); we mark the break.
    trailing = MIXED.index(b"here  \n") + 4  # "here|  \n"
    after_punct = MIXED.index(b"Done.\n \n") + 6  # "Done.\n| \n": the first break joins the period
    for stage, rules_from in ((2, (2, 4)), (3, (4,))):
        ours = set(kept(levels, stage))
        reference = set().union(*(reference_marks(MIXED, n) for n in rules_from))
        assert ours - reference == {trailing + 2, after_punct + 1}
        assert reference - ours == {trailing, after_punct}
    # With the reference configuration (its stage 2 too), the word stage differs only there as well.
    levels = pool_levels(MIXED, 4, ["words:1", "words:2", "words:4"])
    reference = set().union(*(reference_marks(MIXED, n) for n in (1, 2, 4)))
    assert set(kept(levels, 1)) ^ reference == {trailing + 2, after_punct, after_punct + 1}  # the trailing
    # space ends a word, so both keep it at stage 2


def test_the_papers_example_keeps_digits_and_punctuation_at_every_stage():
    text = b"The cat, which was old, sat (quietly) in 1999; then"
    levels = pool_levels(text, 4)
    for ch in (b",", b"(", b"1", b";"):
        assert levels[text.index(ch)] == 3, ch
    assert levels[text.index(b"999")] == 0  # digits group by 3: "199", then the last "9"
    assert levels[text.index(b"999") + 2] == 3


# ---- each rule, stated by hand ------------------------------------------------------------


@pytest.mark.parametrize(("text", "starts"), [
    (b"the cat sat", [3, 7]),  # chunks carry their leading space
    (b"in 12345", [2, 6]),  # " 123" then "45": 3 digits at most
    (b"Hi!!!! x", [2, 5, 6]),  # "!!!" then "!", then " x"
    (b"a\n\nb", [1, 3]),  # line breaks form one chunk
    (b"a \n b", [1, 3]),  # " \n" then " b"
    (b"a\r\nb", [1, 3]),  # CR LF is one chunk
    (b"a\rb", [1, 2]),  # a lone CR is a line break
    (b"x  y", [1, 3]),  # "  " then "y": only a single space joins the next word
    (b" caf\xc3\xa9 ok", [6]),  # non-ASCII bytes are letters
    (b"a" * 20, [16]),  # 16 letters at most
])
def test_word_rule_by_hand(text, starts):
    assert kept(pool_levels(text, 2), 1) == starts


@pytest.mark.parametrize(("text", "every", "marks"), [
    # o n e _ t w o _ t h r  e  e  _  f  o  u  r  _  f  i  v  e  _
    # 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23: the space after every N-th word
    (b"one two three four five ", 1, [3, 7, 13, 18, 23]),
    (b"one two three four five ", 2, [7, 18]),
    (b"one two three four five ", 4, [18]),
    (b"one two three", 2, [7]),  # the last word has no whitespace yet: not ended
    (b"a, b", 2, [1]),  # punctuation: the comma; "a," is one word
    (b"a, b", 1, [1, 2]),
    (b"x 12345 y", 2, [2, 5, 7]),  # numbers: groups "123" "45"; the pair "x 12345" ends at 7
    (b"a - b c ", 2, [2, 3, 7]),  # punctuation is a group and counts as a word
    (b"a\nb", 2, [1]),  # a line break is a group (and ends the first word)
    (b"a\r\nb", 2, [1]),  # CR LF: the CR starts the group
    (b"a b\rc d ", 2, [3, 7]),  # a lone CR is a line break: a group, and it ends the pair "a b"
    (b"a.\n\nb", 2, [1]),  # line breaks right after punctuation join its group
    (b"Stop. Go on now ", 4, [4, 15]),  # a sentence end: its period, at every stage
    (b"a b c d e ", 2, [3, 7]),
    (b"a b  c d e ", 2, [3, 8]),  # longer whitespace restarts the count
    (b"a  b c d e", 2, [6]),  # ... and the lone "a" before it never ends a pair
    (b"end  \nnext", 2, [5]),  # causal: the line break, not the first space (the reference's 3)
    (b"a \xc2\xa0b", 1, [1]),  # a no-break space is whitespace: "a" ends at 1, the NBSP restarts
    (b"a\xc2\xa0b ", 1, [2, 4]),  # a mark goes to the last byte of its character
    # n a ï ï v e _ — — —  _  4  2  _  €  €  €  \n: the dash and euro are punctuation, ï a letter
    (b"na\xc3\xafve \xe2\x80\x94 42 \xe2\x82\xac\n", 2, [9, 10, 11, 16, 17]),
    (b"na\xc3\xafve \xe2\x80\x94 42 \xe2\x82\xac\n", 4, [9, 11, 16, 17]),
    (b"\xe4\xb8\xad\xe6\x96\x87\xe3\x80\x82", 2, [8]),  # CJK letters, then the ideographic full stop
    (b"1\xff2 \xff ", 2, [2, 5]),  # invalid UTF-8 counts as a letter: "2" starts a new number group
])
def test_word_count_rule_by_hand(text, every, marks):
    assert kept(pool_levels(text, 2, [f"words:{every}"]), 1) == marks


def test_levels_are_the_deepest_stage_that_marks_a_byte():
    text = b"one two three four five six, seven"
    levels = pool_levels(text, 4)
    assert kept(levels, 1) == [3, 7, 13, 18, 23, 27, 28]  # word chunks: " two", ..., ",", " seven"
    assert kept(levels, 2) == [7, 18, 27, 28]  # every 2nd word ("six," is one), and the comma
    assert kept(levels, 3) == [18, 27]  # every 4th word, and the comma
    assert levels[0] == 3


def test_words_carry_their_leading_space_and_deeper_stages_count_words():
    text = b"the cat sat on the mat and the dog ran off"
    levels = pool_levels(text, 4)
    starts = [i for i, lv in enumerate(levels) if lv >= 1]
    words = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    assert words == [b"the", b" cat", b" sat", b" on", b" the", b" mat", b" and", b" the", b" dog", b" ran", b" off"]
    assert [i for i, lv in enumerate(levels) if lv >= 2] == starts[::2]  # every 2 words
    assert [i for i, lv in enumerate(levels) if lv >= 3] == starts[::4]  # every 4 words


def test_special_ids_split_like_a_newline():
    ids = [256, *b"ab", 257, *b"cd"]
    assert pool_levels(ids, 4) == pool_levels(b"\nab\ncd", 4)
    assert pool_levels(ids, 4) == pushed(ids, 4)


def test_contraction_grows_with_depth_on_prose():
    text = b"It was the best of times, it was the worst of times, it was the age of wisdom. " * 20
    levels = pool_levels(text, 4)
    kept_per_stage = [sum(lv >= k for lv in levels) for k in range(4)]
    assert kept_per_stage[0] > kept_per_stage[1] > kept_per_stage[2] > kept_per_stage[3]
    assert 3.5 < len(text) / kept_per_stage[1] < 6.5  # bytes per word in English prose


# ---- causality --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(TRICKY, st.sampled_from(RULE_SETS))
def test_level_of_a_byte_depends_only_on_its_prefix(data, rule_set):
    n_stages, rules = rule_set
    full = pool_levels(data, n_stages, rules)
    assert len(full) == len(data)
    for cut in range(len(data) + 1):
        assert pool_levels(data[:cut], n_stages, rules) == full[:cut]


@settings(max_examples=100, deadline=None)
@given(TRICKY, st.binary(min_size=1, max_size=50))
def test_appending_bytes_never_changes_earlier_levels(data, suffix):
    assert pool_levels(data + suffix, 4)[: len(data)] == pool_levels(data, 4)


@settings(max_examples=100, deadline=None)
@given(TRICKY)
def test_levels_are_in_range_and_start_at_the_top(data):
    levels = pool_levels(data, 4)
    assert all(0 <= lv <= 3 for lv in levels)
    if data:
        assert levels[0] == 3


# ---- the fast path is the byte-by-byte splitter ------------------------------------------


@settings(max_examples=300, deadline=None)
@given(TRICKY, st.sampled_from(RULE_SETS))
def test_fast_levels_equal_byte_by_byte_on_random_and_adversarial_bytes(data, rule_set):
    n_stages, rules = rule_set
    assert pool_levels(data, n_stages, rules) == pushed(data, n_stages, rules)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(MIXED)), st.integers(0, len(MIXED)), st.sampled_from(RULE_SETS))
def test_fast_levels_equal_byte_by_byte_on_slices_of_mixed_text(a, b, rule_set):
    n_stages, rules = rule_set
    data = MIXED[min(a, b): max(a, b)]
    assert pool_levels(data, n_stages, rules) == pushed(data, n_stages, rules)


#: Code points at every UTF-8 length boundary, and classes next to each other, in runs of 1 to 9.
BOUNDARY_CHARS = ["\x7f", "\x80", "\xa0", "\u07ff", "\u0800", "\u3000", "\uffff", "\U00010000", "7", ".", "a",
                  " ", "\n", "\t", "é", "—"]


@pytest.mark.parametrize("rule_set", RULE_SETS)
def test_fast_levels_equal_byte_by_byte_at_utf8_boundaries_and_class_runs(rule_set):
    n_stages, rules = rule_set
    pieces = [c * n for n in (1, 2, 3, 4, 9) for c in BOUNDARY_CHARS]
    for k in range(len(BOUNDARY_CHARS)):
        text = ("word " + "".join(pieces[k::7]) + " end.\n").encode("utf-8", errors="surrogatepass")
        assert pool_levels(text, n_stages, rules) == pushed(text, n_stages, rules), text
    broken = b"ab\xc2 \x80\x80cd \xe0\xa0 12345678 ..... \xf0\x90\x80\x80!"  # invalid and valid sequences
    assert pool_levels(broken, n_stages, rules) == pushed(broken, n_stages, rules)


@pytest.fixture(scope="module")
def real_text():
    return default_corpus_samples()


@pytest.mark.parametrize("rule_set", [RULE_SETS[2], RULE_SETS[4]])
def test_fast_levels_equal_byte_by_byte_on_real_text(real_text, rule_set):
    n_stages, rules = rule_set
    for doc in real_text:
        assert pool_levels(doc, n_stages, rules) == pushed(doc, n_stages, rules)


def test_a_rule_without_fast_path_falls_back_with_one_warning():
    rules = ["regex:[a-z]+|[^a-z]", "words:3"]
    data = b"abc,def ghi;;jkl mno"
    with pytest.warns(UserWarning, match="no fast path") as record:
        levels = pool_levels(data, 3, rules)
    message = str(record[0].message)
    assert "['regex:[a-z]+|[^a-z]']" in message and "byte by byte" in message and "'words:N'" in message
    if "MUTANT_UNDER_TEST" not in os.environ:  # mutmut's trampolines add frames of their own
        assert record[0].filename == __file__  # points at the caller's line, not at the splitter's insides
    assert levels == pushed(data, 3, rules)
    assert kept(levels, 1) == [3, 4, 7, 8, 11, 12, 13, 16, 17]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pool_levels(data, 3, rules) == levels  # warned once only


def test_word_rules_class_every_byte_as_stated():
    """The fast word rules read bytes through one class table (built when the module loads)."""
    from aunet.splitting import (
        _B_DIGIT,
        _B_LETTER,
        _B_NEWLINE,
        _B_OTHER_WS,
        _B_PUNCT,
        _B_SPACE,
        _word_byte_classes,
    )

    table = _word_byte_classes()
    expected = {_B_LETTER: b"azAZ\x80\xc3\xa9\xff", _B_DIGIT: b"0159", _B_NEWLINE: b"\r\n", _B_SPACE: b" ",
                _B_OTHER_WS: b"\t\x0b\x0c", _B_PUNCT: b"!,.;:-'\"()[]{}@`~\x00\x7f"}
    for cls, members in expected.items():
        assert [int(table[b]) for b in members] == [cls] * len(members), members
    assert len(set(expected)) == 6 and table.dtype == np.uint8 and len(table) == 256
    counts = np.bincount(table, minlength=6)
    assert counts.tolist() == [52 + 128, 10, 256 - 52 - 128 - 10 - 2 - 1 - 3, 1, 3, 2]


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nope", "unknown splitting rule"), ("words:0", "N >= 1"), ("words:x", "N >= 1"), ("regex:(", "invalid regex"),
     ("regex:", "empty")],
)
def test_bad_rules_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_rule(spec)


def test_rule_count_must_match_stages():
    with pytest.raises(ValueError, match="3 stages need 2 splitting rules"):
        Splitter(3, ["word"])
    assert default_rules(4) == ["word", "words2", "words4"]
    assert default_rules(5) == ["word", "words2", "words4", "words:8"]
