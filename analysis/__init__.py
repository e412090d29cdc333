"""Scaling-law analysis of sweeps: hyperparameter laws, loss against compute, extrapolation.

Entry points (figures and reports live in ``analysis.plots`` and ``analysis.report``;
the command line is ``python -m analysis {fit,report,extrapolate,validate,import}``)::

    from analysis import load_results, analyse, extrapolate
    result = analyse(load_results("multirun/"))       # every family, band and bowl, L(C), iso-FLOP
    result.law("aunet2").write_laws("law.json")      # the JSON aunet.laws.HyperLaws.from_file reads
    print(extrapolate(result, "aunet2", 1e22).text())
"""

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
from analysis.load import FAMILY, AnalysisWarning, load_results, validate_results

__all__ = [
    "FAMILY", "Analysis", "AnalysisWarning", "Extrapolation", "HoldoutCheck", "HyperFit", "LawFit", "LossFit", "analyse",
    "extrapolate", "fit_hyper_laws", "fit_loss_curve", "fit_power_law", "import_table", "isoflop_curves",
    "load_results", "seed_noise", "validate_holdout", "validate_results",
]
