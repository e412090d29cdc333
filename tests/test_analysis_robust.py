"""The analysis on anyone's sweep (issue 13), the minimum study (issue 12), intervals that can tell 95% from 90%
and band weighting (issue 18), a held-out budget and seed noise (issue 10)."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.bootstrap import law_from_estimates as _law_from_estimates
from analysis.extrapolate import extrapolate
from analysis.fits import (
    analyse,
    average_seeds,
    fit_hyper_laws,
    fit_loss_curve,
    fit_power_law,
    seed_noise,
)
from analysis.holdout import validate_holdout
from analysis.load import FAMILY, AnalysisWarning, compute_label, load_results, validate_results
from analysis.notices import SeedWarning
from analysis.report import write_report
from analysis.synthetic import SweepDesign, SyntheticTruth, default_truth, synthetic_sweep
from aunet.laws import HyperLaws, PowerLaw

FIVE = SweepDesign(budgets=tuple(np.geomspace(1e18, 1e20, 5)), trials=16)


def quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return call(*args, **kwargs)


# --------------------------------------------------------------------------- diverged runs stored as finished


def test_divergences_stored_as_finished_are_set_aside_counted_and_never_fitted():
    design = SweepDesign(budgets=FIVE.budgets, trials=16, diverged_as_finished=0.15)
    df = synthetic_sweep("aunet2", design=design, seed=1)
    hidden = df["bpb"] > 1.9 * df.groupby("budget")["bpb"].transform("min")  # the 2-3x runs the generator planted
    assert (hidden & (df["status"] == "finished")).sum() == 2 * 5  # 15% of 16 per budget
    with pytest.warns(AnalysisWarning, match=r"10 finished run\(s\) have a loss above 1.5x the best"):
        table = validate_results(df)
    assert table["set_aside"].tolist() == hidden.tolist()
    assert not table.loc[hidden, "usable"].any()
    clean = quiet(fit_hyper_laws, df[~hidden], "aunet2", estimator="bowl", n_boot=50)
    dirty = quiet(fit_hyper_laws, table, "aunet2", estimator="bowl", n_boot=50)
    assert dirty.lr.exponent == pytest.approx(clean.lr.exponent, rel=1e-12)
    assert (dirty.budgets["set_aside"] == 2).all()
    kept = quiet(validate_results, df, diverged_above=None)  # the rule is configurable, and can be switched off
    assert kept.loc[hidden, "usable"].all() and not kept["set_aside"].any()
    assert quiet(validate_results, df, diverged_above=3.5)["set_aside"].sum() == 0
    with pytest.raises(ValueError, match="diverged_above 0.9 must exceed 1"):
        validate_results(df, diverged_above=0.9)


def test_report_counts_the_runs_set_aside(tmp_path):
    df = synthetic_sweep("aunet2", design=SweepDesign(budgets=FIVE.budgets, trials=16, diverged_as_finished=0.15),
                         seed=2)
    text = quiet(write_report, df, tmp_path, n_boot=20, targets=[1e21]).read_text()
    header = next(line for line in text.splitlines() if line.startswith(f"| {FAMILY} | diverged |"))
    assert header.rstrip(" |").endswith("set aside as diverged")
    row = text.splitlines()[text.splitlines().index(header) + 2]
    assert row.rstrip(" |").endswith("| 10")  # the last cell counts the runs set aside


# --------------------------------------------------------------------------- intervals


def test_intervals_never_narrow_below_the_plain_bootstrap():
    """Budgets exactly on the law (dispersion 0): the interval is the plain bootstrap's, not a point."""
    budgets = np.geomspace(1e18, 1e20, 4)
    sd = np.array([0.05, 0.1, 0.05, 0.1])
    rng = np.random.default_rng(0)
    logs = np.log(0.02 * budgets**-0.17)
    est = np.exp(logs + np.vstack([np.zeros(4), sd * rng.standard_normal((4000, 4))]))
    law = _law_from_estimates("lr", budgets, est, np.ones(4), rng, 0.95)
    assert law.dispersion < 1e-9
    x = np.log(budgets)
    plain_se = math.sqrt(float((((x - x.mean()) / ((x - x.mean()) ** 2).sum()) ** 2 * sd**2).sum()))
    half_width = (law.exponent_ci[1] - law.exponent_ci[0]) / 2
    assert 1.96 * plain_se * 0.95 < half_width < 1.96 * plain_se * 1.08


def test_the_law_scales_the_bootstrap_by_the_dispersion_only_when_it_exceeds_one():
    """Budgets scattering exactly as their bootstrap says (dispersion 1): the plain propagated interval, not a
    Student-t mixture over the dispersion (at 1-3 degrees of freedom that mixture over-covered every design);
    twice as much scatter: twice as wide."""
    budgets = np.geomspace(1e18, 1e20, 3)
    sd = np.array([0.05, 0.1, 0.05])
    rng = np.random.default_rng(1)
    draws = sd * rng.standard_normal((4000, 3))
    on_law = np.log(0.02 * budgets**-0.17)
    off_law = np.array([1.0, -2.0, 1.0]) * sd  # orthogonal to the line: all of it is residual
    x = np.log(budgets)
    plain_se = math.sqrt(float((((x - x.mean()) / ((x - x.mean()) ** 2).sum()) ** 2 * sd**2).sum()))
    unit = _law_from_estimates("lr", budgets, np.exp(on_law + np.vstack([off_law, draws])), np.ones(3), rng, 0.95)
    for scatter in (1.0, 2.0):
        est = np.exp(on_law + np.vstack([off_law * scatter / unit.dispersion, draws]))
        law = _law_from_estimates("lr", budgets, est, np.ones(3), rng, 0.95)
        assert law.dispersion == pytest.approx(scatter, rel=1e-9)
        half_width = (law.exponent_ci[1] - law.exponent_ci[0]) / 2
        assert 1.96 * plain_se * scatter * 0.93 < half_width < 1.96 * plain_se * scatter * 1.08


def _on_the_law(design: SweepDesign, seed: int) -> pd.DataFrame:
    """One budget's runs copied to three budgets, LR and BSZ moved along the true law: every budget's
    optimum sits exactly on the law (residuals 0), while each budget's runs keep their noise."""
    truth = default_truth("aunet2").laws
    first = synthetic_sweep("aunet2", design=replace(design, budgets=(1e18,)), seed=seed)
    copies = []
    for i, budget in enumerate((1e18, 1e19, 1e20)):
        lr, bsz = truth.lr(budget) / truth.lr(1e18), truth.bsz(budget) / truth.bsz(1e18)
        copies.append(first.assign(
            budget=budget, flops=budget, trial=first["trial"] + 1000 * i, lr=first["lr"] * lr,
            lr_min=first["lr_min"] * lr, lr_max=first["lr_max"] * lr, bsz=first["bsz"] * bsz,
            bsz_bytes=first["bsz_bytes"] * bsz, bsz_min=first["bsz_min"] * bsz, bsz_max=first["bsz_max"] * bsz))
    return pd.concat(copies, ignore_index=True)


@pytest.mark.parametrize("estimator", ["band", "bowl"])
@pytest.mark.parametrize("design", [SweepDesign(trials=24), SweepDesign(grid=(12, 10))], ids=["sobol", "grid"])
def test_budgets_exactly_on_the_law_never_collapse_the_interval(design, estimator):
    """The real-sweep failure: 1 degree of freedom showing no scatter must not narrow the interval below
    what each budget's own noise implies: the budgets' bootstrap intervals propagated to the slope. A bowl's
    replicates can be skewed (its per-budget interval reaching far on one side), so the floor uses each budget's
    narrower half-interval and the ceiling its full interval; with no floor the width would be 0."""
    fit = quiet(fit_hyper_laws, _on_the_law(design, seed=3), "aunet2", estimator=estimator, n_boot=400)
    x = np.log(fit.budgets["budget"].to_numpy())
    slope_map = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    for law in (fit.lr, fit.bsz):
        t = law.target
        assert law.dispersion < 1e-6
        lo, opt, hi = (np.log(fit.budgets[f"{t}_{k}"].to_numpy()) for k in ("lo", "opt", "hi"))
        implied = [1.96 * math.sqrt(float((slope_map**2 * (half / 1.96) ** 2).sum()))
                   for half in (np.minimum(opt - lo, hi - opt), (hi - lo) / 2)]
        half_width = (law.exponent_ci[1] - law.exponent_ci[0]) / 2
        assert 0.8 * implied[0] < half_width < 1.25 * implied[1], (t, half_width, implied)


def test_the_band_on_a_fixed_grid_redraws_noise_instead_of_resampling_grid_points():
    """On a fixed grid the next sweep runs the same points: the band's bootstrap spread must match its real
    spread over noise draws (resampling the grid points made it about 2x too wide)."""
    design = SweepDesign(budgets=(1e18, 1e19, 1e20), grid=(12, 10))
    optima, spreads = [], []
    for seed in range(20):
        fit = quiet(fit_hyper_laws, synthetic_sweep("aunet2", design=design, seed=seed), "aunet2", n_boot=200,
                    seed=seed)
        b = fit.budgets
        optima.append(np.log(b[["lr_opt", "bsz_opt"]].to_numpy()))
        spreads.append(np.log(b[["lr_hi", "bsz_hi"]].to_numpy() / b[["lr_lo", "bsz_lo"]].to_numpy()) / (2 * 1.96))
    ratio = float(np.median(np.median(spreads, axis=0) / np.std(optima, axis=0)))
    assert 0.8 < ratio < 1.6, ratio


def test_the_bowl_bootstrap_keeps_the_design_and_matches_the_real_spread():
    """A budget's bowl optimum: its bootstrap spread must match its spread over seeds on a 24-run Sobol design
    (resampling the runs made it about 1.8x too wide: duplicated runs leave the quadratic ~15 points)."""
    design = SweepDesign(budgets=(1e18, 1e19, 1e20))
    optima, spreads = [], []
    for seed in range(40):
        fit = quiet(fit_hyper_laws, synthetic_sweep("aunet2", design=design, seed=seed), "aunet2", estimator="bowl",
                    n_boot=200, seed=seed)
        b = fit.budgets
        optima.append(np.log(b[["lr_opt", "bsz_opt"]].to_numpy()))
        spreads.append(np.log(b[["lr_hi", "bsz_hi"]].to_numpy() / b[["lr_lo", "bsz_lo"]].to_numpy()) / (2 * 1.96))
    q1, q3 = np.quantile(optima, [0.25, 0.75], axis=0)
    ratio = float(np.median(np.median(spreads, axis=0) / ((q3 - q1) / 1.349)))  # robust: bowl optima have tails
    assert 0.75 < ratio < 1.3, ratio


def test_power_law_intervals_cover_95_percent_not_90():
    """1,000 classical fits: binomial sd 0.7%, so 0.93-0.97 tells 95% (pass) from 90% (fail)."""
    compute = np.geomspace(1e18, 1e21, 5)
    rng = np.random.default_rng(0)
    hits = []
    for seed in range(1000):
        values = 3.0 * compute**-0.2 * np.exp(0.1 * rng.standard_normal(5))
        lo, hi = fit_power_law(compute, values, seed=seed).exponent_ci
        hits.append(lo <= -0.2 <= hi)
    assert 0.93 <= np.mean(hits) <= 0.97, np.mean(hits)


def test_band_counts_weight_the_law():
    """The band law is the least-squares line through the budgets' centroids weighted by their band counts
    (the paper fits every near-optimal run); here unweighted it would differ by 0.05 in the exponent."""
    budgets = np.geomspace(1e18, 1e21, 4)
    counts = [1, 6, 1, 6]
    offsets = [0.6, 0.0, -0.6, 0.0]  # centroids off the law at the budgets with one near-optimal run
    rows = []
    for budget, count, offset in zip(budgets, counts, offsets):
        centre = 0.02 * budget**-0.17 * math.exp(offset)
        for k in range(count):  # in the band (loss 1.0), spread around the centre: their geometric mean is it
            rows.append({"budget": budget, "lr": centre * math.exp(0.1 * (k - (count - 1) / 2)), "loss": 1.0})
        rows += [{"budget": budget, "lr": centre * 3, "loss": 1.1}, {"budget": budget, "lr": centre / 3, "loss": 1.1}]
    df = pd.DataFrame(rows).assign(status="finished", family="aunet2", units="bytes", bsz=1e5,
                                   trial=lambda d: range(len(d)))
    fit = quiet(fit_hyper_laws, df, "aunet2", n_boot=20)
    centroids = [0.02 * b**-0.17 * math.exp(o) for b, o in zip(budgets, offsets)]
    weighted = np.polyfit(np.log(budgets), np.log(centroids), 1, w=np.sqrt(counts))[0]
    plain = np.polyfit(np.log(budgets), np.log(centroids), 1)[0]
    assert fit.budgets["near_optimal"].tolist() == counts
    assert fit.lr.exponent == pytest.approx(weighted, abs=1e-9)
    assert abs(weighted - plain) > 0.05  # the test can tell the two apart


def test_a_three_budget_study_always_gets_a_report(tmp_path, capsys):
    """One degree of freedom: the interval may reach infinity, and says so, instead of an OverflowError."""
    law = fit_power_law([1e10, 1e11, 1e12], [1.0, 1e6, 1e-3])
    assert law.coef_ci[1] == math.inf or law.coef_ci[0] == 0.0
    assert law.exponent_ci[0] < law.exponent < law.exponent_ci[1]
    study = synthetic_sweep("aunet2", design=SweepDesign(budgets=(1e18, 1e19, 1e20), trials=8), seed=3)
    study.loc[study["budget"] == 1e19, "lr"] *= 30  # a middle budget far off the law: a law that knows little
    study.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "laws"), "--bootstrap", "200"]) == 0
    assert main(["report", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "report"), "--bootstrap", "200"]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| aunet2 | band | bytes |" in report


# --------------------------------------------------------------------------- families, units, groups, boxes


def test_extrapolate_falls_back_to_the_laws_for_a_family_the_ladder_does_not_know(capsys):
    df = synthetic_sweep("aunet2", design=FIVE, seed=4).assign(family="chinchilla_dense")
    result = quiet(analyse, df, n_boot=50)
    recipe = extrapolate(result, "chinchilla_dense", 1e22)
    assert recipe.plan is None and recipe.steps is None
    assert "ladder knows no family 'chinchilla_dense'" in recipe.note
    assert recipe.lr.lo < recipe.lr.value < recipe.lr.hi and recipe.loss.lo < recipe.loss.value < recipe.loss.hi
    assert recipe.command_line()[0] == "++family=chinchilla_dense"
    assert "ladder knows no family" in recipe.text()


def test_units_are_never_guessed():
    df = synthetic_sweep("transformer_bpe", design=FIVE, seed=5)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['units'\]"):
        validate_results(df.drop(columns=["units"]))
    finished = df.index[df["status"] == "finished"]
    with pytest.raises(ValueError, match=rf"rows {finished[0]} have no 'units'"):
        validate_results(df.assign(units=lambda d: d["units"].where(d.index != finished[0], None)))


def test_token_losses_without_bytes_per_unit_stay_per_token(tmp_path):
    df = synthetic_sweep("transformer_bpe", design=FIVE, seed=6).drop(columns=["bytes_per_unit", "bpb",
                                                                                "bsz_bytes"])
    table = quiet(validate_results, df)
    assert table["bpb"].isna().all()
    curve = quiet(fit_loss_curve, table, "transformer_bpe", n_boot=50)
    assert (curve.metric, curve.label) == ("loss", "nats per token")
    assert curve.best.tolist() == table[table["usable"]].groupby("budget")["loss"].min().tolist()
    result = quiet(analyse, table, n_boot=50)
    recipe = extrapolate(result, "transformer_bpe", 1e21)
    assert recipe.bpb is None and ("loss", str(recipe.loss), "nats per token") in recipe.rows()
    assert set(result.isoflop["metric"]) >= {"loss"} and "bpb" not in set(result.isoflop["metric"])
    report = write_report(result, tmp_path, targets=[1e21]).read_text()
    assert "| transformer_bpe | nats per token |" in report
    with pytest.raises(ValueError, match="needs every run's bytes_per_unit"):
        fit_hyper_laws(table, "transformer_bpe", bsz_in="bytes")


def _iso_flop_table() -> pd.DataFrame:
    """Two model sizes at every budget whose optimal LRs differ 4x: an iso-FLOP design."""
    parts = []
    for name, lr_coef, seed in (("small", 6.6, 7), ("large", 6.6 / 4, 8)):
        truth = SyntheticTruth(HyperLaws(PowerLaw(0.66, 0.321), PowerLaw(lr_coef, -0.176), "bytes"))
        part = synthetic_sweep("aunet2", design=FIVE, truth=truth, seed=seed)
        parts.append(part.assign(model=name, params=part["params"] * (2 if name == "large" else 1),
                                 trial=part["trial"] + (1000 if name == "large" else 0)))
    return pd.concat(parts, ignore_index=True)


def test_runs_are_grouped_by_every_run_defining_column():
    df = _iso_flop_table()
    fit = quiet(fit_hyper_laws, df, "aunet2", estimator="bowl", n_boot=50)
    assert len(fit.budgets) == 2 * len(FIVE.budgets)
    small = fit.budgets[fit.budgets["group"].str.startswith("model=small")]
    large = fit.budgets[fit.budgets["group"].str.startswith("model=large")]
    assert len(small) == len(large) == len(FIVE.budgets)
    ratio = small["lr_opt"].to_numpy() / large["lr_opt"].to_numpy()
    assert np.all((ratio > 3) & (ratio < 5.5)), ratio  # each group's own optimum, not a blend of the two
    explicit = quiet(fit_hyper_laws, df.drop(columns=["model", "params"]).assign(group=df["model"]), "aunet2",
                     estimator="bowl", n_boot=50)
    assert sorted(set(explicit.budgets["group"])) == ["large", "small"]
    np.testing.assert_allclose(explicit.budgets["lr_opt"], fit.budgets["lr_opt"], rtol=1e-12)


def test_a_band_that_fills_the_box_is_flagged():
    design = SweepDesign(budgets=FIVE.budgets, trials=16, box=1.05, prior_offset=1.0)  # a box 10% wide: flat loss
    with pytest.warns(AnalysisWarning, match=r"1\d of 1\d finished runs are within 1.00% of the best.*too narrow"):
        fit = fit_hyper_laws(synthetic_sweep("aunet2", design=design, seed=9), "aunet2", n_boot=20)
    assert fit.budgets["edge"].str.contains("band fills box").all()


def test_runs_an_adaptive_sampler_placed_near_the_optimum_do_not_fill_the_band():
    """The band-fills-box share estimates how much of the box is flat: only space-filling runs can say."""
    design = SweepDesign(budgets=FIVE.budgets[:3], trials=16)
    table = synthetic_sweep("aunet2", design=design, seed=3)
    table["phase"] = "qmc"
    finished = table[table["status"] == "finished"]
    best = finished.loc[finished.groupby("budget")["loss"].idxmin()]
    clones = pd.concat([best] * 20, ignore_index=True)  # TPE's trials crowd the optimum
    clones["lr"] *= np.tile(np.linspace(0.97, 1.03, 20), len(best))
    clones["trial"] = np.arange(len(clones)) + 1000
    clones["phase"] = "adaptive"
    crowded = pd.concat([table, clones], ignore_index=True)
    fit = quiet(fit_hyper_laws, crowded, "aunet2", n_boot=20)
    assert not fit.budgets["edge"].str.contains("band fills box").any()
    blind = quiet(fit_hyper_laws, crowded.drop(columns="phase"), "aunet2", n_boot=20)  # no phase: every run counts
    assert blind.budgets["edge"].str.contains("band fills box").all()


def test_the_box_covers_the_runs_snapped_below_it():
    """Batches are snapped to whole sequences after sampling: a run below the recorded box widens the box,
    and the edge warning speaks of that box."""
    df = synthetic_sweep("aunet2", design=SweepDesign(budgets=FIVE.budgets, trials=16, prior_offset=1.0), seed=10)
    first = df["budget"] == df["budget"].min()
    smallest = df.loc[first, "bsz"].idxmin()
    df.loc[first, "bsz_min"] = df.loc[smallest, "bsz"] * 1.14  # the recorded box starts above the snapped run
    df.loc[smallest, ["loss", "bpb"]] = df.loc[first & (df["status"] == "finished"), ["loss", "bpb"]].min() * 0.99
    df.loc[smallest, "status"] = "finished"
    with pytest.warns(AnalysisWarning, match=r"band's optimal BSZ [\d.e+]+ sits on the lower edge of the search box"):
        fit = fit_hyper_laws(df, "aunet2", n_boot=20)
    row = fit.budgets.iloc[0]
    assert row["bsz_min"] == df.loc[smallest, "bsz"] == row["best_bsz"]
    assert "BSZ lower" in row["edge"]


def test_fit_labels_the_bowl_as_a_quadratic(tmp_path, capsys):
    synthetic_sweep("aunet2", design=FIVE, seed=11).to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", str(tmp_path / "runs.csv"), "--out", str(tmp_path), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "aunet2 [bowl, robust quadratic, cubic in log LR, BSZ in bytes]" in out and "[band, 1.00% band" in out
    assert "[bowl, 1.00% band" not in out


def test_an_external_family_column_may_be_spelled_arch(tmp_path):
    df = synthetic_sweep("aunet2", design=FIVE, seed=12).rename(columns={FAMILY: "arch"})
    assert (validate_results(df)[FAMILY] == "aunet2").all()
    df.to_csv(tmp_path / "theirs.csv", index=False)
    assert main(["import", str(tmp_path / "theirs.csv"), "--out", str(tmp_path / "study")]) == 0
    assert (load_results(tmp_path / "study")[FAMILY] == "aunet2").all()


# --------------------------------------------------------------------------- import


def test_import_turns_an_external_table_into_a_study(tmp_path, capsys):
    """The README's example: compute as params x tokens, its own column names, no status, no units column."""
    df = quiet(validate_results, synthetic_sweep("aunet2", design=FIVE, seed=13)).query("usable")
    tokens = df["budget"] / (6 * df["params"])  # what an export that counts 6·N·D saw at each budget
    external = pd.DataFrame({"model_family": "aunet2", "N": df["params"], "tokens": tokens,
                             "learning_rate": df["lr"], "batch": df["bsz"], "final_loss": df["loss"]})
    external.to_parquet(tmp_path / "sweep.parquet")
    study = tmp_path / "study"
    assert main(["import", str(tmp_path / "sweep.parquet"), "--out", str(study), "--units", "bytes",
                 "--column", "family=model_family", "--column", "params=N", "--column", "lr=learning_rate",
                 "--column", "bsz=batch", "--column", "loss=final_loss"]) == 0
    assert "66 runs; budgets" in (out := capsys.readouterr().out) and "analyse with: python -m analysis report" in out
    table = load_results(study)
    np.testing.assert_allclose(table["budget"], [float(f"{6 * n * d:.6g}") for n, d in zip(df["params"], tokens)])
    assert (table["status"] == "finished").all() and (table["study"] == "study").all()
    ours = quiet(fit_hyper_laws, df, "aunet2", n_boot=20)
    theirs = quiet(fit_hyper_laws, table, "aunet2", n_boot=20)
    assert theirs.lr.exponent == pytest.approx(ours.lr.exponent, rel=1e-9)
    assert main(["fit", str(study), "--out", str(tmp_path / "laws"), "--bootstrap", "20"]) == 0
    # The compute axis says how the export counted: 6·N·D here, not this toolkit's convention.
    assert compute_label(table) == "compute C (FLOPs; 6·N·D from the export's params and tokens)"
    assert compute_label(df) == "compute C (FLOPs; compute spent, head included: N x F)"


def _external(tmp_path, **changes) -> str:
    df = synthetic_sweep("aunet2", design=FIVE, seed=14)[["family", "budget", "lr", "bsz", "loss", "units", "status"]]
    for column, change in changes.items():
        df = change(df) if callable(change) else df.assign(**{column: change})
    path = tmp_path / "ext.csv"
    df.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("changes, args, message", [
    ({"drop": lambda d: d.drop(columns=["lr", "loss"])}, [], r"lacks column\(s\) \['lr', 'loss'\]"),
    ({"loss": lambda d: d.astype({"loss": object}).assign(loss=d["loss"].astype(object).where(d.index != 4, "nan?"))},
     [], r"column 'loss' must be numeric; rows 4 hold \['nan\?'\]"),
    ({"lr": lambda d: d.assign(lr=d["lr"].where(d.index != 2, 0.0))}, [], r"'lr' must be a positive.*rows 2 have"),
    ({"budget": lambda d: d.assign(budget=d["budget"].where(d.index != 6, -1e18))}, [], r"'budget'.*rows 6 have"),
    ({"units": "nats"}, [], r"unknown units \['nats'\]"),
    ({"units": lambda d: d.drop(columns=["units"])}, [], r"lacks column\(s\) \['units'\]"),
    ({"dup": lambda d: pd.concat([d, d.iloc[[7]]], ignore_index=True)}, [], r"rows 7, \d+ repeat a run"),
    ({}, ["--units", "bytes"], "has a 'units' column and --units 'bytes' was given too"),
    ({}, ["--column", "loss=final"], "names columns the table does not have"),
    ({"budget": lambda d: d.drop(columns=["budget"])}, [], "gives no compute"),
])
def test_import_refuses_bad_tables_naming_the_rows(tmp_path, capsys, changes, args, message):
    source = _external(tmp_path, **changes)
    assert main(["import", source, "--out", str(tmp_path / "study"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not (tmp_path / "study" / "results.csv").exists()  # refused before anything is written


# --------------------------------------------------------------------------- predict, then train


@pytest.fixture(scope="module")
def holdout_table() -> pd.DataFrame:
    df = synthetic_sweep("aunet2", design=FIVE, seed=15)
    top = df["budget"].max()
    truth = default_truth("aunet2").laws
    at_prediction = df[df["budget"] == top].iloc[[0]].assign(
        lr=truth.lr(top), bsz=truth.bsz(top), bsz_bytes=truth.bsz(top), status="finished", trial=999,
        at_prediction=True)
    at_prediction[["loss", "bpb"]] = df.loc[df["budget"] == top, ["loss", "bpb"]].min().to_numpy() * 1.003
    return pd.concat([df.assign(at_prediction=False), at_prediction], ignore_index=True)


def test_validate_predicts_the_held_out_budget_from_the_budgets_below(holdout_table):
    top = holdout_table["budget"].max()
    (check,) = quiet(validate_holdout, holdout_table, top, n_boot=200)
    below = holdout_table[holdout_table["budget"] < top]
    law = quiet(analyse, below, n_boot=200).law("aunet2")
    assert check.estimator == law.estimator == "bowl" and len(check.fitted_budgets) == 4
    for name in ("lr", "bsz"):
        assert check.predicted[name] == tuple(float(v[0]) for v in getattr(law, name).predict(top))
    held = quiet(validate_results, holdout_table).query("usable and budget == @top and not at_prediction")
    best = held.loc[held["loss"].idxmin()]
    near = held[held["loss"] <= best["loss"] * 1.01]
    assert check.observed["lr"] == best["lr"] and check.observed["loss"] == best["bpb"]
    assert check.observed["lr_opt"] == pytest.approx(math.exp(np.log(near["lr"]).mean()))
    assert check.inside("lr") == (check.predicted["lr"][1] <= check.observed["lr_opt"] <= check.predicted["lr"][2])
    assert check.at_prediction == pytest.approx(best["bpb"] * 1.003)
    assert check.loss_error() == pytest.approx(best["bpb"] / check.predicted["loss"][0] - 1)
    text = check.text()
    assert "run at the predicted hyperparameters: loss" in text and "+0.30% from the confirmation" in text


def test_validate_says_when_a_check_is_vacuous_and_holds_grids_to_their_bracket(holdout_table):
    top = holdout_table["budget"].max()
    (check,) = quiet(validate_holdout, holdout_table, top, n_boot=200)
    for name in ("lr", "bsz"):
        _, lo, hi = check.predicted[name]
        assert check.width(name) == pytest.approx(hi / lo)
        assert check.informative(name) == (hi / lo <= 4)
        low, high = check.bracket(name)  # the tried values next to the best run's
        tried = check.tried[name]
        assert low <= check.observed[name] <= high and low in tried and high in tried
        assert not ((tried > low) & (tried < check.observed[name])).any()
    # An interval 49 times wide "contains" anything: it is called uninformative, not inside.
    wide = dataclasses.replace(check, predicted={**check.predicted, "lr": (1e-3, 1e-3 / 7, 7e-3)})
    assert not wide.informative("lr") and wide.verdict("lr").startswith("uninformative: the interval spans x49")
    # On a x2 grid, a prediction between two grid points is held to the bracket of the best one, not to
    # the nearest point: consistent when it meets [best/2, best*2], missed when it does not.
    best = check.observed["bsz"]
    assert not check.on_grid("bsz") and check.verdict("bsz").startswith(  # Sobol: the band optimum decides
        "consistent: the band optimum is inside" if check.inside("bsz") else "MISSED")
    grid = dataclasses.replace(check, tried={**check.tried, "bsz": np.array([best / 2, best, best * 2])})
    near = dataclasses.replace(grid, predicted={**grid.predicted, "bsz": (1.4 * best, 1.3 * best, 1.5 * best)})
    assert near.verdict("bsz").startswith("consistent")
    far = dataclasses.replace(grid, predicted={**grid.predicted, "bsz": (3 * best, 2.5 * best, 3.5 * best)})
    assert far.verdict("bsz").startswith("MISSED")
    assert "(x" in check.text() and ("consistent" in check.text() or "uninformative" in check.text())


def test_validate_cli_and_its_bad_input(holdout_table, tmp_path, capsys):
    path = tmp_path / "runs.csv"
    holdout_table.to_csv(path, index=False)
    top = holdout_table["budget"].max()
    assert main(["validate", str(path), "--holdout", f"{top:g}", "--bootstrap", "100"]) == 0
    assert f"aunet2 at the held-out C = {top:.3g} (bowl law fitted on 4 budgets below" in capsys.readouterr().out
    for holdout, message in ((3e19, r"held-out budget 3e\+19 is not in the study; its budgets are"),
                             (float(np.geomspace(1e18, 1e20, 5)[2]), "2 budget\\(s\\) with finished runs below")):
        assert main(["validate", str(path), "--holdout", f"{holdout!r}"]) == 2
        assert re.search(message, capsys.readouterr().err)
    unfinished = holdout_table.assign(status=lambda d: d["status"].where(d["budget"] != top, "failed"))
    with pytest.raises(ValueError, match=r"held-out budget 1e\+20 has no finished trials"):
        validate_holdout(unfinished, top)


# --------------------------------------------------------------------------- seed noise


def _seeded(spreads: list[float]) -> pd.DataFrame:
    df = synthetic_sweep("aunet2", design=FIVE, seed=16)
    base = df[df["status"] == "finished"].iloc[[0]]
    repeats = pd.concat([base.assign(seed=s + 1, trial=900 + s, loss=base["loss"] * (1 + d), bpb=base["bpb"] * (1 + d))
                         for s, d in enumerate(spreads)])
    return pd.concat([df, repeats], ignore_index=True)


def test_seed_noise_is_measured_and_compared_with_the_band():
    noisy = quiet(validate_results, _seeded([0.0, 0.012, 0.004]))
    noise = seed_noise(noisy, tolerance=0.01)
    assert len(noise) == 1
    row = noise.iloc[0]
    losses = np.array([1.0, 1.0, 1.012, 1.004]) * noisy.loc[noisy["trial"] == 900, "loss"].iloc[0]
    assert row["seeds"] == 4 and row["spread"] == pytest.approx(0.012)
    assert row["sd"] == pytest.approx(losses.std(ddof=1) / losses.mean())
    assert row["vs_band"] == pytest.approx(1.2)
    with pytest.warns(SeedWarning, match=r"4 seeds of LR .* differ by 1.20% in loss, at least the 1.00% band"):
        result = analyse(noisy, n_boot=20)
    assert len(result.seed_noise) == 1
    quiet_result = quiet(analyse, _seeded([0.0, 0.004]), n_boot=20)
    assert quiet_result.seed_noise["vs_band"].iloc[0] == pytest.approx(0.4)
    assert not any("seed noise" in w for w in quiet_result.warnings)


def test_a_configuration_run_with_several_seeds_counts_once_at_its_mean():
    seeded = quiet(validate_results, _seeded([0.0, -0.05, 0.02]))  # one lucky seed, 5% below
    base = seeded[seeded["trial"] == 900].iloc[0]
    same = (seeded["budget"] == base["budget"]) & (seeded["lr"] == base["lr"]) & (seeded["bsz"] == base["bsz"])
    averaged = average_seeds(seeded)
    assert len(averaged) == len(seeded) - 3
    (kept,) = averaged[(averaged["budget"] == base["budget"]) & (averaged["lr"] == base["lr"])].itertuples()
    assert kept.loss == pytest.approx(seeded.loc[same, "loss"].mean()) and kept.bpb == pytest.approx(
        seeded.loc[same, "bpb"].mean())
    result = quiet(analyse, seeded, n_boot=20)
    assert len(result.results) == len(averaged) and len(result.seed_noise) == 1  # noise measured before averaging
    assert average_seeds(quiet(validate_results, synthetic_sweep("aunet2", design=FIVE, seed=16))).shape[0] == \
        len(synthetic_sweep("aunet2", design=FIVE, seed=16))  # one seed each: nothing changes


def test_synthetic_full_grid_design():
    df = synthetic_sweep("aunet2", design=SweepDesign(budgets=(1e18, 1e19), grid=(12, 10), fail_rate=0.0), seed=17)
    for _, runs in df.groupby("budget"):
        assert len(runs) == 120 and runs["lr"].round(12).nunique() == 12 and runs["bsz"].round(6).nunique() == 10
        assert runs["lr"].min() == pytest.approx(runs["lr_min"].iloc[0]) and runs["bsz"].max() == pytest.approx(
            runs["bsz_max"].iloc[0])


# --------------------------------------------------------------------------- exports as people write them


def realistic_export(seed: int = 31) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(a synthetic sweep, the same runs exported as training logs write them): tokens seen are whole
    steps of whole batches, so compute is 6·N·(steps·BSZ), one value per batch size at each nominal
    budget; the export's own column names and status spellings."""
    df = quiet(validate_results, synthetic_sweep("aunet2", design=FIVE, seed=seed))
    tokens = df["budget"] / (6 * df["params"])
    steps = np.maximum(1, np.round(tokens / df["bsz"]))
    status = df["status"].map({"finished": "completed", "diverged": "nan_loss", "failed": "crashed"})
    export = pd.DataFrame({"model": "aunet2", "n_params": df["params"], "tokens_seen": steps * df["bsz"],
                           "lr": df["lr"], "batch_tokens": df["bsz"], "eval_loss": df["loss"], "state": status})
    return df, export


def test_an_export_imports_one_budget_per_nominal_setting_with_the_same_laws(tmp_path, capsys):
    df, export = realistic_export()
    jitter = 6 * export["n_params"] * export["tokens_seen"] / df["budget"] - 1
    assert 1e-5 < jitter.abs().max() < 1e-2 and export.groupby(df["budget"])["tokens_seen"].nunique().min() > 5
    export.to_csv(tmp_path / "export.csv", index=False)
    study = tmp_path / "study"
    args = ["import", str(tmp_path / "export.csv"), "--out", str(study), "--units", "bytes", "--column", "family=model",
            "--column", "params=n_params", "--column", "tokens=tokens_seen", "--column", "bsz=batch_tokens",
            "--column", "loss=eval_loss", "--column", "status=state"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "aunet2: 5 budgets from 1e+18 to 1e+20, 16-16 runs each, compute spread absorbed up to" in out
    table = load_results(study)
    assert sorted(table["budget"].unique()) == pytest.approx(sorted(df["budget"].unique()), rel=1e-2)
    assert (table["status"] == df["status"]).all()  # completed / nan_loss / crashed read as ours
    # The laws are those of the nominal budgets (5 points, not one per batch size), and hold the truth.
    grouped, nominal = (quiet(fit_hyper_laws, t, "aunet2", estimator="bowl", n_boot=200) for t in (table, df))
    truth = default_truth("aunet2").laws
    for name in ("lr", "bsz"):
        assert len(getattr(grouped, name).budgets) == 5
        assert getattr(grouped, name).exponent == pytest.approx(getattr(nominal, name).exponent, abs=0.02)
        low, high = getattr(grouped, name).exponent_ci
        assert low <= getattr(truth, name).exponent <= high
    # Without grouping, every batch size is its own "budget", and the warning names the cause and the fix.
    with pytest.warns(AnalysisWarning, match=r"budgets hold a single run: .*steps x batch x sequence.*nominal_budget"):
        ungrouped = load_results(study, budget_tolerance=0.0)
    assert ungrouped["budget"].nunique() > 40


def test_import_maps_statuses_and_says_the_fix(tmp_path, capsys):
    _, export = realistic_export()
    export["state"] = export["state"].replace({"crashed": "zombie"})
    export.to_csv(tmp_path / "export.csv", index=False)
    base = ["import", str(tmp_path / "export.csv"), "--out", str(tmp_path / "s"), "--column", "family=model",
            "--column", "params=n_params", "--column", "tokens=tokens_seen", "--column", "bsz=batch_tokens",
            "--column", "loss=eval_loss", "--column", "status=state"]
    assert main([*base, "--units", "bytes"]) == 2
    err = capsys.readouterr().err
    assert "unknown status value(s) ['zombie']" in err and "--status zombie=failed" in err
    assert main([*base, "--units", "bytes", "--status", "zombie=dead"]) == 2
    assert "--status zombie=dead: 'dead' is not a status" in capsys.readouterr().err
    assert main([*base, "--units", "bytes", "--status", "Zombie=failed"]) == 0
    assert (load_results(tmp_path / "s")["status"] != "zombie").all()
    capsys.readouterr()
    assert main(base) == 2  # no units: the error names --units, and not the columns import derives itself
    err = capsys.readouterr().err
    assert "lacks column(s) ['units']" in err and "--units bytes|tokens" in err
    assert "'status'" not in err and "'budget'" not in err
    with pytest.raises(SystemExit):
        main([*base, "--units", "bytes", "--budget-tolerance", "-0.1"])
    assert "must be a fraction in [0, 1)" in capsys.readouterr().err


def test_a_nominal_budget_column_decides_and_may_not_have_gaps():
    df, _ = realistic_export()
    jittered = df.drop(columns="compute").assign(nominal_budget=df["budget"],
                                                 budget=df["budget"] * (1 + 0.05 * (df.index % 2)))
    table = quiet(validate_results, jittered)
    assert sorted(table["budget"].unique()) == sorted(df["budget"].map(lambda c: float(f"{c:.6g}")).unique())
    assert (table["compute"] == jittered["budget"]).all()  # each run's own compute is kept
    with pytest.raises(ValueError, match=r"'nominal_budget' has gaps or non-positive values in rows 3, 7;"):
        validate_results(jittered.assign(nominal_budget=jittered["nominal_budget"].where(
            ~jittered.index.isin([3, 7]))))
    with pytest.raises(ValueError, match=r"budget tolerance -0.5 must be a fraction in \[0, 1\)"):
        validate_results(df, budget_tolerance=-0.5)


def test_the_same_runs_give_the_same_fit_from_any_source_and_order(tmp_path):
    df = quiet(validate_results, synthetic_sweep("aunet2", design=FIVE, seed=32)).drop(columns=["usable", "set_aside"])
    df.to_csv(tmp_path / "runs.csv", index=False)
    df.sample(frac=1.0, random_state=1).to_parquet(tmp_path / "runs.parquet")
    fits = [quiet(analyse, source, n_boot=200, seed=5) for source in
            (tmp_path / "runs.csv", tmp_path / "runs.parquet", df.iloc[::-1])]
    for other in fits[1:]:
        for estimator in ("band", "bowl"):
            for name in ("lr", "bsz"):
                a, b = (getattr(f.law("aunet2", estimator), name) for f in (fits[0], other))
                assert a.exponent_ci == pytest.approx(b.exponent_ci, rel=1e-9, abs=1e-12)
        pd.testing.assert_frame_equal(fits[0].isoflop, other.isoflop, rtol=1e-9)


def test_the_bowl_finds_the_optimum_of_a_skewed_loss():
    """The synthetic loss rises faster above the best LR than below it; a bowl that is a plain quadratic
    puts every budget's optimum low, and that bias moves every prediction of the law alike."""
    truth = default_truth("aunet2")
    assert truth.skew > 0
    runs = validate_results(synthetic_sweep("aunet2", design=SweepDesign(noise=1e-6), seed=0))
    table = fit_hyper_laws(runs, "aunet2", estimator="bowl", n_boot=20).budgets
    for name in ("lr", "bsz"):
        error = np.log(table[f"{name}_opt"] / getattr(truth.laws, name)(table["budget"]))
        assert np.abs(error).max() < 0.04, name
