"""A fitted law with its limits (``aunet.laws.LawCard``), from an analysis: what law files hold and
what ``aunet.verdict.judge`` reads. The one place an analysis becomes a law file (:func:`write_law`,
:func:`write_laws`): the CLI and the report both write through it."""

from __future__ import annotations

import hashlib
import math
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.bootstrap import LawFit
from analysis.box import BoxFlag
from analysis.columns import FAMILY
from analysis.fits import Analysis
from analysis.loss_curve import LossFit
from aunet.config import BYTE_VOCAB
from aunet.laws import BudgetFacts, FittedLaw, LawCard, Regime, tokens_per_param

#: Each label of the per-budget table's ``edge`` and the law-file flag (``aunet.laws.FLAGS``) it stands for.
TABLE_FLAGS = {flag.label: flag.law for flag in BoxFlag}


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


def _distinct(values: pd.Series) -> list:
    """Distinct values to 6 digits (averaged seeds carry float noise)."""
    return sorted({float(f"{v:.6g}") for v in values.dropna().tolist()})


def fitted_regime(family: str, runs: pd.DataFrame) -> Regime:
    """The kind of run a law was fitted on, from its runs' columns; a table without ``seq_len`` or
    ``vocab_size`` (older records, most exports) has them derived from the ladder's regime at each
    budget where the ladder knows the family, and says so (``origin``)."""
    from aunet import ladder

    def column(name: str) -> pd.Series:
        return pd.to_numeric(runs[name], errors="coerce") if name in runs else pd.Series(dtype=float)

    ratios = _distinct(column("ratio"))
    per_param = tokens_per_param(column("train_units"), column("bytes_per_unit"), column("params"))
    per_param = per_param[np.isfinite(per_param) & (per_param > 0)] if len(runs) else per_param
    units = column("bytes_per_unit")
    seq_lens = [int(v) for v in _distinct(column("seq_len")) if v > 0]
    vocabs = [int(v) for v in _distinct(column("vocab_size")) if v > 0]
    origin = "recorded"
    if (not seq_lens or not vocabs) and family in ladder.FAMILIES:
        fam = ladder.FAMILIES[family]
        regimes = [fam.regime(float(b)) for b in _distinct(runs["budget"])]
        seq_lens = seq_lens or sorted({r[0] for r in regimes})
        vocabs = vocabs or sorted({r[2] or BYTE_VOCAB for r in regimes})
        origin = "sequence and vocabulary derived from the ladder's regime (the table does not record them)"
    elif not seq_lens or not vocabs:
        origin = "sequence or vocabulary not recorded"
    return Regime(family, tuple(float(r) for r in ratios),
                  (float(per_param.min()), float(per_param.max())) if len(per_param) else None,
                  tuple(seq_lens), tuple(vocabs),
                  (float(units.min()), float(units.max())) if units.notna().any() else None, origin)


def law_card(analysis: Analysis, family: str, estimator: str | None = None, source: str = "") -> LawCard:
    """The law of ``family`` (the bowl by default, else the band) with everything the verdict reads."""
    fit = analysis.law(family, estimator)
    runs = analysis.results[analysis.results[FAMILY] == family]
    fitted = fit.budgets[np.isfinite(fit.budgets["lr_opt"]) & np.isfinite(fit.budgets["bsz_opt"])]
    budgets = tuple(
        BudgetFacts(float(r.budget), int(r.finished), float(r.best_lr), float(r.best_bsz),
                    tuple(dict.fromkeys(flag.law for flag in r.flags)))
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
        source_sha256=source_hash(runs), toolkit=toolkit_version(),
        regime=fitted_regime(family, fit.runs[fit.runs["usable"]]))


def write_law(analysis: Analysis, family: str, estimator: str | None, source: str, path: str | Path) -> LawCard:
    """Write the law file of ``family`` (:func:`law_card`'s default estimator where None) at ``path``."""
    card = law_card(analysis, family, estimator, source)
    card.write(path)
    return card


def write_laws(analysis: Analysis, folder: str | Path, source: str) -> dict[tuple[str, str], Path]:
    """Every fitted law as ``<family>_<estimator>.json`` in ``folder``; the paths by (family, estimator)."""
    paths: dict[tuple[str, str], Path] = {}
    for family, fits in analysis.laws.items():
        for estimator in fits:
            paths[family, estimator] = Path(folder) / f"{family}_{estimator}.json"
            write_law(analysis, family, estimator, source, paths[family, estimator])
    return paths
