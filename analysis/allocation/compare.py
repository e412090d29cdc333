"""Approaches 2 and 3 side by side at a target budget, in the currency that matters: compute.

The misallocated share at a target C is judged under approach 3's fitted L (the one fit that prices
any allocation): approach 2's allocation at C, N2 = G2·C^a2 and D2 = C / (k·N2), reaches the loss
L(N2, D2); approach 3's optimal allocation reaches that same loss with less compute, C_eq. The share
1 - C_eq / C is the part of the budget that buys nothing when spent at approach 2's allocation
(0 when the two agree; never negative, since approach 3's allocation is optimal under its own L).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from analysis.allocation.approach2 import Approach2Result
from analysis.allocation.approach3 import Approach3Result
from analysis.allocation.base import json_number

MISALLOCATION_FLAG = 0.02  # a share of compute above this is worth a warning


@dataclass
class Comparison:
    target: float  # C, in FLOPs
    a_difference: float  # |a2 - a3|
    n_opt2: float
    n_opt3: float
    share: float  # of the target compute misallocated by approach 2's N_opt (NaN without its law)
    flagged: bool  # share above MISALLOCATION_FLAG

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "a_difference": json_number(self.a_difference),
                "n_opt_approach2": json_number(self.n_opt2), "n_opt_approach3": json_number(self.n_opt3),
                "misallocated_share": json_number(self.share), "flagged": self.flagged}


def misallocated_share(fit3: Approach3Result, n: float, compute: float) -> float:
    """1 - C_eq / C for the allocation (n, C / (k·n)) under ``fit3``'s L (see the module docstring)."""
    reached = float(fit3.loss(n, compute / (fit3.k * n)))
    return max(0.0, 1.0 - fit3.compute_for_loss(reached) / compute)


def compare(fit2: Approach2Result, fit3: Approach3Result, target: float) -> Comparison:
    """|a2 - a3| and the share of ``target`` compute approach 2's N_opt misallocates under approach 3's L."""
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"the target compute must be positive and finite; got {target!r}")
    n2, n3 = float(fit2.n_opt(target)), float(fit3.n_opt(target))
    share = misallocated_share(fit3, n2, target) if math.isfinite(n2) and n2 > 0 else math.nan
    return Comparison(target, abs(fit2.a - fit3.a), n2, n3, share, bool(share > MISALLOCATION_FLAG))
