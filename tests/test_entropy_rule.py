"""The entropy rule (BLT's entropy patching): a tiny entropy model trained here on a tiny corpus in seconds,
its thresholds read off the data for a target contraction, the fast path equal to the byte step, causal,
cached per corpus and refused for another, counted in the AU-Net's FLOPs, and an AU-Net using it causal
with cached generation equal to the full forward."""

import random
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aunet import ladder
from aunet.config import ModelConfig
from aunet.data import DataConfig, prepare_data
from aunet.flop_counter import predict_flop_counter
from aunet.flops import flops_breakdown, measure_contraction
from aunet.generate import generate
from aunet.models import build_model
from aunet.splitting import Splitter, parse_rule, pool_levels
from aunet.splitting.entropy import EntropyModelError, use_corpus
from aunet.splitting.entropy.__main__ import main as entropy_main
from aunet.splitting.entropy.model import load, model_path
from aunet.splitting.entropy.train import ROW, Recipe, Shape, TorchWindowLM, fit, rows_of

WORDS = ("the cat sat on a mat and then it slept while dogs barked at old moons near quiet rivers "
         "where nobody knew why prices rose by 12 percent in 1999").split()
TINY = ["--valid-bytes", "4096", "--context", "4", "--width", "16", "--steps", "300", "--train-bytes", "40000"]


def tiny_text(seed: int, docs: int = 24) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(docs):
        sentences = [" ".join(rng.choices(WORDS, weights=range(len(WORDS), 0, -1), k=rng.randint(4, 12))).capitalize()
                     + rng.choice([".", "!", "?", ";"]) for _ in range(40)]
        out.append("\n".join(sentences) + "\n")
    return out


def write_corpus(root, seed: int):
    root.mkdir()
    for i, doc in enumerate(tiny_text(seed)):
        (root / f"doc{i:02d}.txt").write_text(doc)
    return prepare_data(DataConfig(sources=[str(root)], cache_dir=str(root.parent / "cache"), valid_bytes=4096),
                        progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny corpus with its entropy model trained by the command, bound for the module's tests."""
    tmp = tmp_path_factory.mktemp("entropy")
    corpus = write_corpus(tmp / "text", 0)
    assert entropy_main(["train", "--data", str(tmp / "text"), "--cache-dir", str(tmp / "cache"), *TINY]) == 0
    use_corpus(corpus)
    yield corpus
    use_corpus(None)


@pytest.fixture(scope="module")
def saved(corpus):
    return load(model_path(corpus.cfg.cache_path, corpus.info.fingerprint))


def pushed(data, n_stages, rules):
    splitter = Splitter(n_stages, rules)
    return [splitter.push(b) for b in data]


RULE_SETS = [(2, ["entropy:global:c=4"]), (2, ["entropy:monotonic:c=4"]), (2, ["entropy:global:t=1.5"]),
             (3, ["entropy:global:c=3", "entropy:monotonic:c=8"]), (3, ["entropy_monotonic", "words2"])]
TEXT = "".join(tiny_text(7, 1))[:600].encode() + "naïve café — 中文 ".encode() + b"\xff\x00\n"


# ---- the model --------------------------------------------------------------------------------


def test_training_is_deterministic_for_a_seed():
    rows = rows_of([t.encode() for t in tiny_text(3)], 8 * ROW)
    recipe = Recipe(Shape(3, 8), steps=20)
    weights = [[p.detach().clone() for p in fit(rows, r).parameters()] for r in (recipe, recipe, replace(recipe, seed=1))]
    assert all(torch.equal(a, b) for a, b in zip(weights[0], weights[1]))
    assert not all(torch.equal(a, b) for a, b in zip(weights[0], weights[2]))


def test_the_trained_model_is_cached_by_the_corpus_fingerprint_and_learned_something(corpus, saved, capsys):
    assert saved.meta.fingerprint == corpus.info.fingerprint and saved.meta.shape == {"context": 4, "width": 16}
    assert saved.meta.heldout_bits_per_byte < 4.0  # bytes of a 25-word vocabulary: far below a uniform 8 bits
    assert entropy_main(["info", "--data", corpus.cfg.sources[0], "--cache-dir", str(corpus.cfg.cache_path),
                         "--valid-bytes", "4096"]) == 0
    assert "context 4 bytes, width 16, 8,192 forward FLOPs per byte" in capsys.readouterr().out


def test_a_corpus_without_its_model_is_one_line_naming_the_train_command(corpus, tmp_path):
    other = write_corpus(tmp_path / "other", 1)
    use_corpus(other)
    try:
        with pytest.raises(EntropyModelError) as err:
            pool_levels(b"some text", 2, ["entropy"])
        message = str(err.value)
        assert "\n" not in message and f"no entropy model for corpus {tmp_path / 'other'}" in message
        assert message.endswith(f"train it with: python -m aunet.splitting.entropy train --data {tmp_path / 'other'} "
                                f"--valid-bytes 4096 --cache-dir {other.cfg.cache_path}")
        with pytest.raises(EntropyModelError, match="no entropy model"):  # the FLOP count refuses too
            flops_breakdown(model_config(["entropy"]), [1.0, 4.0])
        # A model under this corpus's fingerprint but trained on another corpus (a copied cache): refused.
        target = model_path(other.cfg.cache_path, other.info.fingerprint)
        shutil.copytree(model_path(corpus.cfg.cache_path, corpus.info.fingerprint).parent, target.parent)
        with pytest.raises(EntropyModelError, match=f"was trained on another corpus .*{corpus.info.fingerprint}"):
            Splitter(2, ["entropy"]).push(65)
    finally:
        use_corpus(corpus)


def test_the_data_layer_binds_the_rule_to_its_own_corpus(corpus, tmp_path):
    """A run on a corpus without an entropy model is refused when its loader is built, not split with the
    model of whichever corpus was bound before."""
    other = write_corpus(tmp_path / "other", 2)
    try:
        with pytest.raises(EntropyModelError, match=f"no entropy model for corpus {tmp_path / 'other'}"):
            other.eval_set_for(model_config(["entropy"]))
        assert corpus.eval_set_for(model_config(["entropy"])) is not None  # its own model: it splits
    finally:
        use_corpus(corpus)


# ---- the rule: exact, causal, at its target contraction ----------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.binary(min_size=1, max_size=40), st.sampled_from(RULE_SETS))
def test_fast_path_equals_the_step_and_appending_never_changes_earlier_levels(corpus, data, suffix, rule_set):
    n_stages, rules = rule_set
    full = pool_levels(data + suffix, n_stages, rules)
    assert full == pushed(data + suffix, n_stages, rules)
    assert full[: len(data)] == pool_levels(data, n_stages, rules)


@pytest.mark.parametrize("rule_set", RULE_SETS)
def test_fast_path_equals_the_step_on_text_and_its_prefixes(corpus, rule_set):
    n_stages, rules = rule_set
    full = pool_levels(TEXT, n_stages, rules)
    assert full == pushed(TEXT, n_stages, rules)
    for cut in (1, 5, 77, 400):
        assert pool_levels(TEXT[:cut], n_stages, rules) == full[:cut]
    assert 0 < sum(level > 0 for level in full[1:]) < len(TEXT) - 1


def test_a_windows_entropy_is_the_same_bits_in_any_batch(saved):
    """What makes the fast path equal the step: the rounded model gives a window one value, alone or batched."""
    windows = np.random.default_rng(0).integers(0, 257, (3000, 4))
    batched = saved.model.entropies(windows)
    assert [int(saved.model.entropies(w[None])[0]) for w in windows] == batched.tolist()
    assert len(set(batched.tolist())) > 2000  # entropies, not a few clipped values


def test_the_marks_are_blts_definitions_on_the_models_entropies(corpus, saved):
    entropies = saved.model.text_entropies(np.frombuffer(TEXT, dtype=np.uint8)) * 2.0**-20
    kept = np.array(pool_levels(TEXT, 2, ["entropy:global:t=1.5"]))[1:] > 0
    assert (kept == (entropies[1:] > 1.5)).all()
    kept = np.array(pool_levels(TEXT, 2, ["entropy:monotonic:t=0.25"]))[1:] > 0
    assert (kept == (np.diff(entropies) > 0.25)).all()


@pytest.mark.parametrize("mode", ["global", "monotonic"])
@pytest.mark.parametrize("target", [3.0, 5.0])
def test_both_modes_hit_the_target_contraction_on_the_data(corpus, mode, target):
    rules = [f"entropy:{mode}:c={target}"]
    rows = rows_of(corpus.stream.iter_file_order(), 40000, corpus.info.train_bytes)
    on_sample = measure_contraction([bytes(r.astype(np.uint8)) for r in rows], 2, rules)[1]
    assert on_sample == pytest.approx(target, rel=0.03)  # the rows the threshold was read from
    assert measure_contraction(corpus.heldout_docs(), 2, rules)[1] == pytest.approx(target, rel=0.15)


# ---- an AU-Net using it ----------------------------------------------------------------------------


def model_config(splits):
    return ModelConfig(arch="aunet", dims=[32, 48], layers=[1, 1], head_dims=[16, 16], ffn_dims=[64, 96],
                       seq_len=256, window=16, splits=splits)


@pytest.fixture(params=["entropy:global:c=4", "entropy:monotonic:c=4"])
def aunet(corpus, request):
    torch.manual_seed(0)
    return build_model(model_config([request.param])).eval()


def test_an_aunet_using_it_is_causal_and_its_cached_generation_matches_the_full_forward(aunet):
    ids = torch.tensor([list(TEXT[:120])])
    base = aunet(ids)[0]
    for cut in (1, 30, 90):
        perturbed = ids.clone()
        perturbed[0, cut:] = torch.randint(0, 256, (ids.shape[1] - cut,), generator=torch.Generator().manual_seed(cut))
        torch.testing.assert_close(aunet(perturbed)[0][:cut], base[:cut], atol=1e-5, rtol=1e-5)
    state = aunet.init_state()
    stepped = torch.stack([aunet.step(t, state) for t in TEXT[:120]])
    torch.testing.assert_close(stepped, base, atol=1e-4, rtol=1e-4)
    out = generate(aunet, b"The cat", 20, stop_at_eos=False)
    assert len(out) == 20


def test_the_entropy_models_forward_flops_are_a_term_of_the_aunets(corpus, saved):
    from torch.utils.flop_counter import FlopCounterMode

    windows = torch.randint(0, 257, (1000, 4))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        TorchWindowLM.of(saved.model)(windows)
    counted = counter.get_total_flops() / len(windows)
    ours = flops_breakdown(model_config(["entropy:global:c=4"]), [1.0, 4.0])
    stride = flops_breakdown(model_config(["stride:4"]), [1.0, 4.0])
    assert ours.stages[0].splitting == counted == saved.model.shape.forward_flops == 2 * 16 * 256
    assert ours.total - stride.total == pytest.approx(counted)  # the only difference at equal contraction
    three = ModelConfig(arch="aunet", dims=[32, 48, 64], layers=[1, 1, 1], head_dims=[16] * 3, ffn_dims=[64, 96, 128],
                        seq_len=256, window=16, splits=["entropy:global:c=3", "entropy:monotonic:c=8"])
    two = flops_breakdown(three, [1.0, 3.0, 8.0])
    assert two.stages[0].splitting == counted  # two rules reading one model run it once
    term = [t for t in predict_flop_counter(model_config(["entropy"]), 2, [256, 64]).terms if "splitting" in t.name]
    assert [(t.counted, t.analytic) for t in term] == [(0.0, counted * 2 * 256)]


def test_family_names_carry_the_rule_at_the_word_rules_contraction(corpus):
    assert ladder.get_family("aunet2_entropy").splits == ("entropy",)
    assert parse_rule("entropy").spec == "entropy" and parse_rule("entropy").value == 3.92
    for spec, family in (("entropy:global:c=3.92", "aunet2_entropy"), ("entropy", "aunet2_entropy"),
                         ("entropy:monotonic:c=3.92", "aunet2_entropy_monotonic")):
        assert ladder.family_of(model_config([spec])) == family


# ---- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    ("entropy:local:c=4", r"the mode is 'local'; use one of \('global', 'monotonic'\)"),
    ("entropy:global", "give a target contraction c=C .* or a threshold t=NATS"),
    ("entropy:global:c=four", "give a target contraction c=C"),
    ("entropy:global:x=4", "give a target contraction c=C"),
    ("entropy:global:c=nan", "give a target contraction c=C"),
    ("entropy:monotonic:c=1", "a contraction of 1 bytes per vector keeps every byte; give c > 1"),
    ("entropi", r"unknown splitting rule 'entropi' \(did you mean entropy"),
])
def test_bad_specs_are_one_line_before_any_model_is_read(spec, message, monkeypatch):
    monkeypatch.setattr("aunet.splitting.entropy.rule.model_for", lambda *a: pytest.fail("read a model"))
    with pytest.raises(ValueError, match=message) as err:
        parse_rule(spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("spec", "what"), [
    ("entropy:global:c=1e9", "no byte"), ("entropy:global:t=50", "no byte"), ("entropy:monotonic:t=50", "no byte"),
    ("entropy:global:t=-1", "every byte it can"), ("entropy:monotonic:t=-50", "every byte it can"),
])
def test_thresholds_that_pool_nothing_or_everything_on_the_data_are_one_line(corpus, spec, what):
    with pytest.raises(ValueError, match=f"marks {what} on the .*-byte sample of .*'s training split") as err:
        pool_levels(b"abc", 2, [spec])
    assert "\n" not in str(err.value)


def test_the_train_command_refuses_bad_settings_before_reading_data(capsys, monkeypatch):
    monkeypatch.setattr("aunet.data.prepare_data", lambda *a, **k: pytest.fail("read the corpus"))
    assert entropy_main(["train", "--steps", "0"]) == 2
    assert capsys.readouterr().err == "error: entropy model: steps must be >= 1, got 0\n"


@pytest.mark.parametrize("spec, family", [("entropy:global:c=5", "aunet2_entropy_c5"),
                                          ("entropy:global:c=5.0", "aunet2_entropy_c5"),
                                          ("entropy:monotonic:c=3.5", "aunet2_entropy_monotonic_c3.5"),
                                          ("entropy:global:t=1.25", "aunet2_entropy_t1.25"),
                                          ("entropy:global:c=3.92", "aunet2_entropy")])
def test_an_entropy_rule_at_any_setting_names_its_own_family_and_reads_back(spec, family):
    from aunet.config import ModelConfig
    from aunet.ladder.families import get_family
    from aunet.splitting import parse_rule

    cfg = ModelConfig(arch="aunet", dims=[32, 48], layers=[1, 1], head_dims=[16, 16], ffn_dims=[64, 96],
                      seq_len=64, window=16, splits=[spec])
    assert cfg.spec.family_name(cfg) == family  # never the bare aunet2 of App. B's rule
    back = parse_rule(get_family(family).splits[0])
    rule = parse_rule(spec)
    assert (back.mode, back.target, back.value) == (rule.mode, rule.target, rule.value)
