"""The edge and bracket flags judge the estimator's optimum (the bowl's vertex, the band's centroid)
against the values tried around it, not the single best run."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from analysis.extrapolate import extrapolate
from analysis.fits import analyse, fit_hyper_laws
from analysis.load import AnalysisWarning
from analysis.synthetic import SweepDesign, SyntheticTruth, synthetic_sweep
from aunet.laws import PAPER_LAWS, box_edge

BOX_FLAGS = r"\b(?:LR|BSZ) (?:lower|upper|floor|ceiling)\b|outside"


def fit_quietly(table, estimator):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnalysisWarning)
        fit = fit_hyper_laws(table, "aunet2", estimator=estimator, n_boot=20)
    return fit, [str(w.message) for w in caught]


def test_a_clean_sweep_whose_best_run_sits_on_the_edge_is_not_refused_for_it():
    """Seed 74 of the verdict benchmark's clean design: at 3.98e19 the best run's BSZ is in the box's
    lower tenth, but larger and smaller batches were tried around the bowl's optimum (truth inside)."""
    table = synthetic_sweep("aunet2", seed=74)
    result = analyse(table, families=["aunet2"], n_boot=50, seed=74)
    fit = result.laws["aunet2"]["bowl"]
    row = fit.budgets[np.isclose(fit.budgets["budget"], 3.98107e19, rtol=1e-4)].iloc[0]
    assert box_edge(row["best_bsz"], row["bsz_min"], row["bsz_max"]) == "lower"  # the old rule's false edge
    tried = table[np.isclose(table["budget"], row["budget"], rtol=1e-4) & (table["status"] == "finished")]["bsz"]
    assert tried.min() < row["bsz_opt"] < tried.max() and not box_edge(row["bsz_opt"], row["bsz_min"], row["bsz_max"])
    assert not fit.budgets["edge"].str.contains(BOX_FLAGS).any()
    verdict = extrapolate(result, "aunet2", 1e22).verdict
    assert verdict.usable, verdict.line()
    assert not any("search box" in r.text or "tried" in r.text for r in verdict.reasons), verdict.line()


@pytest.mark.parametrize("estimator", ["bowl", "band"])
def test_a_best_run_at_the_largest_batch_tried_is_no_flag_when_the_optimum_is_bracketed(estimator):
    table = synthetic_sweep("aunet2", design=SweepDesign(prior_offset=1.0), seed=5)
    finished = table["status"] == "finished"
    for budget in table["budget"].unique():
        here = finished & (table["budget"] == budget)
        largest = table.loc[here, "bsz"].idxmax()
        table.loc[largest, ["loss", "bpb"]] = table.loc[here, ["loss", "bpb"]].min() * 0.999  # noise: 0.2%
    fit, messages = fit_quietly(table, estimator)
    assert (fit.budgets["best_bsz"] == table[finished].groupby("budget")["bsz"].max().to_numpy()).all()
    assert all(box_edge(r.best_bsz, r.bsz_min, r.bsz_max) == "upper" for r in fit.budgets.itertuples())
    assert not fit.budgets["edge"].str.contains(BOX_FLAGS).any()
    assert not any("edge of the search box" in m or "pinned" in m for m in messages)


def test_an_optimum_beyond_the_box_is_flagged_by_the_bowl():
    design = SweepDesign(prior_offset=1 / 8)  # the box sits far below the true optimum
    truth = SyntheticTruth(PAPER_LAWS["aunet"], tilt=0.0)
    fit, messages = fit_quietly(synthetic_sweep("aunet2", design=design, truth=truth, seed=0), "bowl")
    # Budgets whose bowl has a minimum (the others are left out of the law, with their own warning).
    fitted = fit.budgets[np.isfinite(fit.budgets["lr_opt"])]
    assert len(fitted) >= len(fit.budgets) - 1 and any("no minimum near the box" in m for m in messages)
    assert fitted["edge"].str.contains("bowl LR outside").all()
    assert fitted["edge"].str.contains("bowl BSZ outside").all()
    assert not fit.budgets["edge"].str.contains("upper|ceiling").any()  # one flag per side, not three
    assert any("the bowl's optimal LR" in m and "lies outside the search box" in m for m in messages)


def test_an_optimum_beyond_the_box_is_flagged_by_the_band():
    design = SweepDesign(prior_offset=1 / 8)
    truth = SyntheticTruth(PAPER_LAWS["aunet"], tilt=0.0)
    fit, messages = fit_quietly(synthetic_sweep("aunet2", design=design, truth=truth, seed=0), "band")
    flagged = fit.budgets["edge"].str.contains(r"LR upper|BSZ upper")
    assert flagged.sum() >= len(fit.budgets) // 2
    assert any("the 1.00% band's optimal" in m and "sits on the upper edge of the search box" in m
               and "the band reaches the largest" in m for m in messages)
    result = analyse(synthetic_sweep("aunet2", design=design, truth=truth, seed=0), families=["aunet2"], n_boot=20)
    verdict = extrapolate(result, "aunet2", 1e21, estimator="band").verdict
    assert not verdict.usable and any("edge of the search box" in r.text for r in verdict.reasons), verdict.line()


def test_a_bowl_optimum_below_every_batch_tried_is_pinned_at_the_floor():
    """Runs that do not fill the box: none below 1.5x the true BSZ, which sits mid-box."""
    table = synthetic_sweep("aunet2", design=SweepDesign(prior_offset=1.0, trials=64), seed=2)
    truth = SyntheticTruth(PAPER_LAWS["aunet"]).laws
    table = table[table["bsz"] > 1.5 * truth.bsz(table["budget"].to_numpy())]
    fit, messages = fit_quietly(table, "bowl")
    smallest = table[table["status"] == "finished"].groupby("budget")["bsz"].min().to_numpy()
    assert (fit.budgets["bsz_opt"] < smallest).all()
    assert all(not box_edge(r.bsz_opt, r.bsz_min, r.bsz_max) for r in fit.budgets.itertuples())  # mid-box
    assert (fit.budgets["edge"] == "BSZ floor").all()
    assert any("pinned at the floor" in m and "no run was tried below it" in m for m in messages)
