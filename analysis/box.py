"""A budget's search box, and where its optimum sits in it: the typed flags of the per-budget table
(``edge``) and of the law file (``aunet.laws.FLAGS``), with the warnings that explain them."""

from __future__ import annotations

import math
from enum import Enum

import numpy as np
import pandas as pd

from analysis.estimators import Estimator
from analysis.notices import BoxWarning, warn
from aunet.laws import box_edge

BAND_FILLS = 0.5  # a band holding this share of a budget's runs means the box cannot locate the optimum
#: Phases whose runs a sampler placed where it expects the optimum: they say nothing about how much of
#: the box is flat, so the band-fills-box share counts the space-filling runs only.
TARGETED_PHASES = ("adaptive",)


class BoxFlag(Enum):
    """Why a budget's optimum is not located: (hyperparameter, where it sits, the label the per-budget
    table shows, the law file's flag). The table and the law file read the same member, so neither
    parses the other's text."""

    LR_FLOOR = ("LR", "floor", "LR floor", "lr_floor")
    LR_CEILING = ("LR", "ceiling", "LR ceiling", "lr_ceiling")
    BSZ_FLOOR = ("BSZ", "floor", "BSZ floor", "bsz_floor")
    BSZ_CEILING = ("BSZ", "ceiling", "BSZ ceiling", "bsz_ceiling")
    LR_LOWER = ("LR", "lower", "LR lower", "lr_edge")
    LR_UPPER = ("LR", "upper", "LR upper", "lr_edge")
    BSZ_LOWER = ("BSZ", "lower", "BSZ lower", "bsz_edge")
    BSZ_UPPER = ("BSZ", "upper", "BSZ upper", "bsz_edge")
    BOWL_LR_OUTSIDE = ("LR", "outside", "bowl LR outside", "bowl_outside")
    BOWL_BSZ_OUTSIDE = ("BSZ", "outside", "bowl BSZ outside", "bowl_outside")
    BAND_FILLS_BOX = ("", "box", "band fills box", "band_fills_box")

    def __init__(self, hyper: str, where: str, label: str, law: str) -> None:
        self.hyper, self.where, self.label, self.law = hyper, where, label, law

    def __str__(self) -> str:
        return self.label

    @classmethod
    def of(cls, hyper: str, where: str) -> BoxFlag:
        """The flag of ``hyper`` ("LR" or "BSZ") whose optimum lies ``where``: "outside" the box, on its
        "lower" or "upper" edge, or at the "floor" or "ceiling" of the values tried."""
        return next(flag for flag in cls if (flag.hyper, flag.where) == (hyper, where))


def edge_label(flags: tuple[BoxFlag, ...]) -> str:
    """The per-budget table's ``edge`` text of a budget's flags."""
    return ", ".join(flag.label for flag in flags)


def search_box(group: pd.DataFrame, column: str) -> tuple[float, float]:
    """The search box of a budget: the hull of the recorded ones (a sweep may have moved it past an
    edge), widened to every value actually run.

    Batch sizes are snapped to whole sequences after sampling, so a run can sit just
    outside the recorded box; the box, the runs and the edge warning must agree.
    """
    recorded = group[[f"{column}_min", f"{column}_max"]].dropna()
    lo, hi = (recorded.iloc[:, 0].min(), recorded.iloc[:, 1].max()) if len(recorded) else (math.inf, -math.inf)
    return float(min(lo, group[column].min())), float(max(hi, group[column].max()))


def box_checks(where: str, box: list[tuple[float, float]], optimum: np.ndarray, tried: np.ndarray,
               near: np.ndarray, estimator: Estimator, tolerance: float,
               spread_out: np.ndarray) -> tuple[list[BoxFlag], list[str]]:
    """Flags (for the table and the law file) and warnings: where the estimator's optimum (NaN: none)
    sits among the finished runs' LR and BSZ (``tried``; ``near``: those within ``tolerance`` of the
    best), and a band so full that the box cannot locate the optimum.

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
            side, beyond = ("lower", "below") if lower else ("upper", "above")
            bracketed = (column < reach[0]).any() if lower else (column > reach[1]).any()
            if bracketed or side not in (box_edge(value, column.min(), column.max()), box_edge(value, lo, hi)):
                continue
            unbounded = estimator.unbracketed(name, lower, reach)
            if not lo <= value <= hi:
                flag, text = BoxFlag.of(name, "outside"), (f"lies outside the search box [{lo:.3g}, {hi:.3g}]; it "
                                                           "is an extrapolation, so widen the box")
            elif box_edge(value, lo, hi) == side:
                flag, text = BoxFlag.of(name, side), (f"sits on the {side} edge of the search box [{lo:.3g}, "
                                                      f"{hi:.3g}] and {unbounded}; the optimum may lie outside the "
                                                      "box, so widen it")
            else:
                pinned = "floor" if lower else "ceiling"
                flag, text = BoxFlag.of(name, pinned), (
                    f"sits at the {'low' if lower else 'high'} end of the {name}s tried ([{column.min():.3g}, "
                    f"{column.max():.3g}]; pinned at the {pinned}) and {unbounded}; the optimum may lie {beyond} it, "
                    "so the law cannot locate it")
            flags.append(flag)
            messages.append(warn(f"{where}: {estimator.subject(tolerance)}'s optimal {name} "
                                 f"{value:.3g} {text}", BoxWarning))
    finished, targeted = int(spread_out.sum()), int((~spread_out).sum())
    crowded = int(near[spread_out].sum())
    if finished >= 4 and crowded >= BAND_FILLS * finished:
        flags.append(BoxFlag.BAND_FILLS_BOX)
        messages.append(warn(
            f"{where}: {crowded} of {finished} finished runs{f' (besides {targeted} adaptive ones)' if targeted else ''} "
            f"are within {tolerance:.2%} of the best; the loss is flat "
            "across the box, which is too narrow to locate the optimum: widen the box", BoxWarning))
    return flags, messages
