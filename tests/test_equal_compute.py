"""At equal compute: intervals that include the measured seed spread, and the iso-FLOP figure's axes,
chance levels and missing families."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.fits import LEVEL, analyse, isoflop_curves, seed_noise
from analysis.load import FAMILY, AnalysisWarning, load_results, validate_results
from analysis.plots import _chance_levels, plot_hyper_laws, plot_isoflop, plot_loss_curves
from analysis.report import _equal_compute
from analysis.synthetic import SweepDesign, synthetic_sweep

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "results.csv"
Z = NormalDist().inv_cdf((1 + LEVEL) / 2)
DESIGN = SweepDesign(budgets=tuple(np.geomspace(1e18, 1e20, 4)), trials=16)


def _quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return call(*args, **kwargs)


def _sweep(family: str = "aunet2", seed: int = 3) -> pd.DataFrame:
    return synthetic_sweep(family, design=DESIGN, seed=seed)


def _with_seeds(df: pd.DataFrame, spread: float) -> tuple[pd.DataFrame, float]:
    """``df`` with the first budget's best run rerun at two more seeds, its loss (and every loss-like
    metric) moved by +-``spread``: the configuration's mean stays, its relative seed sd is ``spread``."""
    finished = df[df["status"] == "finished"]
    budget = finished["budget"].min()
    base = finished.loc[[finished.loc[finished["budget"] == budget, "loss"].idxmin()]]
    reruns = [base.assign(seed=base["seed"] + k, trial=base["trial"] + 1000 * k, loss=base["loss"] * (1 + d),
                          bpb=base["bpb"] * (1 + d)) for k, d in ((1, spread), (2, -spread))]
    return pd.concat([df, *reruns], ignore_index=True), budget


def test_without_seed_reruns_the_intervals_are_the_bootstrap_ones():
    df = _quiet(validate_results, _sweep())
    curves = isoflop_curves(df, n_boot=200)
    assert curves["seed_sd"].isna().all()
    assert "seed" in df.columns and df["seed"].nunique() == 1  # one seed everywhere: nothing to measure
    bootstrap_only = isoflop_curves(df.drop(columns="seed"), n_boot=200)
    pd.testing.assert_frame_equal(curves, bootstrap_only)


@pytest.mark.parametrize("spread", [0.02, 0.05])
def test_seed_spread_widens_every_interval_of_the_family_by_quadrature(spread):
    df = _sweep()
    plain = isoflop_curves(_quiet(validate_results, df), n_boot=200).set_index(["budget", "metric"])
    seeded_df, seeded_budget = _with_seeds(df, spread)
    seeded = isoflop_curves(_quiet(validate_results, seeded_df), n_boot=200).set_index(["budget", "metric"])
    assert len(seeded) == len(plain)  # the reruns count once, at their mean

    bpb = seeded.xs("bpb", level="metric")
    assert bpb["seed_sd"].to_numpy() == pytest.approx(spread)  # pooled over the family: every budget
    for budget, row in bpb.iterrows():
        old = plain.loc[(budget, "bpb")]
        assert row["lo"] < old["lo"] <= old["hi"] < row["hi"]
        if budget == seeded_budget:
            continue  # same runs, same bootstrap draws elsewhere: the widening is exactly the quadrature
        half = Z * spread / math.sqrt(row["runs"])
        assert row["value"] == pytest.approx(old["value"], rel=1e-12)
        assert row["lo"] == pytest.approx(old["value"] * math.exp(-math.hypot(math.log(old["value"] / old["lo"]),
                                                                             half)), rel=1e-12)
        assert row["hi"] == pytest.approx(old["value"] * math.exp(math.hypot(math.log(old["hi"] / old["value"]),
                                                                            half)), rel=1e-12)
    scores = seeded[[not m.endswith("_bpb") and m.startswith("eval_") for m in seeded.index.get_level_values(1)]]
    assert ((scores["lo"] >= 0) & (scores["hi"] <= 1)).all()  # an accuracy's interval stays an accuracy's


def test_a_wider_seed_spread_gives_wider_intervals():
    df = _sweep()
    narrow, wide = (isoflop_curves(_quiet(validate_results, _with_seeds(df, s)[0]), n_boot=200)
                    .query("metric == 'bpb'") for s in (0.01, 0.04))
    assert ((wide["hi"] - wide["lo"]).to_numpy() > (narrow["hi"] - narrow["lo"]).to_numpy()).all()


def test_report_says_which_families_intervals_include_seed_noise():
    seeded, _ = _with_seeds(_sweep("aunet2", seed=3), 0.03)
    both = pd.concat([seeded, _sweep("transformer_bpe", seed=4)], ignore_index=True)
    analysis = _quiet(analyse, both, n_boot=50)
    text = " ".join(str(b[-1]) for b in _equal_compute(analysis) if b[0] == "p")
    assert "Intervals include seed spread sd = 3.0% (aunet2)" in text
    assert "The intervals of transformer_bpe do not include seed noise" in text


@pytest.mark.skipif(not REFERENCE.is_file(), reason="the reference study's results are not present")
def test_reference_study_intervals_include_its_seed_spread():
    runs = load_results(REFERENCE)
    noise = seed_noise(runs)
    curves = isoflop_curves(runs, n_boot=200).query("metric == 'bpb'")
    for family, at in curves.groupby(FAMILY):
        sd = noise.loc[noise[FAMILY] == family, "sd"]
        assert len(sd) >= 2 and at["seed_sd"].to_numpy() == pytest.approx(math.sqrt((sd**2).mean()), rel=1e-6)
        # the tightest the seed term can make a cell: every run in the band averaging three seeds
        least = Z * at["seed_sd"] / np.sqrt(3 * at["runs"])
        assert (np.log(at["hi"] / at["value"]) >= least).all() and (np.log(at["value"] / at["lo"]) >= least).all()
        assert ((at["hi"] - at["lo"]) / at["value"] > 0.04).all()  # wider than the bootstrap's ~2% alone


# ---------------------------------------------------------------------------- the iso-FLOP figure


def _curves(budgets=(6e10, 1.2e11, 2.4e11, 7.2e11)) -> pd.DataFrame:
    rows = []
    for family, metrics in (("aunet2", ("bpb", "eval_hellaswag", "eval_arc")), ("transformer_bpe", ("bpb", "eval_arc"))):
        for metric in metrics:
            for i, budget in enumerate(budgets):
                value = 0.3 + 0.01 * i if metric.startswith("eval_") else 3.0 - 0.1 * i
                rows.append({FAMILY: family, "budget": budget, "metric": metric, "value": value, "lo": value * 0.98,
                             "hi": value * 1.02, "runs": 2, "seed_sd": math.nan})
    return pd.DataFrame(rows)


def _panel(fig: Figure, metric_title: str):
    return next(ax for ax in fig.axes if ax.get_visible() and ax.get_title().startswith(metric_title))


def test_accuracy_panels_draw_the_chance_level_and_loss_panels_do_not():
    fig = plot_isoflop(_curves(), "C", {"eval_hellaswag": 0.25, "eval_arc": 0.2521})
    for title, level in (("hellaswag", 0.25), ("arc", 0.2521)):
        lines = [ln for ln in _panel(fig, title).get_lines() if ln.get_label().startswith("chance")]
        assert len(lines) == 1 and set(lines[0].get_ydata()) == {level}
        assert any(t.get_text() == f"chance ({level:.3g})" for t in _panel(fig, title).get_legend().get_texts())
    assert not [ln for ln in _panel(fig, "held-out").get_lines() if ln.get_label().startswith("chance")]


def test_a_family_without_data_for_a_metric_is_named_on_its_panel():
    fig = plot_isoflop(_curves(), "C")
    legend = [t.get_text() for t in _panel(fig, "hellaswag").get_legend().get_texts()]
    assert "no data: transformer_bpe" in legend and "aunet2" in legend
    assert not any(t.get_text().startswith("no data") for t in _panel(fig, "arc").get_legend().get_texts())


def test_chance_levels_come_from_the_runs_downstream_columns():
    runs = pd.DataFrame({"downstream_hellaswag_chance": [0.25, 0.25, np.nan], "downstream_arc_challenge_chance":
                         [0.2521] * 3, "downstream_piqa_chance": [np.nan] * 3, "downstream_piqa_n": [40.0] * 3})
    assert _chance_levels(runs) == {"eval_hellaswag": 0.25, "eval_arc_challenge": 0.2521}


def _label_boxes(ax) -> list:
    """The window extents of an axis's visible x tick labels (the figure drawn), after checking that
    no minor tick carries one."""
    lo, hi = ax.get_xlim()
    assert not any(t.get_text() for t in ax.xaxis.get_minorticklabels())
    shown = [t for t in ax.xaxis.get_majorticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi]
    return [t.get_window_extent() for t in shown]


@pytest.mark.parametrize("decades", [0.6, 1.08, 1.9, 6.0])  # 1.08: the reference study's budgets
def test_log_compute_axes_label_major_ticks_only_and_labels_never_overlap(decades):
    fig = plot_isoflop(_curves(tuple(6e10 * np.logspace(0, decades, 4))), "C")
    FigureCanvasAgg(fig).draw()
    for ax in (ax for ax in fig.axes if ax.get_visible()):
        boxes = _label_boxes(ax)
        assert len(boxes) >= 2, decades
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), decades


def test_the_laws_and_loss_figures_compute_axes_follow_the_same_rule():
    short = SweepDesign(budgets=tuple(np.geomspace(1e18, 4e18, 4)), trials=16)
    analysis = _quiet(analyse, synthetic_sweep("aunet2", design=short, seed=3), n_boot=50)
    for fig in (plot_hyper_laws(analysis.laws["aunet2"]), plot_loss_curves(analysis.loss, analysis.results)):
        FigureCanvasAgg(fig).draw()
        for ax in fig.axes:
            boxes = _label_boxes(ax)
            assert len(boxes) >= 2 and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _cells(rows) -> pd.DataFrame:
    return pd.DataFrame([{FAMILY: f, "budget": b, "metric": "bpb", "value": v, "lo": lo, "hi": hi, "runs": 2,
                          "seed_sd": 0.03} for f, b, v, lo, hi in rows])


def test_the_ranking_calls_only_the_steps_whose_intervals_separate():
    from analysis.report import _ranking

    bpb = _cells([("word", 1e11, 2.00, 1.95, 2.05), ("stride", 1e11, 2.04, 2.01, 2.08),   # overlaps the leader
                  ("bpe", 1e11, 2.30, 2.20, 2.40),                                          # above both
                  ("word", 2e11, 1.90, 1.86, 1.94), ("stride", 2e11, 1.88, 1.85, 1.92),
                  ("bpe", 2e11, 2.00, 1.93, 2.10)])                                         # overlaps word only
    blocks = _ranking(bpb)
    orders = next(b[1] for b in blocks if b[0] == "list")
    assert orders == ["1e+11: word ≈ stride < bpe", "2e+11: stride ≈ word ≈ bpe"]
    header, rows = next(b[1:] for b in blocks if b[0] == "table")
    assert header == ["family", "rank at 1e+11", "rank at 2e+11", "mean rank"]
    assert rows == [["stride", "2, +2.0%", "1", "1.5"], ["word", "1", "2, +1.1%", "1.5"],
                    ["bpe", "3, +15.0% (called)", "3, +6.4% (called)", "3.0"]]
    assert _ranking(bpb[bpb[FAMILY] != "bpe"]) == []  # two families: the side-by-side table says it all
