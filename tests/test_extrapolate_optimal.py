"""``extrapolate`` on a study that swept model size at fixed compute: the compute-optimal model (approach 3's
N_opt, approach 2's beside it, the ladder's nearest model), the verdict's reasons to doubt it, ``--ratio`` as the
manual choice; and a table without LR or BSZ, which serves the allocation fits alone."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from functools import partial

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.allocation.table import allocation_table
from analysis.extrapolate import (
    MANUAL,
    OPTIMAL,
    RATIO_SPAN,
    compute_optimal,
    extrapolate,
    implied_ratio,
    nearest_model,
)
from analysis.fits import analyse, fit_hyper_laws
from analysis.load import ALLOCATION_ONLY, AnalysisWarning, load_results, validate_results
from analysis.notices import FitWarning
from analysis.optimal import design_tables
from aunet import ladder
from aunet.verdict import CARE, REFUSED, USABLE, Allocation, Limits, allocation_reasons
from tests.helpers.isoflop_table import K, isoflop_results, true_n_opt

FAMILY = "transformer_bpe"
BUDGETS = (1e18, 1e19, 1e20)
TARGET = 1e21  # 10x the largest budget


def quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return call(*args, **kwargs)


def isoflop(**changes) -> pd.DataFrame:
    """One run per (budget, size) at one LR and BSZ: the allocation fits' data, and no LR x BSZ search."""
    return isoflop_results(**{"budgets": BUDGETS, "family": FAMILY, **changes})


def study(**changes) -> pd.DataFrame:
    """An isoFLOP study that searches LR x BSZ at every size, so that it has hyperparameter laws too: a 3 x 3 grid
    (LR and BSZ halved and doubled) around each run of ``isoflop``, whose loss stays the best of its size and
    the others' rise by 2% a step (and noise), so the allocation fits see the same points."""
    rng = np.random.default_rng(7)
    runs = isoflop(**changes)
    grid = [(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)]
    searched = [runs.assign(lr=runs["lr"] * 2.0**i, bsz=runs["bsz"] * 2.0**j,
                            loss=runs["loss"] * (1 + 0.02 * (i * i + j * j)) * np.exp(
                                0.002 * rng.standard_normal(len(runs)) * bool(i or j)))
                for i, j in grid]
    return pd.concat(searched, ignore_index=True)


@pytest.fixture(scope="module")
def centred():
    return quiet(analyse, study(), n_boot=50)


@pytest.fixture(scope="module")
def recipe(centred):
    return quiet(extrapolate, centred, FAMILY, TARGET, n_boot=100)


# --------------------------------------------------------------------------- the compute-optimal model


def test_the_model_is_the_ladders_nearest_to_n_opt_whose_interval_holds_the_truth(recipe):
    o = recipe.optimal
    truth = true_n_opt(TARGET)
    assert o.n_opt.lo < truth < o.n_opt.hi and o.n_opt.lo < o.n_opt.value < o.n_opt.hi
    assert o.n_opt2 is not None and o.n_opt2.lo < truth < o.n_opt2.hi  # approach 2 beside it
    assert o.budgets == BUDGETS and o.runs == 21 and o.no_cross_check == ""
    assert 0 <= o.misallocated < 0.02
    p = recipe.plan
    assert o.n_opt.lo <= p.params <= o.n_opt.hi
    # the ratio is the one that model implies, to 4 digits, and it is what the recipe and its overrides say
    assert recipe.ratio == p.ratio == float(f"{p.ratio:.4g}")
    assert p.ratio == pytest.approx(implied_ratio(p), rel=1e-3) and p.ratio <= implied_ratio(p)
    assert recipe.ratio_source == OPTIMAL and recipe.overrides()["ratio"] == p.ratio
    assert recipe.verdict.level == USABLE and not recipe.verdict.has("allocation")


def test_the_recipe_says_how_its_model_was_chosen_with_both_approaches(recipe):
    o, p = recipe.optimal, recipe.plan
    lines = recipe.provenance()
    assert lines[4] == (f"model: compute-optimal (approach 3): the ladder's model nearest N_opt, at the ratio it "
                        f"implies ({p.ratio:.4g}); isoFLOP fits of 21 runs at 3 budgets from 1e+18 to 1e+20 FLOPs")
    rows = {q: (v, u) for q, v, u in recipe.rows()}
    assert list(rows) == ["LR", "BSZ", "N_opt", "N_opt a2", "model", "data", "sequence", "batch", "steps", "loss"]
    assert rows["N_opt"][0] == str(o.n_opt) and rows["N_opt a2"][0] == str(o.n_opt2)
    assert rows["N_opt"][1].startswith(f"parameters, approach 3 (L(N, D) fitted to every run; a {o.approach3.a:.3g} [")
    assert rows["N_opt a2"][1].endswith(f"): {o.misallocated:.1%} of the compute misallocated under approach 3's L")
    assert rows["data"] == (f"{p.train_units:.4g}", f"tokens (ratio {p.ratio:g}, compute-optimal (approach 3); "
                                                    f"achieved {p.achieved_ratio:.3g}: {p.tokens_per_param:.3g} "
                                                    "LLaMA-3 tokens per parameter)")
    assert f"#   N_opt: {o.n_opt} " in recipe.yaml()


@pytest.mark.parametrize("family, budget, target", [(FAMILY, 1e21, 2.0e9), ("aunet2", 3e12, 6e5)])
def test_the_nearest_model_is_the_nearest_of_every_model_the_ladder_plans(family, budget, target):
    plan_at = partial(ladder.plan, family, budget)
    chosen = nearest_model(plan_at, target)
    every = {}
    for ratio in np.geomspace(*RATIO_SPAN, 600):
        try:
            plan = plan_at(ratio)
        except ValueError:
            continue
        every[plan.params] = plan
    nearest = min(every, key=lambda n: abs(math.log(n / target)))
    assert chosen.params == nearest and chosen.ratio == float(f"{chosen.ratio:.4g}")
    # a size past the ladder's largest model gets its largest; below its smallest, its smallest
    assert nearest_model(plan_at, 1e30).params == max(every)
    assert nearest_model(plan_at, 1.0).params == min(every)


def test_the_ratio_given_by_hand_is_the_model_and_says_it_is_manual(centred, recipe):
    manual = quiet(extrapolate, centred, FAMILY, TARGET, ratio=0.2)
    assert manual.optimal is None and manual.ratio == 0.2 and manual.ratio_source == MANUAL
    assert manual.plan.ratio == 0.2 and manual.plan.params > recipe.plan.params
    assert manual.provenance()[4] == ("model: manual ratio 0.2 (--ratio; without it the study's isoFLOP fits choose "
                                      "the compute-optimal size)")
    assert "N_opt" not in {q for q, _, _ in manual.rows()}


def design(table: pd.DataFrame) -> pd.DataFrame | None:
    """The family's isoFLOP design by ``analysis.optimal``'s rule, as ``extrapolate`` judges it."""
    return design_tables(quiet(load_results, table), [FAMILY], strict=False)[0].get(FAMILY)


def test_a_study_without_an_isoflop_design_has_no_design_and_says_why():
    assert design(study(sizes=2)) is None and design(study(budgets=(1e18,))) is None
    no_params = study().drop(columns=["params", "train_units"])
    assert design(no_params) is None
    with pytest.raises(ValueError, match=r"^transformer_bpe: no isoFLOP design: 0 of 3 budget\(s\) hold 3 or more "):
        quiet(compute_optimal, quiet(load_results, study(sizes=2)), FAMILY, TARGET, n_boot=10)


def test_budgets_with_too_few_sizes_are_left_out_of_the_fits_and_named():
    """``analysis.optimal``'s rule: a budget beside the isoFLOP ones that swept fewer than 3 sizes is not fitted,
    and both a warning and the recipe say so."""
    mixed = quiet(analyse, pd.concat([study(), study(budgets=(1e21,), sizes=1)], ignore_index=True), n_boot=50)
    left_out = "left out: budget(s) 1e+21 (1 size), fewer than 3 sizes each"
    with pytest.warns(FitWarning, match=re.escape(left_out)):
        recipe = extrapolate(mixed, FAMILY, TARGET, n_boot=50)
    assert recipe.optimal.budgets == BUDGETS and recipe.optimal.runs == 21
    assert recipe.provenance()[4].endswith(f"from 1e+18 to 1e+20 FLOPs; {left_out}")


# --------------------------------------------------------------------------- refusals, end to end


def test_a_grid_that_does_not_bracket_the_optimum_refuses_with_the_bound():
    off = quiet(analyse, study(offsets=(1.0, 1.0, 4.0)), n_boot=50)
    recipe = quiet(extrapolate, off, FAMILY, TARGET, n_boot=50)
    bounds = [r for r in recipe.verdict.reasons if r.kind == "allocation"]
    assert recipe.verdict.level == REFUSED and len(bounds) == 1 and bounds[0].level == REFUSED
    assert bounds[0].text.startswith("the sizes do not bracket the optimum: at budget 1e+20 the parabola's vertex at ")
    assert "has 1 size(s) below it (needs 2): N_opt < " in bounds[0].text
    assert ("approach 2 does not check approach 3's N_opt: 2 of 3 budgets have a bracketed vertex; the law N_opt = "
            "G*C^a needs 3") in recipe.verdict.notes
    assert recipe.optimal.n_opt2 is None and "N_opt a2" not in {q for q, _, _ in recipe.rows()}


def test_two_budgets_give_approach_3_alone_and_too_short_a_range():
    optimal = quiet(compute_optimal, quiet(load_results, study(budgets=(1e18, 1e20))), FAMILY, TARGET, n_boot=50)
    assert optimal.approach2 is None and optimal.n_opt2 is None and math.isnan(optimal.misallocated)
    assert [q for q, _, _ in optimal.rows()] == ["N_opt"]
    facts = optimal.facts(chosen=None)
    assert facts.no_cross_check == "the allocation table has 2 budget(s); this fit needs at least 3"
    assert facts.bounds == () and facts.chosen is None and facts.budgets == (1e18, 1e20)
    assert [(r.level, r.kind) for r in allocation_reasons(facts, TARGET, Limits())] == [(REFUSED, "range")]


def test_a_target_too_far_past_the_isoflop_budgets_refuses(centred):
    far = quiet(extrapolate, centred, FAMILY, 1e23, n_boot=50)
    texts = [r.text for r in far.verdict.reasons if r.kind == "extrapolation"]
    assert "1e+23 is 3 decades past the largest isoFLOP budget 1e+20 (at most 100x)" in texts
    below = quiet(extrapolate, centred, FAMILY, 5e17, n_boot=50)
    assert "5e+17 is below the smallest isoFLOP budget 1e+18" in [r.text for r in below.verdict.reasons]


def test_an_interval_of_n_opt_wider_than_the_limit_refuses(centred, recipe):
    lo, hi = recipe.optimal.n_opt.lo, recipe.optimal.n_opt.hi
    tight = Limits(n_opt_width_care=1.01, n_opt_width_refuse=(hi / lo) * 0.99)
    wide = quiet(extrapolate, centred, FAMILY, TARGET, n_boot=100, limits=tight)
    [reason] = [r for r in wide.verdict.reasons if r.kind == "interval" and "N_opt" in r.text]
    assert reason.level == REFUSED and reason.text == (
        f"the 95% interval of N_opt at the target, [{lo:.3g}, {hi:.3g}], spans a factor of {hi / lo:.3g} "
        f"(at most {tight.n_opt_width_refuse:g})")


def test_the_command_line_gives_the_optimal_model_and_refuses_an_unbracketed_one(tmp_path, capsys):
    study().to_csv(tmp_path / "centred.csv", index=False)
    args = ["extrapolate", str(tmp_path / "centred.csv"), "--family", FAMILY, "--budget", "1e21", "--bootstrap", "50"]
    assert quiet(main, args) == 0
    out = capsys.readouterr().out
    assert "  model: compute-optimal (approach 3): the ladder's model nearest N_opt" in out
    assert "\n  N_opt     " in out and "\n  N_opt a2  " in out
    assert quiet(main, [*args, "--ratio", "0.2"]) == 0
    assert "  model: manual ratio 0.2 (--ratio;" in capsys.readouterr().out
    study(offsets=(1.0, 1.0, 4.0)).to_csv(tmp_path / "off.csv", index=False)
    assert quiet(main, ["extrapolate", str(tmp_path / "off.csv"), *args[2:]]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"refused: {FAMILY}: not usable at C = 1e+21: [not usable] the sizes do not bracket")


# --------------------------------------------------------------------------- the verdict's rule on isoFLOP fits


def facts(**changes) -> Allocation:
    """Fits that give no reason: 3 budgets over 2 decades, N_opt's interval x2, the model inside it."""
    return dataclasses.replace(Allocation(BUDGETS, (1e9, 0.7e9, 1.4e9), 1.1e9, misallocated=0.005,
                                          misallocation_flag=0.02), **changes)


def levels(allocation: Allocation, target: float = TARGET, limits: Limits | None = None) -> list[tuple[str, str]]:
    return [(r.level, r.kind) for r in allocation_reasons(allocation, target, limits or Limits())]


def test_isoflop_fits_within_every_limit_give_no_reason():
    assert levels(facts()) == []
    assert levels(facts(), target=1e22) == []  # 100x the largest budget is still within reach


@pytest.mark.parametrize("changes, target, expected", [
    ({"budgets": (1e18, 1e19)}, TARGET, [(REFUSED, "range")]),
    ({"budgets": (1e18, 2e18, 5e18)}, 1e20, [(REFUSED, "range")]),
    ({}, 1.01e22, [(REFUSED, "extrapolation")]),
    ({}, 9e17, [(REFUSED, "extrapolation")]),
    ({"bounds": ("at budget 1e+20 ... N_opt < 3e8", "at budget 1e+19 ... N_opt > 1e9")}, TARGET,
     [(REFUSED, "allocation"), (REFUSED, "allocation")]),
    ({"n_opt": (1e9, 0.6e9, 1.8e9)}, TARGET, []),  # x3: the care limit itself
    ({"n_opt": (1e9, 0.6e9, 1.81e9)}, TARGET, [(CARE, "interval")]),
    ({"n_opt": (1e9, 0.5e9, 4.0e9)}, TARGET, [(CARE, "interval")]),  # x8: the refusal limit itself
    ({"n_opt": (1e9, 0.5e9, 4.01e9)}, TARGET, [(REFUSED, "interval")]),
    ({"n_opt": (1e9, math.nan, math.nan)}, TARGET, [(REFUSED, "interval")]),
    ({"misallocated": 0.021}, TARGET, [(CARE, "allocation")]),
    ({"misallocated": 0.02}, TARGET, []),
    ({"misallocated": math.nan}, TARGET, []),  # no approach-2 law: a note, not a reason
    ({"converged": False}, TARGET, [(CARE, "allocation")]),
    ({"chosen": 1.5e9}, TARGET, [(REFUSED, "model")]),
    ({"chosen": 0.69e9}, TARGET, [(REFUSED, "model")]),
    ({"chosen": None}, TARGET, []),
])
def test_each_limit_of_the_isoflop_fits_gives_its_reason(changes, target, expected):
    assert levels(facts(**changes), target) == expected


def test_the_isoflop_reasons_say_what_is_wrong():
    texts = [r.text for r in allocation_reasons(facts(misallocated=0.031, converged=False, chosen=2e9), TARGET,
                                                Limits())]
    assert texts == ["approaches 2 and 3 disagree: approach 2's N_opt would misallocate 3.1% of the compute at the "
                     "target (above 2%)",
                     "approach 3's starts did not agree on its optimum (a local minimum?)",
                     "the ladder's nearest model has 2e+09 parameters, outside N_opt's interval: it is not the "
                     "compute-optimal model"]
    [range_] = allocation_reasons(facts(budgets=(1e18, 1e19)), TARGET, Limits())
    assert range_.text == ("the isoFLOP fits span 2 budgets over 1 decade(s) (1e+18 to 1e+19); N_opt's law needs 3 "
                           "over 1 or more")


@pytest.mark.parametrize("care, refuse", [(1.0, 8.0), (4.0, 3.0)])
def test_n_opt_width_limits_must_be_ordered_above_one(care, refuse):
    with pytest.raises(ValueError, match=r"^N_opt interval widths must satisfy 1 < n_opt_width_care"):
        Limits(n_opt_width_care=care, n_opt_width_refuse=refuse)


# --------------------------------------------------------------------------- a table without LR or BSZ


def sizes_only(**changes) -> pd.DataFrame:
    """An external isoFLOP table: family, params, tokens and loss per run (and units), no LR, BSZ or status."""
    runs = isoflop(**changes)
    return pd.DataFrame({"family": runs["family"], "params": runs["params"], "tokens": runs["train_units"],
                         "loss": runs["loss"], "units": "tokens"})


def test_a_table_without_lr_or_bsz_loads_for_the_allocation_fits_alone():
    table = sizes_only().assign(status="finished", budget=lambda t: K * t["params"] * t["tokens"])
    runs = quiet(load_results, table)
    assert "lr" not in runs and "bsz" not in runs and runs["usable"].all()
    points = allocation_table(runs, FAMILY)
    assert len(points) == 21 and list(points.columns) == ["budget", "params", "train_units", "loss"]
    assert np.allclose(points["train_units"] * points["params"] * K, points["budget"])
    # without its data size, a run's data is read from its compute, C / (6·N)
    compute_only = quiet(load_results, table.drop(columns="tokens"))
    assert np.allclose(allocation_table(compute_only, FAMILY)["train_units"], points["train_units"])
    # a table's own train_units are its data, whatever else it holds
    both = quiet(load_results, table.assign(train_units=2 * table["tokens"]))
    assert np.allclose(both["train_units"], 2 * table["tokens"])
    with pytest.raises(ValueError, match=r"^t: column 'tokens' must be numeric; rows 3 hold \['many'\]"):
        quiet(validate_results, table.astype({"tokens": object}).assign(
            tokens=lambda t: t["tokens"].where(t.index != 3, "many")), "t")


def test_every_fit_that_needs_lr_and_bsz_refuses_it_in_one_line(tmp_path, capsys):
    table = sizes_only().assign(status="finished", budget=lambda t: K * t["params"] * t["tokens"])
    runs = quiet(load_results, table)
    for fit in (partial(fit_hyper_laws, runs, FAMILY), partial(analyse, table)):
        with pytest.raises(ValueError, match=f"^{ALLOCATION_ONLY}$"):
            quiet(fit)
    table.to_csv(tmp_path / "sizes.csv", index=False)
    assert quiet(main, ["extrapolate", str(tmp_path / "sizes.csv"), "--family", FAMILY, "--budget", "1e21"]) == 2
    assert capsys.readouterr().err == f"error: {ALLOCATION_ONLY}\n"


def test_a_table_without_lr_bsz_or_params_is_refused_as_before_and_told_what_would_do():
    table = sizes_only().assign(status="finished", budget=1e18).drop(columns="params")
    with pytest.raises(ValueError, match=r"^t lacks column\(s\) \['lr', 'bsz'\]; every row needs .*; a table for the "
                                         r"allocation fits alone needs params and train_units \(or tokens\) instead "
                                         r"of lr and bsz\)$"):
        quiet(validate_results, table, "t")


def test_import_accepts_a_table_without_lr_or_bsz_for_the_allocation_fits(tmp_path, capsys):
    sizes_only().to_csv(tmp_path / "export.csv", index=False)
    assert quiet(main, ["import", str(tmp_path / "export.csv"), "--out", str(tmp_path / "study")]) == 0
    out = capsys.readouterr().out
    assert f"{ALLOCATION_ONLY} (the runs have params and data, no LR or BSZ): fit the model size with " in out
    runs = quiet(load_results, tmp_path / "study")
    points = allocation_table(runs, FAMILY)
    assert len(points) == 21 and np.allclose(points["budget"], K * points["params"] * points["train_units"])


def test_a_family_the_ladder_does_not_know_gets_n_opt_without_a_model():
    other = quiet(analyse, study(family="chinchilla"), n_boot=50)
    recipe = quiet(extrapolate, other, "chinchilla", TARGET, n_boot=50)
    assert recipe.plan is None and recipe.optimal.n_opt.lo < true_n_opt(TARGET) < recipe.optimal.n_opt.hi
    assert recipe.provenance()[4].startswith("model: compute-optimal (approach 3): the ladder has no model for it; ")
    assert not recipe.verdict.has("model") and recipe.note.startswith("no model shape, data size or steps")
