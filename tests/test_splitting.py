"""Splitting rules: causal, nested, configurable, and what the paper describes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aunet.splitting import Splitter, default_rules, parse_rule, pool_levels

# Bytes that stress the rules: prose, long runs of spaces and digits, CJK, invalid UTF-8, controls.
TRICKY = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.sampled_from([b" ", b"  ", b"\n", b"\r\n", b"a", b"word", b"12345", b".", b"!?", b"\xe4\xb8\xad",
                         b"\xff", b"\x00", b"\t", b"caf\xc3\xa9", b"...", b"\x80\x80"]),
        max_size=80,
    ).map(b"".join),
)


@settings(max_examples=150, deadline=None)
@given(TRICKY, st.sampled_from([2, 3, 4, 5]))
def test_level_of_a_byte_depends_only_on_its_prefix(data, n_stages):
    full = pool_levels(data, n_stages)
    assert len(full) == len(data)
    for cut in range(len(data) + 1):
        assert pool_levels(data[:cut], n_stages) == full[:cut]


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


def test_words_carry_their_leading_space_and_deeper_stages_count_words():
    text = b"the cat sat on the mat and the dog ran off"
    levels = pool_levels(text, 4)
    starts = [i for i, lv in enumerate(levels) if lv >= 1]
    words = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    assert words == [b"the", b" cat", b" sat", b" on", b" the", b" mat", b" and", b" the", b" dog", b" ran", b" off"]
    stage3 = [i for i, lv in enumerate(levels) if lv >= 2]
    stage4 = [i for i, lv in enumerate(levels) if lv >= 3]
    assert stage3 == starts[::2]  # every 2 words
    assert stage4 == starts[::4]  # every 4 words


def test_a_sentence_end_starts_a_new_segment_at_every_stage():
    text = b"One two. Three four five six"
    levels = pool_levels(text, 4)
    after_period = text.index(b" Three")
    assert levels[after_period] == 3


def test_contraction_grows_with_depth_on_prose():
    text = b"It was the best of times, it was the worst of times, it was the age of wisdom. " * 20
    levels = pool_levels(text, 4)
    kept = [sum(lv >= k for lv in levels) for k in range(4)]
    assert kept[0] > kept[1] > kept[2] > kept[3]
    assert 3.5 < len(text) / kept[1] < 6.5  # bytes per word in English prose


def test_custom_regex_rule_and_incremental_push_agree():
    rules = ["regex:[a-z]+|[^a-z]", "words:3"]
    data = b"abc,def ghi;;jkl mno"
    splitter = Splitter(3, rules)
    pushed = [splitter.push(b) for b in data]
    assert pushed == pool_levels(data, 3, rules)
    starts = [i for i, lv in enumerate(pushed) if lv >= 1]
    assert starts == [0, 3, 4, 7, 8, 11, 12, 13, 16, 17]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nope", "unknown splitting rule"), ("words:0", "N >= 1"), ("regex:(", "invalid regex"), ("regex:", "empty")],
)
def test_bad_rules_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_rule(spec)


def test_rule_count_must_match_stages():
    with pytest.raises(ValueError, match="3 stages need 2 splitting rules"):
        Splitter(3, ["word"])
    assert default_rules(5) == ["word", "words2", "words4", "words:8"]
