"""Allocation fits: the compute-optimal model size for a budget, from isoFLOP studies.

Each fit is one class registered in ``ALLOCATION_FITS`` (as estimators are in ``analysis.estimators``):
``approach2`` (a parabola per budget, then a power law through the vertices) and ``approach3`` (the
parametric L(N, D) fitted to every run). ``compare`` sets them side by side at a target budget.
"""

from __future__ import annotations

from analysis.allocation.approach2 import Approach2, Approach2Result, Vertex
from analysis.allocation.approach3 import Approach3, Approach3Result
from analysis.allocation.base import AllocationFit, validate_table
from analysis.allocation.compare import MISALLOCATION_FLAG, Comparison, compare

#: Every allocation fit, by name, in the order a study's fits are made and shown.
ALLOCATION_FITS: dict[str, AllocationFit] = {f.name: f for f in (Approach2(), Approach3())}

__all__ = ["ALLOCATION_FITS", "MISALLOCATION_FLAG", "AllocationFit", "Approach2", "Approach2Result", "Approach3",
           "Approach3Result", "Comparison", "Vertex", "compare", "validate_table"]
