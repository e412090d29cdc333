"""Loss against compute: L(C) = E + A·C^-alpha through the best loss of each budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.bootstrap import LEVEL, exp_or_inf, percentile_ci
from analysis.estimators import HUBER_K
from analysis.load import family_runs
from analysis.metrics import loss_metric
from aunet.laws import MIN_BUDGETS

LOSS_MIN_BUDGETS = 4  # E, A, alpha and one degree of freedom


@dataclass
class LossFit:
    """L(C) = E + A·C^-alpha fitted to the best loss of each budget."""

    family: str
    metric: str  # the fitted column: "bpb", or "loss" (nats per unit) when bytes per unit are unknown
    label: str  # what the metric measures, for tables and axes ("bits per byte", "nats per token")
    e: float
    a: float
    alpha: float
    e_ci: tuple[float, float]
    a_ci: tuple[float, float]
    alpha_ci: tuple[float, float]
    budgets: np.ndarray
    best: np.ndarray  # the envelope: best loss per budget
    residuals: np.ndarray  # log residuals
    samples: np.ndarray  # (log E, log A, alpha) replicates
    level: float = LEVEL
    floor: bool = True  # E fitted; False: three budgets only, so E = 0 (a pure power law, one degree of freedom)

    def predict(self, compute: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = np.atleast_1d(np.asarray(compute, dtype=float))
        point = self.e + self.a * c**-self.alpha
        s = self.samples
        with np.errstate(over="ignore"):
            draws = np.exp(s[:, :1]) + np.exp(s[:, 1:2]) * c ** -s[:, 2:3]
        lo, hi = np.nanquantile(draws, [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
        return point, lo, hi

    def why_floor_not_identified(self) -> str:
        """Why E is no estimate ("" when it is): three budgets fit no floor, and an interval reaching down to
        a millionth of the best loss does not locate one (the report's and ``fit``'s one rule)."""
        if not self.floor:
            return "not fitted: 3 budgets, E = 0"
        lo, hi = self.e_ci
        if not (math.isfinite(lo) and lo > 1e-6 * float(self.best.min())):
            return f"its interval [{lo:.3g}, {hi:.3g}] reaches zero"
        return ""


def _log_curve(p: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(E + A·C^-alpha) with p = (log E, log A at the pivot, alpha), x = log C - pivot; and its Jacobian."""
    e, a, alpha = p[..., 0:1], p[..., 1:2], p[..., 2:3]
    power = a - alpha * x
    m = np.logaddexp(e, power)
    share = np.exp(power - m)
    jac = np.stack([1 - share, share, -x * share], axis=-1)
    return m, jac


def _fit_curves(starts: np.ndarray, x: np.ndarray, ly: np.ndarray, delta: float,
                iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the Huber loss (threshold ``delta``) of log residuals for many (start, data) rows at once.

    Levenberg-Marquardt on Huber-reweighted residuals; a step is kept only if it lowers
    the Huber loss itself, so every row descends. Used both for the multi-start fit and
    for the bootstrap refits. Returns the parameters and their Huber loss, per row.
    """
    def cost(params: np.ndarray) -> np.ndarray:
        r = np.abs(ly - _log_curve(params, x)[0])
        return np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta)).sum(-1)

    p = starts.copy()
    damping = np.full((len(p), 1, 1), 1e-3)
    current = cost(p)
    for _ in range(iterations):
        m, jac = _log_curve(p, x)
        r = ly - m
        hw = np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
        jtj = np.einsum("rb,rbi,rbj->rij", hw, jac, jac)
        step = np.linalg.solve(jtj + damping * (jtj * np.eye(3) + 1e-12 * np.eye(3)),
                               np.einsum("rb,rbi,rb->ri", hw, jac, r)[..., None])[..., 0]
        trial = p + step
        trial[:, 2] = np.clip(trial[:, 2], 1e-4, 3.0)
        new = cost(trial)
        better = new < current
        p = np.where(better[:, None], trial, p)
        current = np.where(better, new, current)
        damping = np.where(better[:, None, None], damping / 3, damping * 4)
    return p, current


def fit_loss_curve(results, family: str, *, metric: str | None = None, n_boot: int = 1000, seed: int = 0,
                   level: float = LEVEL) -> LossFit:
    """Fit the envelope (best ``metric`` per budget, over its groups) as L(C) = E + A·C^-alpha.

    ``metric``: a column; default :func:`loss_metric` (bits per byte where known).

    Huber loss on log residuals (threshold 1.345 times the residual scale of a first
    least-squares pass), minimised from a grid of starting points since the fit has
    several local minima. The interval is a parametric bootstrap: each replicate adds
    noise of the residual scale to the fitted envelope, its variance drawn from the
    inverse chi-square with B-3 degrees of freedom (few budgets, three parameters: a
    Student-t width), and is refitted from the point estimate.
    """
    runs = family_runs(results, family)
    default, label = loss_metric(runs)
    if metric is None or metric == default:
        metric = default
    else:
        label = metric
    usable = runs[runs["usable"] & np.isfinite(runs[metric])] if metric in runs.columns else runs.iloc[:0]
    if usable.empty:
        raise ValueError(f"{family}: no finished run has a finite {metric!r}; nothing to fit against compute")
    envelope = usable.groupby("budget")[metric].min()
    if len(envelope) < MIN_BUDGETS:
        raise ValueError(f"{family}: L(C) needs the best {metric} at {MIN_BUDGETS} or more budgets ({LOSS_MIN_BUDGETS} "
                         f"to fit its floor E); only {len(envelope)} ({', '.join(f'{b:.3g}' for b in envelope.index)}) "
                         "have one")
    budgets, best = envelope.index.to_numpy(float), envelope.to_numpy(float)
    if len(envelope) < LOSS_MIN_BUDGETS:
        return _fit_power_envelope(family, metric, label, budgets, best, n_boot, seed, level)
    pivot = float(np.log(budgets).mean())
    x, ly = np.log(budgets) - pivot, np.log(best)
    starts = np.array([[math.log(fraction * best.min()), float(np.log(best - fraction * best.min()).mean()), alpha]
                       for fraction in (0.01, 0.3, 0.6, 0.9) for alpha in (0.05, 0.1, 0.2, 0.4, 0.8)])
    dof = len(x) - 3
    delta = math.inf  # a least-squares pass sets the noise scale, then Huber at 1.345 of it
    for _ in range(2):
        fits, costs = _fit_curves(starts, x, np.broadcast_to(ly, (len(starts), len(ly))), delta)
        p = fits[np.argmin(costs)]
        resid = ly - _log_curve(p, x)[0]
        scale = max(math.sqrt(float((resid**2).sum()) / dof), 1e-9)
        delta = HUBER_K * scale
    rng = np.random.default_rng(seed)
    noise = scale * np.sqrt(dof / rng.chisquare(dof, size=(n_boot, 1))) * rng.standard_normal((n_boot, len(x)))
    reps, _ = _fit_curves(np.repeat(p[None], n_boot, axis=0), x, _log_curve(p, x)[0] + noise, delta)
    samples = np.column_stack([reps[:, 0], reps[:, 1] + reps[:, 2] * pivot, reps[:, 2]])
    log_a = p[1] + p[2] * pivot
    return LossFit(family, metric, label, math.exp(p[0]), math.exp(log_a), float(p[2]),
                   percentile_ci(samples[:, 0], level, exp_or_inf),
                   percentile_ci(samples[:, 1], level, exp_or_inf),
                   percentile_ci(samples[:, 2], level), budgets, best, resid, samples, level)


def _fit_power_envelope(family: str, metric: str, label: str, budgets: np.ndarray, best: np.ndarray, n_boot: int,
                        seed: int, level: float) -> LossFit:
    """L(C) = A·C^-alpha (E = 0) by least squares in log-log: what three budgets can carry. Over a short
    range of compute it is the local slope of the full curve; its interval (Student-t, one degree of
    freedom) is wide, as it should be."""
    x, ly = np.log(budgets), np.log(best)
    slope, intercept = np.polyfit(x, ly, 1)
    resid = ly - (intercept + slope * x)
    dof = len(x) - 2
    scale = max(math.sqrt(float((resid**2).sum()) / dof), 1e-9)
    rng = np.random.default_rng(seed)
    noise = scale * np.sqrt(dof / rng.chisquare(dof, size=(n_boot, 1))) * rng.standard_normal((n_boot, len(x)))
    reps = np.array([np.polyfit(x, intercept + slope * x + n, 1) for n in noise])
    samples = np.column_stack([np.full(n_boot, -np.inf), reps[:, 1], -reps[:, 0]])
    return LossFit(family, metric, label, 0.0, math.exp(intercept), float(-slope), (0.0, 0.0),
                   percentile_ci(samples[:, 1], level, exp_or_inf), percentile_ci(samples[:, 2], level), budgets,
                   best, resid, samples, level, floor=False)

