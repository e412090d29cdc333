"""Import of W&B-style exports (a ``state`` column, runs that have not ended, batches counted in sequences) and
the analysis command line's answers a user acts on: the verdict beside a written override file, a missing
results path named as such, and ``fit``'s lines saying what the data do not identify."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.load import AnalysisWarning, load_results, validate_results
from analysis.synthetic import SweepDesign, synthetic_sweep

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference" / "results.csv"
FIVE = SweepDesign(budgets=tuple(np.geomspace(1e18, 1e20, 5)), trials=16)
SEQ_LEN = 8192
#: The --column options naming the export's columns (below) as ours.
COLUMNS = ["--column", "family=model", "--column", "params=n_params", "--column", "tokens=tokens_seen",
           "--column", "bsz=batch", "--column", "loss=eval_loss"]


def quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return call(*args, **kwargs)


@pytest.fixture(scope="module")
def sweep() -> pd.DataFrame:
    """A synthetic sweep as validated here: finished, diverged and failed runs at five nominal budgets."""
    return quiet(validate_results, synthetic_sweep("aunet2", design=FIVE, seed=41))


def wandb_export(runs: pd.DataFrame, state: str = "state") -> pd.DataFrame:
    """``runs`` as a W&B export writes them: its own column names, ``state`` words, and two runs still going
    (one at a budget of its own, which must not become a budget), and two crashed runs that logged a loss."""
    words = runs["status"].map({"finished": "finished", "diverged": "failed", "failed": "killed"})
    crashed = runs.index[runs["usable"]][:2]
    words[crashed] = "crashed"
    export = pd.DataFrame({"model": "aunet2", "n_params": runs["params"], "tokens_seen": runs["budget"] /
                           (6 * runs["params"]), "lr": runs["lr"], "batch": runs["bsz"], "eval_loss": runs["loss"],
                           state: words})
    going = export.iloc[[0, 1]].assign(**{state: "running", "eval_loss": [2.9, np.nan]})
    going["tokens_seen"] *= [1.0, 0.37]  # the second has spent 37% of its budget so far
    return pd.concat([export, going], ignore_index=True)


# --------------------------------------------------------------------------- statuses of W&B exports


@pytest.mark.parametrize("state", ["state", "State"])
def test_a_wandb_state_column_is_the_status_and_runs_not_ended_form_no_budget(sweep, tmp_path, capsys, state):
    export = wandb_export(sweep, state)
    export.to_csv(tmp_path / "export.csv", index=False)
    study = tmp_path / "study"
    assert main(["import", str(tmp_path / "export.csv"), "--out", str(study), "--units", "bytes", *COLUMNS]) == 0
    out = capsys.readouterr().out
    assert f"results.csv: {len(sweep)} runs (and 2 run(s) not ended: running 2; left out of every budget until " \
        "they end); budgets" in out
    assert "aunet2: 5 budgets from 1e+18 to 1e+20, 16-16 runs each" in out
    counts = sweep["status"].replace("diverged", "failed").value_counts()
    counts["finished"] -= 2
    counts["failed"] += 2
    assert f"statuses: finished {counts['finished']}, failed {counts['failed']}" in out
    with pytest.warns(AnalysisWarning, match=r"2 run\(s\) not ended: running 2; they are left out of every budget"):
        table = load_results(study)
    assert sorted(table["budget"].unique()) == sorted(sweep["budget"].unique())  # no budget at 37% of one
    assert len(table) == len(sweep) and state not in table.columns
    # Crashed runs that logged a loss stay failed: never fitted as finished.
    crashed = export[export[state] == "crashed"].index
    assert (table.loc[crashed, "status"] == "failed").all() and not table.loc[crashed, "usable"].any()
    assert table["usable"].sum() == sweep["usable"].sum() - 2
    assert (pd.read_csv(study / "results.csv")["status"].iloc[-2:] == "running").all()  # written as they were


def test_status_and_state_must_agree_and_unended_rows_keep_the_row_numbers(sweep):
    runs = sweep.drop(columns=["usable", "set_aside"])
    agreeing = runs.assign(state=runs["status"].replace({"failed": "crashed"}))
    assert (quiet(validate_results, agreeing)["status"] == sweep["status"]).all()
    clash = agreeing.assign(state=agreeing["state"].where(agreeing.index != 3, "crashed"))
    with pytest.raises(ValueError, match=r"columns 'status' and 'state' both give a run's status and disagree in "
                                         r"rows 3 \(row 3: 'finished' vs 'crashed'\); drop the one"):
        validate_results(clash)
    # A row left out as not ended does not shift the row numbers an error names.
    bad = runs.assign(status=runs["status"].where(runs.index != 0, "running"),
                      lr=runs["lr"].where(runs.index != 5, -1.0))
    with pytest.raises(ValueError, match=r"'lr' must be a positive finite number in every row; rows 5 have"):
        quiet(validate_results, bad)
    with pytest.raises(ValueError, match=r"no run has ended yet \(80 run\(s\) not ended: pending 3, running 77\)"):
        quiet(validate_results, runs.assign(status=np.where(runs.index < 3, "queued", "running")))


# --------------------------------------------------------------------------- batches counted in sequences


def test_a_batch_counted_in_sequences_is_converted_with_the_sequence_length(sweep, tmp_path, capsys):
    export = wandb_export(sweep).query("state != 'running'").assign(batch=lambda d: d["batch"] / SEQ_LEN)
    export.to_csv(tmp_path / "export.csv", index=False)
    base = ["import", str(tmp_path / "export.csv"), "--units", "bytes", *COLUMNS]
    assert main([*base, "--out", str(tmp_path / "flag"), "--bsz-unit", "sequences", "--seq-len", str(SEQ_LEN)]) == 0
    assert f"batch sizes counted in sequences, written in input units: x sequence length {SEQ_LEN}" in \
        capsys.readouterr().out
    table = quiet(load_results, tmp_path / "flag")
    assert table["bsz"].tolist() == pytest.approx(sweep["bsz"].tolist(), rel=1e-12)
    assert (table["seq_len"] == SEQ_LEN).all()
    # A seq_len column does the same; the default reads the batch as input units, as given.
    export.assign(ctx=SEQ_LEN).to_csv(tmp_path / "with_column.csv", index=False)
    with_column = ["import", str(tmp_path / "with_column.csv"), "--units", "bytes", *COLUMNS]
    assert main([*with_column, "--out", str(tmp_path / "column"), "--bsz-unit", "sequences",
                 "--column", "seq_len=ctx"]) == 0
    assert quiet(load_results, tmp_path / "column")["bsz"].tolist() == pytest.approx(sweep["bsz"].tolist(), rel=1e-12)
    assert main([*base, "--out", str(tmp_path / "units")]) == 0
    assert quiet(load_results, tmp_path / "units")["bsz"].tolist() == pytest.approx(export["batch"].tolist(), rel=1e-12)
    capsys.readouterr()


@pytest.mark.parametrize("args, message", [
    (["--bsz-unit", "sequences"], r"--bsz-unit sequences needs the sequence length in input units: give --seq-len N, "
                                  r"or a seq_len column"),
    (["--seq-len", "2048"], r"--seq-len 2048 converts a batch counted in sequences: give --bsz-unit sequences too"),
    (["--bsz-unit", "sequences", "--seq-len", "2048", "--column", "seq_len=ctx"],
     r"the table has a 'seq_len' column and --seq-len 2048.0 was given too"),
])
def test_a_batch_in_sequences_without_one_sequence_length_is_one_line(sweep, tmp_path, capsys, args, message):
    wandb_export(sweep).assign(ctx=SEQ_LEN).to_csv(tmp_path / "export.csv", index=False)
    assert main(["import", str(tmp_path / "export.csv"), "--out", str(tmp_path / "s"), "--units", "bytes", *COLUMNS,
                 *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "s" / "results.csv").exists()


# --------------------------------------------------------------------------- extrapolate --out


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("study") / "runs.csv"
    synthetic_sweep("aunet2", design=FIVE, seed=42).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("budget, force", [(1e21, []), (1e25, ["--force"])])
def test_extrapolate_out_prints_the_verdict_and_where_the_file_went(study, tmp_path, capsys, budget, force):
    out = tmp_path / "recipe.yaml"
    assert main(["extrapolate", str(study), "--family", "aunet2", "--budget", f"{budget:g}", "--bootstrap", "100",
                 "--format", "yaml", "--out", str(out), *force]) == 0
    verdict, written = capsys.readouterr().out.splitlines()
    assert f"# verdict: {verdict.removeprefix('aunet2: ')}" in out.read_text().splitlines()  # the file's verdict
    assert verdict.startswith("aunet2: not usable" if force else "aunet2: ") and f" at C = {budget:.3g}" in verdict
    assert ("not usable" in verdict) == bool(force)
    assert written == f"overrides written to {out}" + (" (--force: this verdict heads the file)" if force else "")


# --------------------------------------------------------------------------- a results path that does not exist


COMMANDS = [["fit", "{source}"], ["report", "{source}"], ["validate", "{source}", "--holdout", "1e20"],
            ["extrapolate", "{source}", "--family", "aunet2", "--budget", "1e21"],
            ["extrapolate", "--results", "{source}", "--family", "aunet2", "--budget", "1e21"]]
IMPORT = ["import", "{source}", "--out", "study", "--units", "bytes"]


@pytest.mark.parametrize("command, source", [
    *((c, s) for c in COMMANDS for s in ("missing/results.csv", "results.csv", "outputs/sweeps/demo")),
    (IMPORT, "missing/results.csv"), (IMPORT, "results.csv"),
])
def test_a_missing_results_path_is_named_by_every_command(tmp_path, monkeypatch, capsys, command, source):
    monkeypatch.chdir(tmp_path)  # no outputs/sweeps here
    monkeypatch.delenv("AUNET_RESULTS", raising=False)
    assert main([source if part == "{source}" else part for part in command]) == 2
    assert capsys.readouterr().err == f"error: results path {source} does not exist\n"


def test_a_word_that_is_neither_a_path_nor_a_study_says_both(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUNET_RESULTS", raising=False)
    assert main(["fit", "demo"]) == 2
    assert capsys.readouterr().err.startswith("error: results path demo does not exist, nor is it a study: there is "
                                              "no outputs/sweeps/demo")
    monkeypatch.setenv("AUNET_RESULTS", str(tmp_path / "gone"))
    assert main(["fit"]) == 2
    assert capsys.readouterr().err == f"error: results path {tmp_path / 'gone'} (AUNET_RESULTS) does not exist\n"


# --------------------------------------------------------------------------- fit says what is not identified


def test_fit_says_not_identified_where_the_reference_data_do_not_identify(tmp_path, capsys):
    assert main(["fit", str(REFERENCE), "--family", "aunet2", "--out", str(tmp_path), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    band = out[out.index("aunet2 [band"):out.index("aunet2 [bowl")]
    bsz = next(line for line in band.splitlines() if line.strip().startswith("BSZ"))
    # every band optimum sits at the one-sequence floor: the BSZ exponent's interval crosses zero
    low, high = map(float, re.search(r"exponent not identified \(crosses zero: 95% CI \[(\S+), (\S+)\]\)",
                                     bsz).groups())
    assert low < 0 < high
    assert bsz.startswith("  BSZ = ?·C^?") and "-0.0000" not in bsz  # no number shown as an estimate
    lr = next(line for line in band.splitlines() if line.strip().startswith("LR"))
    assert re.match(r"  LR  = \?·C\^-0\.\d{4}   exponent 95% CI \[-\d\.\d{4}, -0\.\d{4}\]   coef not identified "
                    r"\(a factor over 1e\+03: 95% CI", lr), lr  # an identified exponent keeps its number
    # L(C): the floor's interval reaches zero on the reference's aunet2, so E is no estimate either.
    loss = next(line for line in out.splitlines() if line.startswith("aunet2: loss"))
    assert loss.startswith("aunet2: loss (bits per byte) = ? + ") and "E not identified: its interval [" in loss
    assert loss.endswith("reaches zero)")
