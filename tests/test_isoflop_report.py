"""An isoFLOP study run at its law's prior LR and BSZ has no hyperparameter law: (budget, size) groups whose runs
do not search LR x BSZ enter no law fit, a typed warning counts them, and the report says so instead of a law,
beside the compute-optimal model size its allocation fits give."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.cards import law_card
from analysis.fits import analyse, fit_hyper_laws
from analysis.hyper_laws import NO_SEARCH, search_table
from analysis.load import AnalysisWarning, load_results
from analysis.notices import FitWarning
from analysis.synthetic import SweepDesign, synthetic_sweep
from tests.helpers.isoflop_table import isoflop_results

FAMILY = "transformer_bpe"
BUDGETS = (1e18, 1e19, 1e20)


def quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return call(*args, **kwargs)


def sections(report: str) -> dict[str, str]:
    """The report's level-2 sections by heading."""
    parts = re.split(r"^## (.+)$", report, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[str, object]:
    """``python -m analysis report`` on 3 budgets x 5 sizes, one run each at the prior LR and BSZ."""
    folder = tmp_path_factory.mktemp("isoflop")
    isoflop_results(budgets=BUDGETS, sizes=5, seed=1).to_csv(folder / "results.csv", index=False)
    assert quiet(main, ["report", str(folder / "results.csv"), "--bootstrap", "40"]) == 0
    return (folder / "report" / "report.md").read_text(), folder / "report"


def test_the_report_has_the_model_size_and_says_there_is_no_hyperparameter_law(report):
    text, out = report
    found = sections(text)
    said = f"**{FAMILY}**: {NO_SEARCH} (15 of 15 (budget, group) points ran fewer than 3 distinct (LR, BSZ) "
    assert said in found["Hyperparameter laws"] and said in found["What this study supports"]
    assert "| estimator |" not in found["Hyperparameter laws"] and "No law could be fitted" not in text
    assert "**No hyperparameter law**: the model size alone" in found["What this study supports"]
    assert "usable at" not in text and "Extrapolation" not in found  # no law, so no recipe is judged usable
    assert f"### {FAMILY}: compute-optimal model size" in found["Compute-optimal model size"]
    assert not list(out.glob("laws/*.json")) and not list(out.glob("figures/landscape_*"))  # no panel per (budget, size)


def test_the_no_search_is_a_typed_warning_that_counts_the_groups(report):
    with pytest.warns(AnalysisWarning) as caught:
        analyse(isoflop_results(budgets=BUDGETS, sizes=5, seed=1), n_boot=20)
    messages = [str(w.message) for w in caught if NO_SEARCH in str(w.message)]
    assert [w.category for w in caught if NO_SEARCH in str(w.message)] == [FitWarning, FitWarning]
    assert [m.split(": ")[1] for m in messages] == ["no band law", "no bowl law"]
    assert all("15 of 15 (budget, group) points" in m and "0 budget(s) searched, a law needs 3" in m for m in messages)
    assert all(f"- {m}" in sections(report[0])["Warnings"] for m in messages)  # the report's list says the same


def test_a_hyperparameter_fit_of_an_isoflop_study_at_the_priors_is_refused_in_one_line(tmp_path, capsys):
    runs = quiet(load_results, isoflop_results(budgets=BUDGETS, sizes=5))
    for estimator in ("band", "bowl"):
        with pytest.raises(ValueError, match=rf"^{FAMILY}: {re.escape(NO_SEARCH)} \(15 of 15 "):
            fit_hyper_laws(runs, FAMILY, estimator=estimator, n_boot=10)
    isoflop_results(budgets=BUDGETS, sizes=5).to_csv(tmp_path / "runs.csv", index=False)
    assert quiet(main, ["extrapolate", str(tmp_path / "runs.csv"), "--family", FAMILY, "--budget", "1e21"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no hyperparameter law for '{FAMILY}'") and NO_SEARCH in err
    assert err.count("\n") == 1


def configurations(*pairs: tuple[float, float], seeds: int = 1) -> pd.DataFrame:
    """Two model sizes (groups) at one budget, each with finished runs at the given (LR, BSZ) pairs and
    ``seeds`` seeds: an isoFLOP budget."""
    rows = [{"budget": 1e18, "group": group, "usable": True, "lr": lr, "bsz": bsz, "seed": s}
            for group in ("params=1e6", "params=2e6") for lr, bsz in pairs for s in range(seeds)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("pairs", "seeds", "searched"), [
    ([(1e-3, 256)], 1, False),  # one configuration: an isoFLOP cell at its prior
    ([(1e-3, 256)], 9, False),  # seeds add runs, not a search
    ([(1e-3, 256), (2e-3, 512)], 3, False),  # two: the best is always at an end of what was tried
    ([(1e-3, 256), (2e-3, 512), (4e-3, 1024)], 1, True),  # three, the fewest that can bracket it
    ([(lr, b) for lr in (1e-3, 2e-3, 4e-3) for b in (256, 512, 1024)], 1, True),
])
def test_a_group_searches_lr_x_bsz_with_three_distinct_configurations(pairs, seeds, searched):
    table = search_table(configurations(*pairs, seeds=seeds))
    assert (table["runs"] == len(pairs) * seeds).all() and (table["configurations"] == len(pairs)).all()
    assert table["searched"].tolist() == [searched, searched]


def test_a_table_of_reported_optima_counts_as_searched_and_an_isoflop_budget_does_not():
    """One configuration per budget and one group per budget (a paper's table of best LR and BSZ): each row is
    the optimum of a search made elsewhere. A second group at one budget makes it an isoFLOP design instead."""
    optima = pd.DataFrame({"budget": [1e18, 2e18, 4e18], "group": "", "usable": True, "lr": [3e-3, 2e-3, 1e-3],
                           "bsz": [256, 512, 1024], "seed": 0})
    assert search_table(optima)["searched"].all()
    second = optima.iloc[[0]].assign(group="params=2e6")
    assert not search_table(pd.concat([optima, second]))["searched"].any()


def test_groups_without_a_search_beside_searched_ones_leave_the_law_as_it_was_and_are_counted():
    """A ladder that searched LR x BSZ, and at each of its budgets a second model size run once at the best
    configuration: the law is the ladder's alone, to the last digit."""
    ladder = synthetic_sweep("aunet2", design=SweepDesign(budgets=BUDGETS, trials=16), seed=3)
    finished = ladder[ladder["status"] == "finished"]
    best = finished.loc[finished.groupby("budget")["loss"].idxmin()]
    cells = best.assign(ratio=8.0, model=best["model"] + "-small", params=best["params"] / 2, loss=best["loss"] * 1.01)
    mixed = pd.concat([ladder, cells], ignore_index=True)
    for estimator in ("band", "bowl"):
        alone = quiet(fit_hyper_laws, ladder, "aunet2", estimator=estimator, n_boot=50)
        with pytest.warns(FitWarning, match=r"^aunet2: 3 \(budget, group\) point\(s\) ran no LR x BSZ search .*"
                                            rf"they enter no {estimator} law$"):
            both = fit_hyper_laws(mixed, "aunet2", estimator=estimator, n_boot=50)
        assert len(both.budgets) == len(alone.budgets) == 3
        assert set(both.runs["ratio"]) == {2.0} and len(both.runs) == len(ladder)  # its regime and landscape too
        for name in ("lr", "bsz"):
            a, b = getattr(alone, name), getattr(both, name)
            assert (b.coef, b.exponent, b.exponent_ci) == (a.coef, a.exponent, a.exponent_ci)
    analysis = quiet(analyse, mixed, n_boot=50)
    assert set(analysis.laws["aunet2"]) == {"band", "bowl"}
    assert law_card(analysis, "aunet2").regime.ratios == (2.0,)  # the cells' ratio is not the law's


def test_a_sobol_search_searches_every_group():
    ladder = quiet(load_results, synthetic_sweep("aunet2", design=SweepDesign(budgets=BUDGETS, trials=16), seed=3))
    table = search_table(ladder)
    assert table["searched"].all() and np.all(table["configurations"] >= 10)


def test_a_missing_law_says_why_each_estimator_failed_not_the_familys_other_notes():
    from analysis.fits import Analysis

    notes = [f"{FAMILY}: no band law: {NO_SEARCH}", f"{FAMILY} budget 2e+11 (ratio=0.09): 3 seeds differ by 2%",
             f"{FAMILY}: no bowl law: {NO_SEARCH}", f"{FAMILY}2: no bowl law: another family's"]
    analysis = Analysis(pd.DataFrame(), {}, {}, pd.DataFrame(), notes, 0.01, pd.DataFrame())
    with pytest.raises(ValueError) as err:
        analysis.law(FAMILY)
    assert str(err.value).endswith(f"{notes[0]}; {notes[2]}")
    with pytest.raises(ValueError, match=r"3 seeds differ by 2%$"):  # no estimator's reason: the notes it has
        Analysis(pd.DataFrame(), {}, {}, pd.DataFrame(), notes[1:2], 0.01, pd.DataFrame()).law(FAMILY)
