"""What the analysis tells the user to look at, as typed warnings: a script or a test can keep, silence or
raise one kind (``warnings.simplefilter("error", BoxWarning)``) without matching message text."""

from __future__ import annotations

import warnings


class AnalysisWarning(UserWarning):
    """Something the user should look at; every kind below is one."""


class DataWarning(AnalysisWarning):
    """Rows left out of the table or suspect in it: runs not ended, non-finite losses, far-off losses,
    budgets of a single run."""


class BoxWarning(AnalysisWarning):
    """An optimum on the edge of its search box, or outside it: the box did not bracket it."""


class FitWarning(AnalysisWarning):
    """A fit that could not be made, or made on too little: too few runs or budgets, an estimator missing."""


class SeedWarning(AnalysisWarning):
    """Seeds of one point that differ by as much as the near-optimal band: noise the band cannot resolve."""


def warn(message: str, kind: type[AnalysisWarning] = AnalysisWarning) -> str:
    """Emit ``message`` as a warning of ``kind`` and hand it back, so fits can keep it for the report."""
    warnings.warn(message, kind, stacklevel=3)
    return message
