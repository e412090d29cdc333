"""What every allocation fit shares: the table it reads, its checks, the compute convention and the
bootstrap design.

A table holds one row per finished run of one family: ``budget`` (the run's compute C in FLOPs),
``params`` (its model size N), ``train_units`` (the bytes or tokens D it trained on) and ``loss``.
The fits never assume C = 6ND: the constant k = C / (N·D) is measured on the runs, so N may be a
parameter count or the paper's FLOPs per unit (then k is 1).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from analysis.bootstrap import LEVEL
from analysis.estimators import bootstrap_weights

COLUMNS = ("budget", "params", "train_units", "loss")
MIN_SIZES = 3  # distinct sizes a budget needs: a parabola has three coefficients


def validate_table(table: pd.DataFrame, min_budgets: int, min_sizes: int = MIN_SIZES) -> pd.DataFrame:
    """The table's runs sorted by budget and size, or one ValueError line saying what is wrong with it."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"an allocation fit needs a pandas DataFrame; got {type(table).__name__}")
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"the allocation table lacks column(s) {', '.join(missing)}; "
                         f"it needs {', '.join(COLUMNS)} (one row per finished run)")
    values = table[list(COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = ~(np.isfinite(values) & (values > 0)).all(axis=1)
    if bad.any():
        rows = ", ".join(str(i) for i in table.index[bad][:5])
        raise ValueError(f"the allocation table's {', '.join(COLUMNS)} must be positive and finite; "
                         f"{int(bad.sum())} row(s) are not (e.g. index {rows})")
    runs = table.assign(**{c: values[:, i] for i, c in enumerate(COLUMNS)})
    sizes = runs.groupby("budget")["params"].nunique()
    if len(sizes) < min_budgets:
        raise ValueError(f"the allocation table has {len(sizes)} budget(s); this fit needs at least {min_budgets}")
    few = sizes[sizes < min_sizes]
    if len(few):
        raise ValueError(f"budget(s) {', '.join(f'{b:.3g}' for b in few.index)} have "
                         f"{', '.join(str(n) for n in few)} distinct size(s); an isoFLOP fit needs at least "
                         f"{min_sizes} per budget")
    return runs.sort_values(["budget", "params"]).reset_index(drop=True)


def measured_k(runs: pd.DataFrame) -> tuple[float, tuple[float, float]]:
    """k = C / (N·D) over the runs: its geometric mean, and its range (how far the runs stray from one k)."""
    k = runs["budget"].to_numpy() / (runs["params"].to_numpy() * runs["train_units"].to_numpy())
    return float(np.exp(np.log(k).mean())), (float(k.min()), float(k.max()))


def stratified_weights(budgets: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap weights that resample each budget's runs within the budget (row 0: the data itself).

    Resampling within budgets keeps the isoFLOP design (every budget keeps its count of runs), as a
    rerun of the same study would."""
    w = np.empty((n_boot + 1, len(budgets)))
    for budget in np.unique(budgets):
        at = np.flatnonzero(budgets == budget)
        w[:, at] = bootstrap_weights(len(at), n_boot, rng)
    return w


def json_number(x: float) -> float | None:
    """A float JSON can hold: NaN and infinities become null."""
    return float(x) if math.isfinite(x) else None


def json_ci(ci: tuple[float, float]) -> list[float | None]:
    return [json_number(ci[0]), json_number(ci[1])]


class AllocationFit:
    """One way of reading the compute-optimal model size from an isoFLOP table. Subclasses set the
    class attributes and ``fit``."""

    name: ClassVar[str]
    min_sizes_per_budget: ClassVar[int] = MIN_SIZES
    min_budgets: ClassVar[int]

    def runs(self, table: pd.DataFrame) -> pd.DataFrame:
        """The table checked against this fit's needs (one ValueError line before any fitting)."""
        return validate_table(table, self.min_budgets, self.min_sizes_per_budget)

    def fit(self, table: pd.DataFrame, *, n_boot: int = 200, seed: int = 0, level: float = LEVEL) -> Any:
        """The fit's result dataclass (with ``to_dict(units=..., convention=...)``)."""
        raise NotImplementedError
