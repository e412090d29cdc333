"""Predict, then train: fit every law below a held-out budget and compare its predictions with that budget's runs.

``python -m analysis validate <study> --holdout <budget>`` is the toolkit's claim put to
the test: the LR and BSZ laws and L(C) are fitted on the budgets below the held-out one
only, predict its optimum LR and BSZ (95% intervals) and its best loss, and the held-out
budget's own trials (a confirmation sweep) say whether they were right. A run with a
truthy ``at_prediction`` column is the one trained at the predicted hyperparameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bootstrap import LEVEL
from analysis.estimators import _band
from analysis.fits import analyse
from analysis.load import BUDGET_TOLERANCE, DIVERGED_ABOVE, FAMILY, load_results
from analysis.metrics import loss_metric
from analysis.seeds import average_seeds
from aunet.laws import MIN_BUDGETS
from aunet.verdict import Limits

PREDICTED = "at_prediction"  # the column flagging the run at the predicted hyperparameters


@dataclass
class HoldoutCheck:
    """One family's prediction at the held-out budget against what its trials found."""

    family: str
    holdout: float
    estimator: str
    fitted_budgets: list[float]
    predicted: dict[str, tuple[float, float, float]]  # lr, bsz, loss -> (value, lo, hi)
    observed: dict[str, float]  # best run's lr, bsz, loss; the band's optimum lr_opt, bsz_opt
    loss_label: str
    at_prediction: float | None  # loss of the run at the predicted hyperparameters
    notes: list[str]
    tried: dict[str, np.ndarray] = field(default_factory=dict)  # lr, bsz -> distinct values run at the hold-out
    runs: int = 0  # finished runs of the confirmation sweep
    level: float = LEVEL

    def inside(self, name: str) -> bool:
        _, lo, hi = self.predicted[name]
        return bool(lo <= self.observed[f"{name}_opt"] <= hi)

    def width(self, name: str) -> float:
        """The predicted interval's factor width (hi / lo)."""
        _, lo, hi = self.predicted[name]
        return hi / lo if lo > 0 else math.inf

    def informative(self, name: str) -> bool:
        """Whether the check can fail at all: an interval wider than the verdict's refusal factor contains
        any optimum a sweep box could find, so "inside" says nothing."""
        return self.width(name) <= Limits().width_refuse

    def bracket(self, name: str) -> tuple[float, float]:
        """The values tried next to the best run's on either side (the best run's own at an end): on a
        grid the optimum is known only to lie between them, so that is what the prediction is held to
        (elsewhere, the band's optimum)."""
        tried, best = self.tried[name], self.observed[name]
        below, above = tried[tried < best], tried[tried > best]
        return (float(below.max()) if len(below) else best), (float(above.min()) if len(above) else best)

    def verdict(self, name: str) -> str:
        _, lo, hi = self.predicted[name]
        if not self.informative(name):
            return f"uninformative: the interval spans x{self.width(name):.3g}, beyond x{Limits().width_refuse:g}"
        if not self.on_grid(name):  # scattered values: the band's optimum is the observation
            return "consistent: the band optimum is inside" if self.inside(name) else \
                "MISSED: the band optimum is outside the interval"
        low, high = self.bracket(name)
        if lo <= high and hi >= low:
            return f"consistent: the interval meets the grid bracket [{low:.4g}, {high:.4g}] of the best run"
        return f"MISSED: the interval lies outside the grid bracket [{low:.4g}, {high:.4g}] of the best run"

    def on_grid(self, name: str) -> bool:
        """Whether the held-out runs sit on a grid in ``name``: each value tried shared by several runs."""
        return len(self.tried[name]) <= self.runs / 2

    def loss_error(self) -> float:
        """Observed best loss relative to the predicted one, minus 1."""
        return self.observed["loss"] / self.predicted["loss"][0] - 1 if "loss" in self.predicted else math.nan

    def text(self) -> str:
        lines = [f"{self.family} at the held-out C = {self.holdout:.3g} ({self.estimator} law fitted on "
                 f"{len(self.fitted_budgets)} budgets below: {', '.join(f'{b:.3g}' for b in self.fitted_budgets)}; "
                 f"{self.level:.0%} intervals)"]
        for name in ("lr", "bsz"):
            value, lo, hi = self.predicted[name]
            lines.append(f"  {name.upper():<4} predicted {value:.4g} [{lo:.4g}, {hi:.4g}] (x{self.width(name):.3g})   "
                         f"observed band optimum {self.observed[f'{name}_opt']:.4g} "
                         f"({'inside' if self.inside(name) else 'outside'}), best run {self.observed[name]:.4g}: "
                         f"{self.verdict(name)}")
        if "loss" in self.predicted:
            value, lo, hi = self.predicted["loss"]
            where = "inside" if lo <= self.observed["loss"] <= hi else "OUTSIDE"
            lines.append(f"  loss predicted {value:.4g} [{lo:.4g}, {hi:.4g}] (x{hi / lo:.3g}) {self.loss_label}   "
                         f"observed best {self.observed['loss']:.4g} ({self.loss_error():+.2%}, {where} the interval)")
        else:
            lines.append(f"  loss observed best {self.observed['loss']:.4g} {self.loss_label} (no prediction)")
        if self.at_prediction is not None:
            gap = self.at_prediction / self.observed["loss"] - 1
            lines.append(f"  run at the predicted hyperparameters: loss {self.at_prediction:.4g}, {gap:+.2%} from the "
                         "confirmation sweep's best")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def predict_optimum(results, family: str, budget: float) -> tuple[float, float]:
    """(LR, BSZ) at ``budget`` from the laws the runs fit (the default estimator, as ``validate``
    fits them below a held-out budget): where a study's predicted trial runs. ValueError: no law."""
    law = analyse(results, families=[family], n_boot=200).law(family)
    return float(law.lr.predict(budget)[0][0]), float(law.bsz.predict(budget)[0][0])


def validate_holdout(results, holdout: float, *, families: list[str] | None = None, estimator: str | None = None,
                     tolerance: float = 0.01, n_boot: int = 1000, seed: int = 0, level: float = LEVEL,
                     bsz_in: str = "units", diverged_above: float | None = DIVERGED_ABOVE,
                     budget_tolerance: float = BUDGET_TOLERANCE) -> list[HoldoutCheck]:
    """Fit on the budgets below ``holdout``, predict at it, compare with its own finished trials."""
    if not (isinstance(holdout, (int, float)) and math.isfinite(holdout) and holdout > 0):
        raise ValueError(f"held-out budget {holdout!r} must be a positive number of FLOPs, e.g. 1e12")
    df = average_seeds(load_results(results, diverged_above=diverged_above, budget_tolerance=budget_tolerance))
    holdout = float(f"{holdout:.6g}")  # budgets are compared as the table stores them
    budgets = sorted(df["budget"].unique())
    if holdout not in budgets:
        raise ValueError(f"held-out budget {holdout:.6g} is not in the study; its budgets are "
                         f"{[float(f'{b:.6g}') for b in budgets]}")
    families = families or sorted(df.loc[df["budget"] == holdout, FAMILY].unique())
    checks = []
    for family in families:
        runs = df[df[FAMILY] == family]
        held = runs[(runs["budget"] == holdout) & runs["usable"]]
        if held.empty:
            raise ValueError(f"{family}: the held-out budget {holdout:.3g} has no finished trials (statuses: "
                             f"{runs.loc[runs['budget'] == holdout, 'status'].value_counts().to_dict()}); run its "
                             "confirmation sweep first")
        below = runs[runs["budget"] < holdout]
        fitted = sorted(below.loc[below["usable"], "budget"].unique())
        if len(fitted) < MIN_BUDGETS:
            raise ValueError(f"{family}: {len(fitted)} budget(s) with finished runs below the held-out {holdout:.3g} "
                             f"({', '.join(f'{b:.3g}' for b in fitted) or 'none'}); a law needs {MIN_BUDGETS}: hold "
                             "out a larger budget, or run more budgets below it")
        checks.append(_check(family, holdout, below, held, estimator, tolerance, n_boot, seed, level, bsz_in,
                             diverged_above))
    return checks


def _check(family: str, holdout: float, below: pd.DataFrame, held: pd.DataFrame, estimator: str | None,
           tolerance: float, n_boot: int, seed: int, level: float, bsz_in: str,
           diverged_above: float | None) -> HoldoutCheck:
    result = analyse(below, families=[family], tolerance=tolerance, n_boot=n_boot, seed=seed, level=level,
                     bsz_in=bsz_in, diverged_above=diverged_above)
    fit = result.law(family, estimator)
    predicted = {name: tuple(float(v[0]) for v in getattr(fit, name).predict(holdout)) for name in ("lr", "bsz")}
    notes = [w for w in result.warnings if "no loss curve" in w]
    metric, label = loss_metric(below)
    if family in result.loss:
        curve = result.loss[family]
        metric, label = curve.metric, curve.label
        predicted["loss"] = tuple(float(v[0]) for v in curve.predict(holdout))
    bsz_col = "bsz_bytes" if bsz_in == "bytes" else "bsz"
    flagged = held[PREDICTED].fillna(False).astype(bool) if PREDICTED in held.columns else held["loss"] < -math.inf
    at_prediction = None
    if flagged.sum() > 1:
        notes.append(f"{int(flagged.sum())} runs are flagged {PREDICTED}; the first is compared")
    if flagged.any():
        at_prediction = float(held.loc[flagged, metric].iloc[0])
        held = held[~flagged] if (~flagged).any() else held  # the confirmation sweep: every other run
    best = held.loc[held["loss"].idxmin()]
    logv = np.log(held[["lr", bsz_col]].to_numpy(float))
    centroid, _ = _band(held["loss"].to_numpy(float), logv, np.ones((1, len(held))), tolerance)
    observed = {"lr": float(best["lr"]), "bsz": float(best[bsz_col]), "loss": float(best[metric]),
                "lr_opt": float(centroid[0, 0]), "bsz_opt": float(centroid[0, 1])}
    tried = {name: np.unique(held[column].to_numpy(float)) for name, column in (("lr", "lr"), ("bsz", bsz_col))}
    return HoldoutCheck(family, holdout, fit.estimator, [float(b) for b in sorted(set(fit.lr.budgets))], predicted,
                        observed, label, at_prediction, notes, tried, len(held), level)
