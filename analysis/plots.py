"""Figures of the analysis, each saved as PNG and PDF.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot), so nothing
depends on a GUI backend or on global state: they render with Agg in CI, in a
notebook and from the CLI alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter

from analysis.allocation import Approach2Result, Approach3Result
from analysis.estimators import ESTIMATORS
from analysis.fits import Analysis
from analysis.hyper_laws import HyperFit, paper_law
from analysis.load import FAMILY, compute_label
from analysis.loss_curve import LossFit
from analysis.metrics import is_score

FAMILY_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
BAD = {"diverged": ("x", "tab:red"), "failed": ("+", "black")}


def _not_fitted(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Runs shown but never fitted: diverged (recorded so, or set aside by the divergence rule) and failed."""
    return {"diverged": runs[(runs["status"] == "diverged") | runs["set_aside"]],
            "failed": runs[runs["status"] == "failed"]}


def save(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=110)
    fig.set_layout_engine("none")  # the layout is settled: the PDF reuses it instead of solving it again
    fig.savefig(paths[1])
    return paths


def _compute_grid(budgets: np.ndarray, reach: float = 10.0) -> np.ndarray:
    return np.geomspace(budgets.min() / 1.5, budgets.max() * reach, 60)


def _label_log_x(ax) -> None:
    """Label a log x axis (its limits set) at its major ticks only: 1, 2 and 5 times each power of ten
    when it spans under two decades (powers of ten alone would leave one or two labels), else powers
    of ten. Left to itself, matplotlib also labels the minor ticks of an axis spanning a decade or so,
    and 2x10^11, 3x10^11 and 4x10^11 print over each other."""
    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if math.log10(hi / lo) < 2 else (1.0,)))
    every_major = LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(math.inf, math.inf))
    ax.xaxis.set_major_formatter(every_major)
    ax.xaxis.set_minor_formatter(NullFormatter())


def _chance_levels(results: pd.DataFrame) -> dict[str, float]:
    """Each downstream score's chance level (``eval_<task>`` -> the runs' ``downstream_<task>_chance``)."""
    levels = {}
    for column in results.columns:
        if column.startswith("downstream_") and column.endswith("_chance"):
            values = pd.to_numeric(results[column], errors="coerce")
            if values.notna().any():
                levels[f"eval_{column.removeprefix('downstream_').removesuffix('_chance')}"] = float(values.median())
    return levels


def _mark_fitted_range(ax, budgets: np.ndarray) -> None:
    """Dotted lines at the fitted range's ends, and the extrapolation on either side shaded: a law drawn
    there is an assumption, not data."""
    lo, hi = float(np.min(budgets)), float(np.max(budgets))
    for edge in (lo, hi):
        ax.axvline(edge, color="k", ls=":", lw=0.8)
    ax.axvspan(hi, hi * 1e3, color="0.85", alpha=0.5, zorder=0, label="extrapolation (beyond the fitted range)")
    ax.axvspan(lo / 1e3, lo, color="0.85", alpha=0.5, zorder=0)


def plot_hyper_laws(fits: dict[str, HyperFit]) -> Figure:
    """LR and BSZ against C for one family: runs, per-budget optima, each estimator's law and band."""
    first = next(iter(fits.values()))
    runs = first.runs
    bsz_col = "bsz" if first.units == runs["units"].iloc[0] else "bsz_bytes"
    reference = paper_law(first.family, first.units)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for ax, target, column, label in zip(fig.subplots(1, 2), ("lr", "bsz"), ("lr", bsz_col),
                                         ("peak learning rate", f"batch size ({first.units} per step)")):
        usable = runs[runs["usable"]]
        ax.scatter(usable["budget"], usable[column], s=10, color="grey", alpha=0.25, label="finished runs")
        near = usable[usable["near_optimal"]]
        ax.scatter(near["budget"], near[column], s=16, color="tab:blue", alpha=0.7,
                   label=f"within {first.tolerance:.2%} of best")
        for status, bad in _not_fitted(runs).items():
            if len(bad):
                marker, colour = BAD[status]
                ax.scatter(bad["budget"], bad[column], marker=marker, s=18, color=colour, alpha=0.6,
                           label=f"{status} (not fitted)")
        grid = _compute_grid(first.budgets["budget"].to_numpy())
        for estimator, fit in fits.items():
            law = getattr(fit, target)
            point, lo, hi = law.predict(grid)
            colour = ESTIMATORS[estimator].colour
            ax.plot(grid, point, color=colour,
                    label=f"{estimator}: {law.coef:.3g}·C^{law.exponent:.3f} "
                          f"[{law.exponent_ci[0]:.3f}, {law.exponent_ci[1]:.3f}]")
            ax.fill_between(grid, lo, hi, color=colour, alpha=0.15)
            table = fit.budgets
            opt = table[f"{target}_opt"].to_numpy()
            err = np.abs(np.vstack([opt - table[f"{target}_lo"], table[f"{target}_hi"] - opt]))
            ax.errorbar(table["budget"], opt, yerr=err, fmt=ESTIMATORS[estimator].marker, color=colour,
                        ms=5, capsize=2, label=f"{estimator} optimum per budget")
        if reference is not None:
            ax.plot(grid, getattr(reference, target)(grid), "k--", lw=1, label=reference.source)
        _mark_fitted_range(ax, np.concatenate([getattr(f, target).budgets for f in fits.values()]))
        ax.set(xscale="log", yscale="log", xlabel=compute_label(runs), ylabel=label, xlim=(grid[0], grid[-1]))
        _label_log_x(ax)
        ax.grid(True, which="both", alpha=0.2)
        ax.legend(fontsize=6.5, loc="upper left")
    fig.suptitle(f"{first.family}: hyperparameter laws")
    return fig


def plot_landscape(fits: dict[str, HyperFit]) -> Figure:
    """The LR x BSZ plane of every budget: loss as colour, the near-optimal set, the box and the optima."""
    first = next(iter(fits.values()))
    runs = first.runs
    budgets = list(runs[["budget", "group"]].drop_duplicates().sort_values(["budget", "group"]).itertuples(False))
    ncols = min(3, len(budgets))
    nrows = math.ceil(len(budgets) / ncols)
    fig = Figure(figsize=(4 * ncols + 1, 3.4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    points = None
    for ax, (budget, label) in zip(axes, budgets):
        group = runs[(runs["budget"] == budget) & (runs["group"] == label)]
        usable = group[group["usable"]]
        if len(usable):
            excess = 100 * (usable["loss"] / usable["loss"].min() - 1)
            points = ax.scatter(usable["lr"], usable["bsz"], c=excess.clip(upper=5), cmap="viridis_r", s=28,
                                vmin=0, vmax=5)
            near = usable[usable["near_optimal"]]
            ax.scatter(near["lr"], near["bsz"], s=70, facecolors="none", edgecolors="black", lw=0.8,
                       label="near-optimal")
        for status, bad in _not_fitted(group).items():
            if len(bad):
                marker, colour = BAD[status]
                ax.scatter(bad["lr"], bad["bsz"], marker=marker, color=colour, s=30, label=status)
        to_units = 1.0 if first.units == group["units"].iloc[0] else 1 / group["bytes_per_unit"].iloc[0]
        for estimator, fit in fits.items():
            row = fit.budgets[(fit.budgets["budget"] == budget) & (fit.budgets["group"] == label)]
            if len(row) and np.isfinite(row["lr_opt"].iloc[0]):
                ax.plot(row["lr_opt"], row["bsz_opt"] * to_units, "*", ms=13, color=ESTIMATORS[estimator].colour,
                        mec="black", label=f"{estimator} optimum")
        box = first.budgets[(first.budgets["budget"] == budget) & (first.budgets["group"] == label)]
        if len(box):
            lr_lo, lr_hi, bsz_lo, bsz_hi = box[["lr_min", "lr_max", "bsz_min", "bsz_max"]].iloc[0] * [1, 1, to_units,
                                                                                                      to_units]
            ax.add_patch(Rectangle((lr_lo, bsz_lo), lr_hi - lr_lo, bsz_hi - bsz_lo, fill=False, ls=":",
                                   color="grey", label="search box"))
        ax.set(xscale="log", yscale="log", xlabel="LR", ylabel=f"BSZ ({group['units'].iloc[0]})",
               title=f"C = {budget:.3g}" + (f"\n{label}" if label else ""))
        _label_log_x(ax)
    for ax in axes[len(budgets):]:
        ax.set_visible(False)
    if points is not None:
        fig.colorbar(points, ax=axes.tolist(), label="% above the budget's best loss (clipped at 5)")
    axes[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{first.family}: loss landscape per budget")
    return fig


def plot_loss_curves(loss: dict[str, LossFit], results: pd.DataFrame) -> Figure:
    """Best loss against compute, one curve per family, with the fitted law's band."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for colour, (family, fit) in zip(FAMILY_COLOURS, loss.items()):
        runs = results[(results[FAMILY] == family) & results["usable"]]
        ax.scatter(runs["budget"], runs[fit.metric], s=6, color=colour, alpha=0.15)
        grid = _compute_grid(fit.budgets)
        point, lo, hi = fit.predict(grid)
        ax.scatter(fit.budgets, fit.best, color=colour, s=22, zorder=3)
        ax.plot(grid, point, color=colour,
                label=f"{family}: {fit.e:.3g} + {fit.a:.3g}·C^-{fit.alpha:.3f}")
        ax.fill_between(grid, lo, hi, color=colour, alpha=0.15)
    fitted = np.concatenate([fit.budgets for fit in loss.values()])
    _mark_fitted_range(ax, fitted)
    labels = " / ".join(dict.fromkeys(fit.label for fit in loss.values()))
    ax.set(xscale="log", yscale="log", xlabel=compute_label(results), ylabel=f"best loss per budget ({labels})",
           xlim=(fitted.min() / 1.5, fitted.max() * 10))
    _label_log_x(ax)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("loss against compute (envelope and fit)")
    return fig


def plot_isoflop(curves: pd.DataFrame, compute: str, chance: dict[str, float] | None = None) -> Figure:
    """Each metric against C per family (Fig. 3 of the paper), with the intervals of :func:`isoflop_curves`;
    ``compute``: the C axis label; ``chance``: each score's chance level (``eval_<task>`` -> level), drawn
    on its panel. A family without data for a metric is named on that panel, so that a missing line is
    not taken for one hidden behind another."""
    metrics = list(dict.fromkeys(curves["metric"]))
    ncols = min(3, max(1, len(metrics)))
    nrows = max(1, math.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(4.3 * ncols, 3.4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    families = list(dict.fromkeys(curves[FAMILY]))
    for ax, metric in zip(axes, metrics):
        missing = []
        for colour, family in zip(FAMILY_COLOURS, families):
            part = curves[(curves["metric"] == metric) & (curves[FAMILY] == family)].sort_values("budget")
            if part.empty:
                missing.append(family)
                continue
            err = np.abs(np.vstack([part["value"] - part["lo"], part["hi"] - part["value"]]))
            sd = part["seed_sd"].iloc[0]
            seeds = "" if not np.isfinite(sd) else f" (with seed sd {sd:.3f})" if is_score(metric) else \
                f" (with seed sd {sd:.1%})"
            ax.errorbar(part["budget"], part["value"], yerr=np.nan_to_num(err), marker="o", ms=3, capsize=2,
                        color=colour, label=family + seeds)
        if metric in (chance or {}):
            ax.axhline(chance[metric], color="0.3", ls="--", lw=1, label=f"chance ({chance[metric]:.3g})")
        if missing:
            ax.plot([], [], " ", label=f"no data: {', '.join(missing)}")
        title = {"bpb": "held-out bits per byte", "loss": "held-out loss (nats per unit)"}.get(
            metric, f"{metric.removeprefix('eval_')}: accuracy" if is_score(metric)
            else f"{metric.removeprefix('eval_').removesuffix('_gold_bpb')}: gold answer, bits per byte")
        ax.set(xscale="log", xlabel=compute, title=title, ylabel="mean of the near-optimal runs (95% interval)")
        _label_log_x(ax)
        ax.grid(True, alpha=0.2)
        ax.legend(fontsize=6, loc="best")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle("At equal compute: each metric of each budget's near-optimal runs, per family")
    return fig


def _budget_colours(budgets: np.ndarray) -> list:
    return [matplotlib.colormaps["viridis"](x) for x in np.linspace(0.0, 0.85, len(budgets))]


def plot_allocation_isoflops(table: pd.DataFrame, fit2: Approach2Result | None, fit3: Approach3Result | None,
                             family: str, units: str) -> Figure:
    """Loss against model size at each budget: the runs, approach 2's parabola in ln N with its vertex and
    the vertex's interval (a bound drawn as an arrow the way N_opt lies), and approach 3's L along the isoFLOP."""
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    budgets = np.unique(table["budget"].to_numpy(float))
    vertices = {v.budget: v for v in fit2.vertices} if fit2 else {}
    for colour, budget in zip(_budget_colours(budgets), budgets):
        at = table[table["budget"] == budget]
        ax.scatter(at["params"], at["loss"], s=14, color=colour, alpha=0.7, label=f"C = {budget:.3g}")
        grid = np.geomspace(at["params"].min() / 1.5, at["params"].max() * 1.5, 80)
        vertex = vertices.get(budget)
        if vertex is not None:
            curve = np.polyval(vertex.curve[::-1], np.log(grid))
            ax.plot(grid, curve, color=colour, lw=1)
            if vertex.kind == "value":
                y = float(np.polyval(vertex.curve[::-1], math.log(vertex.n_opt)))
                err = np.abs([[vertex.n_opt - vertex.ci[0]], [vertex.ci[1] - vertex.n_opt]])
                ax.errorbar([vertex.n_opt], [y], xerr=np.nan_to_num(err), fmt="o", mfc="white", color=colour,
                            capsize=3, ms=6)
            else:
                ax.plot([vertex.n_opt], [at["loss"].min()], "<" if vertex.kind == "upper" else ">", color=colour,
                        ms=9, mec="black")
        if fit3 is not None:
            ax.plot(grid, fit3.loss(grid, budget / (fit3.k * grid)), color=colour, ls="--", lw=1)
    if fit2:
        ax.plot([], [], "-o", mfc="white", color="k", lw=1, label="approach 2: parabola in ln N, vertex and its "
                                                                   "95% interval")
        if any(v.kind != "value" for v in fit2.vertices):
            ax.plot([], [], "<", color="grey", mec="black", label="approach 2: a bound (N_opt lies past the arrow)")
    if fit3 is not None:
        ax.plot([], [], "k--", lw=1, label="approach 3: L(N, C/(kN))")
    ax.set(xscale="log", xlabel="model size N (parameters)", ylabel=f"loss (nats per {units.removesuffix('s')})",
           title=f"{family}: loss against model size at each budget")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="upper right")
    return fig


def plot_n_opt(fit2: Approach2Result | None, fit3: Approach3Result | None, family: str, budgets: np.ndarray,
               targets: list[float], compute: str) -> Figure:
    """N_opt against C: approach 2's vertices (values with intervals, bounds as arrows) and its law, approach
    3's closed form, both with their 95% bands; the fitted range marked and the targets drawn."""
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    grid = np.geomspace(budgets.min() / 1.5, max(budgets.max(), *targets) * 1.5, 60)
    if fit2:
        values = [v for v in fit2.vertices if v.kind == "value"]
        if values:
            n = np.array([v.n_opt for v in values])
            err = np.abs(np.array([[n_ - v.ci[0], v.ci[1] - n_] for n_, v in zip(n, values)]).T)
            ax.errorbar([v.budget for v in values], n, yerr=np.nan_to_num(err), fmt="o", color="tab:blue", capsize=3,
                        label="approach 2: vertex per budget")
        for kind, marker in (("upper", "v"), ("lower", "^")):
            bounds = [v for v in fit2.vertices if v.kind == kind]
            if bounds:
                ax.plot([v.budget for v in bounds], [v.n_opt for v in bounds], marker, color="tab:blue", ms=8,
                        ls="none", label=f"approach 2: bound (N_opt {'below' if kind == 'upper' else 'above'})")
        if fit2.law is not None:
            ax.plot(grid, fit2.n_opt(grid), color="tab:blue", label=f"approach 2: {fit2.G:.3g}·C^{fit2.a:.3f}")
            ax.fill_between(grid, *fit2.n_opt_ci(grid), color="tab:blue", alpha=0.15)
    if fit3 is not None:
        ax.plot(grid, fit3.n_opt(grid), color="tab:orange", label=f"approach 3: a = {fit3.a:.3f}")
        ax.fill_between(grid, *fit3.n_opt_ci(grid), color="tab:orange", alpha=0.15)
    for target in targets:
        ax.axvline(target, color="0.3", ls="--", lw=0.8)
    ax.plot([], [], color="0.3", ls="--", lw=0.8, label="target")
    _mark_fitted_range(ax, budgets)
    ax.set(xscale="log", yscale="log", xlabel=compute, ylabel="compute-optimal model size N_opt (parameters)",
           xlim=(grid[0], grid[-1]), title=f"{family}: compute-optimal model size")
    _label_log_x(ax)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def all_figures(analysis: Analysis, out: str | Path) -> dict[str, list[Path]]:
    """Every figure of an analysis under ``out``; name -> [png, pdf]."""
    out = Path(out)
    figures: dict[str, list[Path]] = {}
    for family, fits in analysis.laws.items():
        figures[f"laws_{family}"] = save(plot_hyper_laws(fits), out / f"laws_{family}")
        figures[f"landscape_{family}"] = save(plot_landscape(fits), out / f"landscape_{family}")
    if analysis.loss:
        figures["loss"] = save(plot_loss_curves(analysis.loss, analysis.results), out / "loss_vs_compute")
    if len(analysis.isoflop):
        figures["isoflop"] = save(plot_isoflop(analysis.isoflop, compute_label(analysis.results),
                                               _chance_levels(analysis.results)), out / "isoflop")
    return figures
