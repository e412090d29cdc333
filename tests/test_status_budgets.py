"""Loading a results table (``analysis.load``): statuses read from any status column, runs not ended kept out,
nominal budgets, groups, units, and the one-line errors a bad table gets, each on a table small enough to
work out by hand."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis.load import (
    AnalysisWarning,
    _round_within,
    budget_groups,
    compute_label,
    load_results,
    nominal_budgets,
    validate_results,
    with_status,
)
from analysis.notices import DataWarning
from analysis.status import not_ended, rows_of


def table(n: int = 4, **columns) -> pd.DataFrame:
    """``n`` finished byte runs of one family at one budget, LR and BSZ distinct, losses near 2.5."""
    base = {"status": ["finished"] * n, "family": ["aunet2"] * n, "budget": [1e18] * n,
            "lr": [1e-3 * (i + 1) for i in range(n)], "bsz": [512.0] * n, "loss": [2.5 + 0.01 * i for i in range(n)],
            "units": ["bytes"] * n}
    return pd.DataFrame({**base, **columns})


def quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return call(*args, **kwargs)


def test_a_state_column_in_any_case_and_spelling_is_read_as_our_status():
    runs = pd.DataFrame({"State": [" Completed", "CRASHED", "running", None, "weird"], "loss": [1, 2, 3, 4, 5]})
    out = with_status(runs, "t")
    assert out["status"].tolist() == ["finished", "failed", "running", "nan", "weird"]
    assert "State" not in out.columns and out["loss"].tolist() == [1, 2, 3, 4, 5]
    mapped = with_status(runs, "t", {"weird": "diverged", "completed": "failed"})
    assert mapped["status"].tolist() == ["failed", "failed", "running", "nan", "diverged"]


def test_two_status_columns_must_agree_where_both_speak():
    runs = pd.DataFrame({"status": ["finished", None, "failed"], "state": ["success", "killed", None]})
    assert with_status(runs, "t")["status"].tolist() == ["finished", "failed", "failed"]
    clash = pd.DataFrame({"status": ["finished", "failed", "failed"], "state": ["finished", "finished", "crashed"]})
    with pytest.raises(ValueError, match=r"^t: columns 'status' and 'state' both give a run's status and disagree in "
                                         r"rows 1 \(row 1: 'failed' vs 'finished'\); drop the one you do not mean"):
        with_status(clash, "t")


def test_without_a_status_column_an_import_derives_one_from_the_loss_and_a_table_is_left_alone():
    runs = pd.DataFrame({"loss": [2.5, np.nan, "x", np.inf]})
    assert with_status(runs, "t") is not None and "status" not in with_status(runs, "t").columns
    assert with_status(runs, "t", derive=True)["status"].tolist() == ["finished", "failed", "failed", "failed"]
    assert with_status(pd.DataFrame({"lr": [1.0]}), "t", derive=True)["status"].tolist() == ["failed"]


def test_runs_not_ended_are_counted_by_status():
    runs = pd.DataFrame({"status": ["running", "finished", "pending", "running", "preempted", "failed"]})
    assert not_ended(runs) == "4 run(s) not ended: pending 1, running 2, preempted 1"
    assert not_ended(runs[runs["status"].isin(["finished", "failed", "diverged"])]) == ""


def test_runs_not_ended_are_left_out_before_they_form_a_budget():
    runs = pd.concat([table(), table(2, status=["running", "pending"], budget=[3.7e17, 1e18], loss=[np.nan] * 2,
                                     lr=[0.5, 0.6])], ignore_index=True)
    with pytest.warns(DataWarning, match=r"^t: 2 run\(s\) not ended: pending 1, running 1; they are left out"):
        out = validate_results(runs, "t")
    assert len(out) == 4 and out["budget"].unique().tolist() == [1e18]
    waiting = table(2, status=["running", "pending"])
    with pytest.raises(ValueError, match=r"^t: no run has ended yet \(2 run\(s\) not ended: pending 1, running 1\)"):
        quiet(validate_results, waiting, "t")


def test_an_unknown_status_is_refused_naming_the_option_that_maps_it():
    with pytest.raises(ValueError, match=r"^t: unknown status value\(s\) \['bogus', 'zzz'\]; a run's status is one of "
                                         r".*: map yours with --status bogus=failed"):
        validate_results(table(3, status=["finished", "zzz", "bogus"]), "t")


def test_budgets_within_the_tolerance_are_one_nominal_budget_named_by_a_round_number():
    df = pd.DataFrame({"family": ["a"] * 5 + ["b"], "budget": [0.996e18, 1.0e18, 1.004e18, 2.0e18, 2.03e18, 1.004e18]})
    nominal_budgets(df, 0.01, "t")
    assert df["budget"].tolist() == [1e18, 1e18, 1e18, 2e18, 2.03e18, 1.004e18]  # 2.03 is 1.5% away: its own
    assert df["compute"].tolist() == [0.996e18, 1.0e18, 1.004e18, 2.0e18, 2.03e18, 1.004e18]
    # exactly at the tolerance is within it
    edge = pd.DataFrame({"family": ["a", "a"], "budget": [1.0e18, 1.01e18]})
    nominal_budgets(edge, 0.01, "t")
    assert edge["budget"].nunique() == 1
    assert budget_groups(df).to_dict("list") == {"family": ["a", "a", "a", "b"], "budget": [1e18, 2e18, 2.03e18, 1.004e18],
                                                 "runs": [3, 1, 1, 1],
                                                 "spread": pytest.approx([1.004 / 0.996 - 1, 0.0, 0.0, 0.0])}


def test_a_group_is_named_by_the_shortest_round_number_within_the_tolerance_of_every_member():
    assert _round_within(np.array([0.996e18, 1.004e18]), 0.01) == 1e18
    # 1.2 is 3.3% from 1.24, too far; 1.23 (three digits of the centre 1.2350) is within 1% of both
    assert _round_within(np.array([1.23e18, 1.24e18]), 0.01) == 1.23e18
    assert _round_within(np.array([1.2345e18, 1.2346e18]), 0.0) == pytest.approx(1.23455e18, rel=1e-6)
    assert _round_within(np.array([1.24e11]), 0.3) == 1e11  # one digit is tried first, and is enough here
    assert _round_within(np.array([1.5]), 0.25) == 2.0  # a member exactly at the tolerance is within it
    # No rounding of up to 6 digits within 1e-7: the centre at 6 digits, never 7 or more
    assert _round_within(np.array([1.2345678e11]), 1e-7) == 1.23457e11


def test_a_nominal_budget_column_decides_and_must_be_complete():
    df = pd.DataFrame({"family": ["a", "a"], "budget": [0.9e18, 1.3e18], "nominal_budget": [1e18, "1e18"]})
    nominal_budgets(df, 0.01, "t")
    assert df["budget"].tolist() == [1e18, 1e18] and df["compute"].tolist() == [0.9e18, 1.3e18]
    gaps = pd.DataFrame({"family": ["a", "a", "a"], "budget": [1e18] * 3, "nominal_budget": [1e18, np.nan, -1.0]})
    with pytest.raises(ValueError, match=r"^t: column 'nominal_budget' has gaps or non-positive values in rows 1, 2;"):
        nominal_budgets(gaps, 0.01, "t")


def test_a_family_whose_budgets_are_mostly_single_runs_is_warned_about():
    budgets = [1e18 * 1.05**i for i in range(12)]
    df = pd.DataFrame({"family": ["a"] * 12, "budget": budgets})
    with pytest.warns(AnalysisWarning, match=r"t: 12 of a's 12 budgets hold a single run: .* more than 1.00%"):
        nominal_budgets(df, 0.01, "t")
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnalysisWarning)
        nominal_budgets(pd.DataFrame({"family": ["a"] * 9, "budget": budgets[:9]}), 0.01, "t")  # fewer than 10


def test_the_compute_label_says_which_convention_or_import_counted_it():
    assert compute_label(pd.DataFrame({"budget": [1.0]})) == "compute C (FLOPs; compute spent, head included: N x F)"
    both = pd.DataFrame({"convention": ["paper", "spent", "paper"]})
    assert compute_label(both) == ("compute C (FLOPs; the paper's C: N x F_no-head; compute spent, head included: "
                                   "N x F)")
    imported = pd.DataFrame({"convention": ["spent"] * 2, "compute_from": ["6 N D", None]})
    assert compute_label(imported) == "compute C (FLOPs; 6 N D)"
    assert compute_label(pd.DataFrame({"convention": ["paper"], "compute_from": [None]})).endswith("N x F_no-head)")


def test_a_validated_table_is_grouped_marked_and_keeps_row_numbers():
    runs = table(4, ratio=[0.2, 0.2, 10.0, 10.0], status=["finished", "finished", "finished", "diverged"])
    out = validate_results(runs, "t")
    assert out["group"].tolist() == ["ratio=0.2", "ratio=0.2", "ratio=10", "ratio=10"]
    assert out["usable"].tolist() == [True, True, True, False] and not out["set_aside"].any()
    assert out["bytes_per_unit"].tolist() == [1.0] * 4 and out["bsz_bytes"].tolist() == [512.0] * 4
    assert out["bpb"].tolist() == pytest.approx((runs["loss"] / np.log(2)).tolist())
    assert out["convention"].tolist() == ["spent"] * 4 and out["lr_min"].isna().all()
    assert validate_results(table(2, group=[" g ", None]), "t")["group"].tolist() == ["g", ""]


def test_a_run_diverged_but_stored_as_finished_is_set_aside():
    runs = table(4, loss=[2.5, 2.6, 3.74, 3.76])  # 1.5x the best is 3.75
    with pytest.warns(AnalysisWarning, match=r"^t: 1 finished run\(s\) have a loss above 1.5x the best of their budget "
                                             r"\(aunet2 1e\+18: 1\)"):
        out = validate_results(runs, "t")
    assert out["set_aside"].tolist() == [False, False, False, True] and out["usable"].tolist() == [True] * 3 + [False]
    assert out["status"].tolist() == ["finished"] * 4
    assert validate_results(runs, "t", diverged_above=None)["usable"].all()
    with pytest.raises(ValueError, match=r"^diverged_above 1 must exceed 1"):
        validate_results(runs, "t", diverged_above=1)


def test_a_finished_run_without_a_positive_finite_loss_is_shown_failed():
    with pytest.warns(DataWarning, match=r"^t: 2 finished run\(s\) \(rows 1, 3\) have a non-finite or non-positive "):
        out = validate_results(table(4, loss=[2.5, np.nan, 2.6, 0.0]), "t")
    assert out["usable"].tolist() == [True, False, True, False]


@pytest.mark.parametrize("change, said", [
    (dict(lr=[1e-3, 0.0, 2e-3]), r"^t: column 'lr' must be a positive finite number in every row; rows 1 have \[0.0\]"),
    (dict(bsz=[512, np.inf, -1]), r"^t: column 'bsz' must be a positive finite number in every row; rows 1, 2 have"),
    (dict(loss=[2.5, "two", 2.6]), r"^t: column 'loss' must be numeric; rows 1 hold \['two'\]"),
    (dict(family=["aunet2", " ", None]), r"^t: rows 1, 2 have no model family \('family'\)"),
    (dict(units=["bytes", "bits", "bytes"]), r"^t: unknown units \['bits'\] \(rows 1\)"),
    (dict(units=["bytes", "tokens", "bytes"], bytes_per_unit=[1.0, 3.0, 1.0]), r"^t: mixed units for family 'aunet2'"),
    (dict(bytes_per_unit=[1.0, 2.0, 1.0]), r"^t: rows 1 have bytes_per_unit \[2.0\]; it is 1 for byte models"),
    (dict(bsz_bytes=[512, 1024, 512]), r"^t: rows 1 have bsz_bytes != bsz x bytes_per_unit"),
    (dict(lr=[1e-3, 1e-3, 1e-3]), r"^t: rows 0, 1, 2 repeat a run \(equal \['family', 'budget', 'group', 'lr', 'bsz'\]\)"),
    (dict(convention=["spent", "paper", "spent"]), r"^t: family 'aunet2' mixes budget conventions \(paper: 1 runs, "
                                                   r"spent: 2 runs\)"),
])
def test_a_bad_table_is_refused_in_one_line_naming_itsrows_of(change, said):
    with pytest.raises(ValueError, match=said):
        quiet(validate_results, table(3, **change), "t")


def test_a_table_is_refused_when_it_is_not_one_or_is_empty_or_lacks_columns():
    with pytest.raises(ValueError, match=r"^t: expected a pandas DataFrame of runs, got list"):
        validate_results([1], "t")
    with pytest.raises(ValueError, match=r"^t is empty: there are no runs to analyse"):
        validate_results(table().iloc[:0], "t")
    with pytest.raises(ValueError, match=r"^t lacks column\(s\) \['units'\]; .* an import sets them for the whole "
                                         r"table with --units bytes\|tokens"):
        validate_results(table().drop(columns="units"), "t")
    with pytest.raises(ValueError, match=r"^t lacks column\(s\) \['lr', 'bsz'\]; every row needs"):
        validate_results(table().drop(columns=["lr", "bsz"]), "t")
    for bad in (-0.1, 1.0, "x"):
        with pytest.raises(ValueError, match="budget tolerance .* must be a fraction in \\[0, 1\\)"):
            validate_results(table(), "t", budget_tolerance=bad)


def test_the_family_column_may_be_called_arch_and_a_trial_that_failed_early_takes_its_familys_units():
    runs = table(3).rename(columns={"family": "arch"}).assign(units=["bytes", None, "bytes"],
                                                               status=["finished", "failed", "finished"])
    out = validate_results(runs, "t")
    assert out["family"].tolist() == ["aunet2"] * 3 and out["units"].tolist() == ["bytes"] * 3
    with pytest.raises(ValueError, match=r"^t: rows 1 have no 'units'"):
        validate_results(table(3, units=["bytes", None, "bytes"]), "t")


def test_the_rows_named_are_the_inputs_and_at_most_eight():
    assert rows_of(pd.Series([False, True, True], index=[4, 7, 9])) == "7, 9"
    assert rows_of(pd.Series([True] * 10)) == "0, 1, 2, 3, 4, 5, 6, 7 ... (10 in all)"


def test_results_load_from_each_form_a_sweep_leaves(tmp_path):
    runs = table(3)
    runs.to_csv(tmp_path / "r.csv", index=False)
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in runs.to_dict("records")) + "\n\n")
    (tmp_path / "r.json").write_text(json.dumps(runs.to_dict("records")))
    for name in ("r.csv", "r.jsonl", "r.json"):
        assert load_results(tmp_path / name)["lr"].tolist() == runs["lr"].tolist(), name
    one = tmp_path / "one"
    one.mkdir()
    runs.to_csv(one / "only.csv", index=False)
    assert len(load_results(one)) == 3  # a folder with one table file is that file
    with pytest.raises(ValueError, match=r"holds no ledger.sqlite, no \*\*/record.json files and 3 table files"):
        load_results(tmp_path)
    with pytest.raises(ValueError, match=r"^results path .*missing.csv does not exist"):
        load_results(tmp_path / "missing.csv")
    (tmp_path / "r.txt").write_text("x")
    with pytest.raises(ValueError, match=r"has suffix '.txt'; use one of"):
        load_results(tmp_path / "r.txt")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"bad.json: expected a JSON object per run, got int"):
        load_results(tmp_path / "bad.json")
    (tmp_path / "broken.jsonl").write_text("{")
    with pytest.raises(ValueError, match=r"^cannot read results file .*broken.jsonl"):
        load_results(tmp_path / "broken.jsonl")


def test_a_study_is_picked_by_name_and_a_missing_one_lists_those_found():
    runs = pd.concat([table(2, study="a"), table(2, study="b", lr=[5e-3, 6e-3])], ignore_index=True)
    assert load_results(runs, study="b")["lr"].tolist() == [5e-3, 6e-3]
    with pytest.raises(ValueError, match=r"^no runs of study 'c' in the DataFrame; studies found: \['a', 'b'\]"):
        load_results(runs, study="c")
    with pytest.raises(ValueError, match=r"studies found: \[\]"):
        load_results(table(2), study="c")


def test_a_ledgers_trials_are_named_by_their_study_or_else_by_its_folder(tmp_path):
    from analysis.load import REQUIRED, _read_ledger
    from sweeps.ledger import Ledger
    from sweeps.study import StudyConfig, Trial

    def ledger_with_a_failed_trial(folder: str, study: StudyConfig | None) -> pd.DataFrame:
        (tmp_path / folder).mkdir()
        ledger = Ledger(tmp_path / folder / "ledger.sqlite")
        if study is not None:
            ledger.bind(study)
        ledger.add([Trial("aunet2", 1e11, 0, 1e-3, 1024)])
        ledger.mark("aunet2/C1e11/t0", "failed", error="boom")
        return _read_ledger(tmp_path / folder / "ledger.sqlite")

    unnamed = ledger_with_a_failed_trial("pilot", None)  # a ledger never bound to a config
    assert unnamed["study"].tolist() == ["pilot"] and set(REQUIRED) <= set(unnamed.columns)
    assert unnamed["status"].tolist() == ["failed"] and unnamed["loss"].isna().all()
    named = ledger_with_a_failed_trial("folder", StudyConfig(name="reference"))
    assert named["study"].tolist() == ["reference"]
    # a trial whose record names its study keeps it; one that failed before its record takes the ledger's
    from aunet.record import RunRecord

    ledger = Ledger(tmp_path / "folder" / "ledger.sqlite")
    ledger.add([Trial("aunet2", 1e11, 1, 2e-3, 1024)])
    record = RunRecord(status="finished", family="aunet2", budget=1e11, lr=2e-3, bsz=1024.0, units="bytes",
                       study="copied", loss=2.5)
    ledger.mark("aunet2/C1e11/t1", "finished", record=record.to_dict())
    assert _read_ledger(tmp_path / "folder" / "ledger.sqlite")["study"].tolist() == ["reference", "copied"]
