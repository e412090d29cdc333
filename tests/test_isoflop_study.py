"""IsoFLOP studies (``sweep.ratios``): one cell per ratio at each (family, budget), the ladder's sizes
and the ratios they really train, keys that name the ratio (and old studies' keys and ledgers that
do not change), the bad-input lines, the dry run, and one tiny study through ``sweep.py -m``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sweeps.cell import MIN_SIZES, plan_cells
from sweeps.dashboard import cell_study_name, mirror_to_optuna
from sweeps.ledger import Ledger
from sweeps.plan import plan_study, trials_per_phase
from sweeps.rebuild import rebuild
from sweeps.report import status_table
from sweeps.study import StudyConfig, Trial, cell_trials, with_key_ratio
from sweeps.sweeper import propose

REPO = Path(__file__).resolve().parents[1]
#: aunet2 at 1e10 FLOPs: these ratios snap to three sizes (210k, 141k, 86k params) and 0.011 to the
#: 86k one again; trials of a few seconds (forced: the smallest keep fewer than 200 steps).
TINY = ["sweep.families=[aunet2]", "sweep.budgets=[1e10]", "sweep.ratio=null", "sweep.force=true",
        "data.valid_bytes=65536", "eval_bytes=4096", "tracking=off"]
RATIOS = "sweep.ratios=[0.002,0.005,0.01,0.011]"


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        config = compose("sweep", overrides=[*TINY, *overrides])
    return OmegaConf.to_object(config.sweep), config.data


def test_a_single_ratio_study_keeps_its_fingerprint_and_keys():
    # Computed before isoFLOP studies existed: their ledgers must keep resuming.
    assert StudyConfig().fingerprint() == "c7a30a23d6441ac9"
    demo = OmegaConf.load(REPO / "conf/sweep/demo.yaml").sweep
    assert StudyConfig(**OmegaConf.to_container(demo, resolve=True)).fingerprint() == "e69a4f78d62ac6da"
    trials = cell_trials(StudyConfig(), "aunet2", 1e11, 256, 0.01, 512)
    assert [t.key for t in trials[:2]] == ["aunet2/C1e11/t0", "aunet2/C1e11/t1"]
    assert with_key_ratio(trials[0], trials[0].key) == trials[0]  # no ratio in the key, none read back


def test_the_ratio_is_part_of_an_isoflop_trials_identity():
    a, b = Trial("aunet2", 1e11, 0, 0.01, 512, ratio=0.2), Trial("aunet2", 1e11, 0, 0.01, 512, ratio=0.05)
    assert a.key == "aunet2/C1e11_r0.2/t0" and b.key == "aunet2/C1e11_r0.05/t0"
    assert with_key_ratio(Trial("aunet2", 1e11, 0, 0.01, 512), b.key) == b
    study = StudyConfig(ratio=None, ratios=[0.05, 0.2])
    assert study.fingerprint() != StudyConfig(ratio=None, ratios=[0.05, 0.3]).fingerprint()
    assert study.ratios == [0.05, 0.2] and StudyConfig(ratio=None, ratios=[0.123456]).ratios == [0.1235]


@pytest.mark.parametrize(("fields", "said"), [
    (dict(ratios=[0.1, 0]), "'ratios' is [0.1, 0.0]; give data-to-model ratios > 0"),
    (dict(ratios=[-1.0, 0.2, 0.3]), "give data-to-model ratios > 0"),
    (dict(ratios=[]), "give data-to-model ratios > 0"),
    (dict(ratios=["lots"]), "'ratios' has 'lots', not a number"),
    (dict(ratio=0.2, ratios=[0.1, 0.2, 0.3]), "not both (sweep.ratio=null)"),
    (dict(ratios=[0.1, 0.10001, 0.3]), "repeats a ratio"),
    (dict(ratios=[0.1, 0.2, 0.3], isoflop_search="grid"), "'isoflop_search' is 'grid'"),
    (dict(ratios=[0.1, 0.2, 0.3], budgets=[1, 2, 3, 4], holdout=4), "one cell per ratio"),
    (dict(seed_budgets=[5e11]), "'seed_budgets' is [500000000000.0]; name budgets of the study"),
])
def test_bad_isoflop_input_is_one_line(fields, said):
    with pytest.raises(ValueError) as err:
        StudyConfig(name="bad", **fields)
    assert said in str(err.value) and "\n" not in str(err.value)


def test_an_isoflop_plan_snaps_each_ratio_to_a_ladder_size_and_runs_a_repeated_size_once():
    study, data = composed(RATIOS)
    cells, notes = plan_cells(study, data)
    assert [key for key in cells] == [("aunet2", 1e10, r) for r in (0.002, 0.005, 0.01)]
    plans = [cell.prior for cell in cells.values()]
    assert len({p.params for p in plans}) == 3 and [p.params for p in plans] == sorted(p.params for p in plans)[::-1]
    for p in plans:  # the size the ladder could build: the ratio it really trains, at least the one asked
        assert p.achieved_ratio >= p.ratio and p.tokens_per_param > 0 and p.total_flops == pytest.approx(1e10, rel=0.05)
    assert notes == [f"note: aunet2 at 1e+10: ratio 0.011 gives the same model as ratio 0.01 ({plans[2].params:,} "
                     f"params, achieved ratio {plans[2].achieved_ratio:.3g}): it runs once, as ratio 0.01"]
    trials = [t for cell in cells.values() for t in cell.next_trials([])]
    assert len({t.key for t in trials}) == 3 and all(t.phase == "prior" and t.box == () for t in trials)
    assert [(t.lr, t.bsz) for t in trials] == [(float(f"{p.lr:.4g}"), p.bsz) for p in plans]  # the law's, no search


def test_seeds_rerun_every_size_at_the_budgets_that_ask_for_them(tmp_path):
    study, data = composed("sweep.ratios=[0.002,0.005,0.01]", "sweep.budgets=[1e10,2e10]", "sweep.seeds=3",
                           "sweep.seed_budgets=[1e10]")
    cells, _ = plan_cells(study, data)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.bind(study)
    ledger.add(propose(study, cells, ledger.rows()))
    rows = ledger.rows()
    assert len(rows) == 3 * 3 + 3 and len({r.key for r in rows}) == len(rows)
    small = [r for r in rows if r.budget == 1e10]
    assert sorted((r.key.split("/")[1], r.seed, r.phase) for r in small if r.key.endswith("_r0.005/t1")) == [
        ("C1e10_r0.005", 1, "seed")]
    assert {r.seed for r in small} == {0, 1, 2} and {r.seed for r in rows if r.budget == 2e10} == {0}
    assert propose(study, cells, rows) == []  # everything asked for; nothing more until more seeds are
    assert trials_per_phase(study, 1e10) == {"prior": 1, "seed": 2} and trials_per_phase(study, 2e10) == {"prior": 1}


def test_the_status_table_has_a_row_per_size(tmp_path):
    """Sizes at one budget are separate cells in the status table too, ordered by ratio."""
    study = StudyConfig(name="iso", budgets=[1e10], ratios=[0.002, 0.01, 0.005])
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.bind(study)
    ledger.add([Trial("aunet2", 1e10, 0, 1e-3, 256, "prior", ratio=r) for r in (0.01, 0.002, 0.005)])
    header, _, *rows = status_table(ledger).splitlines()
    assert [row.split()[:3] for row in rows] == [["aunet2", f"1e10_r{r}", "1"] for r in ("0.002", "0.005", "0.01")]
    assert header.split()[:3] == ["family", "budget", "pending"]


def test_the_dashboard_mirrors_each_size_into_its_own_optuna_study(tmp_path):
    import optuna

    study = StudyConfig(name="iso", budgets=[1e10], ratios=[0.002, 0.005])
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.bind(study)
    trials = [Trial("aunet2", 1e10, 0, 1e-3, 256, "prior", ratio=r) for r in (0.002, 0.005)]
    ledger.add(trials)
    for n, trial in enumerate(trials):
        ledger.mark(trial.key, "finished", record={"status": "finished", "loss": 2.0 + n, "bpb": 3.0})
    mirror_to_optuna(ledger.rows(), tmp_path / "optuna.db", "iso")
    for n, trial in enumerate(trials):
        mirrored = optuna.load_study(study_name=cell_study_name("iso", "aunet2", 1e10, trial.ratio),
                                     storage=f"sqlite:///{tmp_path / 'optuna.db'}")
        assert [(t.user_attrs["key"], t.value) for t in mirrored.get_trials()] == [(trial.key, 2.0 + n)]
    assert cell_study_name("iso", "aunet2", 1e10) == "iso/aunet2/C1e10"  # a study of one ratio: as before


def test_a_budget_with_fewer_than_three_sizes_is_refused_in_one_line():
    study, data = composed("sweep.ratios=[0.01,0.011,0.005]")
    with pytest.raises(ValueError) as err:
        plan_cells(study, data)
    said = str(err.value)
    assert "aunet2 at 1e+10 has 2 model size(s)" in said and f"needs at least {MIN_SIZES} per budget" in said
    assert "0.011 -> " in said and "\n" not in said


def test_a_size_the_ladder_cannot_build_is_refused_in_one_line():
    study, data = composed("sweep.ratios=[0.002,0.005,5]")
    with pytest.raises(ValueError) as err:
        plan_cells(study, data)
    assert "too small for the smallest aunet2 model" in str(err.value) and "at ratio 5" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_dry_run_has_a_line_per_isoflop_cell_and_counts_them_in_its_totals():
    plan = plan_study([*TINY, RATIOS], "a100", 0.5, None, 1)
    lines = plan.text.splitlines()
    assert "isoFLOP ratios 0.002, 0.005, 0.01, 0.011 (at the prior's LR and BSZ)" in lines[0]
    assert "3 cells" in lines[0] and plan.refusals == []
    start = next(i for i, line in enumerate(lines) if line.startswith("isoFLOP cells:"))
    rows = lines[start + 2:start + 5]
    for row, cost in zip(rows, plan.costs):
        p = cost.cell.prior
        assert row.split()[:5] == ["aunet2", "1e+10", f"{p.ratio:.4g}", f"{p.params:,}", f"{p.achieved_ratio:.3g}"]
        assert row.split()[5:7] == [f"{p.tokens_per_param:.3g}", "1"]
    assert lines[start + 5].startswith("note: aunet2 at 1e+10: ratio 0.011 gives the same model as ratio 0.01")
    total = sum(c.n_trials * c.trial_flops for c in plan.costs)
    assert f"FLOPs (estimate, every phase in full): {total:.3g}" in plan.text


@pytest.mark.slow
def test_a_tiny_isoflop_study_runs_through_sweep_py_and_its_table_has_three_sizes(tmp_path):
    cmd = [sys.executable, "sweep.py", "-m", *TINY, "sweep.ratios=[0.002,0.005,0.01]", "sweep.name=iso",
           f"hydra.sweep.dir={tmp_path / 'iso'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "iso" / "results.csv")
    assert (table.status == "finished").all() and len(table) == 3
    assert table.params.nunique() == 3 and sorted(table.ratio) == [0.002, 0.005, 0.01]
    assert (table.budget == 1e10).all() and table.model.nunique() == 3
    assert sorted(p.name for p in (tmp_path / "iso" / "aunet2").iterdir()) == [
        "C1e10_r0.002", "C1e10_r0.005", "C1e10_r0.01"]
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800, env={**os.environ})
    assert again.returncode == 0 and len(pd.read_csv(tmp_path / "iso" / "results.csv")) == 3  # resumes: nothing new
    (tmp_path / "iso" / "ledger.sqlite").write_bytes(b"torn")  # a lost ledger comes back from the record files
    assert "3 trials from their record files" in rebuild(tmp_path / "iso")
    assert {r.key for r in Ledger(tmp_path / "iso" / "ledger.sqlite").rows()} == {
        f"aunet2/C1e10_r{r}/t0" for r in ("0.002", "0.005", "0.01")}
