"""Bootstrap intervals, and power laws through per-budget estimates.

Uncertainty comes from one bootstrap design used everywhere: the runs of each budget
are resampled with replacement (as multinomial weights, so a thousand replicates are
a few matrix products; the band on a fixed grid redraws the loss noise instead, see
``Estimator.replicates``) and each replicate re-estimates every budget's optimum. The
budgets' bootstrap variances propagate into the law, whose scale is then checked against
the budgets' actual scatter around it (see :func:`law_from_estimates`): the intervals widen
when the law does not fit, and never narrow below the propagated bootstrap (with 3-5
budgets the scatter has 1-3 degrees of freedom: too few to trust a smaller scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aunet.laws import MIN_BUDGETS, PowerLaw

LEVEL = 0.95
LAW_DRAWS = 4000  # draws of (log coef, exponent) behind every law interval and prediction


def exp_or_inf(x: float) -> float:
    """exp that says infinity instead of raising: heavy-tailed draws of a 3-budget law reach e^1000."""
    return math.exp(x) if x < 709.0 else math.inf


def percentile_ci(values: np.ndarray, level: float, transform: Callable[[float], float] = float) -> tuple[float, float]:
    """Percentile interval of ``values`` (NaN replicates ignored), through ``transform`` (e.g. exp_or_inf)."""
    if not np.isfinite(values).any():
        return math.nan, math.nan
    lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])
    return transform(float(lo)), transform(float(hi))


def _robust_var(reps: np.ndarray) -> np.ndarray:
    """Per-column variance from the interquartile range: bowl replicates have heavy tails, and a few
    wild replicates must not set the scale of every interval."""
    finite = np.isfinite(reps).any(axis=0)
    q1, q3 = np.nanquantile(np.where(finite, reps, 0.0), [0.25, 0.75], axis=0)
    return np.where(finite, ((q3 - q1) / 1.349) ** 2, np.nan)


@dataclass
class LawFit:
    """y = coef · C^exponent fitted in log space, with bootstrap intervals.

    ``samples`` holds draws of (log coef, exponent) so that any prediction gets its
    interval from their joint distribution (coef and exponent are strongly correlated).
    """

    target: str  # "lr" or "bsz"
    coef: float
    exponent: float
    coef_ci: tuple[float, float]
    exponent_ci: tuple[float, float]
    budgets: np.ndarray  # fitted budgets
    values: np.ndarray  # each budget's estimate of the optimum
    residuals: np.ndarray  # log(value) - log(law), per budget
    dispersion: float  # budgets' scatter around the law in units of their bootstrap spread (~1 if consistent)
    samples: np.ndarray
    level: float = LEVEL

    def power_law(self) -> PowerLaw:
        return PowerLaw(self.coef, self.exponent)

    def predict(self, compute: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point prediction and interval at each budget."""
        logc = np.log(np.atleast_1d(np.asarray(compute, dtype=float)))
        draws = self.samples[:, :1] + self.samples[:, 1:] * logc
        lo, hi = np.nanquantile(draws, [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
        with np.errstate(over="ignore"):  # a 3-budget law may know nothing: its interval reaches infinity
            return self.coef * np.exp(self.exponent * logc), np.exp(lo), np.exp(hi)


def law_from_estimates(target: str, budgets: np.ndarray, est: np.ndarray, weights: np.ndarray,
                       rng: np.random.Generator, level: float) -> LawFit:
    """A power law through per-budget estimates (row 0: the data, rows 1..: bootstrap replicates).

    The line is a fixed weighted least-squares map of the budgets' log estimates, and
    budgets are resampled independently, so the bootstrap variance of each budget's
    estimate propagates into the law's covariance exactly. That scale is then checked
    against how far the budgets actually scatter around the law: the dispersion phi
    (residuals in units of their bootstrap spread, normalised to 1 in expectation; B-2
    degrees of freedom) scales the standard errors by max(1, phi), so the interval
    widens when the law does not fit (budgets scatter more than their noise) and never
    narrows below the propagated bootstrap when 1-3 degrees of freedom happen to show
    little scatter. The scale is a point value, not a Student-t mixture over phi: a
    t-mixture floored at 1 is wider than the bootstrap even when phi is 1 (12.7 instead
    of 1.96 standard errors at 1 degree of freedom), which over-covered every design of
    ``benchmarks/bench_coverage.py``. With nothing to resample (one run per budget) every
    budget gets the same variance, set by the residuals alone: the classical Student-t
    regression interval.
    """
    x = np.log(budgets)
    y = np.log(est[0])
    nb = len(x)
    var = _robust_var(np.log(est[1:])) if len(est) > 1 else np.zeros(nb)
    var = np.where(np.isfinite(var), var, 0.0)
    resampled = bool((var > 0).any())
    var = np.maximum(var, 0.1 * np.median(var[var > 0])) if resampled else np.ones(nb)
    w = weights / weights.sum()
    xm = float(w @ x)
    slope_map = w * (x - xm) / float(w @ (x - xm) ** 2)
    intercept_map = w - slope_map * xm
    a0, b0 = float(intercept_map @ y), float(slope_map @ y)
    resid = y - (a0 + b0 * x)
    hat = intercept_map[None, :] + x[:, None] * slope_map[None, :]
    spread = np.eye(nb) - hat
    expected = float(np.trace((spread * var) @ spread.T / var[:, None]))  # E[sum r^2/var] if var is right
    dispersion = math.sqrt(float((resid**2 / var).sum()) / expected)
    maps = np.stack([intercept_map, slope_map])
    chol = np.linalg.cholesky((maps * var) @ maps.T)
    if resampled:
        phi = np.full((LAW_DRAWS, 1), max(1.0, dispersion))
    else:
        phi = dispersion * np.sqrt((nb - 2) / rng.chisquare(nb - 2, size=(LAW_DRAWS, 1)))
    samples = np.array([a0, b0]) + phi * (rng.standard_normal((LAW_DRAWS, 2)) @ chol.T)
    return LawFit(target, math.exp(a0), b0, percentile_ci(samples[:, 0], level, exp_or_inf),
                  percentile_ci(samples[:, 1], level), budgets, np.exp(y), resid, dispersion, samples, level)


def fit_power_law(compute, values, *, target: str = "y", level: float = LEVEL, seed: int = 0) -> LawFit:
    """Fit y = coef·C^exponent to plain points (e.g. the paper's chosen configurations).

    With one point per budget there is nothing to resample: every point gets the same
    variance, set by the residuals, which is the classical Student-t regression interval.
    """
    c = np.asarray(compute, dtype=float)
    v = np.asarray(values, dtype=float)
    if c.shape != v.shape or c.ndim != 1:
        raise ValueError(f"compute and values must be 1-D and of equal length; got {c.shape} and {v.shape}")
    if not (np.all(np.isfinite(c) & (c > 0)) and np.all(np.isfinite(v) & (v > 0))):
        raise ValueError("compute and values must be positive and finite to fit a power law in log space")
    if len(np.unique(c)) < MIN_BUDGETS:
        raise ValueError(f"a power law with an interval needs at least {MIN_BUDGETS} distinct budgets; "
                         f"got {len(np.unique(c))}")
    order = np.argsort(c)
    return law_from_estimates(target, c[order], v[order][None], np.ones(len(c)), np.random.default_rng(seed), level)
