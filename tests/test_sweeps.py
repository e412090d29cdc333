"""Studies: reproducible quasi-random trials, the ledger's promises, local and SLURM sweeps."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aunet.ladder import CPU_SEQ, MIN_STEPS, steps_at, whole_sequences
from sweeps.ledger import Ledger
from sweeps.study import StudyConfig, Trial, box, cell_trials, parse_budget
from tests.helpers.sweeps import TINY_STUDY, run_sweep

REPO = Path(__file__).resolve().parents[1]


def test_trials_are_reproducible_quasi_random_points_inside_the_box():
    study = StudyConfig(name="s", trials=8, lr_factor=4, bsz_factor=2, seed=3)
    a = cell_trials(study, "aunet2", 1e12, 1024, lr0=1e-3, bsz0=8192)
    assert a == cell_trials(study, "aunet2", 1e12, 1024, lr0=1e-3, bsz0=8192)
    other = cell_trials(StudyConfig(name="s", trials=8, seed=4), "aunet2", 1e12, 1024, lr0=1e-3, bsz0=8192)
    assert [t.lr for t in other] != [t.lr for t in a]
    assert all(2.5e-4 <= t.lr <= 4e-3 and t.bsz % 1024 == 0 and 4096 <= t.bsz <= 16384 for t in a)
    assert len({t.lr for t in a}) == 8  # spread out, not a grid
    assert cell_trials(study, "aunet2", 1e12, 1024, 1e-3, 8192, n=12)[:8] == a  # more trials extend the set
    assert a[0].overrides()[:4] == ["family=aunet2", "budget=1e+12", "trial=0", "trial_dir=aunet2/C1e12/t0"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(lr_factor=1.0), "degenerate"),
        (dict(bsz_factor=0.5), "factor f > 1"),
        (dict(trials=0), "at least one trial"),
        (dict(families=["aunet9"]), "unknown family"),
        (dict(families=[]), "is empty"),
        (dict(budgets=["lots"]), "budget 'lots' is not a number"),
        (dict(budgets=[-1e12]), "positive"),
        (dict(ratio=0), "ratio"),
    ],
)
def test_bad_studies_are_refused_before_anything_runs(fields, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig(name="bad", **fields)


def test_budget_strings_parse():
    assert parse_budget("3e11") == 3e11 and parse_budget(1e12) == 1e12


def test_the_ledger_never_duplicates_and_refuses_another_study(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    study = StudyConfig(name="s")
    ledger.bind(study)
    trials = [Trial("aunet2", 1e11, i, 1e-3, 1024) for i in range(3)]
    ledger.add(trials)
    ledger.mark(trials[0].key, "finished", record={"loss": 1.5, "bpb": 2.0, "status": "finished"})
    ledger.add(trials)
    rows = ledger.rows()
    assert len(rows) == 3 and rows[0].status == "finished" and rows[0].loss == 1.5
    ledger.bind(StudyConfig(name="s", trials=50, max_attempts=5))  # more trials: the same study
    with pytest.raises(ValueError, match="different config of study 's'"):
        ledger.bind(StudyConfig(name="s", budgets=[1e12]))


@pytest.mark.slow
def test_local_sweep_runs_resumes_and_survives_a_failing_trial(tmp_path):
    sweep_dir = tmp_path / "study"
    # A trial whose folder holds a corrupt checkpoint (a crash left it) fails; the rest go on.
    broken = sweep_dir / "aunet2" / "C2e10" / "t1"
    broken.mkdir(parents=True)
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    started = time.time()
    first = run_sweep(sweep_dir, "sweep.name=local")
    assert first.returncode == 0, first.stderr[-3000:]
    rows = {r.key: r for r in Ledger(sweep_dir / "ledger.sqlite").rows()}
    assert len(rows) == 6
    assert rows["aunet2/C2e10/t1"].status == "failed" and "checkpoint" in rows["aunet2/C2e10/t1"].error
    done = [r for r in rows.values() if r.status in ("finished", "diverged")]
    assert len(done) == 5 and all(r.record and r.record["trial"] == r.index for r in done)
    finished = [r for r in done if r.status == "finished"]
    assert finished and all(r.bpb and r.record["lr"] == r.lr and r.record["bsz"] == r.bsz for r in finished)
    assert (sweep_dir / "results.csv").exists()
    print(f"6 trials in {time.time() - started:.0f} s")
    # The failed trial was retried in the sweep's next round (still broken): its attempts are used up.
    assert "round 2: 6 trials, 1 to run" in first.stdout + first.stderr
    assert rows["aunet2/C2e10/t1"].attempts == 2
    # The end of the run says how to retry it: the study's own command with one more attempt allowed.
    assert "1 trial(s) failed, after up to 2 attempt(s) each (e.g. aunet2/C2e10/t1: " in first.stdout
    assert f"To retry them (finished trials are kept): python {REPO / 'sweep.py'} -m " in first.stdout
    retry = next(line for line in first.stdout.splitlines() if line.startswith("To retry them"))
    assert retry.endswith(f"hydra.sweep.dir={sweep_dir} sweep.max_attempts=3") and "sweep.name=local" in retry
    # Rerun: finished trials are not run again, nor the failed one.
    stamps = {k: (sweep_dir / k / "record.json").stat().st_mtime for k, r in rows.items() if r.status != "failed"}
    second = run_sweep(sweep_dir, "sweep.name=local")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 to run" in second.stdout + second.stderr
    assert stamps == {k: (sweep_dir / k / "record.json").stat().st_mtime for k in stamps}
    status = subprocess.run([sys.executable, "-m", "sweeps", "status", str(sweep_dir)], cwd=REPO,
                            capture_output=True, text=True)
    assert status.returncode == 0 and "aunet2" in status.stdout and "2e10" in status.stdout
    assert "sweep.max_attempts=3" in status.stdout


def test_a_cell_whose_box_gives_a_trial_under_200_steps_is_refused_unless_forced():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sweeps.cell import plan_cell

    args = ["sweep.families=[aunet2]", "sweep.budgets=[2e10]", "sweep.ratio=0.005", "data.valid_bytes=65536"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        base = compose("sweep", overrides=args)
    study = OmegaConf.to_object(base.sweep)
    with pytest.raises(ValueError, match=r"budget 2e\+10 .* raise the budget to >= .*sweep.force=true") as err:
        plan_cell(study, "aunet2", 2e10, base.data)
    assert "\n" not in str(err.value)
    study.force = True
    cell = plan_cell(study, "aunet2", 2e10, base.data)  # forced: planned, and its box top is under 200 steps
    top = whole_sequences(box(cell.prior.law_bsz, study.bsz_factor)[1], cell.prior.seq_len)
    assert steps_at(cell.prior, top) < MIN_STEPS
    fix = float(str(err.value).split("raise the budget to >= ")[1].split(" FLOPs")[0])
    assert steps_at(cell.prior, top) * fix / 2e10 == pytest.approx(MIN_STEPS, rel=1e-2)
    assert cell.start.bsz_limit == math.inf  # forced: box moves are not held back either
    study.force, study.ratio = False, 0.2  # the demo's regime at 1e11: its box keeps 200 steps
    cell = plan_cell(study, "aunet2", 1e11, base.data)
    start, held = cell.start, cell.prior  # box moves stop at the largest batch that keeps 200 steps
    assert start.bsz_limit % start.seq_len == 0
    assert steps_at(held, start.bsz_limit) >= MIN_STEPS > steps_at(held, start.bsz_limit + start.seq_len)


def test_sweep_refuses_bad_input_before_submitting(tmp_path):
    proc = run_sweep(tmp_path / "s", "sweep.name=bad", "sweep.budgets=[1e3]")
    assert proc.returncode != 0 and "too small for the smallest aunet2 model" in proc.stderr
    assert not (tmp_path / "s" / "ledger.sqlite").exists()
    proc = run_sweep(tmp_path / "s", "sweep.name=bad", "optim.lr=0.1")
    assert proc.returncode != 0 and "set by the study for each trial" in proc.stderr
    ok = run_sweep(tmp_path / "s2", "sweep.name=same", "sweep.trials=1", "sweep.budgets=[2e10]")
    assert ok.returncode == 0, ok.stderr[-2000:]
    changed = run_sweep(tmp_path / "s2", "sweep.name=same", "sweep.trials=1", "sweep.budgets=[4e10]")
    assert changed.returncode != 0 and "different config of study 'same'" in changed.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_study_with_an_interrupted_trial_that_resumes(tmp_path, slurm_cluster):
    sweep_dir = tmp_path / "slurm"
    cmd = [sys.executable, "sweep.py", "-m", *TINY_STUDY, f"hydra.sweep.dir={sweep_dir}", "sweep.name=slurm",
           "sweep.budgets=[2e10,1.5e11]", "sweep.trials=1", *slurm_cluster.launcher("hydra.launcher.mem_gb=2")]
    sweep = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **slurm_cluster.env}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    # Once the long trial (second task of the job array) is training, send it the signal SLURM sends
    # before a preemption or time-out: it must checkpoint, be requeued by submitit and resume.
    job_id, deadline = None, time.time() + 600
    while job_id is None and time.time() < deadline and sweep.poll() is None:
        for log in sweep_dir.glob(".submitit/*_1/*_log.*"):
            if re.search(r"step ([89]|[1-9]\d+)/", log.read_text()):
                job_id = log.parent.name
        time.sleep(0.5)
    assert job_id, "the long trial never started training"
    subprocess.run(["scancel", "--signal=USR2", job_id], env={**os.environ, **slurm_cluster.env}, check=True)
    out, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, out[-4000:]
    rows = {r.key: r for r in Ledger(sweep_dir / "ledger.sqlite").rows()}
    assert {r.status for r in rows.values()} == {"finished"}, {k: (r.status, r.error) for k, r in rows.items()}
    log = "".join(p.read_text() for p in sweep_dir.glob(f".submitit/{job_id}/*_log.*"))
    assert "checkpointing at the next step boundary" in log and "resumed from" in log
    assert "Caught signal SIGUSR2" in log
    assert rows["aunet2/C1.5e11/t0"].record["steps"] > 0
    assert "overhead per trial" in out


@pytest.mark.slurm
@pytest.mark.slow
def test_a_slurm_trial_spans_two_tasks_as_one_distributed_run(tmp_path, slurm_cluster):
    sweep_dir = tmp_path / "ddp"
    proc = run_sweep(sweep_dir, "sweep.name=ddp", "sweep.budgets=[2e10]", "sweep.trials=1",
                     *slurm_cluster.launcher("hydra.launcher.tasks_per_node=2"), env=slurm_cluster.env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (row,) = Ledger(sweep_dir / "ledger.sqlite").rows()
    assert row.status == "finished", row.error
    # Both tasks trained the same run: one process group of two, each process a share of the batch.
    assert row.record["metrics"]["world_size"] == 2
    assert len(list(sweep_dir.glob(".submitit/*/*_1_log.out"))) == 1  # task 1 ran too
    assert row.record["bsz"] % (2 * CPU_SEQ["bytes"]) == 0


@pytest.mark.slurm
def test_slurm_launcher_settings_are_checked_before_submitting(tmp_path, slurm_cluster):
    proc = run_sweep(tmp_path / "s", "sweep.name=p", "hydra/launcher=submitit_slurm",
                     "hydra.launcher.partition=no_such_partition", env=slurm_cluster.env, timeout=120)
    assert proc.returncode != 0 and "partition 'no_such_partition' does not exist" in proc.stderr


def test_the_sweeper_plans_a_trial_once_and_the_trainer_runs_that_plan(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from aunet.data import prepare_data
    from aunet.optim import OptimConfig
    from aunet.train import TrainConfig, make_plan, train
    from sweeps.cell import plan_cell, trial_config

    study_args = ["sweep.name=one", "sweep.families=[aunet2]", "sweep.budgets=[2e10]", "sweep.trials=2",
                  "sweep.ratio=0.005", "sweep.force=true", "data.valid_bytes=65536"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        base = compose("sweep", overrides=study_args)
        study = OmegaConf.to_object(base.sweep)
        assert isinstance(study, StudyConfig) and study.ratio == 0.005
        cell = plan_cell(study, "aunet2", 2e10, base.data)
        trial = cell.trials()[1]
        shipped = cell.trial_plan(trial)
        job = compose("sweep", overrides=[*study_args, *cell.overrides(trial), "tracking=off", "eval=none",
                                          "eval_bytes=4096", f"output_dir={tmp_path}"])
    cfg = trial_config(job)
    assert cfg.plan == shipped and cfg.model == shipped.model  # shipped exactly, through Hydra's grammar
    assert (shipped.bsz, shipped.lr) == (trial.bsz, trial.lr)
    assert [*cfg.lr_box, *cfg.bsz_box] == list(trial.box)  # the box the trial was proposed in, as its ledger row has it
    assert cfg.lr_box == pytest.approx(box(cell.prior.lr, 4.0), rel=1e-5)  # phase 1: the prior's box
    # The trainer planning by itself from the same model, budget, LR and BSZ finds the same plan.
    own = TrainConfig(model=shipped.model, data=cfg.data, budget=2e10, bsz=trial.bsz, optim=OptimConfig(lr=trial.lr),
                      ratio=0.005, family="aunet2")
    mine = make_plan(own, prepare_data(own.data))
    for key in ("model", "budget", "bsz", "steps", "lr", "flops_per_unit", "train_units", "contraction", "params"):
        assert getattr(mine, key) == getattr(shipped, key), key
    record = train(cfg)  # and it trains exactly the shipped plan
    assert record.status == "finished", record.error
    assert (record.steps, record.bsz, record.lr) == (shipped.steps, shipped.bsz, shipped.lr)
    assert (record.flops_per_unit, record.contraction, record.family) == (shipped.flops_per_unit,
                                                                          shipped.contraction, "aunet2")
    assert record.study == "one" and record.ratio == shipped.ratio == 0.005
