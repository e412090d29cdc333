"""Fits: hyperparameter laws (band and bowl estimators), loss against compute, iso-FLOP curves.

Uncertainty comes from one bootstrap design used everywhere: the runs of each budget
are resampled with replacement (as multinomial weights, so a thousand replicates are
a few matrix products; the band on a fixed grid redraws the loss noise instead, see
``_replicates``) and each replicate re-estimates every budget's optimum. The budgets'
bootstrap variances propagate into the law, whose scale is then checked against the
budgets' actual scatter around it (see ``_law_from_estimates``): the intervals widen
when the law does not fit, and never narrow below the propagated bootstrap (with 3-5
budgets the scatter has 1-3 degrees of freedom: too few to trust a smaller scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import pandas as pd

from analysis.columns import FAMILY, GROUP_KEYS, NOT_TASKS
from analysis.estimators import (
    ESTIMATORS,
    HUBER_K,
    PREFERRED,
    Estimator,
    _bootstrap_weights,
    _near_weights,
    get_estimator,
)
from analysis.load import BUDGET_TOLERANCE, DIVERGED_ABOVE, canonical, load_results, warn
from aunet.laws import MIN_BUDGETS, PAPER_LAWS, HyperLaws, PowerLaw, box_edge

LEVEL = 0.95
LOSS_MIN_BUDGETS = 4  # E, A, alpha and one degree of freedom
BAND_FILLS = 0.5  # a band holding this share of a budget's runs means the box cannot locate the optimum
#: Phases whose runs a sampler placed where it expects the optimum: they say nothing about how much of
#: the box is flat, so the band-fills-box share counts the space-filling runs only.
TARGETED_PHASES = ("adaptive",)
LAW_DRAWS = 4000  # draws of (log coef, exponent) behind every law interval and prediction


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


@dataclass
class HyperFit:
    """One family's hyperparameter laws from one estimator."""

    family: str
    estimator: str
    units: str  # what BSZ counts in the law: bytes or tokens
    tolerance: float
    lr: LawFit
    bsz: LawFit
    budgets: pd.DataFrame  # one row per budget: counts, best run, optimum with interval, residuals, edge
    runs: pd.DataFrame  # every run of the family (all statuses) with a near_optimal flag
    warnings: list[str] = field(default_factory=list)

    def hyper_laws(self) -> HyperLaws:
        return HyperLaws(self.bsz.power_law(), self.lr.power_law(), self.units,
                         f"analysis {self.estimator} fit of {self.family}")


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


# ---------------------------------------------------------------------------- bootstrap plumbing


def _exp(x: float) -> float:
    """exp that says infinity instead of raising: heavy-tailed draws of a 3-budget law reach e^1000."""
    return math.exp(x) if x < 709.0 else math.inf


def _ci(values: np.ndarray, level: float, transform=float) -> tuple[float, float]:
    """Percentile interval of ``values`` (NaN replicates ignored), through ``transform`` (e.g. _exp)."""
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


def _law_from_estimates(target: str, budgets: np.ndarray, est: np.ndarray, weights: np.ndarray,
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
    little scatter (on a real sweep of 17 settings, 5 of 6 misses came from that
    narrowing). The scale is a point value, not a Student-t mixture over phi: a
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
    return LawFit(target, math.exp(a0), b0, _ci(samples[:, 0], level, _exp), _ci(samples[:, 1], level),
                  budgets, np.exp(y), resid, dispersion, samples, level)


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
    return _law_from_estimates(target, c[order], v[order][None], np.ones(len(c)), np.random.default_rng(seed), level)


# ---------------------------------------------------------------------------- per-budget estimators


# ---------------------------------------------------------------------------- hyperparameter laws


def _table(results) -> pd.DataFrame:
    """A validated table as is; anything else through ``load_results``."""
    return results if isinstance(results, pd.DataFrame) and "usable" in results.columns else load_results(results)


def _family_runs(results, family: str) -> pd.DataFrame:
    df = _table(results)
    runs = df[df[FAMILY] == family]
    if runs.empty:
        raise ValueError(f"no runs of {FAMILY} {family!r}; the table holds {sorted(df[FAMILY].unique())}")
    return runs


def _box(group: pd.DataFrame, column: str) -> tuple[float, float]:
    """The search box of a budget: the hull of the recorded ones (a sweep may have moved it past an
    edge), widened to every value actually run.

    Batch sizes are snapped to whole sequences after sampling, so a run can sit just
    outside the recorded box; the box, the runs and the edge warning must agree.
    """
    recorded = group[[f"{column}_min", f"{column}_max"]].dropna()
    lo, hi = (recorded.iloc[:, 0].min(), recorded.iloc[:, 1].max()) if len(recorded) else (math.inf, -math.inf)
    return float(min(lo, group[column].min())), float(max(hi, group[column].max()))


def _where(family: str, budget: float, group: str) -> str:
    return f"{family} budget {budget:.3g}" + (f" ({group})" if group else "")


def _box_checks(where: str, box: list[tuple[float, float]], optimum: np.ndarray, tried: np.ndarray,
                near: np.ndarray, estimator: Estimator, tolerance: float,
                spread_out: np.ndarray) -> tuple[list[str], list[str]]:
    """Flags (for the table) and warnings: where the estimator's optimum (NaN: none) sits among the
    finished runs' LR and BSZ (``tried``; ``near``: those within ``tolerance`` of the best), and a band
    so full that the box cannot locate the optimum.

    The law is made from the estimator's optimum, not from the best run, which noise moves about a
    flat bowl. A side of the optimum is unbracketed when nothing was tried beyond it: beyond the
    bowl's optimum; for the band, whose centroid always lies among its runs, beyond the band (cut off
    there, its centroid is pulled inward) with the centroid in the outer tenth of the box or of the
    values tried (a wide band cut at its rim moves little, and clean sweeps often reach the end of a
    box not much wider than the band). An unbracketed side is flagged once, by where the optimum
    sits: outside the box (the bowl's), on its edge (``box_edge``), or inside it at the floor or
    ceiling of what was tried. Asking the bowl for a run beyond it that did measurably worse would
    refuse optima the runs bracket in a box too narrow for the loss to rise by the band. Only
    space-filling runs (``spread_out``) say whether the band fills the box: an adaptive sampler
    crowds the optimum.
    """
    flags, messages = [], []
    for k, name in enumerate(("LR", "BSZ")):
        lo, hi = box[k]
        column, value = tried[:, k], float(optimum[k])
        if np.ptp(column) == 0 or not math.isfinite(value):
            continue
        reach = estimator.reach(column, near, value)
        for lower in (True, False):
            side, beyond, end = ("lower", "below", "smallest") if lower else ("upper", "above", "largest")
            bracketed = (column < reach[0]).any() if lower else (column > reach[1]).any()
            if bracketed or side not in (box_edge(value, column.min(), column.max()), box_edge(value, lo, hi)):
                continue
            unbounded = estimator.unbracketed(name, lower, reach)
            if not lo <= value <= hi:
                flag, text = f"bowl {name} outside", (f"lies outside the search box [{lo:.3g}, {hi:.3g}]; it is an "
                                                      "extrapolation, so widen the box")
            elif box_edge(value, lo, hi) == side:
                flag, text = f"{name} {side}", (f"sits on the {side} edge of the search box [{lo:.3g}, {hi:.3g}] and "
                                                f"{unbounded}; the optimum may lie outside the box, so widen it")
            else:
                pinned = "floor" if lower else "ceiling"
                flag, text = f"{name} {pinned}", (
                    f"sits at the {'low' if lower else 'high'} end of the {name}s tried ([{column.min():.3g}, "
                    f"{column.max():.3g}]; pinned at the {pinned}) and {unbounded}; the optimum may lie {beyond} it, "
                    "so the law cannot locate it")
            flags.append(flag)
            messages.append(warn(f"{where}: {estimator.subject(tolerance)}'s optimal {name} "
                                 f"{value:.3g} {text}"))
    finished, targeted = int(spread_out.sum()), int((~spread_out).sum())
    crowded = int(near[spread_out].sum())
    if finished >= 4 and crowded >= BAND_FILLS * finished:
        flags.append("band fills box")
        messages.append(warn(
            f"{where}: {crowded} of {finished} finished runs{f' (besides {targeted} adaptive ones)' if targeted else ''} "
            f"are within {tolerance:.2%} of the best; the loss is flat "
            "across the box, which is too narrow to locate the optimum: widen the box"))
    return flags, messages


def fit_hyper_laws(results, family: str, *, estimator: str = "band", tolerance: float = 0.01, n_boot: int = 1000,
                   seed: int = 0, level: float = LEVEL, bsz_in: str = "units") -> HyperFit:
    """Fit BSZ = A·C^alpha and LR = B·C^beta for one family (Sec. 2.3).

    ``estimator="band"``: per budget, the runs within ``tolerance`` of the best loss
    (0.01 as in the paper, 0.0025 as in DeepSeek LLM). ``"bowl"``: the minimum of a
    robust quadratic fitted to all finished runs of the budget. ``bsz_in`` is "units"
    (bytes or tokens, as the paper) or "bytes". Only usable runs enter (finished, finite
    loss, not set aside as diverged); the rest stay in ``runs`` for the plots. Several
    groups at one budget (model sizes, ratios: ``analysis.load.RUN_DEFINING``) are
    separate points of the law, never merged.
    """
    method = get_estimator(estimator)
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance {tolerance} must be a fraction of the best loss in (0, 1), e.g. 0.01 for 1%")
    if bsz_in not in ("units", "bytes"):
        raise ValueError(f"bsz_in {bsz_in!r} must be 'units' or 'bytes'")
    runs = _family_runs(results, family).copy()
    if bsz_in == "bytes" and not np.isfinite(runs["bytes_per_unit"]).all():
        raise ValueError(f"{family}: batch size in bytes needs every run's bytes_per_unit; the table lacks it "
                         "(add the column, or fit in units)")
    units = "bytes" if bsz_in == "bytes" else runs["units"].iloc[0]
    bsz_col = "bsz_bytes" if bsz_in == "bytes" else "bsz"
    usable = runs[runs["usable"]]
    keys = ["budget", "group"]
    counts = usable.groupby(keys).size().reindex(
        pd.MultiIndex.from_frame(runs[keys].drop_duplicates().sort_values(keys)), fill_value=0)
    need = method.min_runs
    messages: list[str] = []
    short = counts[counts < need]
    if len(short):
        listing = ", ".join(f"{b:.3g}{f' ({g})' if g else ''} ({n} runs)" for (b, g), n in short.items())
        messages.append(warn(f"{family}: the {estimator} needs {need} finished runs per budget; budgets {listing} "
                             "are left out (add trials there, or use an estimator that needs fewer)"))
    kept = counts[counts >= need]
    if kept.index.get_level_values("budget").nunique() < MIN_BUDGETS:
        listing = ", ".join(f"{b:.3g}{f' ({g})' if g else ''}: {n}" for (b, g), n in counts.items())
        raise ValueError(
            f"{family}: the {estimator} fit needs at least {MIN_BUDGETS} budgets with {need} or more finished runs "
            f"each; finished runs per budget are {{{listing}}}; run more budgets or trials"
        )
    rng = np.random.default_rng(seed)
    points = list(kept.index)
    budgets = np.array([b for b, _ in points], dtype=float)
    est = np.full((n_boot + 1, len(points), 2), np.nan)
    weight = np.ones(len(points))  # each budget's weight in the law (the band's: its near-optimal count)
    runs["near_optimal"] = False
    rows = []
    for j, (budget, label) in enumerate(points):
        where = _where(family, budget, label)
        group = canonical(usable[(usable["budget"] == budget) & (usable["group"] == label)])
        loss = group["loss"].to_numpy()
        values = group[["lr", bsz_col]].to_numpy()
        logv = np.log(values)
        replicate_loss, w = method.replicates(loss, logv, n_boot, rng)
        best = int(np.argmin(loss))
        near = loss <= loss[best] * (1 + tolerance)
        runs.loc[group.index[near], "near_optimal"] = True
        everything = runs[(runs["budget"] == budget) & (runs["group"] == label)]
        to_bsz = float(everything["bytes_per_unit"].iloc[0]) if bsz_in == "bytes" else 1.0
        box = [_box(everything, "lr"), tuple(v * to_bsz for v in _box(everything, "bsz"))]
        est[:, j], weight[j] = method.optimum(replicate_loss, logv, w, np.log(np.array(box)), tolerance)
        spread_out = ~group["phase"].isin(TARGETED_PHASES).to_numpy() if "phase" in group else np.ones(len(group), bool)
        edges, found = _box_checks(where, box, est[0, j], values, near, method, tolerance, spread_out)
        messages += found
        if not np.isfinite(est[0, j]).all():
            messages.append(warn(method.missing(where)))
        lr_ci, bsz_ci = _ci(est[1:, j, 0], level), _ci(est[1:, j, 1], level)
        rows.append({
            "budget": budget, "group": label, "runs": len(everything), "finished": len(group),
            "set_aside": int(everything["set_aside"].sum()),
            "near_optimal": int(near.sum()), "best_loss": float(loss[best]),
            "best_lr": float(values[best, 0]), "best_bsz": float(values[best, 1]),
            "lr_opt": est[0, j, 0], "lr_lo": lr_ci[0], "lr_hi": lr_ci[1],
            "bsz_opt": est[0, j, 1], "bsz_lo": bsz_ci[0], "bsz_hi": bsz_ci[1],
            "failed_replicates": float(np.mean(~np.isfinite(est[1:, j, 0]))) if n_boot else 0.0,
            "lr_min": box[0][0], "lr_max": box[0][1], "bsz_min": box[1][0], "bsz_max": box[1][1],
            "edge": ", ".join(edges),
        })
    table = pd.DataFrame(rows)
    fitted = np.isfinite(est[0]).all(axis=1)
    if len(np.unique(budgets[fitted])) < MIN_BUDGETS:
        raise ValueError(f"{family}: only {len(np.unique(budgets[fitted]))} budget(s) have a {estimator} optimum; the "
                         f"law needs {MIN_BUDGETS} (use another estimator, or more trials per budget)")
    near_counts = list(zip(table["budget"], table["near_optimal"]))
    messages += [warn(m) for m in method.family_notes(family, near_counts, tolerance)]
    laws = [_law_from_estimates(t, budgets[fitted], est[:, fitted, k], weight[fitted], rng, level)
            for k, t in enumerate(("lr", "bsz"))]
    for law in laws:
        table.loc[fitted, f"{law.target}_resid"] = law.residuals
    return HyperFit(family, estimator, units, tolerance, laws[0], laws[1], table, runs, messages)


def paper_law(family: str, units: str) -> HyperLaws | None:
    """The paper's law where it applies: AU-Net in bytes, the BPE Transformer in tokens."""
    if family.startswith("aunet") and units == "bytes":
        return PAPER_LAWS["aunet"]
    if family == "transformer_bpe" and units == "tokens":
        return PAPER_LAWS["bpe"]
    return None


# ---------------------------------------------------------------------------- loss against compute


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


def loss_metric(runs: pd.DataFrame) -> tuple[str, str]:
    """The loss column a family is compared in, and its label: bits per byte when every usable run knows
    its bytes per unit, else the loss itself, in nats per input unit (never relabelled as per byte)."""
    usable = runs[runs["usable"]]
    if len(usable) and np.isfinite(usable["bpb"]).all():
        return "bpb", "bits per byte"
    return "loss", f"nats per {str(runs['units'].iloc[0]).removesuffix('s')}"


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
    runs = _family_runs(results, family)
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
                   _ci(samples[:, 0], level, _exp), _ci(samples[:, 1], level, _exp),
                   _ci(samples[:, 2], level), budgets, best, resid, samples, level)


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
                   _ci(samples[:, 1], level, _exp), _ci(samples[:, 2], level), budgets, best, resid, samples, level,
                   floor=False)


# ---------------------------------------------------------------------------- iso-FLOP curves


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The loss (:func:`loss_metric` of each family) and every downstream score present in the table."""
    evals = [c for c in df.columns
             if c.startswith("eval_") and c not in NOT_TASKS and np.isfinite(df[c]).any()]
    losses = dict.fromkeys(loss_metric(runs)[0] for _, runs in df.groupby(FAMILY))
    return [*losses, *sorted(evals)]


def is_score(metric: str) -> bool:
    """Whether an iso-FLOP metric is a downstream score (an accuracy in [0, 1]) rather than a loss."""
    return metric.startswith("eval_") and not metric.endswith("_bpb")


def isoflop_curves(results, *, tolerance: float = 0.01, n_boot: int = 1000, seed: int = 0,
                   level: float = LEVEL) -> pd.DataFrame:
    """Each metric against C per family: the mean over each budget's near-optimal runs.

    Intervals resample the budget's finished runs and re-select the band each time, so
    they carry both the metric's scatter and the uncertainty of which runs are optimal, but
    not how far another seed would move those runs: a band narrower than seed noise often
    holds one run. Where a family ran configurations with several seeds (averaged as
    :func:`average_seeds` does), each interval also includes that noise (``_with_seed_noise``);
    ``seed_sd`` is the per-run seed sd used (relative for a loss, absolute for a score), NaN
    where the family has no seeds: those intervals do not include seed noise.
    """
    df = average_seeds(_table(results))
    rng = np.random.default_rng(seed)
    rows = []
    for family, runs in df.groupby(FAMILY):
        loss_column = loss_metric(runs)[0]
        metrics = [m for m in metric_columns(df) if m not in ("bpb", "loss") or m == loss_column]
        seed_sd = {metric: _pooled_seed_sd(runs, metric) for metric in metrics}
        for budget, group in runs[runs["usable"]].groupby("budget"):
            group = canonical(group)
            loss = group["loss"].to_numpy()
            near = _near_weights(loss, _bootstrap_weights(len(group), n_boot, rng), tolerance)
            rows += _isoflop_rows(family, budget, group, near, seed_sd, n_boot, level)
    return pd.DataFrame(rows, columns=[FAMILY, "budget", "metric", "value", "lo", "hi", "runs", "seed_sd"])


def _isoflop_rows(family: str, budget: float, group: pd.DataFrame, near: np.ndarray, seed_sd: dict[str, float],
                  n_boot: int, level: float) -> list[dict]:
    seeds = group["seeds"].to_numpy(float) if "seeds" in group.columns else np.ones(len(group))
    rows = []
    for metric, sd in seed_sd.items():
        values = group[metric].to_numpy(float)
        ok = np.isfinite(values)
        if not ok.any():
            continue
        wn = near * ok
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (wn @ np.where(ok, values, 0.0)) / wn.sum(axis=1)
        lo, hi = _ci(means[1:], level) if n_boot else (math.nan, math.nan)
        band = wn[0]  # the value's runs: its seed noise is sd/sqrt(n) for n single-seed runs
        if np.isfinite(sd) and band.any():
            lo, hi = _with_seed_noise(metric, means[0], lo, hi, sd * math.sqrt((band / seeds).sum()) / band.sum(), level)
        rows.append({FAMILY: family, "budget": budget, "metric": metric, "value": means[0], "lo": lo, "hi": hi,
                     "runs": int(band.sum()), "seed_sd": sd})
    return rows


def _pooled_seed_sd(runs: pd.DataFrame, metric: str) -> float:
    """A family's per-run seed sd of ``metric`` (relative for a loss, absolute for a score), pooled over
    its configurations run with several seeds; NaN where it has none.

    Pooled over budgets, not taken per budget: with three seeds a budget's own sd has two degrees of
    freedom, often far below the truth, and relative terms make budgets of different loss comparable.
    """
    column = f"seed_sd_{metric}"
    if column not in runs.columns:
        return math.nan
    seeded = runs[runs["usable"] & (runs["seeds"] > 1) & np.isfinite(runs[column])]
    if seeded.empty:
        return math.nan
    sd = seeded[column] / (1.0 if is_score(metric) else seeded[metric])
    dof = seeded["seeds"] - 1
    return float(np.sqrt((dof * sd**2).sum() / dof.sum()))


def _with_seed_noise(metric: str, value: float, lo: float, hi: float, sd: float,
                     level: float) -> tuple[float, float]:
    """The bootstrap interval [lo, hi] around ``value`` widened by independent seed noise of sd ``sd``:
    on each side the two half-widths add in quadrature, in log terms for a loss (``sd`` relative),
    absolute for a score (kept within [0, 1])."""
    half = NormalDist().inv_cdf((1 + level) / 2) * sd
    if is_score(metric):
        return max(value - math.hypot(value - lo, half), 0.0), min(value + math.hypot(hi - value, half), 1.0)
    return (value * math.exp(-math.hypot(math.log(value / lo), half)),
            value * math.exp(math.hypot(math.log(hi / value), half)))


# ---------------------------------------------------------------------------- seed noise


def seed_noise(results, *, tolerance: float = 0.01) -> pd.DataFrame:
    """The spread of the loss over seeds of one configuration (family, budget, group, LR, BSZ), where a
    table has several: a band of ``tolerance`` means nothing if seeds alone differ by as much.

    ``spread`` is max/min - 1 over the seeds, ``sd`` the relative standard deviation;
    ``vs_band`` is spread / tolerance (1 or more: the band is within seed noise).
    """
    df = _table(results)
    columns = [FAMILY, "budget", "group", "lr", "bsz", "seeds", "mean_loss", "spread", "sd", "vs_band"]
    if "seed" not in df.columns:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, runs in df[df["usable"]].groupby([*GROUP_KEYS, "lr", "bsz"]):
        loss = runs["loss"].to_numpy(float)
        if runs["seed"].nunique() < 2:
            continue
        spread = float(loss.max() / loss.min() - 1)
        rows.append([*key, runs["seed"].nunique(), float(loss.mean()), spread,
                     float(loss.std(ddof=1) / loss.mean()), spread / tolerance])
    return pd.DataFrame(rows, columns=columns)


def average_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: the usable runs of one (family, budget, group, LR, BSZ) with several
    seeds count once, at their mean (every float column), because keeping each seed's run would let
    the best-of-several-seeds (noise) decide the optimum and the best loss.

    The averaging hides how far seeds move a run, which intervals must still include: each row keeps
    ``seeds`` (how many runs it averages) and ``seed_sd_<metric>`` (their standard deviation, NaN for
    one run) for every metric of :func:`metric_columns`.
    """
    if "seed" not in df.columns or df.empty:
        return df
    key = [*GROUP_KEYS, "lr", "bsz"]
    usable = canonical(df[df["usable"]])
    repeated = usable[usable.duplicated(key, keep=False)]
    if repeated.empty:
        return df
    floats = [c for c in df.columns if c not in key and pd.api.types.is_float_dtype(df[c])]
    metrics = [m for m in metric_columns(df) if m in floats]
    seeds = repeated.groupby(key, dropna=False)
    out = df.copy()
    out.loc[repeated.index, floats] = seeds[floats].transform("mean")
    out["seeds"] = 1
    out.loc[repeated.index, "seeds"] = seeds[key[0]].transform("size")
    spread = [f"seed_sd_{m}" for m in metrics]
    out[spread] = np.nan
    out.loc[repeated.index, spread] = seeds[metrics].transform("std").to_numpy()
    return out.drop(index=repeated.index[repeated.duplicated(key, keep="first")])


def _seed_noise_warnings(noise: pd.DataFrame, tolerance: float) -> list[str]:
    return [warn(f"{_where(r[FAMILY], r['budget'], r['group'])}: {r['seeds']} seeds of LR {r['lr']:.3g}, BSZ "
                 f"{r['bsz']:.4g} differ by {r['spread']:.2%} in loss, at least the {tolerance:.2%} band: the band "
                 "is within seed noise (widen the tolerance, or average seeds)")
            for _, r in noise[noise["vs_band"] >= 1].iterrows()]


# ---------------------------------------------------------------------------- everything at once


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
            why = "; ".join(w for w in self.warnings if w.startswith(family)) or "it is not in the results"
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
                messages.append(warn(f"{family}: no {estimator} law: {str(err).removeprefix(f'{family}: ')}"))
                continue
            laws.setdefault(family, {})[estimator] = fit
            messages.extend(fit.warnings)
        try:
            loss[family] = fit_loss_curve(df, family, n_boot=n_boot, seed=seed, level=level)
        except ValueError as err:
            messages.append(warn(f"{family}: no loss curve: {str(err).removeprefix(f'{family}: ')}"))
    curves = isoflop_curves(df[df[FAMILY].isin(names)], tolerance=tolerance, n_boot=n_boot, seed=seed, level=level)
    messages += _seed_noise_warnings(noise, tolerance)
    return Analysis(df, laws, loss, curves, list(dict.fromkeys(messages)), tolerance, noise)
