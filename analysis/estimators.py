"""Estimators: how one budget's runs become its optimal (LR, BSZ), with bootstrap replicates.

A law (``analysis.fits.fit_hyper_laws``) is fitted through each budget's optimum; an estimator
says how that optimum is read from the runs and how its uncertainty is drawn. Each is one class
registered in ``ESTIMATORS``; everything else (the fit, the box checks, the law file, the report,
the CLI's choices) asks the registry, so a new estimator is one class here.

* ``band`` (the paper's, after DeepSeek): the geometric centroid of the runs within a tolerance of
  the best loss.
* ``bowl``: the minimum of a robust fit of the loss over (log LR, log BSZ): a quadratic with a
  cubic term in log LR.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

HUBER_K = 1.345  # Huber's tuning constant (95% efficiency under normal noise)
BOWL_COEFFICIENTS = 7  # the quadratic's six and a cubic term in log LR (see ``_quadratic_design``)
BOWL_MIN_RUNS = BOWL_COEFFICIENTS + 2  # and two to spare
#: Distinct (LR, BSZ) configurations a budget's runs need to count as a search of LR x BSZ: three are the fewest
#: that can put a run on either side of the best one, so that the box checks (``analysis.box``) can find an
#: optimum bracketed. With two, the band's optimum sits at an end of what was tried; with one (an isoFLOP cell run
#: at its law's prior LR and BSZ, however many seeds) it is whatever was run, and the box check sees no range to
#: flag. Such runs enter no hyperparameter law (``analysis.hyper_laws``). The bowl asks more of a budget on its
#: own (``BOWL_MIN_RUNS``).
SEARCH_CONFIGURATIONS = 3


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Row 0 is the data itself; rows 1.. are resamples of the n runs (multinomial counts)."""
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    return np.vstack([np.ones((1, n)), counts]).astype(float)


def _is_grid(logv: np.ndarray) -> bool:
    """Whether a budget's runs sit on a grid: every LR and every BSZ value is shared by several runs."""
    n = len(logv)
    return all(len(np.unique(np.round(col, 9))) <= n / 2 for col in logv.T)


def _near_weights(loss: np.ndarray, w: np.ndarray, tolerance: float) -> np.ndarray:
    """Each replicate's weights restricted to its runs within ``tolerance`` of its own best loss
    (``loss``: one row for all replicates, or one per replicate)."""
    best = np.where(w > 0, loss, np.inf).min(axis=1, keepdims=True)
    return w * (loss <= best * (1 + tolerance))


def _band(loss: np.ndarray, logv: np.ndarray, w: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Geometric centroid of the runs within ``tolerance`` of the best loss, per replicate.

    The paper (after DeepSeek) fits a line through all near-optimal points; since all
    points of a budget share its C, that is the line through the centroids weighted by
    their counts, which is what the caller fits.
    """
    near = _near_weights(loss, w, tolerance)
    count = near.sum(axis=1)
    return np.exp(near @ logv / count[:, None]), count


def _quadratic_design(logv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bowl's columns in standardised (log LR, log BSZ), and the standardisation: a quadratic, and a
    cubic term in log LR because the loss rises faster above the best LR than below it. Without that
    term the minimum sits low by a share of the skew at every budget alike: a bias that no bootstrap
    sees and that the law's exponent cancels but its coefficient carries to every prediction."""
    centre, spread = logv.mean(axis=0), logv.std(axis=0) + 1e-12
    z = (logv - centre) / spread
    design = np.column_stack([np.ones(len(z)), z[:, 0], z[:, 1], z[:, 0] ** 2, z[:, 0] * z[:, 1], z[:, 1] ** 2,
                              z[:, 0] ** 3])
    return design, centre, spread


def _quadratic(loss: np.ndarray, logv: np.ndarray, w: np.ndarray,
               iterations: int = 8) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """A robust quadratic in standardised (log LR, log BSZ) through the percent excess of the loss over
    the best run, batched over replicates (rows of the weights ``w``, and of ``loss`` if it has rows).

    Huber-weighted least squares by iteratively reweighting. Returns the coefficients per
    replicate, the residual scale of the data (row 0: the MAD of its residuals, in percent),
    and the standardisation (centre, spread) of the log values.
    """
    design, centre, spread = _quadratic_design(logv)
    y = np.atleast_2d(100 * (loss / loss.min(axis=-1, keepdims=True) - 1))  # percent above the best run
    outer = design[:, :, None] * design[:, None, :]
    ridge = 1e-9 * np.eye(BOWL_COEFFICIENTS)

    def solve(weights: np.ndarray) -> np.ndarray:
        lhs = np.einsum("rn,njk->rjk", weights, outer) + ridge
        rhs = np.einsum("rn,nj->rj", weights * y, design)
        return np.linalg.solve(lhs, rhs[..., None])[..., 0]

    theta = solve(w)
    resid = y - theta @ design.T
    scale = max(1.4826 * float(np.median(np.abs(resid[0]))), 1e-6 * (float(np.abs(y).max()) + 1e-12))
    for _ in range(iterations):
        theta = solve(w * np.minimum(1.0, HUBER_K * scale / np.maximum(np.abs(resid), 1e-300)))
        resid = y - theta @ design.T
    return theta, scale, centre, spread


def _bowl(loss: np.ndarray, logv: np.ndarray, w: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Minimum of the robust quadratic (``_quadratic``) fitted to a budget's runs, per replicate.

    A replicate whose quadratic has no minimum, or whose minimum lies more than one box
    width outside the box, gives NaN (no bowl to read an optimum from).
    """
    theta, _, centre, spread = _quadratic(loss, logv, w)
    g1, g2, h11, h12, h22, c = theta[:, 1], theta[:, 2], 2 * theta[:, 3], theta[:, 4], 2 * theta[:, 5], theta[:, 6]
    det = h11 * h22 - h12**2
    with np.errstate(invalid="ignore", divide="ignore"):
        # the best BSZ at a given LR is linear in it; along that valley the loss's slope in LR is
        # slope + curv·z + 3c·z², whose rising root (the stable form of the quadratic formula) is the minimum
        slope, curv = g1 - h12 * g2 / h22, det / h22
        root = curv**2 - 12 * c * slope
        z1 = -2 * slope / (curv + np.sqrt(root))
        zmin = np.column_stack([z1, -(g2 + h12 * z1) / h22])
    logmin = centre + spread * zmin
    width = box[:, 1] - box[:, 0]
    inside = np.all((logmin > box[:, 0] - width) & (logmin < box[:, 1] + width), axis=1)
    valid = (h11 > 0) & (det > 0) & (root >= 0) & inside
    return np.where(valid[:, None], np.exp(np.where(valid[:, None], logmin, 0.0)), np.nan)


class Estimator:
    """One way of reading a budget's optimum. Subclasses set the class attributes and the methods."""

    name: ClassVar[str]
    min_runs: ClassVar[int]  # finished runs a budget needs
    marker: ClassVar[str]  # plotting style of its optima
    colour: ClassVar[str]

    def describe(self, tolerance: float) -> str:
        """How the fit reads an optimum, for the CLI's lines."""
        raise NotImplementedError

    def subject(self, tolerance: float) -> str:
        """What a warning about its optimum names ("the bowl", "the 1.00% band")."""
        raise NotImplementedError

    def replicates(self, loss: np.ndarray, logv: np.ndarray, n_boot: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A budget's bootstrap replicates as (losses, weights), row 0 the data itself (losses: one per run
        shared by every replicate, or one row per replicate)."""
        raise NotImplementedError

    def optimum(self, losses: np.ndarray, logv: np.ndarray, w: np.ndarray, log_box: np.ndarray,
                tolerance: float) -> tuple[np.ndarray, float]:
        """(the optimum (LR, BSZ) per replicate, NaN where there is none; the budget's weight in the law)."""
        raise NotImplementedError

    def reach(self, column: np.ndarray, near: np.ndarray, value: float) -> tuple[float, float]:
        """The values the optimum stands on: what must have been tried beyond it for it to be bracketed."""
        return value, value

    def unbracketed(self, name: str, lower: bool, reach: tuple[float, float]) -> str:
        """What a warning says of an optimum with nothing tried beyond it on one side."""
        return f"no run was tried {'below' if lower else 'above'} it"

    def missing(self, where: str) -> str:
        """Why a budget has no optimum (a warning), where an estimator can find none."""
        return f"{where}: the {self.name} has no optimum; this budget is left out of the {self.name} law"

    def family_notes(self, family: str, near_counts: list[tuple[float, int]], tolerance: float) -> list[str]:
        """Warnings about the fit as a whole ((budget, runs within the tolerance of its best) per point)."""
        return []


class Band(Estimator):
    """The runs within ``tolerance`` of the best loss: their geometric centroid, weighted in the law
    by their count (the paper fits every near-optimal run)."""

    name, min_runs, marker, colour = "band", 1, "s", "tab:blue"

    def describe(self, tolerance: float) -> str:
        return f"{tolerance:.2%} band"

    def subject(self, tolerance: float) -> str:
        return f"the {tolerance:.2%} band"

    def replicates(self, loss, logv, n_boot, rng):
        """On a grid, the loss noise is redrawn at the fixed points, at the relative scale of the robust
        fit's residuals: the band's centroid is a selection by threshold that moves with whichever grid
        points a resample happens to drop, so resampling would invent design variability. Elsewhere the
        runs are resampled: a scrambled design's points really do move from sweep to sweep, and
        conditioning on them understates the spread."""
        n = len(loss)
        if not _is_grid(logv):
            return loss, bootstrap_weights(n, n_boot, rng)
        scale = _quadratic(loss, logv, np.ones((1, n)))[1]
        noise = scale / 100 * math.sqrt(n / (n - BOWL_COEFFICIENTS))  # percent excess -> relative
        losses = loss * (1 + noise * rng.standard_normal((n_boot + 1, n)))
        losses[0] = loss
        return losses, np.ones((n_boot + 1, n))

    def optimum(self, losses, logv, w, log_box, tolerance):
        centroid, counts = _band(losses, logv, w, tolerance)
        return centroid, float(counts[0])

    def reach(self, column, near, value):
        """The band's own extent: its centroid always lies among its runs, so it is bracketed only when
        runs were tried beyond the band."""
        return float(column[near].min()), float(column[near].max())

    def unbracketed(self, name, lower, reach):
        return f"the band reaches the {'smallest' if lower else 'largest'} {name} tried ({reach[0 if lower else 1]:.3g})"

    def family_notes(self, family, near_counts, tolerance):
        single = [b for b, n in near_counts if n < 2]
        if not single:
            return []
        return [f"{family}: the {tolerance:.2%} band holds a single run at budget(s) "
                f"{', '.join(f'{b:.3g}' for b in single)}; 3 or more make its centroid meaningful"]


class Bowl(Estimator):
    """The minimum of a robust fit (``_quadratic``) to every finished run of the budget."""

    name, min_runs, marker, colour = "bowl", BOWL_MIN_RUNS, "D", "tab:orange"

    def describe(self, tolerance: float) -> str:
        return "robust quadratic, cubic in log LR"

    def subject(self, tolerance: float) -> str:
        return "the bowl"

    def replicates(self, loss, logv, n_boot, rng):
        """A regression keeps the design fixed: a wild bootstrap flips the sign of each run's residual
        from the robust fit at random (Rademacher weights, inflated for the fitted coefficients).
        Resampling runs instead overstates a budget's optimum's spread: duplicated runs leave the fit
        few distinct points (``benchmarks/bench_coverage.py`` measures both)."""
        n = len(loss)
        theta = _quadratic(loss, logv, np.ones((1, n)))[0]
        fitted = _quadratic_design(logv)[0] @ theta[0]
        excess = 100 * (loss / loss.min() - 1)
        signs = rng.choice([-1.0, 1.0], size=(n_boot + 1, n))
        losses = loss.min() * (1 + (fitted + (excess - fitted) * signs * math.sqrt(n / (n - BOWL_COEFFICIENTS))) / 100)
        losses[0] = loss
        return losses, np.ones((n_boot + 1, n))

    def optimum(self, losses, logv, w, log_box, tolerance):
        return _bowl(losses, logv, w, log_box), 1.0

    def missing(self, where: str) -> str:
        return f"{where}: the robust quadratic has no minimum near the box (no bowl); this budget is left out of the bowl law"


#: Every estimator, by name, in the order a study's fits are made and shown.
ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (Band(), Bowl())}
#: The estimator a recipe takes by default, where it could be fitted: the first of these.
PREFERRED = ("bowl", "band")


def get_estimator(name: str) -> Estimator:
    if name not in ESTIMATORS:
        raise ValueError(f"estimator {name!r} is not one of {tuple(ESTIMATORS)}")
    return ESTIMATORS[name]
