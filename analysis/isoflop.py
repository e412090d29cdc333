"""Iso-FLOP curves: each metric against compute per family, from each budget's near-optimal runs."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from analysis.bootstrap import LEVEL, percentile_ci
from analysis.columns import FAMILY
from analysis.estimators import _near_weights, bootstrap_weights
from analysis.load import canonical, results_table
from analysis.metrics import is_score, loss_metric, metric_columns
from analysis.seeds import average_seeds


def isoflop_curves(results, *, tolerance: float = 0.01, n_boot: int = 1000, seed: int = 0,
                   level: float = LEVEL) -> pd.DataFrame:
    """Each metric against C per family: the mean over each budget's near-optimal runs.

    Intervals resample the budget's finished runs and re-select the band each time, so
    they carry both the metric's scatter and the uncertainty of which runs are optimal, but
    not how far another seed would move those runs: a band narrower than seed noise often
    holds one run. Where a family ran configurations with several seeds (averaged as
    :func:`average_seeds` does), each interval also includes that noise (``_with_seed_noise``);
    ``seed_sd`` is the per-run seed sd used (relative for a loss, absolute for a score), NaN
    where the family has no seeds: those intervals do not include seed noise.
    """
    df = average_seeds(results_table(results))
    rng = np.random.default_rng(seed)
    rows = []
    for family, runs in df.groupby(FAMILY):
        loss_column = loss_metric(runs)[0]
        metrics = [m for m in metric_columns(df) if m not in ("bpb", "loss") or m == loss_column]
        seed_sd = {metric: _pooled_seed_sd(runs, metric) for metric in metrics}
        for budget, group in runs[runs["usable"]].groupby("budget"):
            group = canonical(group)
            loss = group["loss"].to_numpy()
            near = _near_weights(loss, bootstrap_weights(len(group), n_boot, rng), tolerance)
            rows += _isoflop_rows(family, budget, group, near, seed_sd, n_boot, level)
    return pd.DataFrame(rows, columns=[FAMILY, "budget", "metric", "value", "lo", "hi", "runs", "seed_sd"])


def _isoflop_rows(family: str, budget: float, group: pd.DataFrame, near: np.ndarray, seed_sd: dict[str, float],
                  n_boot: int, level: float) -> list[dict]:
    seeds = group["seeds"].to_numpy(float) if "seeds" in group.columns else np.ones(len(group))
    rows = []
    for metric, sd in seed_sd.items():
        values = group[metric].to_numpy(float)
        ok = np.isfinite(values)
        if not ok.any():
            continue
        wn = near * ok
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (wn @ np.where(ok, values, 0.0)) / wn.sum(axis=1)
        lo, hi = percentile_ci(means[1:], level) if n_boot else (math.nan, math.nan)
        band = wn[0]  # the value's runs: its seed noise is sd/sqrt(n) for n single-seed runs
        if np.isfinite(sd) and band.any():
            lo, hi = _with_seed_noise(metric, means[0], lo, hi, sd * math.sqrt((band / seeds).sum()) / band.sum(), level)
        rows.append({FAMILY: family, "budget": budget, "metric": metric, "value": means[0], "lo": lo, "hi": hi,
                     "runs": int(band.sum()), "seed_sd": sd})
    return rows


def _pooled_seed_sd(runs: pd.DataFrame, metric: str) -> float:
    """A family's per-run seed sd of ``metric`` (relative for a loss, absolute for a score), pooled over
    its configurations run with several seeds; NaN where it has none.

    Pooled over budgets, not taken per budget: with three seeds a budget's own sd has two degrees of
    freedom, often far below the truth, and relative terms make budgets of different loss comparable.
    """
    column = f"seed_sd_{metric}"
    if column not in runs.columns:
        return math.nan
    seeded = runs[runs["usable"] & (runs["seeds"] > 1) & np.isfinite(runs[column])]
    if seeded.empty:
        return math.nan
    sd = seeded[column] / (1.0 if is_score(metric) else seeded[metric])
    dof = seeded["seeds"] - 1
    return float(np.sqrt((dof * sd**2).sum() / dof.sum()))


def _with_seed_noise(metric: str, value: float, lo: float, hi: float, sd: float,
                     level: float) -> tuple[float, float]:
    """The bootstrap interval [lo, hi] around ``value`` widened by independent seed noise of sd ``sd``:
    on each side the two half-widths add in quadrature, in log terms for a loss (``sd`` relative),
    absolute for a score (kept within [0, 1])."""
    half = NormalDist().inv_cdf((1 + level) / 2) * sd
    if is_score(metric):
        return max(value - math.hypot(value - lo, half), 0.0), min(value + math.hypot(hi - value, half), 1.0)
    return (value * math.exp(-math.hypot(math.log(value / lo), half)),
            value * math.exp(math.hypot(math.log(hi / value), half)))


def ranking(bpb: pd.DataFrame) -> tuple[list[tuple[float, list[str]]], dict[str, dict[float, tuple[int, float, bool]]]]:
    """Families at each budget that three or more share, from iso-FLOP rows of one metric (``value``,
    ``lo``, ``hi``): per budget the order from best to worst, '<' between neighbours whose intervals do
    not overlap and '≈' where they do; per family (by mean rank) its (rank, gap to the leader, whether
    its interval lies wholly above the leader's) at each budget."""
    orders: list[tuple[float, list[str]]] = []
    places: dict[str, dict[float, tuple[int, float, bool]]] = {}
    for budget, at in bpb.groupby("budget"):
        if at[FAMILY].nunique() < 3:
            continue
        at = at.sort_values("value")
        leader = at.iloc[0]
        chain = [str(leader[FAMILY])]
        for (_, row), (_, below) in zip(at.iterrows(), at.iloc[1:].iterrows()):
            chain += ["<" if row["hi"] < below["lo"] else "≈", str(below[FAMILY])]
        orders.append((budget, chain))
        for rank, (_, row) in enumerate(at.iterrows(), start=1):
            places.setdefault(str(row[FAMILY]), {})[budget] = (rank, row["value"] / leader["value"] - 1,
                                                                rank > 1 and bool(leader["hi"] < row["lo"]))
    mean_rank = {family: float(np.mean([r for r, _, _ in at.values()])) for family, at in places.items()}
    return orders, {family: places[family] for family in sorted(places, key=lambda f: (mean_rank[f], f))}
