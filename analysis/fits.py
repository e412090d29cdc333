"""Every fit of a results table at once (:func:`analyse`), and the one import path for the fits.

Each fit lives in its own module: ``analysis.bootstrap`` (intervals, power laws through per-budget
estimates), ``analysis.hyper_laws`` (LR and BSZ laws), ``analysis.loss_curve`` (loss against
compute), ``analysis.isoflop`` (each metric at equal compute) and ``analysis.seeds`` (seed noise);
their public names are importable from here too, as the README and notebooks do.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.bootstrap import LAW_DRAWS, LEVEL, LawFit, fit_power_law
from analysis.box import BAND_FILLS, TARGETED_PHASES
from analysis.columns import FAMILY
from analysis.estimators import ESTIMATORS, PREFERRED
from analysis.hyper_laws import HyperFit, fit_hyper_laws, paper_law
from analysis.isoflop import isoflop_curves
from analysis.load import BUDGET_TOLERANCE, DIVERGED_ABOVE, load_results
from analysis.loss_curve import LOSS_MIN_BUDGETS, LossFit, fit_loss_curve
from analysis.metrics import is_score, loss_metric, metric_columns
from analysis.notices import FitWarning, warn
from analysis.seeds import average_seeds, seed_noise, seed_noise_warnings
from aunet.laws import MIN_BUDGETS

__all__ = [
    "BAND_FILLS", "LAW_DRAWS", "LEVEL", "LOSS_MIN_BUDGETS", "MIN_BUDGETS", "TARGETED_PHASES", "Analysis", "HyperFit",
    "LawFit", "LossFit", "analyse", "average_seeds", "fit_hyper_laws", "fit_loss_curve", "fit_power_law",
    "is_score", "isoflop_curves", "loss_metric", "metric_columns", "paper_law", "seed_noise",
]


@dataclass
class Analysis:
    """All fits of a results table: what the report, the CLI and the notebook show."""

    results: pd.DataFrame
    laws: dict[str, dict[str, HyperFit]]  # family -> estimator -> fit
    loss: dict[str, LossFit]
    isoflop: pd.DataFrame
    warnings: list[str]
    tolerance: float
    seed_noise: pd.DataFrame  # see seed_noise(): repeated seeds of one configuration, where the table has them

    def law(self, family: str, estimator: str | None = None) -> HyperFit:
        """The requested fit; by default the first of ``PREFERRED`` that could be fitted (the bowl, else the band)."""
        fits = self.laws.get(family, {})
        if not fits:
            # Why each estimator gave no law ("<family>: no bowl law: ..."), not the family's other notes
            # (seed spreads, thin budgets), which would bury the reason.
            mine = [w for w in self.warnings if w.startswith(family)]
            why = "; ".join([w for w in mine if w.startswith(f"{family}: ")] or mine) or "it is not in the results"
            raise ValueError(f"no hyperparameter law for {family!r} (fitted: {sorted(self.laws)}): {why}")
        if estimator is None:
            return next(fits[name] for name in (*PREFERRED, *fits) if name in fits)
        if estimator not in fits:
            raise ValueError(f"{family}: the {estimator} estimator could not be fitted; available: {sorted(fits)}")
        return fits[estimator]


def analyse(results, *, families: list[str] | None = None, tolerance: float = 0.01, n_boot: int = 1000,
            seed: int = 0, level: float = LEVEL, bsz_in: str = "units",
            diverged_above: float | None = DIVERGED_ABOVE, budget_convention: str | None = None,
            budget_tolerance: float = BUDGET_TOLERANCE) -> Analysis:
    """Every fit for every family; a fit that cannot be made becomes a warning, not a crash.

    With too little data for any law, ``laws`` is empty and ``warnings`` says what is
    missing (the report still shows the runs); ``Analysis.law`` then raises with it.
    ``diverged_above``: the rule setting aside finished runs that diverged
    (``analysis.load.validate_results``). ``budget_convention``: the budget column to fit against
    when a family's runs mix conventions (``validate_results``).
    """
    df = load_results(results if not isinstance(results, pd.DataFrame) else results.drop(
        columns=["usable", "set_aside"], errors="ignore"), diverged_above=diverged_above,
        budget_convention=budget_convention, budget_tolerance=budget_tolerance)
    names = families or sorted(df[FAMILY].unique())
    noise = seed_noise(df[df[FAMILY].isin(names)], tolerance=tolerance)
    df = average_seeds(df)
    messages: list[str] = []
    laws: dict[str, dict[str, HyperFit]] = {}
    loss: dict[str, LossFit] = {}
    for family in names:
        for estimator in ESTIMATORS:
            try:
                fit = fit_hyper_laws(df, family, estimator=estimator, tolerance=tolerance, n_boot=n_boot, seed=seed,
                                     level=level, bsz_in=bsz_in)
            except ValueError as err:
                messages.append(warn(f"{family}: no {estimator} law: {str(err).removeprefix(f'{family}: ')}", FitWarning))
                continue
            laws.setdefault(family, {})[estimator] = fit
            messages.extend(fit.warnings)
        try:
            loss[family] = fit_loss_curve(df, family, n_boot=n_boot, seed=seed, level=level)
        except ValueError as err:
            messages.append(warn(f"{family}: no loss curve: {str(err).removeprefix(f'{family}: ')}", FitWarning))
    curves = isoflop_curves(df[df[FAMILY].isin(names)], tolerance=tolerance, n_boot=n_boot, seed=seed, level=level)
    messages += seed_noise_warnings(noise, tolerance)
    return Analysis(df, laws, loss, curves, list(dict.fromkeys(messages)), tolerance, noise)
