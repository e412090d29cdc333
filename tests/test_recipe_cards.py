"""From an analysis to a law file and a recipe (``analysis.cards``, ``analysis.extrapolate``): what the card
records of its runs, and every line, row and override of the recipe, checked against the numbers they come from."""

from __future__ import annotations

import math
import types

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis import analyse
from analysis.cards import (
    TABLE_FLAGS,
    _distinct,
    fitted_law,
    fitted_regime,
    law_card,
    loss_facts,
    source_hash,
)
from analysis.extrapolate import Estimate, extrapolate, study_ratio
from analysis.synthetic import SweepDesign, synthetic_sweep
from aunet import ladder
from aunet.laws import FLAGS, Regime
from aunet.verdict import REFUSED

BUDGETS = tuple(np.geomspace(1e14, 9.9e15, 5))


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    """An AU-Net 2 sweep at ratio 0.2 on 256-byte sequences, with the models and data the ladder gives it."""
    table = synthetic_sweep("aunet2", design=SweepDesign(budgets=BUDGETS, trials=16), seed=3)
    table = table.assign(seq_len=256, vocab_size=259, ratio=0.2)
    for budget in table["budget"].unique():
        plan = ladder.plan("aunet2", budget, 0.2, seq_len=256)
        table.loc[table["budget"] == budget, ["params", "train_units"]] = plan.params, plan.train_units
    return table


@pytest.fixture(scope="module")
def analysis(runs):
    return analyse(runs, n_boot=60)


def test_the_card_records_its_runs_regime_and_provenance(analysis, runs):
    card = law_card(analysis, "aunet2", source="a test sweep")
    usable = analysis.results[analysis.results["usable"]]
    per_param = usable["train_units"] / 4.56 / usable["params"]  # bytes: 4.56 bytes per LLaMA-3 token
    assert card.regime == Regime("aunet2", (0.2,), (pytest.approx(per_param.min()), pytest.approx(per_param.max())),
                                 (256,), (259,), (1.0, 1.0), "recorded")
    assert card.family == "aunet2" and card.estimator == "bowl" and card.units == "bytes" and card.source == "a test sweep"
    assert card.convention == "spent" and card.toolkit and card.source_sha256 == source_hash(analysis.results)
    assert card.fitted_range == pytest.approx((BUDGETS[0], BUDGETS[-1]))
    assert [b.finished for b in card.budgets] == usable.groupby("budget").size().tolist()
    assert card.seed_spread is None and card.loss is not None and card.loss["budgets"] == pytest.approx(list(BUDGETS))
    assert card.lr.dof == 3 and card.bsz.dof == 3 and card.level == 0.95
    band = law_card(analysis, "aunet2", "band")
    assert band.estimator == "band" and band.lr.coef == analysis.law("aunet2", "band").lr.coef


def test_every_flag_of_the_budget_table_has_a_law_file_flag():
    assert set(TABLE_FLAGS.values()) <= set(FLAGS)
    assert TABLE_FLAGS["LR lower"] == TABLE_FLAGS["LR upper"] == "lr_edge"
    assert TABLE_FLAGS["BSZ floor"] == "bsz_floor" and TABLE_FLAGS["band fills box"] == "band_fills_box"


def test_a_laws_covariance_comes_from_its_finite_draws_and_its_dof_from_its_budgets():
    rng = np.random.default_rng(0)
    draws = rng.normal([1.0, 0.3], [0.2, 0.01], size=(400, 2))
    law = types.SimpleNamespace(coef=2.7, exponent=0.3, coef_ci=(2.0, 3.5), exponent_ci=(0.28, 0.32),
                                dispersion=np.float64(1.4), budgets=np.array([1.0, 2.0, 3.0, 4.0]),
                                samples=np.vstack([draws, [[np.nan, 0.3], [1.0, np.inf]]]))
    fitted = fitted_law(law)
    cov = np.cov(draws.T)
    assert fitted.cov == pytest.approx((cov[0, 0], cov[0, 1], cov[1, 1]))
    assert (fitted.coef, fitted.exponent, fitted.coef_ci, fitted.exponent_ci) == (2.7, 0.3, (2.0, 3.5), (0.28, 0.32))
    assert fitted.dispersion == 1.4 and type(fitted.dispersion) is float and fitted.dof == 2
    law.samples = draws[:2]  # two draws give no covariance: the interval is unbounded
    assert fitted_law(law).cov == (math.inf, math.inf, math.inf)


def test_loss_facts_keep_the_curve_and_its_intervals_as_plain_lists():
    fit = types.SimpleNamespace(metric="bpb", label="bits per byte", e=0.5, a=30.0, alpha=0.1, e_ci=(0.4, 0.6),
                                a_ci=(20.0, 40.0), alpha_ci=(0.08, 0.12), budgets=np.array([1e18, 1e19]), floor=True)
    assert loss_facts(fit) == {"metric": "bpb", "label": "bits per byte", "e": 0.5, "a": 30.0, "alpha": 0.1,
                               "e_ci": [0.4, 0.6], "a_ci": [20.0, 40.0], "alpha_ci": [0.08, 0.12],
                               "budgets": [1e18, 1e19], "floor": True}


def test_the_source_hash_is_of_the_runs_not_of_their_order_or_other_columns():
    table = pd.DataFrame({"budget": [1e18, 1e18, 2e18], "lr": [1e-3, 2e-3, 1e-3], "bsz": [512, 512, 1024],
                          "loss": [2.5, 2.4, 2.3], "status": ["finished"] * 3, "note": ["a", "b", "c"]})
    digest = source_hash(table)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert source_hash(table.iloc[::-1][list(reversed(table.columns))]) == digest
    assert source_hash(table.assign(note="x")) == digest
    assert source_hash(table.assign(loss=[2.5, 2.4, 2.31])) != digest
    assert source_hash(table.assign(seed=[0, 1, 0])) != digest  # seeds are part of which runs they were
    assert source_hash(table.assign(loss=[2.5, 2.4, 2.3 + 1e-14])) == digest  # beyond 12 digits: float noise


def test_distinct_values_are_rounded_to_six_digits_and_missing_ones_dropped():
    assert _distinct(pd.Series([0.2, 0.2000000001, np.nan, 10.0, 0.2000004])) == [0.2, 10.0]
    assert _distinct(pd.Series([1.234567, 1.234568])) == [1.23457]


def test_a_table_without_sequence_or_vocabulary_has_them_from_the_ladder_and_says_so(runs):
    derived = fitted_regime("aunet2", runs.drop(columns=["seq_len", "vocab_size"]))
    regime = ladder.FAMILIES["aunet2"].regime(float(BUDGETS[0]))
    assert derived.seq_lens == (regime[0],) and derived.vocab_sizes == (259,)
    assert derived.origin == ("sequence and vocabulary derived from the ladder's regime (the table does not record "
                              "them)")
    kept = fitted_regime("aunet2", runs.drop(columns=["vocab_size"]))
    assert kept.seq_lens == (256,) and kept.vocab_sizes == (259,) and "derived" in kept.origin
    unknown = fitted_regime("external", runs.drop(columns=["seq_len"]))
    assert unknown.seq_lens == () and unknown.vocab_sizes == (259,)
    assert unknown.origin == "sequence or vocabulary not recorded"


def test_a_regime_keeps_only_meaningful_values():
    table = pd.DataFrame({"budget": [1.0, 2.0, 3.0], "ratio": [0.2, 0.2, np.nan], "seq_len": [256, 0, 256],
                          "vocab_size": [259, 259, -1], "train_units": [4.56e6, 9.12e6, 4.56e6],
                          "bytes_per_unit": [1.0, 1.0, 1.0], "params": [1e4, 1e4, 0.0]})
    regime = fitted_regime("external", table)
    assert regime.ratios == (0.2,) and regime.seq_lens == (256,) and regime.vocab_sizes == (259,)
    assert regime.tokens_per_param == pytest.approx((100.0, 200.0))  # the run without parameters gives none
    assert regime.bytes_per_unit == (1.0, 1.0) and regime.origin == "recorded"
    bare = fitted_regime("external", table[["budget"]])
    assert bare == Regime("external", (), None, (), (), None, "sequence or vocabulary not recorded")


def test_estimates_print_their_interval_and_its_width():
    assert str(Estimate(2.0, 1.0, 4.0)) == "2 [1, 4] (x4)"
    assert str(Estimate(1.23456, 0.5, 2.0)) == "1.235 [0.5, 2] (x4)"
    assert str(Estimate(1.0, 0.0, 2.0)) == "1 [0, 2] (xinf)"


def test_the_recipe_is_the_laws_at_the_target_planned_at_the_studys_ratio_and_sequence(analysis, runs):
    target = 9.9e16
    recipe = extrapolate(analysis, "aunet2", target, source="a test sweep")
    fit = analysis.law("aunet2")
    assert recipe.lr.value == pytest.approx(float(fit.lr.predict(target)[0][0]))
    assert (recipe.bsz.lo, recipe.bsz.hi) == pytest.approx(tuple(float(v[0]) for v in fit.bsz.predict(target)[1:]))
    assert recipe.ratio == 0.2 and recipe.ratio_source == "the study's own" and recipe.units == "bytes"
    assert recipe.estimator == "bowl" and recipe.level == 0.95 and recipe.budget == target
    p = recipe.plan
    assert p.ratio == 0.2 and p.model.seq_len == 256
    # loss in nats per byte is the predicted bits per byte times ln 2 (one byte per unit)
    assert recipe.loss.value == pytest.approx(recipe.bpb.value * math.log(2))
    assert recipe.loss.hi == pytest.approx(recipe.bpb.hi * math.log(2))
    assert recipe.loss.lo == pytest.approx(recipe.bpb.lo * math.log(2))
    units = float(p.train_units)
    assert recipe.steps == Estimate(float(p.steps), units / ladder.whole_sequences(recipe.bsz.hi, 256),
                                    units / ladder.whole_sequences(recipe.bsz.lo, 256))
    rows = {q: (v, u) for q, v, u in recipe.rows()}
    assert list(rows) == ["LR", "BSZ", "model", "data", "sequence", "batch", "steps", "loss", "bpb"]
    assert rows["BSZ"] == (str(recipe.bsz), "bytes per step (law)")
    assert rows["model"] == (p.name, f"dims {p.model.dims}, layers {p.model.layers}, {p.params:,} params")
    assert rows["data"][1] == (f"bytes (ratio 0.2, the study's own; achieved {p.achieved_ratio:.3g}: "
                               f"{p.tokens_per_param:.3g} LLaMA-3 tokens per parameter)")
    assert rows["sequence"] == ("256", "bytes, vocabulary 259")
    assert rows["batch"] == (f"{p.bsz:,}", f"bytes per step = {p.sequences_per_step} x 256")
    assert rows["loss"][1] == "nats per byte" and rows["bpb"] == (str(recipe.bpb), "bits per byte")
    assert recipe.command_line() == list(p.to_overrides())
    lines = recipe.provenance()
    assert lines[0] == f"verdict: {recipe.verdict.line()}"
    assert lines[1] == (f"source: a test sweep (sha256 of its fitted runs, not of a file: "
                        f"{recipe.card.source_sha256[:16]}), toolkit {recipe.card.toolkit}")
    assert lines[2] == ("fitted: 5 budgets from 1e+14 to 9.9e+15 FLOPs (spent); the target is 10x the largest")
    assert lines[3] == f"fitted runs: {recipe.card.regime.describe()}"
    assert lines[4:] == [f"note: {n}" for n in recipe.verdict.notes]
    unnamed = extrapolate(analysis, "aunet2", target)  # no source given: a dash, the hash still there
    assert unnamed.provenance()[1].startswith(f"source: - (sha256 of its fitted runs, not of a file: "
                                              f"{unnamed.card.source_sha256[:16]})")
    text = recipe.text().splitlines()
    assert text[0] == "aunet2 at C = 9.9e+16 FLOPs (bowl law, 95% intervals)"
    assert text[1:6] == [f"  {line}" for line in lines[:5]]
    assert text[-2:] == ["overrides:", "  " + " ".join(recipe.command_line())]
    assert "  LR     " in recipe.text()  # quantities padded to the widest ("sequence")


def test_a_recipe_at_another_ratio_is_planned_there_and_its_override_file_is_hydras(analysis):
    recipe = extrapolate(analysis, "aunet2", 9.9e16, ratio=1.0)
    assert recipe.ratio == 1.0 and recipe.ratio_source == "given by hand (--ratio)" and recipe.plan.ratio == 1.0
    assert recipe.verdict.has("regime")
    overrides = recipe.overrides()
    assert overrides["budget"] == pytest.approx(9.9e16) and overrides["optim.lr"] == pytest.approx(recipe.plan.lr)
    text = recipe.yaml()
    assert text.startswith("# @package _global_\n# aunet2 at C = 9.9e+16 FLOPs, bowl law (95% intervals)\n")
    assert f"# verdict: {recipe.verdict.line()}" in text
    assert "#   LR: " in text and "#   steps: " in text
    config = yaml.safe_load(text)
    # the file keeps the overrides' order (the command line's), not an alphabetical one
    assert list(config) == list(dict.fromkeys(key.split(".")[0] for key in overrides))
    assert config["optim"]["lr"] == pytest.approx(recipe.plan.lr) and config["budget"] == pytest.approx(9.9e16)
    assert all(not isinstance(v, np.generic) for v in config.values())


def test_a_family_the_ladder_does_not_know_gets_the_laws_alone_with_a_note(runs):
    external = analyse(runs.assign(family="external_net"), n_boot=40)
    recipe = extrapolate(external, "external_net", 9.9e16)
    assert recipe.plan is None and recipe.steps is None and recipe.verdict.level != REFUSED
    assert recipe.note.startswith("no model shape, data size or steps: the ladder knows no family 'external_net'")
    assert recipe.command_line() == ["++family=external_net", "++budget=9.9e+16",
                                     f"++bsz={round(recipe.bsz.value)}",
                                     f"++optim.lr={float(f'{recipe.lr.value:.4g}')!r}"]
    assert [q for q, _, _ in recipe.rows()] == ["LR", "BSZ", "loss", "bpb"]
    assert recipe.text().splitlines()[-3] == f"  note: {recipe.note}"
    assert f"# note: {recipe.note}" in recipe.yaml()


def test_a_target_below_the_ladders_smallest_model_is_refused_for_no_model(analysis):
    recipe = extrapolate(analysis, "aunet2", 1e15, ratio=1e4)  # the smallest model needs 2.1e15 at ratio 1e4
    assert recipe.plan is None and recipe.steps is None
    assert recipe.note.startswith("no model: budget 1e+15 FLOPs is too small for the smallest aunet2 model")
    model = [r for r in recipe.verdict.reasons if r.kind == "model"]
    assert model and model[0].level == REFUSED and model[0].text == recipe.note


@pytest.mark.parametrize("budget, ratio, said", [
    (0.0, None, "target budget 0.0 must be a positive number of FLOPs"),
    (math.nan, None, "target budget nan must be"), ("1e17", None, "target budget 1e17 must be"),
    (1e17, 0.0, "--ratio 0.0 must be a positive data-to-model ratio"), (1e17, math.inf, "--ratio inf must be"),
    (1e17, -1.0, "--ratio -1.0 must be"),
])
def test_a_bad_target_or_ratio_is_refused_in_one_line(analysis, budget, ratio, said):
    with pytest.raises(ValueError, match=f"^{said}"):
        extrapolate(analysis, "aunet2", budget, ratio=ratio)


def test_the_studys_ratio_is_its_one_ratio_or_the_user_must_give_one(analysis):
    card = law_card(analysis, "aunet2")
    assert study_ratio(card) == 0.2
    import dataclasses

    several = dataclasses.replace(card, regime=dataclasses.replace(card.regime, ratios=(0.2, 2.0)))
    with pytest.raises(ValueError, match="^the aunet2 runs were trained at ratios 0.2, 2: the law does not say"):
        study_ratio(several)
    none = dataclasses.replace(card, regime=dataclasses.replace(card.regime, ratios=()))
    with pytest.raises(ValueError, match="^the aunet2 runs record no data-to-model ratio: give the big run's"):
        study_ratio(none)
