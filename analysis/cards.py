"""A fitted law with its limits (``aunet.laws.LawCard``), from an analysis: what law files hold and
what ``aunet.verdict.judge`` reads. The one place an analysis becomes a law file."""

from __future__ import annotations

import hashlib
import math
from importlib import metadata

import numpy as np
import pandas as pd

from analysis.fits import Analysis, LawFit, LossFit
from analysis.load import FAMILY
from aunet.laws import BudgetFacts, FittedLaw, LawCard

#: The per-budget table's flags (``fits._box_checks``) as law-file flags (``aunet.laws.FLAGS``).
TABLE_FLAGS = {"LR floor": "lr_floor", "LR ceiling": "lr_ceiling", "BSZ floor": "bsz_floor",
               "BSZ ceiling": "bsz_ceiling", "LR lower": "lr_edge", "LR upper": "lr_edge", "BSZ lower": "bsz_edge",
               "BSZ upper": "bsz_edge", "bowl LR outside": "bowl_outside", "bowl BSZ outside": "bowl_outside",
               "band fills box": "band_fills_box"}


def toolkit_version() -> str:
    try:
        return metadata.version("aunet-scaling")
    except metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown"


def fitted_law(law: LawFit) -> FittedLaw:
    draws = law.samples[np.isfinite(law.samples).all(axis=1)]
    cov = np.cov(draws.T) if len(draws) > 2 else np.full((2, 2), math.inf)
    return FittedLaw(law.coef, law.exponent, tuple(law.coef_ci), tuple(law.exponent_ci),
                     (float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])), float(law.dispersion),
                     len(law.budgets) - 2)


def loss_facts(fit: LossFit) -> dict:
    return {"metric": fit.metric, "label": fit.label, "e": fit.e, "a": fit.a, "alpha": fit.alpha,
            "e_ci": list(fit.e_ci), "a_ci": list(fit.a_ci), "alpha_ci": list(fit.alpha_ci),
            "budgets": [float(b) for b in fit.budgets], "floor": fit.floor}


def source_hash(runs: pd.DataFrame) -> str:
    """A hash of the runs a law was fitted on, independent of row and column order and of the file format."""
    columns = [c for c in ("budget", "group", "lr", "bsz", "loss", "status", "seed") if c in runs.columns]
    table = runs[columns].sort_values(columns).to_csv(index=False, float_format="%.12g")
    return hashlib.sha256(table.encode()).hexdigest()


def law_card(analysis: Analysis, family: str, estimator: str | None = None, source: str = "") -> LawCard:
    """The law of ``family`` (the bowl by default, else the band) with everything the verdict reads."""
    fit = analysis.law(family, estimator)
    runs = analysis.results[analysis.results[FAMILY] == family]
    fitted = fit.budgets[np.isfinite(fit.budgets["lr_opt"]) & np.isfinite(fit.budgets["bsz_opt"])]
    budgets = tuple(
        BudgetFacts(float(r.budget), int(r.finished), float(r.best_lr), float(r.best_bsz),
                    tuple(dict.fromkeys(TABLE_FLAGS[f.strip()] for f in str(r.edge).split(",") if f.strip())))
        for r in fitted.itertuples())
    noise = analysis.seed_noise
    noise = noise[noise[FAMILY] == family] if len(noise) else noise
    conventions = runs["convention"].unique() if "convention" in runs else ["spent"]
    return LawCard(
        family=family, estimator=fit.estimator, units=fit.units, convention=str(conventions[0]),
        tolerance=fit.tolerance, level=fit.lr.level, lr=fitted_law(fit.lr), bsz=fitted_law(fit.bsz),
        budgets=budgets, seed_spread=float(noise["spread"].max()) if len(noise) else None,
        loss=loss_facts(analysis.loss[family]) if family in analysis.loss else None,
        warnings=tuple(w for w in analysis.warnings if w.startswith((f"{family}:", f"{family} "))), source=source,
        source_sha256=source_hash(runs), toolkit=toolkit_version())
