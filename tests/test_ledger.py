"""Every status transition a rerun performs on the ledger, with real processes for live and dead jobs.

Fast: no training. A trial's job is a real process (alive: a sleeping child; dead: one that has
exited), its start marker and record file are written as a job would write them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus

from aunet.record import RunRecord
from sweeps.attempts import STARTS, started_jobs
from sweeps.backends import ALIVE, GONE, job_state, process_job
from sweeps.launch import batch_overhead, needs_run, reconcile, settle, wait_for_jobs
from sweeps.ledger import Ledger, LedgerError
from sweeps.lock import StudyLock, StudyLocked, current_holder
from sweeps.study import StudyConfig, Trial

REPO = Path(__file__).resolve().parents[1]
TRIALS = [Trial("aunet2", 1e11, i, 1e-3, 1024) for i in range(3)]


@pytest.fixture
def study(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.bind(StudyConfig(name="s"))
    ledger.add(TRIALS)
    return ledger, tmp_path


@pytest.fixture
def live_job():
    """A real process, named as submitit local jobs are named; killed at the end."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc, process_job("local", proc.pid)
    proc.kill()
    proc.wait()


def dead_job() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    name = process_job("local", proc.pid)
    proc.wait()
    return name


def start(trial_dir: Path, job: str) -> None:
    trial_dir.mkdir(parents=True, exist_ok=True)
    with open(trial_dir / STARTS, "a") as handle:
        handle.write(json.dumps({"job": job, "time": time.time()}) + "\n")


def write_record(trial_dir: Path, status: str, **fields) -> None:
    RunRecord(status=status, family="aunet2", budget=1e11, lr=1e-3, bsz=1024, loss=2.0, bpb=3.0,
              **fields).write(trial_dir / "record.json")


def row(ledger: Ledger, key: str):
    return next(r for r in ledger.rows() if r.key == key)


def test_needs_run_pending_retries_below_the_limit_and_never_a_running_row():
    base = dict(key="k", family="aunet2", budget=1e11, index=0, lr=1e-3, bsz=1024, loss=None, bpb=None, error="",
                record=None, output_dir="")
    from sweeps.ledger import Row

    def make(status, attempts):
        return Row(status=status, attempts=attempts, **base)

    assert needs_run(make("pending", 5), 2)
    assert needs_run(make("failed", 1), 2) and not needs_run(make("failed", 2), 2)
    assert needs_run(make("preempted", 1), 2) and not needs_run(make("preempted", 2), 2)
    assert not needs_run(make("running", 0), 2)  # reconcile decides: adopted, interrupted or never started
    assert not needs_run(make("finished", 0), 2) and not needs_run(make("diverged", 0), 2)


def test_a_running_trial_that_never_started_goes_back_to_pending_without_an_attempt(study):
    ledger, root = study
    ledger.mark(TRIALS[0].key, "running", job=dead_job())
    assert reconcile(ledger, root) == []
    found = row(ledger, TRIALS[0].key)
    assert (found.status, found.attempts) == ("pending", 0)


def test_a_running_trial_whose_job_died_is_interrupted_with_one_attempt_and_retried(study):
    ledger, root = study
    job = dead_job()
    ledger.mark(TRIALS[0].key, "running", job=job)
    start(root / TRIALS[0].key, job)
    reconcile(ledger, root)
    found = row(ledger, TRIALS[0].key)
    assert found.status == "failed" and found.attempts == 1 and "interrupted" in found.error and job in found.error
    assert needs_run(found, 2) and not needs_run(found, 1)


def test_a_running_trial_whose_job_died_after_its_record_takes_the_record(study):
    ledger, root = study
    job = dead_job()
    ledger.mark(TRIALS[1].key, "running", job=job)
    start(root / TRIALS[1].key, job)
    write_record(root / TRIALS[1].key, "finished")
    reconcile(ledger, root)
    found = row(ledger, TRIALS[1].key)
    assert (found.status, found.attempts, found.loss) == ("finished", 1, 2.0)


def test_a_live_job_is_adopted_not_relaunched_even_if_the_ledger_missed_it(study, live_job):
    ledger, root = study
    proc, job = live_job
    ledger.mark(TRIALS[0].key, "running", job=job)
    start(root / TRIALS[0].key, job)
    start(root / TRIALS[2].key, job)  # the driver died before it wrote this job's id: the marker tells
    adopted = reconcile(ledger, root)
    assert sorted(r.key for r in adopted) == [TRIALS[0].key, TRIALS[2].key]
    assert all(r.status == "running" and r.job == job for r in adopted)
    assert not any(needs_run(r, 2) for r in ledger.rows() if r.key in {TRIALS[0].key, TRIALS[2].key})
    # When the job ends (its record written), waiting settles it.
    write_record(root / TRIALS[0].key, "finished")
    write_record(root / TRIALS[2].key, "diverged", error="loss 9")
    proc.kill()
    proc.wait()
    wait_for_jobs(ledger, adopted, root, poll=0.05)
    assert row(ledger, TRIALS[0].key).status == "finished" and row(ledger, TRIALS[2].key).status == "diverged"


def test_a_job_that_cannot_be_checked_is_left_running_not_relaunched(study):
    ledger, root = study
    ledger.mark(TRIALS[0].key, "running", job="local:some-other-host:123:456")
    assert reconcile(ledger, root) == []
    found = row(ledger, TRIALS[0].key)
    assert found.status == "running" and "some-other-host" in found.error and not needs_run(found, 2)


def test_settle_prefers_the_complete_record_on_disk_over_a_failed_job(study):
    ledger, root = study
    job = dead_job()
    start(root / TRIALS[0].key, job)
    write_record(root / TRIALS[0].key, "finished")
    failed = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("killed"))
    settle(ledger, row(ledger, TRIALS[0].key), failed, root, launcher_error="no result")
    assert row(ledger, TRIALS[0].key).status == "finished"
    # No record: the job's own error, and the attempt counted once per job that started it.
    start(root / TRIALS[1].key, job)
    start(root / TRIALS[1].key, job)  # a requeued job starts again: still one attempt
    settle(ledger, row(ledger, TRIALS[1].key), failed, root, launcher_error="no result")
    found = row(ledger, TRIALS[1].key)
    assert (found.status, found.attempts, found.error) == ("failed", 1, "RuntimeError: killed")
    # Never started, no result at all: failed with the launcher's word, no attempt used.
    settle(ledger, row(ledger, TRIALS[2].key), None, root, launcher_error="job 7 ended without a result: gone")
    found = row(ledger, TRIALS[2].key)
    assert (found.status, found.attempts, found.error) == ("failed", 0, "job 7 ended without a result: gone")


def test_preempted_then_retried_and_the_attempt_limit(study):
    ledger, root = study
    key = TRIALS[0].key
    first, second = dead_job(), dead_job()
    start(root / key, first)
    write_record(root / key, "preempted", error="signal 12 at step 3")
    settle(ledger, row(ledger, key), None, root, launcher_error="")
    assert (row(ledger, key).status, row(ledger, key).attempts) == ("preempted", 1) and needs_run(row(ledger, key), 2)
    start(root / key, second)
    write_record(root / key, "failed", error="ValueError: boom")
    settle(ledger, row(ledger, key), None, root, launcher_error="")
    found = row(ledger, key)
    assert (found.status, found.attempts) == ("failed", 2) and not needs_run(found, 2)


def test_an_unreadable_record_is_named_and_the_trial_retried(study, caplog):
    ledger, root = study
    key = TRIALS[0].key
    job = dead_job()
    ledger.mark(key, "running", job=job)
    start(root / key, job)
    (root / key / "record.json").write_text("{not json")
    reconcile(ledger, root)
    assert row(ledger, key).status == "failed" and needs_run(row(ledger, key), 2)
    assert str(root / key / "record.json") in caplog.text


def test_a_corrupt_ledger_is_one_clear_error_naming_the_file_and_the_fix(tmp_path):
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError) as err:
        Ledger(path)
    assert str(path) in str(err.value) and "python -m sweeps rebuild" in str(err.value)
    for command in (["sweeps", "status"], ["analysis", "fit"]):
        done = subprocess.run([sys.executable, "-m", *command, str(tmp_path)], cwd=REPO, text=True,
                              capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode != 0 and done.stderr.strip().count("\n") == 0, done.stderr
        assert str(path) in done.stderr and "python -m sweeps rebuild" in done.stderr


def test_job_states_of_live_dead_and_recycled_processes(live_job):
    _, job = live_job
    assert job_state(job) == ALIVE
    assert job_state(dead_job()) == GONE
    kind, host, pid, _ = job.split(":")
    assert job_state(f"{kind}:{host}:{pid}:1") == GONE  # same PID, another process start time


def test_a_second_driver_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sweeps.lock import StudyLock\n"
         f"with StudyLock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StudyLocked) as err:
            with StudyLock(tmp_path):
                pass
        message = str(err.value)
        assert f"PID {holder.pid} on host {os.uname().nodename}" in message and " UTC" in message
        assert current_holder(tmp_path).startswith(f"PID {holder.pid}")
    finally:
        holder.kill()  # kill -9: no clean-up, the lock file stays behind
        holder.wait()
    assert (tmp_path / "study.lock").exists() and current_holder(tmp_path) is None
    with StudyLock(tmp_path):
        assert current_holder(tmp_path).startswith(f"PID {os.getpid()} ")


def test_started_jobs_skips_a_torn_line(tmp_path):
    start(tmp_path, "local:h:1:2")
    with open(tmp_path / STARTS, "a") as handle:
        handle.write('{"job": "local:h:3')
    assert started_jobs(tmp_path) == ["local:h:1:2"]


def test_a_requeued_job_is_one_attempt_but_each_in_driver_retry_is_one(tmp_path):
    for job in ("slurm:7_1", "slurm:7_1", "slurm:9_1", "process:h:5:6", "process:h:5:6"):
        start(tmp_path, job)  # a preempted SLURM job requeued, a new job, then two retries in one driver
    assert started_jobs(tmp_path) == ["slurm:7_1", "slurm:9_1", "process:h:5:6", "process:h:5:6"]


def test_overhead_is_the_wall_time_no_run_covers_never_negative(study):
    ledger, root = study
    tic = time.time() - 100
    for trial in TRIALS:  # three runs side by side, each 80 s of the batch's 100 s
        write_record(root / trial.key, "finished", metrics={"wall_time": 80.0, "setup_seconds": 1.0,
                                                            "teardown_seconds": 2.0})
        ledger.mark(trial.key, "finished", record=RunRecord.read(root / trial.key / "record.json").to_dict())
        os.utime(root / trial.key / "record.json", (tic + 90, tic + 90))
    launcher, setup, teardown = batch_overhead(ledger, ledger.rows(), tic, tic + 100, root)
    assert launcher == pytest.approx(20 / 3) and (setup, teardown) == (1.0, 2.0)


def test_rebuild_restores_the_ledger_from_record_files_and_keeps_the_damaged_one(tmp_path):
    from omegaconf import OmegaConf

    from sweeps.rebuild import rebuild

    study = StudyConfig(name="s", budgets=[1e11])
    OmegaConf.save(OmegaConf.create({"sweep": dict(study.__dict__), "tracking": {"enabled": False}}),
                   tmp_path / "multirun.yaml")
    (tmp_path / "ledger.sqlite").write_bytes(b"garbage" * 100)
    moved = (1e-4, 0.1, 256.0, 4096.0)  # the second trial came from a box move: its phase and box come back too
    for trial, status, phase, (lr_box, bsz_box) in zip(TRIALS[:2], ("finished", "diverged"), ("qmc", "move"),
                                                      ((None, None), (moved[:2], moved[2:]))):
        start(tmp_path / trial.key, dead_job())
        start(tmp_path / trial.key, dead_job())
        RunRecord(status=status, family="aunet2", budget=1e11, lr=0.5, bsz=2048, study="s", trial=trial.index,
                  config={"optim": {"lr": trial.lr}, "bsz": trial.bsz, "lr_box": lr_box, "bsz_box": bsz_box,
                          "tracking": {"tags": {"phase": phase}}}).write(tmp_path / trial.key / "record.json")
    (tmp_path / TRIALS[2].key).mkdir(parents=True)
    (tmp_path / TRIALS[2].key / "record.json").write_text("{torn")
    summary = rebuild(tmp_path)
    assert "2 trials from their record files" in summary and str(tmp_path / TRIALS[2].key) in summary
    rows = {r.key: r for r in Ledger(tmp_path / "ledger.sqlite").rows()}
    assert {k: (r.status, r.attempts, r.lr, r.bsz) for k, r in rows.items()} == {
        TRIALS[0].key: ("finished", 2, 1e-3, 1024), TRIALS[1].key: ("diverged", 2, 1e-3, 1024)}
    assert [(rows[t.key].phase, rows[t.key].box) for t in TRIALS[:2]] == [("qmc", ()), ("move", moved)]
    assert len(list(tmp_path.glob("ledger.sqlite.damaged-*"))) == 1
    Ledger(tmp_path / "ledger.sqlite").bind(study)  # the same study: the next run goes on from here
