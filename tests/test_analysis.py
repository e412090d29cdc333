"""Tests of the analysis package: paper-law recovery, calibration, estimators, bad input, report, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.__main__ import main
from analysis.cards import law_card
from analysis.estimators import BOWL_MIN_RUNS
from analysis.extrapolate import extrapolate
from analysis.fits import (
    MIN_BUDGETS,
    analyse,
    fit_hyper_laws,
    fit_loss_curve,
    fit_power_law,
    isoflop_curves,
)
from analysis.load import AnalysisWarning, load_results, validate_results
from analysis.notices import BoxWarning, FitWarning
from analysis.plots import plot_hyper_laws
from analysis.report import write_report
from analysis.synthetic import SweepDesign, SyntheticTruth, default_truth, synthetic_study, synthetic_sweep
from aunet.ladder import plan
from aunet.laws import PAPER_LAWS, HyperLaws, LawCard, PowerLaw, exponent_identified
from aunet.record import RunRecord
from sweeps.ledger import Ledger
from sweeps.study import StudyConfig, Trial

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- the paper's Tables 9-11
# Table 10 "Scaling ..." rows: (Total FLOPs, Tokens/Step, FLOPs/Token); Table 11: LR. AU-Net rows are in
# bytes, baseline rows in LLaMA-3 tokens. Table 11 has no LR for "Scaling AUNet 3 1e22", so that row is out.
AUNET2 = [  # Total FLOPs, bytes/step, LR
    (1.1e19, 8.7e05, 0.002923), (2.2e19, 1.1e06, 0.002615), (3.7e19, 1.3e06, 0.002377),
    (7.6e19, 1.6e06, 0.002096), (1.3e20, 1.8e06, 0.001906), (2.6e20, 2.4e06, 0.001685),
    (5.0e20, 2.9e06, 0.001507), (9.3e20, 3.7e06, 0.001348), (1.7e21, 4.2e06, 0.001214),
    (3.1e21, 5.2e06, 0.00109), (5.9e21, 6.3e06, 0.0009731), (1.1e22, 7.9e06, 0.0008719),
]
AUNET3 = [
    (1.3e19, 9.0e05, 0.002872), (2.4e19, 1.1e06, 0.002561), (4.7e19, 1.4e06, 0.002279),
    (7.3e19, 1.6e06, 0.00211), (1.5e20, 2.0e06, 0.001852), (2.7e20, 2.4e06, 0.001678),
    (5.2e20, 2.9e06, 0.001496), (9.2e20, 3.7e06, 0.001351), (1.7e21, 4.2e06, 0.001213),
    (3.3e21, 5.2e06, 0.001077), (6.0e21, 6.3e06, 0.0009707),
]
BASELINE = [  # Total FLOPs, tokens/step, FLOPs/token, LR, model width (Table 9)
    (2.0e19, 7.7e05, 1.9e09, 0.008152, 1024), (3.3e19, 8.8e05, 2.3e09, 0.007378, 1152),
    (5.6e19, 9.9e05, 2.9e09, 0.006633, 1280), (1.1e20, 1.2e06, 4.0e09, 0.005788, 1536),
    (2.0e20, 1.4e06, 5.1e09, 0.005204, 1664), (3.3e20, 1.6e06, 6.5e09, 0.004693, 1792),
    (6.0e20, 1.8e06, 8.6e09, 0.0042, 2048), (1.1e21, 2.1e06, 1.2e10, 0.003722, 2304),
    (2.0e21, 2.4e06, 1.5e10, 0.003357, 2560), (3.6e21, 2.8e06, 2.0e10, 0.003018, 2816),
    (6.5e21, 3.1e06, 2.7e10, 0.002701, 3072), (1.2e22, 3.9e06, 3.6e10, 0.002416, 3456),
]
LLAMA3_VOCAB = 128_256


def baseline_compute() -> np.ndarray:
    """The baseline's compute without the output head (6·V·d FLOPs per token).

    Table 10's "Total FLOPs" of the baseline counts the head; the paper's BPE law was
    fitted on compute without it (with it the LR exponent comes out -0.190, not -0.177).
    For byte models the head (V = 259) is negligible.
    """
    total, _, per_token, _, width = np.array(BASELINE).T
    return total * (1 - 6 * LLAMA3_VOCAB * width / per_token)


@pytest.mark.parametrize("name, compute, bsz, lr, paper", [
    ("AU-Net 2", *np.array(AUNET2).T, PAPER_LAWS["aunet"]),
    ("AU-Net 3", *np.array(AUNET3).T, PAPER_LAWS["aunet"]),
    ("BPE baseline", baseline_compute(), np.array(BASELINE)[:, 1], np.array(BASELINE)[:, 3], PAPER_LAWS["bpe"]),
])
def test_paper_tables_recover_paper_laws(name, compute, bsz, lr, paper):
    for target, values, law, exponent_tol in (("lr", lr, paper.lr, 0.001), ("bsz", bsz, paper.bsz, 0.006)):
        fit = fit_power_law(compute, values, target=target)
        assert fit.exponent_ci[0] <= law.exponent <= fit.exponent_ci[1], (name, target, fit.exponent_ci)
        assert fit.coef_ci[0] <= law.coef <= fit.coef_ci[1], (name, target, fit.coef_ci)
        # LR is exact to the table's 4 digits; BSZ is rounded to whole sequences per GPU (up to 5% off).
        assert abs(fit.exponent - law.exponent) <= exponent_tol, (name, target, fit.exponent)


def test_baseline_total_flops_include_the_head():
    total = np.array(BASELINE)[:, 0]
    with_head = fit_power_law(total, np.array(BASELINE)[:, 3])
    assert abs(with_head.exponent - PAPER_LAWS["bpe"].lr.exponent) > 0.01
    assert not with_head.exponent_ci[0] <= PAPER_LAWS["bpe"].lr.exponent <= with_head.exponent_ci[1]


def test_one_run_per_budget_through_the_band_equals_the_plain_fit():
    rows = pd.DataFrame({"status": "finished", "family": "aunet2", "budget": [r[0] for r in AUNET2],
                         "bsz": [r[1] for r in AUNET2], "lr": [r[2] for r in AUNET2], "loss": 1.0,
                         "units": "bytes"})
    with pytest.warns(AnalysisWarning, match="single run"):
        fit = fit_hyper_laws(rows, "aunet2", n_boot=50)
    plain = fit_power_law(rows["budget"], rows["lr"])
    assert fit.lr.exponent == pytest.approx(plain.exponent, rel=1e-12)
    assert fit.lr.coef == pytest.approx(plain.coef, rel=1e-9)
    assert np.allclose(fit.lr.exponent_ci, plain.exponent_ci, atol=3e-4)


# --------------------------------------------------------------------------- calibration on synthetic sweeps

SEEDS = 50


@pytest.fixture(scope="module")
def seed_study():
    """Both estimators on the issue's design (6 budgets x 24 Sobol trials, 0.2% noise, prior off 1.5x)."""
    fits = {"band": [], "bowl": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        for seed in range(SEEDS):
            df = validate_results(synthetic_sweep("aunet2", seed=seed))
            for estimator in fits:
                fits[estimator].append(fit_hyper_laws(df, "aunet2", estimator=estimator, n_boot=200, seed=seed))
    return fits


@pytest.mark.parametrize("estimator", ["band", "bowl"])
@pytest.mark.parametrize("target", ["lr", "bsz"])
def test_intervals_cover_true_exponents_in_about_95_percent_of_seeds(seed_study, estimator, target):
    true = getattr(default_truth("aunet2").laws, target).exponent
    laws = [getattr(fit, target) for fit in seed_study[estimator]]
    covered = np.mean([law.exponent_ci[0] <= true <= law.exponent_ci[1] for law in laws])
    assert 0.86 <= covered <= 1.0, covered  # 95% of 50 seeds: 47.5 +- 1.5 (binomial sd)
    spread = np.std([law.exponent for law in laws])
    widths = [np.diff(law.exponent_ci)[0] for law in laws]
    assert np.median(widths) < 8 * spread  # an interval, not a shrug (t with 4 dof: ~5.5 sd)


def test_bowl_is_several_times_more_precise_than_band(seed_study):
    true = default_truth("aunet2").laws.lr.exponent
    spread = {e: np.std([f.lr.exponent for f in fits]) for e, fits in seed_study.items()}
    assert spread["bowl"] < 0.5 * spread["band"], spread
    for estimator, fits in seed_study.items():
        exponents = [f.lr.exponent for f in fits]
        assert abs(np.mean(exponents) - true) < 3 * spread[estimator] / math.sqrt(SEEDS) + 0.002, estimator


def test_recovers_a_law_unlike_the_papers():
    truth = SyntheticTruth(HyperLaws(PowerLaw(40.0, 0.25), PowerLaw(0.5, -0.1), "bytes"))
    df = synthetic_sweep("aunet4", truth=truth, seed=7)
    for estimator in ("band", "bowl"):
        fit = fit_hyper_laws(df, "aunet4", estimator=estimator, n_boot=300)
        assert fit.lr.exponent_ci[0] <= -0.1 <= fit.lr.exponent_ci[1]
        assert fit.bsz.exponent_ci[0] <= 0.25 <= fit.bsz.exponent_ci[1]
        assert fit.hyper_laws().lr(1e19) == pytest.approx(truth.laws.lr(1e19), rel=0.3)


def test_fitted_law_file_is_what_hyperlaws_reads(tmp_path):
    result = _analysis(synthetic_sweep("transformer_bpe", seed=1), n_boot=100)
    card = law_card(result, "transformer_bpe", "bowl", source="synthetic")
    card.write(tmp_path / "law.json")
    read = HyperLaws.from_file(tmp_path / "law.json")
    fit = result.law("transformer_bpe", "bowl")
    assert read == card.hyper_laws() and LawCard.read(tmp_path / "law.json") == card
    assert read.units == "tokens" and read.lr.exponent == fit.lr.exponent and card.lr.exponent_ci == fit.lr.exponent_ci
    assert card.fitted_range == (min(fit.lr.budgets), max(fit.lr.budgets)) and card.estimator == "bowl"
    # The card's covariance carries the analysis's own prediction interval to a target 100x away.
    for name in ("lr", "bsz"):
        _, lo, hi = (float(v[0]) for v in getattr(fit, name).predict(1e22))
        _, card_lo, card_hi = getattr(card, name).predict(1e22)
        assert math.log(card_hi / card_lo) == pytest.approx(math.log(hi / lo), rel=0.15)
    assert card.source_sha256 == law_card(result, "transformer_bpe", "bowl").source_sha256


def test_bsz_in_bytes_scales_the_law_by_the_compression():
    df = synthetic_sweep("transformer_bpe", seed=2)
    units = fit_hyper_laws(df, "transformer_bpe", n_boot=50)
    in_bytes = fit_hyper_laws(df, "transformer_bpe", n_boot=50, bsz_in="bytes")
    assert in_bytes.units == "bytes" and units.units == "tokens"
    assert in_bytes.bsz.coef == pytest.approx(units.bsz.coef * 4.56)
    assert in_bytes.bsz.exponent == pytest.approx(units.bsz.exponent)


def test_deepseek_tolerance_keeps_fewer_runs():
    df = synthetic_sweep("aunet2", seed=3)
    wide = fit_hyper_laws(df, "aunet2", tolerance=0.01, n_boot=20)
    narrow = fit_hyper_laws(df, "aunet2", tolerance=0.0025, n_boot=20)
    assert (narrow.budgets["near_optimal"] <= wide.budgets["near_optimal"]).all()
    assert narrow.budgets["near_optimal"].sum() < wide.budgets["near_optimal"].sum()
    finished = validate_results(df).query("usable")
    best = finished.groupby("budget")["loss"].transform("min")
    expected = (finished["loss"] <= best * 1.0025).groupby(finished["budget"]).sum()
    assert narrow.budgets.set_index("budget")["near_optimal"].to_dict() == expected.to_dict()


def test_loss_curve_recovers_its_law_and_extrapolates_within_interval():
    truth = default_truth("aunet3")
    fit = fit_loss_curve(synthetic_sweep("aunet3", seed=4), "aunet3", n_boot=500)
    point, lo, hi = fit.predict(np.array([1e20, 1e22]))
    assert np.all(lo <= truth.best_bpb(np.array([1e20, 1e22]))) and np.all(truth.best_bpb(np.array([1e20, 1e22])) <= hi)
    assert fit.alpha_ci[0] <= truth.loss_alpha <= fit.alpha_ci[1]
    assert np.abs(fit.residuals).max() < 0.01


def test_isoflop_curves_average_the_near_optimal_runs():
    df = validate_results(synthetic_sweep("aunet2", seed=5))
    df["eval_units"] = 1e6  # evaluation bookkeeping, not a task
    curves = isoflop_curves(df, n_boot=200)
    assert set(curves["metric"]) == {"bpb", "eval_hellaswag", "eval_arc_easy", "eval_piqa"}
    budget = df["budget"].iloc[0]
    runs = df[df["usable"] & (df["budget"] == budget)]
    near = runs[runs["loss"] <= runs["loss"].min() * 1.01]
    row = curves[(curves["budget"] == budget) & (curves["metric"] == "eval_piqa")].iloc[0]
    assert row["value"] == pytest.approx(near["eval_piqa"].mean())
    assert row["runs"] == len(near)
    assert row["lo"] <= row["value"] <= row["hi"] and row["hi"] > row["lo"]


# --------------------------------------------------------------------------- warnings and bad input


def test_optimum_outside_the_box_is_flagged():
    design = SweepDesign(prior_offset=1 / 8)  # the box sits far below the true optimum
    truth = SyntheticTruth(PAPER_LAWS["aunet"], tilt=0.0)  # an untilted bowl: its corner nearest the optimum wins
    with pytest.warns(BoxWarning, match="lies outside the search box"):
        fit = fit_hyper_laws(synthetic_sweep("aunet2", design=design, truth=truth, seed=0), "aunet2",
                             estimator="bowl", n_boot=50)
    # One flag for one fact: the bowl's optimum outside the box (not also its edge or the best run's ceiling),
    # at every budget whose bowl has a minimum (the others are left out of the law).
    fitted = fit.budgets[np.isfinite(fit.budgets["lr_opt"])]
    assert len(fitted) >= len(fit.budgets) - 1 and fitted["edge"].str.contains("bowl LR outside").all()
    assert not fit.budgets["edge"].str.contains("LR upper|LR ceiling").any()
    assert (fitted["lr_opt"] > fitted["lr_max"]).all()


def test_centred_box_raises_no_edge_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnalysisWarning)
        fit = fit_hyper_laws(synthetic_sweep("aunet2", design=SweepDesign(prior_offset=1.0), seed=0), "aunet2",
                             estimator="bowl", n_boot=50)
    assert (fit.budgets["edge"] == "").all()


def _rows(**changes):
    df = synthetic_sweep("aunet2", seed=9)
    for column, value in changes.items():
        df[column] = value
    return df


@pytest.mark.parametrize("table, message", [
    (pd.DataFrame(), "empty"),
    (_rows().drop(columns=["loss", "lr"]), r"lacks column\(s\) \['lr', 'loss'\]"),
    (_rows().astype({"lr": object}).assign(lr=lambda d: d["lr"].where(d.index != 3, "fast")),
     r"column 'lr' must be numeric; rows 3 hold \['fast'\]"),
    (_rows(status="zombie"), "unknown status value.*--status zombie=failed"),
    (_rows().assign(units=lambda d: np.where(d.index < 10, "tokens", "bytes")), "mixed units for family 'aunet2'"),
    (_rows().assign(bsz_bytes=lambda d: d["bsz"] * 4.56), "mixes batch sizes in tokens and in bytes"),
    (_rows(bytes_per_unit=4.56), "bytes_per_unit"),
    (_rows().assign(lr=lambda d: d["lr"].where(d.index != 5, -1.0)), "'lr' must be a positive finite number"),
    (_rows().assign(budget=lambda d: d["budget"].where(d.index != 0, np.inf)), "'budget' must be a positive"),
    (_rows(units="words"), "unknown units"),
])
def test_bad_tables_get_clear_messages(table, message):
    with pytest.raises(ValueError, match=message):
        validate_results(table)


def test_non_finite_losses_are_reported_and_kept_out_of_fits():
    df = synthetic_sweep("aunet2", seed=10)
    finished = df.index[df["status"] == "finished"]
    poisoned = df.copy()
    poisoned.loc[finished[:3], "loss"] = [np.nan, np.inf, -1.0]
    with pytest.warns(AnalysisWarning, match="3 finished run"):
        table = validate_results(poisoned)
    assert not table.loc[finished[:3], "usable"].any()
    clean = fit_hyper_laws(df.drop(index=finished[:3]), "aunet2", n_boot=20)
    dirty = fit_hyper_laws(table, "aunet2", n_boot=20)
    assert dirty.lr.exponent == pytest.approx(clean.lr.exponent, rel=1e-12)


def test_diverged_and_failed_runs_never_enter_a_fit_but_are_plotted():
    df = synthetic_sweep("aunet2", seed=11)
    base = fit_hyper_laws(df, "aunet2", n_boot=20)
    lure = df.iloc[[0, 1]].copy()  # "runs" with a tiny recorded loss at absurd hyperparameters
    lure["status"], lure["loss"], lure["lr"] = ["diverged", "failed"], 1e-3, [9.0, 1e-7]
    lure["bsz"] = lure["bsz_bytes"] = 17.0
    fits = {e: fit_hyper_laws(pd.concat([df, lure], ignore_index=True), "aunet2", estimator=e, n_boot=20)
            for e in ("band", "bowl")}
    assert fits["band"].lr.exponent == pytest.approx(base.lr.exponent, rel=1e-12)
    labels = [t.get_text() for t in plot_hyper_laws(fits).axes[0].get_legend().get_texts()]
    assert "diverged (not fitted)" in labels and "failed (not fitted)" in labels


def test_too_few_budgets_names_them_and_the_need():
    df = synthetic_sweep("aunet2", seed=12)
    two = df[df["budget"].isin(sorted(df["budget"].unique())[:2])]
    with pytest.raises(ValueError, match=rf"at least {MIN_BUDGETS} budgets.*1e\+18: \d+, 2\.51e\+18: \d+"):
        fit_hyper_laws(two, "aunet2")
    with pytest.raises(ValueError, match=r"L\(C\) needs the best bpb at 3 or more budgets \(4 to fit its floor E\)"):
        fit_loss_curve(two, "aunet2")


def test_three_budgets_give_a_pure_power_law_with_its_wider_interval():
    df = synthetic_sweep("aunet2", seed=12)
    three = df[df["budget"].isin(sorted(df["budget"].unique())[:3])]
    fit = fit_loss_curve(three, "aunet2", n_boot=400)
    envelope = three[three["status"] == "finished"].groupby("budget")["bpb"].min()
    slope, intercept = np.polyfit(np.log(envelope.index), np.log(envelope.to_numpy()), 1)
    assert not fit.floor and fit.e == 0.0 and fit.alpha == pytest.approx(-slope)
    assert fit.alpha_ci[0] < fit.alpha < fit.alpha_ci[1]
    value, lo, hi = fit.predict(1e20)
    assert value[0] == pytest.approx(math.exp(intercept) * 1e20**slope) and lo[0] < value[0] < hi[0]
    full = fit_loss_curve(df, "aunet2", n_boot=400)
    assert full.floor and full.e > 0


def test_bowl_needs_runs_per_budget_and_says_how_many():
    df = synthetic_sweep("aunet2", design=SweepDesign(trials=8, fail_rate=0.0), seed=13)
    with pytest.warns(FitWarning, match=f"the bowl needs {BOWL_MIN_RUNS} finished runs per budget"):
        with pytest.raises(ValueError, match=f"needs at least {MIN_BUDGETS} budgets with {BOWL_MIN_RUNS} or more"):
            fit_hyper_laws(df, "aunet2", estimator="bowl")
    result = analyse(df, n_boot=20)  # the band still works; the bowl becomes a warning
    assert set(result.laws["aunet2"]) == {"band"}
    assert any("no bowl law" in w for w in result.warnings)
    assert result.law("aunet2").estimator == "band"


@pytest.mark.parametrize("call, message", [
    (lambda df: fit_hyper_laws(df, "mamba_bytes"), "no runs of family 'mamba_bytes'"),
    (lambda df: fit_hyper_laws(df, "aunet2", estimator="median"), "estimator 'median'"),
    (lambda df: fit_hyper_laws(df, "aunet2", tolerance=1.0), "tolerance"),
    (lambda df: fit_hyper_laws(df, "aunet2", bsz_in="sequences"), "bsz_in"),
    (lambda df: extrapolate(analyse(df, n_boot=10), "aunet2", -1.0), "positive number of FLOPs"),
    (lambda df: fit_power_law([1e19, 1e20], [1.0, 2.0]), "at least 3 distinct budgets"),
    (lambda df: fit_power_law([1e19, 1e20, 1e21], [1.0, 0.0, 2.0]), "positive and finite"),
])
def test_bad_arguments_get_clear_messages(call, message):
    with pytest.raises(ValueError, match=message):
        call(synthetic_sweep("aunet2", seed=14))


def test_a_sweep_too_small_for_any_law_still_gets_a_report_that_says_why(tmp_path, capsys):
    df = synthetic_sweep("aunet2", design=SweepDesign(budgets=(1e18, 1e19), trials=6), seed=17)
    path = write_report(df, tmp_path, n_boot=20)
    text = path.read_text()
    assert "No law could be fitted" in text
    assert "needs at least 3 budgets with 1 or more finished runs each" in text
    assert (tmp_path / "figures" / "isoflop.png").is_file()  # the runs are still shown
    df.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "laws")]) == 2
    assert "no law could be fitted" in capsys.readouterr().err
    assert main(["extrapolate", str(tmp_path / "runs.csv"), "--family", "aunet2", "--budget", "1e21"]) == 2
    assert "no hyperparameter law for 'aunet2'" in capsys.readouterr().err


def test_bad_sources_get_clear_messages(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_results(tmp_path / "nope.csv")
    (tmp_path / "broken.jsonl").write_text('{"status": "finished"\n')
    with pytest.raises(ValueError, match="cannot read results file"):
        load_results(tmp_path / "broken.jsonl")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="suffix '.txt'"):
        load_results(tmp_path / "notes.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="no \\*\\*/record.json files and 0 table files"):
        load_results(tmp_path / "d")
    with pytest.raises(ValueError, match="no runs of study 'other'"):
        load_results(synthetic_sweep("aunet2", seed=0), study="other")


# --------------------------------------------------------------------------- loading every form


def test_every_source_form_gives_the_same_table(tmp_path):
    df = synthetic_sweep("aunet2", design=SweepDesign(budgets=(1e18, 1e19, 1e20), trials=6), seed=15)
    df.to_csv(tmp_path / "runs.csv", index=False)
    df.to_parquet(tmp_path / "runs.parquet")
    (tmp_path / "runs.jsonl").write_text("\n".join(json.dumps(r, allow_nan=True) for r in df.to_dict("records")))
    records = []
    for i, row in df.iterrows():
        record = RunRecord(
            status=row["status"], family=row["family"], budget=row["budget"], lr=row["lr"], bsz=row["bsz"],
            study=row["study"], trial=int(row["trial"]), loss=row["loss"], bpb=row["bpb"],
            lr_box=(row["lr_min"], row["lr_max"]), bsz_box=(row["bsz_min"], row["bsz_max"]),
            downstream={t: row[f"eval_{t}"] for t in ("hellaswag", "arc_easy", "piqa")
                        if np.isfinite(row[f"eval_{t}"])},
            metrics={"eval_units": 1000, "wall_time": 3.0})
        record.write(tmp_path / "sweep" / f"{i}" / "record.json")
        records.append(record.to_dict())
    (tmp_path / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    reference = validate_results(df)
    columns = ["status", "family", "budget", "lr", "bsz", "loss", "bpb", "lr_min", "bsz_max", "usable", "eval_piqa"]
    for source in ("runs.csv", "runs.parquet", "runs.jsonl", "records.jsonl", "sweep"):
        table = load_results(tmp_path / source).sort_values("trial").reset_index(drop=True)
        pd.testing.assert_frame_equal(table[columns], reference[columns], check_dtype=False, obj=source)
    isoflop = isoflop_curves(load_results(tmp_path / "sweep"), n_boot=10)
    assert "eval_units" not in set(isoflop["metric"])


def _record(row: pd.Series) -> RunRecord:
    return RunRecord(status=row["status"], family=row["family"], budget=row["budget"], lr=row["lr"], bsz=row["bsz"],
                     study=row["study"], trial=int(row["trial"]), loss=row["loss"], bpb=row["bpb"],
                     lr_box=(row["lr_min"], row["lr_max"]), bsz_box=(row["bsz_min"], row["bsz_max"]))


def test_a_study_folder_is_read_through_its_ledger(tmp_path):
    """The layout `python sweep.py -m` leaves.

    outputs/sweeps/<study>/: ledger.sqlite, <trial>/record.json, mlartifacts/ (MLflow's copies).
    """
    df = synthetic_sweep("aunet2", design=SweepDesign(budgets=(1e11, 3e11, 1e12), trials=6), seed=16,
                         study="mystudy")
    folder = tmp_path / "outputs" / "sweeps" / "mystudy"
    ledger = Ledger(folder / "ledger.sqlite")
    ledger.bind(StudyConfig(name="mystudy", budgets=[1e11, 3e11, 1e12]))
    trials = [Trial("aunet2", row["budget"], int(row["trial"]), row["lr"], int(row["bsz"]))
              for _, row in df.iterrows()]
    ledger.add(trials)
    for trial, (_, row) in zip(trials, df.iterrows()):
        if row["status"] == "failed":  # a crash before any record: the ledger alone knows about it
            ledger.mark(trial.key, "failed", error="node failure")
            continue
        record = _record(row)
        ledger.mark(trial.key, row["status"], record=record.to_dict())
        record.write(folder / trial.key / "record.json")
        record.write(folder / "mlartifacts" / "aunet" / f"{trial.index}" / "artifacts" / "record.json")
    table = load_results(folder)
    assert len(table) == len(df) and (table["study"] == "mystudy").all()
    assert table["status"].value_counts().to_dict() == df["status"].value_counts().to_dict()
    assert len(load_results(folder / "ledger.sqlite")) == len(load_results(tmp_path / "outputs" / "sweeps"))
    (folder / "ledger.sqlite").unlink()  # without the ledger: the trials' records, not MLflow's copies
    assert len(load_results(folder)) == int((df["status"] != "failed").sum())
    ledger = Ledger(folder / "ledger.sqlite")
    ledger.bind(StudyConfig(name="mystudy", budgets=[1e11, 3e11, 1e12]))
    ledger.add(trials)
    for trial, (_, row) in zip(trials, df.iterrows()):
        ledger.mark(trial.key, row["status"], record=None if row["status"] == "failed" else _record(row).to_dict())
    done = subprocess.run([sys.executable, "-m", "analysis", "fit", "mystudy", "--out", "laws"], cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert HyperLaws.from_file(tmp_path / "laws" / "aunet2_band.json").units == "bytes"
    assert "no bowl law" in done.stderr and f"with {BOWL_MIN_RUNS} or more finished runs" in done.stderr  # 6 trials: band only


def test_full_analysis_of_a_study_runs_in_seconds():
    import time

    df = synthetic_study(seed=1)
    start = time.process_time()  # CPU time: other jobs on the machine do not count
    result = analyse(df, n_boot=1000)
    assert time.process_time() - start < 10
    assert set(result.laws) == {"aunet2", "aunet3", "transformer_bpe"}
    assert all(set(fits) == {"band", "bowl"} for fits in result.laws.values())


# --------------------------------------------------------------------------- report and CLI


@pytest.fixture(scope="module")
def small_study(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("study") / "runs.csv"
    design = SweepDesign(budgets=tuple(np.geomspace(1e18, 1e20, 4)), trials=16)
    pd.concat([synthetic_sweep("aunet2", design=design, seed=20),
               synthetic_sweep("transformer_bpe", design=design, seed=21)]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("fmt", ["md", pytest.param("html", marks=pytest.mark.slow)])
def test_report_writes_figures_laws_and_tables(small_study, tmp_path, fmt):
    path = write_report(small_study, tmp_path, fmt=fmt, n_boot=100, targets=[1e22])
    text = path.read_text()
    figures = sorted((tmp_path / "figures").iterdir())
    stems = {p.stem for p in figures}
    assert stems == {"laws_aunet2", "laws_transformer_bpe", "landscape_aunet2", "landscape_transformer_bpe",
                     "loss_vs_compute", "isoflop"}
    assert all((tmp_path / "figures" / f"{stem}{ext}").stat().st_size > 1000
               for stem in stems for ext in (".png", ".pdf"))
    for png in (p for p in figures if p.suffix == ".png"):
        assert str(png.relative_to(tmp_path)) in text
    for name in ("aunet2_band", "aunet2_bowl", "transformer_bpe_band", "transformer_bpe_bowl"):
        card = LawCard.read(tmp_path / "laws" / f"{name}.json")
        lo, hi = card.lr.exponent_ci  # an exponent the data do not identify is never shown as a number
        shown = f"{card.lr.exponent:.3f}" if exponent_identified((lo, hi)) else f"not identified ([{lo:.2g}, {hi:.2g}]"
        assert shown in text
    assert "Band against bowl" in text and "paper (App. D)" in text and "Extrapolation" in text
    assert "At equal compute" in text
    curves = _analysis(small_study, n_boot=100).isoflop.query("metric == 'bpb'")
    for budget, at in curves.groupby("budget") if fmt == "md" else ():  # side by side: ahead is the lower bpb
        ahead = at.loc[at["value"].idxmin(), "family"]
        section = text.split("At equal compute")[1]
        line = next(row for row in section.splitlines() if row.startswith(f"| {budget:.3g} |"))
        assert line.split("|")[-4].strip() == ahead, line
    if fmt == "html":
        assert text.startswith("<!doctype html>") and "<table>" in text


def _analysis(source, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return analyse(load_results(source), **options)


def test_extrapolate_cli_prints_the_recipe(small_study, capsys):
    assert main(["extrapolate", "--family", "aunet2", "--budget", "1e22", "--results", str(small_study),
                 "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    result = _analysis(small_study, families=["aunet2"], n_boot=200)
    expected = extrapolate(result, "aunet2", 1e22)
    assert out.startswith("aunet2 at C = 1e+22 FLOPs (bowl law, 95% intervals)")
    for quantity in ("LR", "BSZ", "loss", "bpb"):
        assert str(getattr(expected, quantity.lower())) in lines[quantity]
    law = result.law("aunet2")
    assert expected.lr.lo < expected.lr.value < expected.lr.hi
    assert expected.lr.value == pytest.approx(law.lr.coef * 1e22**law.lr.exponent)
    assert expected.bpb.value == pytest.approx(float(result.loss["aunet2"].predict(1e22)[0][0]))
    assert " ".join(expected.command_line()) in out


@pytest.fixture(scope="module")
def bpe_recipe(small_study):
    return extrapolate(_analysis(small_study, families=["transformer_bpe"], n_boot=100), "transformer_bpe", 3e21,
                       estimator="band")


def test_extrapolation_follows_the_ladder(small_study, bpe_recipe):
    law = _analysis(small_study, families=["transformer_bpe"], n_boot=100).law("transformer_bpe", "band")
    # At the sweep's own ratio (2.0 here), sequence, vocabulary and bytes per token: the run the law measured.
    assert bpe_recipe.ratio == 2.0 and bpe_recipe.ratio_source == "the study's own"
    regime = bpe_recipe.card.regime
    assert regime.seq_lens == (2048,) and regime.vocab_sizes == (128256,) and regime.bytes_per_unit == (4.56, 4.56)
    assert bpe_recipe.plan == plan("transformer_bpe", 3e21, 2.0, laws=bpe_recipe.card.hyper_laws(), seq_len=2048,
                                   vocab_size=128256, bpe_bytes_per_token=4.56)
    assert not bpe_recipe.verdict.has("regime")
    assert bpe_recipe.card.hyper_laws().lr == law.hyper_laws().lr
    assert bpe_recipe.plan.lr == pytest.approx(bpe_recipe.lr.value)
    assert abs(bpe_recipe.plan.bsz - bpe_recipe.bsz.value) <= bpe_recipe.plan.model.seq_len / 2
    steps = bpe_recipe.steps
    assert steps.value == bpe_recipe.plan.steps and steps.lo < steps.value < steps.hi


def test_extrapolate_cli_writes_yaml_overrides(small_study, bpe_recipe, tmp_path):
    target = tmp_path / "override.yaml"
    assert main(["extrapolate", str(small_study), "--family", "transformer_bpe", "--budget", "3e21",
                 "--bootstrap", "100", "--estimator", "band", "--format", "yaml", "--out", str(target), "--force"]) == 0
    text = target.read_text()
    assert text.startswith("# @package _global_\n# transformer_bpe at C = 3e+21 FLOPs, band law")
    overrides = yaml.safe_load(text)
    assert overrides["budget"] == 3e21 and overrides["family"] == "transformer_bpe"
    assert overrides["optim"]["lr"] == pytest.approx(bpe_recipe.lr.value, rel=1e-3)
    assert overrides["bsz"] == bpe_recipe.plan.bsz and overrides["steps"] == bpe_recipe.plan.steps
    assert overrides["model"]["dims"] == bpe_recipe.plan.model.dims


def test_overrides_compose_into_the_training_config(bpe_recipe, tmp_path):
    assert bpe_recipe.plan is not None  # the recipe comes with its ladder plan
    from hydra import compose, initialize_config_dir

    from aunet.train import TrainConfig

    group = tmp_path / "extra" / "recipe"  # the YAML as a config file of a group on the search path
    group.mkdir(parents=True)
    (group / "bpe.yaml").write_text(bpe_recipe.yaml())
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        pasted = compose("train", overrides=[*bpe_recipe.command_line(), f"output_dir={tmp_path}"])
        from_file = compose("train", overrides=[f"hydra.searchpath=[file://{tmp_path / 'extra'}]", "+recipe=bpe",
                                                f"output_dir={tmp_path}"])
    for cfg in (pasted, from_file):
        train = TrainConfig.from_hydra(cfg)
        assert train.model == bpe_recipe.plan.model
        assert (train.bsz, train.steps, train.budget) == (bpe_recipe.plan.bsz, bpe_recipe.plan.steps, 3e21)
        assert train.optim.lr == pytest.approx(bpe_recipe.lr.value, rel=1e-3)


def test_cli_fit_writes_laws_and_errors_cleanly(small_study, tmp_path, capsys):
    assert main(["fit", str(small_study), "--out", str(tmp_path), "--bootstrap", "50"]) == 0
    assert HyperLaws.from_file(tmp_path / "aunet2_bowl.json").units == "bytes"
    assert HyperLaws.from_file(tmp_path / "transformer_bpe_band.json").units == "tokens"
    assert "BSZ =" in capsys.readouterr().out
    assert main(["extrapolate", "--family", "mamba_bytes", "--budget", "1e22", "--results", str(small_study)]) == 2
    assert "no runs of family 'mamba_bytes'" in capsys.readouterr().err


def test_python_dash_m_analysis_fits_a_study_from_the_default_results(small_study, tmp_path):
    env = {"AUNET_RESULTS": str(small_study), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "analysis", "fit", "synthetic", "--family", "aunet2", "--bootstrap",
                           "50", "--out", str(tmp_path), "--law-out", str(tmp_path / "law.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    law = HyperLaws.from_file(tmp_path / "law.json")
    assert law == HyperLaws.from_file(tmp_path / "aunet2_bowl.json")
    assert f"{law.lr.coef:.4g}·C^{law.lr.exponent:.4f}" in done.stdout
    done = subprocess.run([sys.executable, "-m", "analysis", "fit", "no_such_study"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no runs of study 'no_such_study'" in done.stderr


def test_extrapolate_refuses_what_the_data_do_not_support(small_study, tmp_path, capsys):
    args = ["extrapolate", str(small_study), "--family", "aunet2", "--bootstrap", "100"]
    assert main([*args, "--budget", "1e25"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("refused: aunet2: not usable at C = 1e+25: ") and err.count("\n") == 1
    assert "decades past the largest fitted budget 1e+20 (at most 100x" in err and "--force" in err
    out = tmp_path / "forced.yaml"
    assert main([*args, "--budget", "1e25", "--force", "--format", "yaml", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "# @package _global_" and lines[2].startswith("# verdict: not usable at C = 1e+25: ")
    assert lines[3].startswith(f"# source: {small_study} (sha256 ") and lines[4].startswith("# fitted: 4 budgets")
    assert any(line.startswith("#   LR: ") and "(x" in line for line in lines)
    assert main([*args, "--budget", "1e22", "--max-extrapolation", "10"]) == 3  # the user's own limit
    assert "at most 10x" in capsys.readouterr().err
    for bad, said in ((["--max-extrapolation", "1"], "must be a number above 1"),
                      (["--max-extrapolation", "lots"], "must be a number above 1"),
                      (["--budget", "0"], "must be a positive number of FLOPs")):
        with pytest.raises(SystemExit) as exit_:
            main([*args, *(["--budget", "1e22"] if "--budget" not in bad else []), *bad])
        assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_report_leads_with_what_the_study_supports(small_study, tmp_path):
    from aunet.verdict import Limits

    text = write_report(small_study, tmp_path, n_boot=100, limits=Limits(max_extrapolation=30)).read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## What this study supports"
    section = text.split("## What this study supports")[1].split("\n## ")[0]
    for family in ("aunet2", "transformer_bpe"):
        assert f"### {family} (bowl law): " in section
    assert "Fitted on 4 budgets from 1e+18 to 1e+20 FLOPs (2 decades)" in section and "Usable range: " in section
    assert "At 1e+22 FLOPs (100x the largest budget): **not usable**" in section  # past the limit given
    assert "decades past the largest fitted budget 1e+20 (at most 30x" in section
    # At 10x this clean sweep's law is usable: its recipe is shown, every value with its interval.
    at_10x = section.split("### aunet2 (bowl law)")[1].split("At 1e+21 FLOPs (10x the largest budget): **")[1]
    assert at_10x.startswith("usable**")
    recipe = at_10x.split("At 1e+22")[0]
    assert "| LR | " in recipe and "| BSZ | " in recipe and "(x" in recipe
    # The extrapolation table gives no numbers where the verdict refuses.
    table = text.split("## Extrapolation")[1].split("\n## ")[0]
    refused = next(row for row in table.splitlines() if row.startswith("| aunet2 | 1e+22 |"))
    assert "| not usable | - | - |" in refused
    usable = next(row for row in table.splitlines() if row.startswith("| aunet2 | 1e+21 |"))
    assert "| usable | " in usable and "(x" in usable


def test_fit_and_report_write_into_the_study_folder(small_study, capsys):
    folder = small_study.parent
    assert main(["fit", str(small_study), "--bootstrap", "50"]) == 0
    assert LawCard.read(folder / "laws" / "aunet2_bowl.json").family == "aunet2"
    assert main(["report", str(small_study), "--bootstrap", "50"]) == 0
    assert (folder / "report" / "report.md").is_file()
    assert f"report written to {folder / 'report' / 'report.md'}" in capsys.readouterr().out
