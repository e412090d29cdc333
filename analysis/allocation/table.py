"""A study's results as the table the allocation fits read: one point per (budget, model size).

An isoFLOP cell may search LR x BSZ at each size; the point for that size is then its best
configuration (the lowest loss among its finished, usable runs), with every seed of that
configuration kept as its own row, so that the fits see the seed noise the study measured.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.allocation.base import COLUMNS
from analysis.load import family_runs


def allocation_table(results: Any, family: str) -> pd.DataFrame:
    """``budget, params, train_units, loss`` (plus ``lr, bsz, seed`` where the table has them) of one
    family's usable runs, one configuration per (budget, params); one ValueError line when the table
    cannot give it."""
    runs = family_runs(results, family, allocation=True)
    missing = [c for c in ("params", "train_units") if c not in runs.columns or runs[c].isna().all()]
    if missing:
        raise ValueError(f"{family}'s runs have no {' or '.join(missing)}: an allocation fit needs each run's "
                         f"model size and training data (import them with the table's params and tokens columns)")
    usable = runs[runs["usable"].astype(bool)] if "usable" in runs.columns else runs
    usable = usable.dropna(subset=list(COLUMNS))
    if usable.empty:
        raise ValueError(f"{family} has no usable run with {', '.join(COLUMNS)}")
    config = [c for c in ("lr", "bsz") if c in usable.columns]
    keep = [*COLUMNS, *config, *[c for c in ("seed",) if c in usable.columns]]
    if not config:
        return usable[keep].sort_values(["budget", "params"]).reset_index(drop=True)
    # The best configuration of each size: lowest mean loss over its seeds.
    means = usable.groupby(["budget", "params", *config], dropna=False)["loss"].mean().reset_index()
    best = means.loc[means.groupby(["budget", "params"])["loss"].idxmin(), ["budget", "params", *config]]
    points = usable.merge(best, on=["budget", "params", *config])
    return points[keep].sort_values(["budget", "params"]).reset_index(drop=True)
