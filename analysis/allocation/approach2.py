"""Chinchilla's approach 2: at each budget, the vertex of a parabola of loss against ln N is that
budget's optimal size; a power law N_opt = G·C^a through the vertices, and D_opt = C / (k·N_opt).

A parabola is the wrong shape for an isoFLOP curve whose two terms decay at different rates (α ≠ β):
its vertex moves with where the grid of sizes sits around the optimum and how wide it is. A grid
off-centre by the same factor at every budget moves every vertex alike (G is biased, a is not); one
whose offset drifts with the budget biases a (``benchmarks/bench_allocation.py`` measures both).
A vertex the grid does not bracket is extrapolated, so it is reported as a bound and kept out of the law.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from analysis.allocation.base import AllocationFit, json_ci, json_number, measured_k, stratified_weights
from analysis.bootstrap import LEVEL, LawFit, law_from_estimates, percentile_ci
from analysis.estimators import HUBER_K
from aunet.laws import MIN_BUDGETS

MIN_SIDE = 2  # distinct sizes a vertex needs on each side to be a value rather than a bound


@dataclass
class Vertex:
    """One budget's optimal size: a value with its interval, or a bound (``kind`` "upper": N_opt lies
    below ``n_opt``; "lower": above it) with the reason it is one."""

    budget: float
    kind: str  # "value", "upper" or "lower"
    n_opt: float  # the vertex, or the bound: the size past which the grid no longer brackets it
    ci: tuple[float, float]  # NaN for a bound
    fitted: float  # the parabola's own vertex (NaN if it opens downward), for figures
    below: int  # distinct sizes below the fitted vertex
    above: int
    curve: tuple[float, float, float]  # loss = c0 + c1·ln N + c2·(ln N)², for figures
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "kind": self.kind, "n_opt": json_number(self.n_opt),
                "n_opt_ci": json_ci(self.ci), "sizes_below": self.below, "sizes_above": self.above,
                "reason": self.reason}


@dataclass
class Approach2Result:
    """The per-budget vertices and the law N_opt = G·C^a through those that are values (C in FLOPs)."""

    vertices: list[Vertex]
    a: float
    a_ci: tuple[float, float]
    G: float
    G_ci: tuple[float, float]
    k: float  # C / (N·D), geometric mean over the runs
    k_range: tuple[float, float]
    law: LawFit | None  # None when fewer than MIN_BUDGETS vertices are values
    reason: str  # why there is no law ("" when there is one)
    level: float = LEVEL
    name: ClassVar[str] = "approach2"

    def n_opt(self, compute: float | np.ndarray) -> np.ndarray:
        return self.G * np.asarray(compute, dtype=float) ** self.a

    def d_opt(self, compute: float | np.ndarray) -> np.ndarray:
        return np.asarray(compute, dtype=float) / (self.k * self.n_opt(compute))

    def n_opt_ci(self, compute: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N_opt's interval at each compute, from the law's joint draws of G and a; NaN without a law."""
        if self.law is None:
            nan = np.full(np.atleast_1d(np.asarray(compute, dtype=float)).shape, np.nan)
            return nan, nan
        return self.law.predict(compute)[1:]

    def to_dict(self, *, units: str, convention: str) -> dict[str, Any]:
        """The ``approach2`` object of ``optimal.json``: each value beside its interval as ``<name>_ci``."""
        return {"a": json_number(self.a), "a_ci": json_ci(self.a_ci), "G": json_number(self.G),
                "G_ci": json_ci(self.G_ci), "law": "N_opt = G * C^a", "k": self.k, "k_range": list(self.k_range),
                "dispersion": json_number(self.law.dispersion) if self.law else None, "level": self.level,
                "units": units, "convention": convention, "reason": self.reason,
                "vertices": [v.to_dict() for v in self.vertices]}


def robust_parabolas(x: np.ndarray, y: np.ndarray, w: np.ndarray,
                     iterations: int = 8) -> tuple[np.ndarray, float, float]:
    """Huber-IRLS parabolas of ``y`` against standardised ``x``, one per row of the weights ``w``.

    Returns the coefficients (rows: c0, c1, c2 in z = (x - centre) / spread) and the standardisation.
    The residual scale comes from the data (row 0) and is shared by every replicate, so a resample
    that happens to fit closely does not down-weight its runs more than the data would."""
    centre, spread = float(x.mean()), float(x.std()) + 1e-12
    z = (x - centre) / spread
    design = np.column_stack([np.ones_like(z), z, z**2])
    outer = design[:, :, None] * design[:, None, :]

    def solve(weights: np.ndarray) -> np.ndarray:
        lhs = np.einsum("rn,njk->rjk", weights, outer) + 1e-12 * np.eye(3)
        return np.linalg.solve(lhs, np.einsum("rn,nj->rj", weights * y, design)[..., None])[..., 0]

    theta = solve(w)
    resid = y - theta @ design.T
    scale = max(1.4826 * float(np.median(np.abs(resid[0]))), 1e-9 * float(np.abs(y).mean()))
    for _ in range(iterations):
        theta = solve(w * np.minimum(1.0, HUBER_K * scale / np.maximum(np.abs(resid), 1e-300)))
        resid = y - theta @ design.T
    return theta, centre, spread


def _vertices(theta: np.ndarray, centre: float, spread: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ln N at each replicate's vertex; NaN where its parabola opens downward, where it stands on fewer
    than three distinct sizes, or where it lies more than the grid's width outside the grid."""
    with np.errstate(divide="ignore", invalid="ignore"):
        xv = centre - spread * theta[:, 1] / (2 * theta[:, 2])
    width = x.max() - x.min()
    distinct = np.array([len(np.unique(x[row > 0])) for row in w])
    ok = (theta[:, 2] > 0) & (distinct >= 3) & (xv > x.min() - width) & (xv < x.max() + width)
    return np.where(ok, xv, np.nan)


def budget_vertex(budget: float, group: pd.DataFrame, w: np.ndarray, level: float) -> tuple[Vertex, np.ndarray]:
    """One budget's vertex (a value or a bound) and its replicates' ln N_opt (row 0: the data)."""
    x, y = np.log(group["params"].to_numpy()), group["loss"].to_numpy()
    theta, centre, spread = robust_parabolas(x, y, w)
    xv = _vertices(theta, centre, spread, x, w)
    c0, c1, c2 = theta[0]
    curve = (c0 - c1 * centre / spread + c2 * centre**2 / spread**2, c1 / spread - 2 * c2 * centre / spread**2,
             c2 / spread**2)
    sizes = np.unique(x)
    if c2 > 0:
        fitted = centre - spread * c1 / (2 * c2)
        below, above = int((sizes < fitted).sum()), int((sizes > fitted).sum())
    else:  # no minimum: the grid's lower-loss edge is where the optimum lies beyond
        fitted = math.nan
        low_edge = np.polyval([c2, c1, c0], (sizes[0] - centre) / spread) < np.polyval(
            [c2, c1, c0], (sizes[-1] - centre) / spread)
        below, above = (0, len(sizes)) if low_edge else (len(sizes), 0)
    common = {"budget": float(budget), "fitted": math.exp(fitted) if math.isfinite(fitted) else math.nan,
              "below": below, "above": above, "curve": curve}
    where = (f"the parabola's vertex at {math.exp(fitted):.3g}" if math.isfinite(fitted)
             else "the parabola opens downward: its lower-loss end")
    if below < MIN_SIDE:
        bound = math.exp(sizes[MIN_SIDE - 1])
        return Vertex(kind="upper", n_opt=bound, ci=(math.nan, math.nan), **common,
                      reason=f"{where} has {below} size(s) below it (needs {MIN_SIDE}): N_opt < {bound:.3g}"), xv
    if above < MIN_SIDE:
        bound = math.exp(sizes[-MIN_SIDE])
        return Vertex(kind="lower", n_opt=bound, ci=(math.nan, math.nan), **common,
                      reason=f"{where} has {above} size(s) above it (needs {MIN_SIDE}): N_opt > {bound:.3g}"), xv
    ci = percentile_ci(xv[1:], level, math.exp) if len(xv) > 1 else (math.nan, math.nan)
    return Vertex(kind="value", n_opt=math.exp(fitted), ci=ci, **common), xv


class Approach2(AllocationFit):
    """Robust parabolas per budget, then a power law through the bracketed vertices."""

    name = "approach2"
    min_budgets = MIN_BUDGETS

    def fit(self, table: pd.DataFrame, *, n_boot: int = 200, seed: int = 0, level: float = LEVEL) -> Approach2Result:
        """Vertices resample each budget's runs; the law's interval propagates their bootstrap spread and
        widens when the vertices scatter around it more than that (``law_from_estimates``)."""
        runs = self.runs(table)
        rng = np.random.default_rng(seed)
        w = stratified_weights(runs["budget"].to_numpy(), n_boot, rng)
        vertices, logs = [], []
        for budget, group in runs.groupby("budget"):
            vertex, xv = budget_vertex(budget, group, w[:, group.index.to_numpy()], level)
            vertices.append(vertex)
            logs.append(xv)
        k, k_range = measured_k(runs)
        valued = [i for i, v in enumerate(vertices) if v.kind == "value"]
        if len(valued) < MIN_BUDGETS:
            reason = (f"{len(valued)} of {len(vertices)} budgets have a bracketed vertex; "
                      f"the law N_opt = G*C^a needs {MIN_BUDGETS}")
            nan2 = (math.nan, math.nan)
            return Approach2Result(vertices, math.nan, nan2, math.nan, nan2, k, k_range, None, reason, level)
        budgets = np.array([vertices[i].budget for i in valued])
        est = np.exp(np.column_stack([logs[i] for i in valued]))
        law = law_from_estimates("n_opt", budgets, est, np.ones(len(valued)), rng, level)
        return Approach2Result(vertices, law.exponent, law.exponent_ci, law.coef, law.coef_ci, k, k_range, law, "",
                               level)
