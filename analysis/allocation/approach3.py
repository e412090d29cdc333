"""Chinchilla's approach 3: L(N, D) = E + A/N^α + B/D^β fitted to every run at once, and the
compute-optimal size in closed form.

The fit follows Hoffmann et al. as corrected by Besiroglu et al.: log L is modelled as
LSE(ln A - α ln N, ln B - β ln D, ln E) and fitted by a Huber loss (δ = 1e-3) on the log-loss residuals
SUMMED over runs (averaging it scales the gradient by 1/n and L-BFGS stops before the optimum), with
E bounded by the smallest observed loss. Starts come from variable projection: on a dense grid of
(α, β), E, A and B enter linearly and are solved by weighted least squares; L-BFGS-B refines the best
grid points. Intervals resample runs within budgets.

With C = k·N·D, minimising L along an isoFLOP gives αA N^-α = βB D^-β, hence
N_opt(C) = G·(C/k)^a with G = (αA / (βB))^(1/(α+β)) and a = β/(α+β); D_opt = (C/k) / N_opt, and the
loss it reaches is E + H·(C/k)^-(αβ/(α+β)) with H = A·G^-α + B·G^β.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from analysis.allocation.base import AllocationFit, json_ci, json_number, measured_k, stratified_weights
from analysis.bootstrap import LEVEL, percentile_ci

DELTA = 1e-3  # Huber's threshold on log-loss residuals (Hoffmann et al.)
EXPONENT_GRID = np.linspace(0.02, 1.5, 38)  # α and β values tried by variable projection
EXPONENT_BOUNDS = (1e-3, 5.0)
STARTS = 8  # best grid points refined by L-BFGS-B on the data
REACHED = 1e-6  # excess over the best objective within which a start reaches it, relative to the larger of
# that objective and n·δ² (what residuals of δ would score: noiseless data's objective is zero)
PARAMETERS = ("E", "A", "B", "alpha", "beta")


def huber(r: np.ndarray, delta: float = DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def objective(theta: np.ndarray, logn: np.ndarray, logd: np.ndarray, logl: np.ndarray,
              w: np.ndarray) -> tuple[float, np.ndarray]:
    """Σ_i w_i·Huber(LSE(a - α ln N_i, b - β ln D_i, e) - ln L_i) and its gradient, θ = (e, a, b, α, β).

    A sum, not a mean: a run counts the same whatever the size of the study, and the gradient keeps
    its scale, so L-BFGS's stopping rule does not fire early on a large table."""
    e, a, b, alpha, beta = theta
    terms = np.stack([a - alpha * logn, b - beta * logd, np.full_like(logn, e)])
    top = terms.max(axis=0)
    expd = np.exp(terms - top)
    total = expd.sum(axis=0)
    r = top + np.log(total) - logl
    p = expd / total
    g = w * np.clip(r, -DELTA, DELTA)
    grad = np.array([g @ p[2], g @ p[0], g @ p[1], -(g * p[0]) @ logn, -(g * p[1]) @ logd])
    return float(w @ huber(r)), grad


def _grid_starts(logn: np.ndarray, logd: np.ndarray, logl: np.ndarray, w: np.ndarray, e_max: float,
                 grid: np.ndarray = EXPONENT_GRID) -> np.ndarray:
    """Variable projection: for each (α, β) of the grid, E, A, B by least squares in relative terms
    (weights 1/L², close to residuals in log loss), clipped positive and E to its bound; returned as
    starts θ = (e, a, b, α, β) sorted by their Huber objective, best first.

    The normal equations of every grid point are assembled from the sums of each exponent's column
    alone and one product over pairs, so the grid costs little more than its objectives."""
    loss = np.exp(logl)
    v = w / loss**2
    pn, pd_ = np.exp(-grid[:, None] * logn), np.exp(-grid[:, None] * logd)  # (grid, runs)
    i, j = (g.ravel() for g in np.meshgrid(np.arange(len(grid)), np.arange(len(grid)), indexing="ij"))
    sn, sd, snn, sdd = pn @ v, pd_ @ v, (pn**2) @ v, (pd_**2) @ v
    snd = ((pn * v) @ pd_.T)[i, j]
    ones = np.full(len(i), v.sum())
    lhs = np.stack([np.stack([ones, sn[i], sd[j]], -1), np.stack([sn[i], snn[i], snd], -1),
                    np.stack([sd[j], snd, sdd[j]], -1)], 1) + 1e-12 * np.eye(3)
    rhs = np.column_stack([np.full(len(i), v @ loss), ((pn * v) @ loss)[i], ((pd_ * v) @ loss)[j]])
    coef = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    coef = np.maximum(coef, 1e-6 * loss.min())
    coef[:, 0] = np.minimum(coef[:, 0], math.exp(e_max))
    pred = np.log(coef[:, :1] + coef[:, 1:2] * pn[i] + coef[:, 2:] * pd_[j])
    starts = np.column_stack([np.log(coef), grid[i], grid[j]])
    return starts[np.argsort(huber(pred - logl) @ w)]


@dataclass
class Approach3Result:
    """The fitted L(N, D) with bootstrap intervals, its convergence checks, and the closed-form optimum."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    ci: dict[str, tuple[float, float]]  # per parameter and "a"
    k: float  # C / (N·D), geometric mean over the runs
    k_range: tuple[float, float]
    objective: float  # the summed Huber loss at the optimum
    grad_norm: float  # of the projected gradient there (bound constraints taken into account)
    starts: int  # L-BFGS-B starts on the data
    starts_at_best: int  # of them, those that reached the best objective (relative REACHED)
    failed_replicates: int  # bootstrap replicates whose parameters are not all finite
    level: float = LEVEL
    replicates: np.ndarray | None = None  # bootstrap replicates of (E, A, B, alpha, beta), one per row
    name: ClassVar[str] = "approach3"

    @property
    def a(self) -> float:
        return float(self.beta / (self.alpha + self.beta))

    @property
    def G(self) -> float:
        return float((self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta)))

    @property
    def converged(self) -> bool:
        """At least two starts agree on the optimum (one may be a lucky local minimum)."""
        return self.starts_at_best >= 2

    def loss(self, n: float | np.ndarray, d: float | np.ndarray) -> np.ndarray:
        return self.E + self.A / np.asarray(n, dtype=float) ** self.alpha + self.B / np.asarray(d, dtype=float) ** self.beta

    def n_opt(self, compute: float | np.ndarray) -> np.ndarray:
        return self.G * (np.asarray(compute, dtype=float) / self.k) ** self.a

    def d_opt(self, compute: float | np.ndarray) -> np.ndarray:
        return np.asarray(compute, dtype=float) / (self.k * self.n_opt(compute))

    def n_opt_ci(self, compute: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N_opt's interval at each compute, from the replicates' own G and a (they move together, so the
        interval of G·C^a is not that of G times that of C^a); NaN without replicates."""
        logc = np.log(np.atleast_1d(np.asarray(compute, dtype=float)) / self.k)
        reps = self.replicates if self.replicates is not None else np.empty((0, 5))
        reps = reps[np.isfinite(reps).all(axis=1)]
        if not len(reps):
            return np.full(logc.shape, np.nan), np.full(logc.shape, np.nan)
        _, coef_a, coef_b, alpha, beta = (column[:, None] for column in reps.T)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            log_n = np.log(alpha * coef_a / (beta * coef_b)) / (alpha + beta) + beta / (alpha + beta) * logc
        lo, hi = np.nanquantile(log_n, [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
        return np.exp(lo), np.exp(hi)

    def optimal_loss(self, compute: float | np.ndarray) -> np.ndarray:
        return self.loss(self.n_opt(compute), self.d_opt(compute))

    def compute_for_loss(self, loss: float) -> float:
        """The compute at which the optimal allocation reaches ``loss`` (inverts ``optimal_loss``)."""
        h = self.A * self.G**-self.alpha + self.B * self.G**self.beta
        gamma = self.alpha * self.beta / (self.alpha + self.beta)
        return self.k * (h / (loss - self.E)) ** (1 / gamma) if loss > self.E else math.inf

    def to_dict(self, *, units: str, convention: str) -> dict[str, Any]:
        """The ``approach3`` object of ``optimal.json``: each value beside its interval as ``<name>_ci``."""
        out: dict[str, Any] = {}
        for name in (*PARAMETERS, "a"):
            out[name] = json_number(getattr(self, name))
            out[f"{name}_ci"] = json_ci(self.ci[name])
        return out | {"G": self.G, "law": "N_opt = G * (C/k)^a", "k": self.k, "k_range": list(self.k_range),
                      "objective": self.objective, "grad_norm": self.grad_norm, "starts": self.starts,
                      "starts_at_best": self.starts_at_best, "converged": self.converged,
                      "failed_replicates": self.failed_replicates, "level": self.level, "units": units,
                      "convention": convention}


def _minimise(start: np.ndarray, data: tuple, e_max: float) -> tuple[np.ndarray, float]:
    bounds = [(None, e_max), (None, None), (None, None), EXPONENT_BOUNDS, EXPONENT_BOUNDS]
    res = minimize(objective, start, args=data, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})
    return res.x, float(res.fun)


def _projected_grad_norm(theta: np.ndarray, grad: np.ndarray, e_max: float) -> float:
    """The gradient's norm where a bound does not hold the parameter (at e = e_max only an upward push counts)."""
    lows = np.array([-np.inf, -np.inf, -np.inf, EXPONENT_BOUNDS[0], EXPONENT_BOUNDS[0]])
    highs = np.array([e_max, np.inf, np.inf, EXPONENT_BOUNDS[1], EXPONENT_BOUNDS[1]])
    held = ((theta >= highs - 1e-12) & (grad < 0)) | ((theta <= lows + 1e-12) & (grad > 0))
    return float(np.linalg.norm(np.where(held, 0.0, grad)))


class Approach3(AllocationFit):
    """L(N, D) fitted to every run; the optimum in closed form."""

    name = "approach3"
    min_budgets = 2

    @threadpool_limits.wrap(limits=1)
    def fit(self, table: pd.DataFrame, *, n_boot: int = 200, seed: int = 0, level: float = LEVEL) -> Approach3Result:
        """Fit on the data from the best ``STARTS`` grid points; each bootstrap replicate from the data's
        optimum, and from its own best point of a coarser grid where that scores lower (a different basin).
        On one BLAS thread: its thousands of tiny L-BFGS-B solves only contend for a second one."""
        runs = self.runs(table)
        logn, logd, logl = (np.log(runs[c].to_numpy()) for c in ("params", "train_units", "loss"))
        # centred logs condition the problem (ln A and α otherwise move together); undone at the end
        mn, md = float(logn.mean()), float(logd.mean())
        cn, cd = logn - mn, logd - md
        e_max = float(logl.min())
        w = stratified_weights(runs["budget"].to_numpy(), n_boot, np.random.default_rng(seed))
        fits = [_minimise(s, (cn, cd, logl, w[0]), e_max) for s in _grid_starts(cn, cd, logl, w[0], e_max)[:STARTS]]
        best, fbest = min(fits, key=lambda f: f[1])
        reached = sum(f <= fbest + REACHED * max(fbest, len(logl) * DELTA**2) for _, f in fits)
        grad = objective(best, cn, cd, logl, w[0])[1]
        reps = np.array([self._replicate(best, (cn, cd, logl, row), float(logl[row > 0].min()))
                         for row in w[1:]]).reshape(-1, 5)
        thetas = np.vstack([best, reps])
        with np.errstate(over="ignore", invalid="ignore"):  # a wild replicate's A or B may overflow: not finite
            natural = np.column_stack([np.exp(thetas[:, 0]), np.exp(thetas[:, 1] + thetas[:, 3] * mn),
                                       np.exp(thetas[:, 2] + thetas[:, 4] * md), thetas[:, 3], thetas[:, 4]])
            columns = dict(zip(PARAMETERS, natural.T, strict=True)) | {
                "a": natural[:, 4] / (natural[:, 3] + natural[:, 4])}
        ci = {name: percentile_ci(v[1:], level) if n_boot else (math.nan, math.nan) for name, v in columns.items()}
        failed = int((~np.isfinite(natural[1:]).all(axis=1)).sum())
        k, k_range = measured_k(runs)
        return Approach3Result(*natural[0], ci, k, k_range, fbest, _projected_grad_norm(best, grad, e_max),
                               len(fits), int(reached), failed, level, natural[1:])

    @staticmethod
    def _replicate(best: np.ndarray, data: tuple, e_max: float) -> np.ndarray:
        theta, f = _minimise(np.minimum(best, [e_max, np.inf, np.inf, np.inf, np.inf]), data, e_max)
        start = _grid_starts(*data, e_max, EXPONENT_GRID[::2])[0]
        if objective(start, *data)[0] < f:
            other, g = _minimise(start, data, e_max)
            theta = other if g < f else theta
        return theta
