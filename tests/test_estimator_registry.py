"""An estimator is one class in ``analysis.estimators.ESTIMATORS``: a toy one registered inside this test
alone goes through ``analyse``, the law file, the CLI's choices and the plots, and leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import analyse
from analysis.cards import law_card
from analysis.estimators import ESTIMATORS, Estimator, bootstrap_weights, get_estimator
from analysis.synthetic import SweepDesign, synthetic_sweep


class BestRun(Estimator):
    """The single best run of each (resampled) budget: the simplest estimator there is."""

    name, min_runs, marker, colour = "best", 1, "o", "tab:green"

    def describe(self, tolerance):
        return "the best run"

    def subject(self, tolerance):
        return "the best run"

    def replicates(self, loss, logv, n_boot, rng):
        return loss, bootstrap_weights(len(loss), n_boot, rng)

    def optimum(self, losses, logv, w, log_box, tolerance):
        best = np.where(w > 0, losses, np.inf).argmin(axis=1)
        return np.exp(logv[best]), 1.0


@pytest.fixture
def best_run(monkeypatch):
    monkeypatch.setitem(ESTIMATORS, "best", BestRun())


def test_a_registered_estimator_is_fitted_written_and_offered_and_the_default_stays(best_run, tmp_path, capsys):
    runs = synthetic_sweep("aunet2", design=SweepDesign(budgets=tuple(np.geomspace(1e18, 1e20, 4)), trials=16), seed=3)
    result = analyse(runs, n_boot=50)
    fit = result.laws["aunet2"]["best"]
    finished = runs[runs["status"] == "finished"]
    best = finished.loc[finished.groupby("budget")["loss"].idxmin()].sort_values("budget")
    np.testing.assert_allclose(fit.budgets["lr_opt"], best["lr"])  # row 0 of the replicates: the data
    np.testing.assert_allclose(fit.budgets["bsz_opt"], best["bsz"])
    assert fit.lr.exponent_ci[0] < fit.lr.exponent < fit.lr.exponent_ci[1]
    assert result.law("aunet2").estimator == "bowl"  # a new estimator is never the recipe's default by accident
    card = law_card(result, "aunet2", "best")
    card.write(tmp_path / "law.json")
    assert card.estimator == "best"

    from analysis.__main__ import main
    from analysis.plots import plot_hyper_laws

    path = tmp_path / "runs.csv"
    runs.to_csv(path, index=False)
    assert main(["fit", str(path), "--family", "aunet2", "--estimator", "best", "--law-out", str(tmp_path / "cli.json"),
                 "--bootstrap", "50", "--out", str(tmp_path / "laws")]) == 0
    assert "aunet2 [best, the best run, BSZ in bytes]" in capsys.readouterr().out
    figure = plot_hyper_laws(result.laws["aunet2"])
    assert any(line.get_color() == "tab:green" for ax in figure.axes for line in ax.lines)


def test_an_unknown_estimator_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"estimator 'median' is not one of \('band', 'bowl'\)"):
        get_estimator("median")
    assert "best" not in ESTIMATORS  # the toy one did not leak out of its test
