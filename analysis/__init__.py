"""Scaling-law analysis of sweeps: hyperparameter laws, loss against compute, extrapolation.

Entry points (figures and reports live in ``analysis.plots`` and ``analysis.report``;
the command line is ``python -m analysis {fit,report,extrapolate,validate,import}``)::

    from analysis import load_results, analyse, extrapolate
    result = analyse(load_results("multirun/"))       # every family, band and bowl, L(C), iso-FLOP
    law_card(result, "aunet2").write("law.json")     # the law file (aunet.laws.LawCard) train.py law= reads
    recipe = extrapolate(result, "aunet2", 1e22)     # with recipe.verdict: usable, use with care, not usable
    print(recipe.text())
"""

from analysis.cards import law_card
from analysis.external import import_table
from analysis.extrapolate import Extrapolation, extrapolate
from analysis.fits import (
    Analysis,
    HyperFit,
    LawFit,
    LossFit,
    analyse,
    fit_hyper_laws,
    fit_loss_curve,
    fit_power_law,
    isoflop_curves,
    seed_noise,
)
from analysis.holdout import HoldoutCheck, validate_holdout
from analysis.load import FAMILY, load_results, validate_results
from analysis.notices import AnalysisWarning, BoxWarning, DataWarning, FitWarning, SeedWarning

__all__ = [
    "FAMILY", "Analysis", "AnalysisWarning", "BoxWarning", "DataWarning", "FitWarning", "SeedWarning", "Extrapolation", "HoldoutCheck", "HyperFit", "LawFit", "LossFit", "analyse",
    "extrapolate", "fit_hyper_laws", "fit_loss_curve", "fit_power_law", "import_table", "isoflop_curves",
    "law_card", "load_results", "seed_noise", "validate_holdout", "validate_results",
]
