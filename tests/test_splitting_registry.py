"""The splitting-rule registry: a toy rule registered inside these tests alone goes through the
splitter's equality property (fast path == byte by byte), the public entry points, config
validation and the contraction lookup; the built-in rules' specs and errors stay as they were."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aunet.config import ModelConfig
from aunet.flops import flops_per_unit, measure_contraction
from aunet.models import build_model
from aunet.splitting import Rule, Splitter, Stream, Text, parse_rule, pool_levels, register, unregister

BUILT_IN_FORMS = ("['entropy', 'entropy_monotonic', 'spacelike', 'word', 'word1', 'words2', 'words4'], 'words:N', "
                  "'stride:k', 'entropy:<global|monotonic>:c=C', 'learned:c=C' or 'regex:<pattern>'")
HINTS = {"nope": "", "word:2": " (did you mean word?)", "words": " (did you mean words:N?)",
         "regex": " (did you mean regex:<pattern>?)", "": ""}


class _AfterStep:
    """Marks the byte that follows each ``value`` byte: the step has to remember the previous byte."""

    def __init__(self, value: int) -> None:
        self.value, self.previous = value, -1

    def __call__(self, byte: int) -> bool:
        marked, self.previous = self.previous == self.value, byte
        return marked


class AfterByte(Rule):
    """``after:B``: a pool position right after every byte of value B (0-255)."""

    name = "after"
    params = "B"
    aliases = {"after_newline": "after:10"}
    fast_calls = 0

    def __init__(self, spec: str, value: int) -> None:
        super().__init__(spec)
        self.value = value

    @classmethod
    def parse(cls, spec: str, arg: str) -> Rule:
        if not arg.isdigit() or int(arg) > 255:
            raise ValueError(f"splitting rule {spec!r}: 'after:B' needs a byte value B in 0..255")
        return cls(spec, int(arg))

    def step(self, stream: Stream) -> _AfterStep:
        return _AfterStep(self.value)

    def marks(self, text: Text) -> np.ndarray:
        AfterByte.fast_calls += 1
        return np.flatnonzero(text.array[:-1] == self.value) + 1


class AfterByteNoFastPath(AfterByte):
    """The same rule without a fast path: pushed byte by byte, with the warning."""

    name = "slow_after"
    aliases = {}
    marks = Rule.marks


@contextmanager
def registered(*rules: type[Rule]) -> Iterator[None]:
    for rule in rules:
        register(rule)
    try:
        yield
    finally:
        for rule in rules:
            unregister(rule.name)


def pushed(data, n_stages, rules):
    splitter = Splitter(n_stages, rules)
    return [splitter.push(b) for b in data]


# Bytes and ids (specials >= 256 split like a newline) rich in the toy's trigger bytes.
IDS = st.lists(st.one_of(st.sampled_from([10, 32, 44, 97, 49, 46, 0xC3, 0xA9, 256, 257]), st.integers(0, 258)),
               max_size=200)
RULE_SETS = [(2, ["after:44"]), (3, ["after:32", "words:2"]), (4, ["word", "after_newline", "words4"]),
             (3, ["after:10", "after:10"])]


@settings(max_examples=150, deadline=None)
@given(IDS, st.sampled_from(RULE_SETS))
def test_a_registered_rule_meets_the_equality_property(ids, rule_set):
    n_stages, rules = rule_set
    with registered(AfterByte), warnings.catch_warnings():
        warnings.simplefilter("error")  # a rule with a fast path never falls back
        calls = AfterByte.fast_calls
        levels = pool_levels(ids, n_stages, rules)
        assert levels == pushed(ids, n_stages, rules)
        assert AfterByte.fast_calls > calls or not ids  # the fast path was the one that ran
        assert levels == Splitter(n_stages, rules).levels(bytes(i if i < 256 else 10 for i in ids))


def test_the_toy_rule_keeps_what_it_states():
    data = b"a,b,,c d"
    with registered(AfterByte):
        assert pool_levels(data, 2, ["after:44"]) == [1, 0, 1, 0, 1, 1, 0, 0]
        # Stage 3 keeps the bytes after a space, stage 2 also those after a comma (and byte 0 everywhere).
        assert pool_levels(data, 3, ["after:44", "after:32"]) == [2, 0, 1, 0, 1, 1, 0, 2]
        splitter = Splitter(2, ["after:44"])
        assert [splitter.push(b) for b in b",x"] == [1, 1]
        splitter.reset()  # a fresh state: the comma before the reset is forgotten
        assert [splitter.push(b) for b in b"xy"] == [1, 0]


def test_a_splitter_copied_mid_text_continues_on_its_own():
    """Cached generation copies the splitter state per prompt: each copy must carry the rules' state."""
    with registered(AfterByte):
        splitter = Splitter(3, ["after:44", "words:2"])
        for b in b"one two,":
            splitter.push(b)
        first, second = copy.deepcopy(splitter), copy.deepcopy(splitter)
        assert [first.push(b) for b in b"x y"] == pushed(b"one two,x y", 3, ["after:44", "words:2"])[-3:]
        assert [second.push(b) for b in b" ,z"] == pushed(b"one two, ,z", 3, ["after:44", "words:2"])[-3:]
        assert first.push(ord("q")) == 0 and second.push(ord("q")) == 0


def test_a_rule_without_fast_path_is_pushed_with_one_warning():
    data = b"a,b,,c"
    with registered(AfterByteNoFastPath):
        with pytest.warns(UserWarning, match=r"\['slow_after:44'\] have no fast path"):
            levels = pool_levels(data, 2, ["slow_after:44"])
        assert levels == [1, 0, 1, 0, 1, 1]


def test_configs_models_and_contraction_accept_the_registered_rule():
    fields = dict(arch="aunet", dims=[32, 64, 96], layers=[1, 1, 1], head_dims=[16, 16, 16],
                  ffn_dims=[64, 128, 192], seq_len=64)
    with registered(AfterByte):
        cfg = ModelConfig(**fields, splits=["after:32", "after_newline"])
        with pytest.raises(ValueError, match=r"field 'splits' splitting rule 'after:256': 'after:B' needs a byte"):
            ModelConfig(**fields, splits=["after:256", "words2"])
        with pytest.raises(ValueError, match=r"unknown splitting rule 'afterwards'.*'regex:<pattern>' or 'after:B'"):
            ModelConfig(**fields, splits=["afterwards", "words2"])
        ids = torch.tensor([list(b"ab cd\nef g")])
        assert build_model(cfg).levels(ids).tolist() == [pool_levels(b"ab cd\nef g", 3, cfg.splits)]
        # Default contraction factors are keyed by the paper's rule tuple: other rules bring their own.
        with pytest.raises(ValueError, match="measure_contraction"):
            flops_per_unit(cfg)
        assert measure_contraction([b"a b c d"], 2, ["after:32"]) == [1.0, 7 / 4]


def test_names_are_registered_once():
    with registered(AfterByte):
        with pytest.raises(ValueError, match=r"\['after', 'after_newline'\] already registered"):
            register(AfterByte)
    with pytest.raises(ValueError, match=r"\['words2'\] already registered"):
        register(type("Clash", (AfterByte,), {"name": "clash", "aliases": {"words2": "clash:2"}}))


def test_the_toy_rule_does_not_outlive_its_tests():
    for spec in ("after:44", "after_newline", "slow_after:44"):
        with pytest.raises(ValueError, match="unknown splitting rule"):
            parse_rule(spec)


@pytest.mark.parametrize("spec", ["nope", "word:2", "words", "regex", ""])
def test_an_unknown_rule_is_one_line_naming_the_known_rules(spec):
    with pytest.raises(ValueError) as err:
        parse_rule(spec)
    assert str(err.value) == f"unknown splitting rule {spec!r}{HINTS[spec]}: use one of {BUILT_IN_FORMS}"


def test_built_in_specs_keep_their_meaning():
    assert [type(parse_rule(s)).__name__ for s in ("word", "regex:word", "words2", "words:3", "regex:a+")] == [
        "WordRule", "WordRule", "WordsRule", "WordsRule", "RegexRule"]
    assert parse_rule("words4").every == 4 and parse_rule("words2").spec == "words2"
    assert [parse_rule(s).has_fast_path for s in ("word", "words:5", "regex:a+")] == [True, True, False]
