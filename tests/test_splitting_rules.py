"""The published splitting rules beside App. B's: ``word1`` (the AU-Net reference code's stage 2),
``stride:k`` (MegaByte's patches) and ``spacelike`` (SpaceByte's). Each stated by hand, causal, its fast
path equal to its byte step, an AU-Net using it causal with cached generation equal to the full forward,
and its family name (``aunet2_stride4``) planned by the ladder and the dry run with its measured contraction."""

import itertools
import json
from dataclasses import replace

import pytest
import regex
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aunet import ladder
from aunet.config import EOS_ID, ModelConfig
from aunet.flops import DEFAULT_CONTRACTION, flops_breakdown, measure_contraction
from aunet.generate import generate
from aunet.models import build_model
from aunet.splitting import SPACELIKE, Splitter, parse_rule, pool_levels, rule_from_suffix, rule_suffix
from tests.helpers.data import default_corpus_samples
from tests.helpers.toy_models import assert_causal

# Bytes the three rules react to: letters and digits against everything else, UTF-8 lead and
# continuation bytes (valid, cut and stray), whitespace runs, punctuation after words, control bytes.
TRICKY = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.sampled_from([b" ", b"  ", b"\n", b"\r\n", b"a", b"word", b"Z9", b"12345", b".", b"!?", b"\xe4\xb8\xad",
                         b"\xff", b"\x00", b"\t", b"caf\xc3\xa9", b"\x80\x80", b"\xc2\xa0", b"\xe2\x80\x94", b",\n",
                         b"\xe2\x80", b"a" * 20, b"\xf0\x9f\x98\x80", b"@[`{", b"\x7f", b"\xc0\xbf"]),
        max_size=80,
    ).map(b"".join),
)

MIXED = (
    "The cat, which was old, sat (quietly) in 1999; nobody knew why.\n"
    "Prices rose 12.5% to $1,234,567 in Q3 -- a record!\n\n"
    "def pool(x, k=2):\n    return [v for v in x if v % k == 0]  # keep every k-th\n\n"
    "Trailing spaces here  \nDone.\n \nNext para\ttab  two spaces. «Quoted» naïve café — 中文。 end\r\n"
).encode()

#: Each new rule alone, beside the default deeper rules, and mixed with each other.
RULE_SETS = [(2, ["stride:4"]), (2, ["stride:1"]), (3, ["stride:3", "stride:6"]), (4, ["stride:5", "words2", "words4"]),
             (2, ["spacelike"]), (3, ["spacelike", "words2"]), (2, ["word1"]), (4, ["word1", "words2", "words4"]),
             (3, ["stride:4", "spacelike"])]


def pushed(data, n_stages, rules):
    splitter = Splitter(n_stages, rules)
    return [splitter.push(b) for b in data]


def kept(levels, stage=1):
    """Byte positions kept at 0-based ``stage`` (byte 0, always kept, left out)."""
    return [i for i, lv in enumerate(levels) if lv >= stage and i > 0]


# ---- each rule, stated by hand --------------------------------------------------------------


@pytest.mark.parametrize(("text", "k", "marks"), [
    (b"abcdefghij", 4, [4, 8]),  # the first byte of every patch of 4
    (b"abcdefghij", 1, list(range(1, 10))),
    (b"abc", 4, []),
    (b"\xe4\xb8\xad\xe6\x96\x87 x", 2, [2, 4, 6]),  # bytes, not characters
])
def test_stride_by_hand(text, k, marks):
    assert kept(pool_levels(text, 2, [f"stride:{k}"])) == marks


def test_stride_contraction_is_exactly_k_on_whole_patches():
    assert measure_contraction([b"x" * 4000, b"y" * 800], 2, ["stride:4"]) == [1.0, 4.0]
    assert measure_contraction([b"x" * 4000], 3, ["stride:4", "stride:8"]) == [1.0, 4.0, 8.0]


def test_spacelike_bytes_are_spacebytes_ranges():
    """Not spacelike: ASCII letters and digits and UTF-8 continuation bytes; everything else is."""
    not_spacelike = set(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") | set(range(0x80, 0xC0))
    assert [b for b in range(256) if not SPACELIKE[b]] == sorted(not_spacelike)
    assert all(SPACELIKE[b] for b in b" \n\t\x00\x7f/:@[`{_-.,'\"\xc0\xc2\xe4\xf0\xff")


@pytest.mark.parametrize(("text", "marks"), [
    # t h e _ c a t , _ s a t: the space after "the", the comma (not the space after it), the space before "sat"
    (b"the cat, sat", [3, 7]),
    (b"a  b", [1]),  # a run of spacelike bytes: its first only
    (b"x2 y_z", [2, 4]),  # digits are not spacelike; "_" is
    (b"caf\xc3\xa9 ok", [3, 5]),  # the leading byte of "é" is spacelike, its continuation byte is not
    (b"\xe4\xb8\xad\xe6\x96\x87\xe3\x80\x82", [3, 6]),  # CJK: each character's leading byte follows a continuation
    (b"a\x80\x80 b", [3]),  # stray continuation bytes are like letters
])
def test_spacelike_by_hand(text, marks):
    assert kept(pool_levels(text, 2, ["spacelike"])) == marks


# The reference code's word1 strategy (facebookresearch/lingua, apps/aunet/data/regex_cutting.py, RegexPool
# with strategy {word1: "1@1"}), as its regexes read whole decoded text: the start of every number,
# punctuation and line-break group, and the end of every match of one word (a non-space run and one whitespace
# character); a mark goes to the last byte of its character. Those regexes may look ahead; the splitter may not.
REFERENCE_GROUPS = regex.compile(r"\p{N}{1,3}|[^\s\p{L}\p{N}]{1,3}[\r\n]*|\s*[\r\n]")
REFERENCE_WORD = regex.compile(r"\S+?\s")


def reference_word1(data: bytes) -> set[int]:
    text = data.decode()
    last_byte = [n - 1 for n in itertools.accumulate(len(c.encode()) for c in text)]
    marks = {m.start() for m in REFERENCE_GROUPS.finditer(text)} | {m.end() - 1 for m in REFERENCE_WORD.finditer(text)}
    return {last_byte[i] for i in marks} - {0}


def test_word1_is_the_reference_stage_2_rule_except_where_it_looks_ahead():
    ours = set(kept(pool_levels(MIXED, 2, ["word1"])))
    # The documented causal cases of the words rules: a whitespace run with a line break that starts with a
    # space. The reference marks its first byte once the break is seen; we mark the break. After "here" the
    # space also ends a word, so both keep it.
    after_punct = MIXED.index(b"Done.\n \n") + 6  # "Done.\n| \n": the first break joins the period
    trailing = MIXED.index(b"here  \n") + 4
    assert ours ^ reference_word1(MIXED) == {trailing + 2, after_punct, after_punct + 1}
    assert pool_levels(MIXED, 2, ["word1"]) == pool_levels(MIXED, 2, ["words:1"])


@pytest.mark.parametrize(("text", "marks"), [
    (b"one two three ", [3, 7, 13]),  # every word's whitespace
    (b"a, b", [1, 2]),  # the comma group, and the space ending "a,"
    (b"in 1999; ok", [2, 3, 6, 7, 8]),  # number groups of 3 ("199", "9"), the semicolon, the space ending "1999;"
    (b"a\n\nb", [1]),  # one line-break group, which ends "a"
])
def test_word1_by_hand(text, marks):
    assert kept(pool_levels(text, 2, ["word1"])) == marks


def test_word1_keeps_fewer_vectors_than_app_b_where_lines_break_and_spaces_repeat():
    """App. B starts a chunk at a line break and again after it, and at a run of spaces and again after it;
    word1 keeps one vector for each (the group that also ends the word)."""
    assert kept(pool_levels(b"ab\ncd  ef", 2, ["word"])) == [2, 3, 5, 7]
    assert kept(pool_levels(b"ab\ncd  ef", 2, ["word1"])) == [2, 5]
    text = b"It was the best of times,\nit was the worst  of times.\n" * 20
    word, word1 = (measure_contraction([text], 2, [rule])[1] for rule in ("word", "word1"))
    assert word1 > 1.15 * word


# ---- causality and the fast path -------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(TRICKY, st.binary(min_size=1, max_size=40), st.sampled_from(RULE_SETS))
def test_appending_bytes_never_changes_earlier_levels(data, suffix, rule_set):
    n_stages, rules = rule_set
    full = pool_levels(data + suffix, n_stages, rules)
    assert full[: len(data)] == pool_levels(data, n_stages, rules)
    assert pushed(data + suffix, n_stages, rules)[: len(data)] == pushed(data, n_stages, rules)


@settings(max_examples=300, deadline=None)
@given(TRICKY, st.sampled_from(RULE_SETS))
def test_fast_levels_equal_byte_by_byte_on_random_and_adversarial_bytes(data, rule_set):
    n_stages, rules = rule_set
    assert pool_levels(data, n_stages, rules) == pushed(data, n_stages, rules)


@pytest.mark.parametrize("rule_set", RULE_SETS)
def test_fast_levels_equal_byte_by_byte_on_mixed_text_and_special_ids(rule_set):
    n_stages, rules = rule_set
    for cut in range(0, len(MIXED), 37):
        assert pool_levels(MIXED[cut:], n_stages, rules) == pushed(MIXED[cut:], n_stages, rules)
    ids = [256, *b"ab c", 257, *b"d,e"]
    assert pool_levels(ids, n_stages, rules) == pushed(ids, n_stages, rules)
    assert pool_levels(ids, n_stages, rules) == pool_levels(b"\nab c\nd,e", n_stages, rules)  # specials: newlines


@pytest.fixture(scope="module")
def real_text():
    return default_corpus_samples()


@pytest.mark.parametrize("rule_set", [RULE_SETS[3], RULE_SETS[5], RULE_SETS[7]])
def test_fast_levels_equal_byte_by_byte_on_real_text_and_its_prefixes(real_text, rule_set):
    n_stages, rules = rule_set
    for doc in real_text:
        full = pool_levels(doc, n_stages, rules)
        assert full == pushed(doc, n_stages, rules)
        for cut in (1, 999, 12_345, 40_001):
            assert pool_levels(doc[:cut], n_stages, rules) == full[:cut]


# ---- an AU-Net using each rule ---------------------------------------------------------------

TEXT = (b"The cat sat on the mat. Then it slept soundly! A dog came by, 1234 times,\n"
        b"and barked at the   moon\xe2\x80\x94twice. caf\xc3\xa9 \xff\xfe end.")

MODEL_RULES = [["stride:4"], ["spacelike"], ["word1"], ["word1", "words2"]]


@pytest.fixture(params=MODEL_RULES, ids=lambda rules: ",".join(rules))
def model(request):
    torch.manual_seed(0)
    n = len(request.param) + 1
    dims = [32, 48, 64][:n]
    cfg = ModelConfig(arch="aunet", dims=dims, layers=[1] * n, head_dims=[16] * n, ffn_dims=[2 * d for d in dims],
                      seq_len=256, window=16, splits=request.param)
    return build_model(cfg).eval()


def test_logits_at_t_depend_only_on_bytes_up_to_t(model):
    assert_causal(model, TEXT)


def test_cached_steps_and_greedy_generation_match_the_full_forward(model):
    assert model.levels(torch.tensor([list(TEXT)])).tolist() == [pool_levels(TEXT, model.cfg.n_stages,
                                                                             model.cfg.splits)]
    full = model(torch.tensor([list(TEXT)]))[0]
    state = model.init_state()
    stepped = torch.stack([model.step(t, state) for t in TEXT])
    torch.testing.assert_close(stepped, full, atol=1e-4, rtol=1e-4)
    prompt = b"The cat sat"
    out = generate(model, prompt, 24, stop_at_eos=False)
    logits = model(torch.tensor([[EOS_ID, *prompt, *out]]))[0]
    assert logits[len(prompt): -1, :256].argmax(-1).tolist() == list(out)


# ---- family names, the ladder and the dry run -------------------------------------------------


@pytest.mark.parametrize(("name", "splits"), [
    ("aunet2_stride4", ("stride:4",)),
    ("aunet2_spacelike", ("spacelike",)),
    ("aunet2_word1", ("word1",)),
    ("aunet3_word1", ("word1", "words2")),  # the reference code's stage 2, App. B's deeper stages
    ("aunet4_stride16", ("stride:16", "words2", "words4")),
])
def test_a_rule_suffix_names_a_family_whose_models_carry_the_rule(name, splits):
    family = ladder.get_family(name)
    assert (family.name, family.splits, family.arch, family.units) == (name, splits, "aunet", "bytes")
    assert name in ladder.FAMILIES and ladder.FAMILIES[name] == family
    model = ladder.family_config(name, 64, 2, 256, 64)
    assert model.splits == list(splits) and ladder.family_of(model) == name
    assert ladder.family_of(replace(model, splits=None, name="x")) == name[:6]  # the defaults: the bare family


def test_family_suffixes_read_their_rules_one_way():
    assert ladder.get_family("aunet2_words1").name == "aunet2_word1"  # words:1 is word1
    assert ladder.get_family("aunet2_word") == ladder.get_family("aunet2")  # App. B's rule is the bare family
    assert not any("_stride" in name or "_word" in name for name in ladder.FAMILIES)  # looked up, not listed
    assert "transformer_bytes_stride4" not in ladder.FAMILIES and "aunet2_nope" not in ladder.FAMILIES
    assert [rule_suffix(s) for s in ("stride:4", "words:1", "words:3", "spacelike", "regex:a+")] == [
        "stride4", "word1", "words3", "spacelike", None]
    assert [rule_from_suffix(s) for s in ("stride4", "word1", "words3", "spacelike")] == [
        "stride:4", "word1", "words:3", "spacelike"]


def test_the_ladder_counts_a_rule_family_with_its_measured_contraction(capsys):
    assert ladder.data_contraction("aunet2_stride4", 1e13) == [1.0, 4.0]  # whole 256-byte rows: exactly 4
    assert ladder.main(["--family", "aunet2_stride4", "--budget", "1e13", "--ratio", "1", "--json"]) == 0
    out = capsys.readouterr()
    planned = json.loads(out.out)
    assert "contraction 4.0 bytes per vector, measured on the default corpus" in out.err
    assert planned["contraction"] == [1.0, 4.0] and planned["model"]["splits"] == ["stride:4"]
    model = ModelConfig.from_dict(planned["model"])
    ours = flops_breakdown(model, [1.0, 4.0])
    assert planned["flops_per_unit"] == pytest.approx(ours.total)
    # The same model with App. B's rule: the byte stage and head cost the same per byte, stage 2's
    # weights cost per vector the same, so per byte they differ by exactly the contractions' ratio.
    paper = flops_breakdown(replace(model, splits=None))
    assert paper.contraction == DEFAULT_CONTRACTION[:2]
    assert ours.stages[0] == paper.stages[0] and ours.head == paper.head
    assert ours.stages[1].linear == paper.stages[1].linear
    per_byte = [b.stages[1].linear / b.stages[1].contraction for b in (ours, paper)]
    assert per_byte[0] / per_byte[1] == pytest.approx(DEFAULT_CONTRACTION[1] / 4.0)
    assert ours.total > paper.total  # 4 bytes per vector pool more vectors than 5.13


def test_a_data_dependent_rule_family_is_planned_with_its_contraction_on_the_data(capsys):
    measured = ladder.data_contraction("aunet2_spacelike", 1e13)
    assert 4.0 < measured[1] < 6.5  # SpaceByte's patches: about a word and its space
    assert ladder.main(["--family", "aunet2_spacelike", "--budget", "1e13", "--ratio", "1", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["contraction"] == measured
    assert planned["flops_per_unit"] == pytest.approx(
        flops_breakdown(ModelConfig.from_dict(planned["model"]), measured).total)
    with pytest.raises(ValueError, match="measure_contraction"):  # the API does not guess it
        ladder.plan("aunet2_spacelike", 1e13, 1)


def test_a_dry_run_plans_rule_families_with_the_contraction_of_its_data():
    from sweeps.plan import plan_study

    study = ["sweep.families=[aunet2_stride4,aunet2_word1]", "sweep.budgets=[2e12]", "sweep.trials=2",
             "sweep.ratio=0.2", "sweep.force=true"]
    dry = plan_study(study, "h100", None, None, 1)
    cells = {cost.cell.prior.family: cost.cell for cost in dry.costs}
    assert set(cells) == {"aunet2_stride4", "aunet2_word1"} and not dry.refusals
    assert cells["aunet2_stride4"].measured.contraction == [1.0, 4.0]
    assert cells["aunet2_stride4"].prior.model.splits == ["stride:4"]
    assert cells["aunet2_word1"].prior.model.splits == ["word1"]
    assert 3.5 < cells["aunet2_word1"].measured.contraction[1] < 5.0


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    ("stride:0", "splitting rule 'stride:0': 'stride:k' needs a whole number of bytes k >= 1"),
    ("stride:-2", "'stride:k' needs a whole number of bytes k >= 1"),
    ("stride:2.5", "'stride:k' needs a whole number of bytes k >= 1"),
    ("stride:four", "'stride:k' needs a whole number of bytes k >= 1"),
    ("stride", r"unknown splitting rule 'stride' \(did you mean stride:k\?\)"),
    ("spacelik", r"unknown splitting rule 'spacelik' \(did you mean spacelike\?\)"),
    ("word2", r"unknown splitting rule 'word2' \(did you mean words2, word, word1\?\)"),
    ("spacelike:2", r"unknown splitting rule 'spacelike:2' \(did you mean spacelike\?\)"),
    ("words", r"unknown splitting rule 'words' \(did you mean words:N\?\)"),
])
def test_bad_rules_are_one_line_naming_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_rule(spec)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="field 'splits'"):
        ModelConfig(arch="aunet", dims=[32, 48], layers=[1, 1], head_dims=[16, 16], ffn_dims=[64, 96], splits=[spec])


@pytest.mark.parametrize(("family", "message"), [
    ("aunet2_stride0", "family 'aunet2_stride0': .* 'stride:k' needs a whole number of bytes k >= 1"),
    ("aunet2_strid4", r"unknown splitting rule 'strid4' \(did you mean stride:k\?\)"),
    ("aunet7", r"unknown family 'aunet7' \(did you mean"),
])
def test_bad_family_names_are_one_line_before_any_measuring(family, message, capsys):
    with pytest.raises(ValueError, match=message):
        ladder.get_family(family)
    assert ladder.main(["--family", family, "--budget", "1e13"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "measured" not in out.err


def test_the_measuring_command_refuses_a_bad_rule_before_reading_text(capsys, monkeypatch):
    from aunet.splitting.__main__ import main

    monkeypatch.setattr("aunet.data.prepare_default_corpus", lambda *a, **k: pytest.fail("read the corpus"))
    assert main(["word1", "word,stride:0"]) == 2
    assert capsys.readouterr().err.startswith("error: splitting rule 'stride:0'")
    assert main(["word1", "--files", "/no/such.txt"]) == 2
    assert capsys.readouterr().err == "error: --files: not a file: /no/such.txt\n"


def test_the_measuring_command_prints_bytes_per_vector_per_stage(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_bytes(b"x" * 1200)
    from aunet.splitting.__main__ import main

    assert main(["stride:4", "stride:3,stride:6", "--files", str(text)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == ["rules | stage 2 | stage 3", "stride:4 | 4.00 | ", "stride:3,stride:6 | 3.00 | 6.00"]


def test_shown_boundaries_are_the_rules_levels_and_agreement_counts_shared_boundaries():
    import numpy as np

    from aunet.splitting import pool_levels
    from aunet.splitting.show import agreement, marked, rule_boundaries

    data = b"ab cd\nef"
    word = rule_boundaries("word", data)
    assert (word == (np.asarray(pool_levels(data, 2, ["word"])) >= 1)).all()
    assert marked(data, np.array([1, 0, 1, 0, 0, 1, 0, 0], bool)) == "ab| cd|⏎ef"
    a, b = np.array([1, 1, 0, 1, 1], bool), np.array([1, 1, 1, 0, 0], bool)
    assert agreement(a, b) == pytest.approx(1 / 3) and agreement(b, a) == pytest.approx(1 / 2)
    assert agreement(a, b, slack=1) == pytest.approx(2 / 3)  # position 3 follows b's 2; 4 is two bytes after
    assert agreement(a, b, slack=2) == 1.0
