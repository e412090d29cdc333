"""The analysis package's seams: the ledger read without ``sweeps`` (and without changing the file), the
box flags typed from the fit to the law file, one law writer, and a report whose sections write nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis import analyse
from analysis.box import BoxFlag, edge_label
from analysis.cards import TABLE_FLAGS, law_card, write_laws
from analysis.report import _band_against_bowl, build
from analysis.synthetic import SweepDesign, synthetic_sweep
from aunet.laws import FLAGS, LawCard
from aunet.ledger_file import read_ledger_file
from aunet.record import RunRecord


@pytest.fixture(scope="module")
def result():
    runs = synthetic_sweep("aunet2", design=SweepDesign(budgets=tuple(np.geomspace(1e18, 1e20, 4)), trials=16), seed=3)
    return analyse(runs, n_boot=50)


def test_the_analysis_reads_a_ledger_as_the_sweep_writes_it_and_never_imports_sweeps(tmp_path):
    from sweeps.ledger import Ledger
    from sweeps.study import StudyConfig, Trial

    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.bind(StudyConfig(name="reference"))
    ledger.add([Trial("aunet2", 1e11, 0, 1e-3, 1024), Trial("aunet2", 1e11, 1, 2e-3, 512, phase="predicted", seed=2),
                Trial("aunet2", 1e11, 2, 3e-3, 256)])
    ledger.mark("aunet2/C1e11/t0", "failed", error="boom")
    record = RunRecord(status="finished", family="aunet2", budget=1e11, lr=2e-3, bsz=512.0, units="bytes", loss=2.5)
    ledger.mark("aunet2/C1e11/t1", "finished", record=record.to_dict())
    before = (tmp_path / "ledger.sqlite").read_bytes()
    table, study = read_ledger_file(tmp_path / "ledger.sqlite")
    pd.testing.assert_frame_equal(table, ledger.to_frame())
    assert table["at_prediction"].tolist() == [False, True, False] and table["status"].tolist()[::2] == [
        "failed", "pending"]
    assert json.loads(study)["name"] == "reference"
    assert (tmp_path / "ledger.sqlite").read_bytes() == before
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, analysis.__main__, analysis.report, analysis.holdout; "
                               "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sweeps'))"],
        capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"


def test_a_ledger_from_before_the_added_columns_reads_with_their_defaults_and_stays_as_it_was(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE trials (key TEXT PRIMARY KEY, family TEXT NOT NULL, budget REAL NOT NULL, idx INTEGER "
                   "NOT NULL, lr REAL NOT NULL, bsz INTEGER NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL "
                   "DEFAULT 0, loss REAL, bpb REAL, error TEXT NOT NULL DEFAULT '', record TEXT, output_dir TEXT NOT "
                   "NULL DEFAULT '', updated REAL NOT NULL)")
        db.execute("INSERT INTO trials (key, family, budget, idx, lr, bsz, status, error, updated) VALUES "
                   "('aunet2/C1e11/t0', 'aunet2', 1e11, 0, 0.001, 1024, 'failed', 'oom', 0)")
    db.close()
    before = path.read_bytes()
    table, study = read_ledger_file(path)
    assert study is None and path.read_bytes() == before
    assert table.to_dict("records") == [{"status": "failed", "family": "aunet2", "budget": 1e11, "lr": 1e-3,
                                         "bsz": 1024, "trial": 0, "error": "oom", "seed": 0, "phase": "qmc",
                                         "at_prediction": False}]


def test_a_file_that_is_no_ledger_is_refused_with_the_rebuild_command(tmp_path):
    (tmp_path / "ledger.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match=r"ledger .*ledger.sqlite cannot be read \(.*\); rebuild it from the trials' "
                                         r"record files with: python -m sweeps rebuild "):
        read_ledger_file(tmp_path / "ledger.sqlite")


def test_every_box_flag_has_one_label_and_a_law_file_flag():
    assert {flag.law for flag in BoxFlag} == set(FLAGS)
    assert len({flag.label for flag in BoxFlag}) == len(BoxFlag) and TABLE_FLAGS["bowl BSZ outside"] == "bowl_outside"
    assert BoxFlag.of("BSZ", "floor") is BoxFlag.BSZ_FLOOR and BoxFlag.of("LR", "outside") is BoxFlag.BOWL_LR_OUTSIDE
    assert BoxFlag.of("LR", "upper").label == "LR upper" and str(BoxFlag.BAND_FILLS_BOX) == "band fills box"
    assert edge_label((BoxFlag.LR_LOWER, BoxFlag.BAND_FILLS_BOX)) == "LR lower, band fills box"
    assert edge_label(()) == ""


def test_the_law_file_takes_the_typed_flags_of_the_fit_not_its_text(result):
    fit = result.laws["aunet2"]["bowl"]
    assert all(row.edge == edge_label(row.flags) for row in fit.budgets.itertuples())
    kept = fit.budgets.at[0, "flags"]
    fit.budgets.at[0, "flags"] = (BoxFlag.LR_LOWER, BoxFlag.BAND_FILLS_BOX, BoxFlag.LR_UPPER)
    try:
        card = law_card(result, "aunet2", "bowl")
    finally:
        fit.budgets.at[0, "flags"] = kept
    assert card.budgets[0].flags == ("lr_edge", "band_fills_box")  # one law-file flag per kind, in order


def test_one_writer_gives_every_law_its_file_and_the_report_sections_write_nothing(result, tmp_path):
    paths = write_laws(result, tmp_path / "laws", "runs.csv")
    assert sorted(paths) == [("aunet2", "band"), ("aunet2", "bowl")]
    for (family, estimator), path in paths.items():
        card = LawCard.read(path)
        assert (card.family, card.estimator, card.source) == (family, estimator, "runs.csv")
    blocks = build(result, tmp_path, targets=[1e21], source="runs.csv", laws=paths, figures={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["laws"]  # build wrote no file of its own
    law_table = next(b for b in blocks if b[0] == "table" and "law file" in b[1])
    assert [row[-1] for row in law_table[2] if row[1] in ("band", "bowl")] == ["`laws/aunet2_band.json`",
                                                                                "`laws/aunet2_bowl.json`"]


def test_band_and_bowl_are_compared_whatever_else_is_registered(result, monkeypatch):
    monkeypatch.setitem(result.laws["aunet2"], "best", result.laws["aunet2"]["band"])
    blocks = _band_against_bowl(result)
    assert blocks[-1][1] == ["family", "exponent", "band width", "bowl width", "band / bowl"]
    assert [row[:2] for row in blocks[-1][2]] == [["aunet2", "α"], ["aunet2", "β"]]
