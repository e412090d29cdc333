"""A law file that every verdict check passes: the base the verdict and ladder tests change one field of."""

from __future__ import annotations

import dataclasses
import math

from aunet.laws import BudgetFacts, FittedLaw, LawCard, Regime

BUDGETS = (1e18, 3e18, 1e19, 3e19, 1e20)

#: The good card's runs: the paper's regime (8,192-byte sequences, ratio 10).
FITTED = Regime("aunet2", (10.0,), (90.0, 120.0), (8192,), (259,), (1.0, 1.0))


def fitted(coef: float, exponent: float, sd_level: float = 0.02, sd_slope: float = 0.005) -> FittedLaw:
    """A law whose log prediction has sd ``sd_level`` at the budgets' mean log and slope sd ``sd_slope``."""
    mean = sum(math.log(b) for b in BUDGETS) / len(BUDGETS)
    cov = (sd_level**2 + mean**2 * sd_slope**2, -mean * sd_slope**2, sd_slope**2)
    return FittedLaw(coef, exponent, (coef / 2, coef * 2), (exponent - 0.01, exponent + 0.01), cov, 1.0, 3)


def good_card(**changes) -> LawCard:
    """The paper's AU-Net law fitted on ``BUDGETS`` (with ``changes``)."""
    card = LawCard(family="aunet2", estimator="bowl", units="bytes", convention="spent", tolerance=0.01, level=0.95,
                   lr=fitted(6.6, -0.176), bsz=fitted(0.66, 0.321),
                   budgets=tuple(BudgetFacts(b, 24, 6.6 * b**-0.176, 0.66 * b**0.321) for b in BUDGETS),
                   seed_spread=0.003, loss=None, warnings=(), source="synthetic", source_sha256="0" * 64,
                   toolkit="test", regime=FITTED)
    return dataclasses.replace(card, **changes)
