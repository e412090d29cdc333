"""CUTE-style items: each transformation, reproducible generation, prompts, word lists."""

from __future__ import annotations

import gzip
import re

import pytest

from aunet.eval import cute
from aunet.eval.cute import SUBTASKS, _unpack, generate_items

WORDS = ["there", "planet", "orange", "blue", "kitchen", "river", "dance", "bright", "window", "garden", "silver",
         "mouse", "candle", "forest", "little", "yellow", "marble", "stone", "jumps", "quick", "brown", "lazy",
         "tiger", "sharp", "ocean", "cloud", "pencil", "market", "button", "winter"]


def test_transformations():
    assert cute.spell("there") == "t h e r e"
    assert cute.delete("there", "e") == "thr"
    assert cute.insert("there", "e", "x") == "thexrex"
    assert cute.substitute("there", "e", "a") == "thara"
    assert cute.swap("planet", "p", "n") == "nlapet"
    assert cute.swap("planet", "n", "p") == "nlapet"


QUESTION = {
    "spell": r'Spell out the word "(\w+)"\.',
    "inverse_spell": r'Write the word "([\w ]+)" without spaces\.',
    "contains": r'Is there a "(\w)" in "(\w+)"\?',
    "delete": r'Delete every "(\w)" from "(\w+)"\.',
    "insert": r'Add "(\w)" after every "(\w)" in "(\w+)"\.',
    "substitute": r'Substitute every "(\w)" with "(\w)" in "(\w+)"\.',
    "swap": r'Swap "(\w)" and "(\w)" in "(\w+)"\.',
}


def expected_answer(task: str, groups: tuple[str, ...]) -> str:
    if task == "spell":
        return " ".join(groups[0])
    if task == "inverse_spell":
        return groups[0].replace(" ", "")
    if task == "contains":
        return "yes" if groups[0] in groups[1] else "no"
    if task == "delete":
        return groups[1].replace(groups[0], "")
    if task == "insert":
        new, c, w = groups
        return "".join(ch + new if ch == c else ch for ch in w)
    if task == "substitute":
        c, new, w = groups
        return "".join(new if ch == c else ch for ch in w)
    a, b, w = groups
    return "".join(b if ch == a else a if ch == b else ch for ch in w)


@pytest.mark.parametrize("task", SUBTASKS)
def test_items_are_correct_and_reproducible(task):
    items = generate_items(task, n=12, seed=3, words=WORDS)
    assert items == generate_items(task, n=12, seed=3, words=WORDS)
    assert items != generate_items(task, n=12, seed=4, words=WORDS)
    examples = None
    for item in items:
        head, question = item.context.rsplit("Question: ", 1)
        assert question.endswith('\nAnswer: "')
        groups = re.fullmatch(QUESTION[task], question[: -len('\nAnswer: "')]).groups()
        answer = expected_answer(task, groups)
        assert item.target == answer + '"' and item.options[item.gold] == answer + '"'
        assert len(set(item.options)) == len(item.options) == (2 if task == "contains" else cute.N_OPTIONS)
        assert all(o.endswith('"') for o in item.options)
        # four worked examples, the same for every item, each solved correctly, on other words
        shots = re.findall(r'Question: (.*)\nAnswer: "(.*)"\n\n', head)
        assert len(shots) == cute.N_EXAMPLES
        examples = examples or shots
        assert shots == examples
        for q, a in shots:
            assert expected_answer(task, re.fullmatch(QUESTION[task], q).groups()) == a
        test_word = groups[-1].replace(" ", "")
        shot_words = [re.fullmatch(QUESTION[task], q).groups()[-1].replace(" ", "") for q, _ in shots]
        assert test_word not in shot_words
    if task == "contains":
        assert sum(it.gold == 0 for it in items) == 6  # balanced yes/no
    else:
        assert len({it.gold for it in items}) > 1  # the answer's position is shuffled


def test_unpack_msgpack_subset():
    data = bytes([0x93, 0x81, 0xA6]) + b"format" + bytes([0xA2]) + b"cB" + bytes([0x92, 0xA3]) + b"the" \
        + bytes([0xD9, 3]) + b"and" + bytes([0xDC, 0, 1, 0xCD, 1, 0])
    assert _unpack(data) == [{"format": "cB"}, ["the", "and"], [256]]
    with pytest.raises(ValueError, match="truncated"):
        _unpack(data[:-1])


def test_wordfreq_lists_from_the_pinned_wheel(tmp_path):
    from aunet.eval.fetch import WORDFREQ, fetch_package, package_dir

    fetch_package(WORDFREQ)  # cached after the first run (pinned SHA-256, data files only)
    words = cute.word_list("en")
    assert words[:3] == ["the", "and", "for"] and len(words) > 10_000
    assert all(w.isascii() and w.isalpha() and 3 <= len(w) <= 10 for w in words)
    assert "en" in cute.available_languages() and "fr" in cute.available_languages()
    with pytest.raises(ValueError, match="no wordfreq word list for language 'xx'; available: .*en"):
        cute.word_list("xx")
    items = generate_items("spell", n=5, seed=0)
    assert items == generate_items("spell", n=5, seed=0)
    raw = gzip.decompress((package_dir(WORDFREQ) / "small_en.msgpack.gz").read_bytes())
    assert _unpack(raw)[0]["format"] == "cB"
