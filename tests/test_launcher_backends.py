"""Launcher backends (sweeps.backends): which backend a launcher config, a job's environment and a job's
name pick; SLURM's states and settings checks; a toy backend through the study runner's launch step.
And the layering: planning a sweep loads neither the trainer nor (once its data and eval imports allow)
torch."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from aunet.record import RunRecord
from sweeps import backends
from sweeps.attempts import note_start, started_jobs
from sweeps.backends import (
    ALIVE,
    GONE,
    IN_PROCESS,
    InProcess,
    Job,
    backend_for,
    backend_here,
    job_state,
    process_job,
)
from sweeps.launch import run_trials
from sweeps.ledger import Ledger
from sweeps.study import StudyConfig, Trial

REPO = Path(__file__).resolve().parents[1]
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
PLANNING = "import sweeps.plan, sweeps.sweeper, sweeps.cell, aunet.train_config"


def loaded_by(statement: str, modules: list[str]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after ``statement``."""
    probe = f"import sys; {statement}; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_planning_a_sweep_does_not_load_the_trainer():
    assert loaded_by(PLANNING, ["aunet.train", "aunet.parallel", "aunet.checkpoint"]) == []
    assert loaded_by("import sweeps.job", ["aunet.train"]) == ["aunet.train"]  # the probe sees an import


@pytest.mark.parametrize(("target", "kind", "submits", "time_limits"), [
    (SUBMITIT + "SlurmLauncher", "slurm", True, True),
    (SUBMITIT + "LocalLauncher", "local", True, False),
    ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", "process", False, False),
    (None, "process", False, False),
])
def test_the_launcher_config_picks_the_drivers_backend(target, kind, submits, time_limits):
    backend = backend_for(OmegaConf.create({"_target_": target} if target else {}))
    assert (backend.kind, backend.submits, backend.time_limits) == (kind, submits, time_limits)


def test_a_job_names_itself_as_its_backend_named_it(monkeypatch, tmp_path):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert backend_here() is IN_PROCESS
    me = backend_here().this_job()
    assert me == process_job("process", os.getpid()) and job_state(me) == ALIVE
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", str(os.getppid()))  # the controller: a live process
    local = backend_here()
    assert local.kind == "local" and local.this_job() == local.job_name(SimpleNamespace(job_id=str(os.getppid())))
    note_start(tmp_path)  # the start marker carries the backend's name for this job
    assert started_jobs(tmp_path) == [local.this_job()] and job_state(local.this_job()) == ALIVE
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert backend_here().kind == "slurm" and backend_here().job_name(SimpleNamespace(job_id="12_3")) == "slurm:12_3"


def test_a_jobs_name_picks_the_backend_that_tells_whether_it_runs(monkeypatch):
    answers = {"1": (0, "RUNNING\n", ""), "2": (0, "COMPLETED\n", ""), "3": (1, "", "Invalid job id specified"),
               "4": (1, "", "slurm_load_jobs error: Unable to contact slurm controller")}
    calls = []

    def squeue(command, **kwargs):
        calls.append(command)
        code, out, err = answers[command[3]]
        return subprocess.CompletedProcess(command, code, out, err)

    monkeypatch.setattr(backends.subprocess, "run", squeue)
    assert [job_state(f"slurm:{i}") for i in "123"] == [ALIVE, GONE, GONE]
    assert job_state("slurm:4") == "squeue failed (slurm_load_jobs error: Unable to contact slurm controller)"
    assert calls[0] == ["squeue", "-h", "-j", "1", "-o", "%T"]
    assert job_state("elsewhere:1") == "unknown job name 'elsewhere:1'"
    assert job_state("local:no-such-host:1:1").startswith("it ran on host no-such-host, not this one")
    assert len(calls) == 4  # a process name never asks squeue


def test_slurm_settings_are_refused_before_anything_is_submitted(monkeypatch):
    slurm = backend_for(OmegaConf.create({"_target_": SUBMITIT + "SlurmLauncher"}))
    settings = OmegaConf.create({"timeout_min": 0, "partition": None})
    monkeypatch.setattr(backends.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match=r"needs a SLURM client \(sinfo, sbatch\)"):
        slurm.check(settings)
    monkeypatch.setattr(backends.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(ValueError, match="timeout_min=0: SLURM needs at least 1 minute"):
        slurm.check(settings)
    with pytest.raises(ValueError, match=r"hydra.launcher.nodes=0: must be at least 1"):
        slurm.check(OmegaConf.create({"timeout_min": 1, "nodes": 0}))
    slurm.check(OmegaConf.create({"timeout_min": 1, "nodes": 1}))
    IN_PROCESS.check(settings)  # no scheduler, nothing to refuse


@dataclass
class ToyJob:
    job_id: str
    result: JobReturn | None  # None: the job died without one

    def done(self) -> bool:
        return True

    def results(self) -> list[JobReturn]:
        if self.result is None:
            raise RuntimeError("node lost\nmore detail")
        return [self.result]


class ToyBackend(InProcess):
    """A scheduler in a few lines: what a new backend implements for the runner to submit through it."""

    kind = "toy"
    submits = True

    def __init__(self) -> None:
        self.batches: list[list[list[str]]] = []

    def submit(self, launcher, job_overrides, first_index) -> list[tuple[str, Job]]:
        self.batches.append(job_overrides)
        jobs = []
        for i, overrides in enumerate(job_overrides, first_index):
            record = RunRecord(status="finished", family="aunet2", budget=1e11, lr=1e-3, bsz=1024, loss=2.0 + i,
                               bpb=3.0).to_dict()
            dies = "die" in overrides
            jobs.append((f"toy:{i}", ToyJob(str(i), None if dies else JobReturn(status=JobStatus.COMPLETED,
                                                                                 _return_value=record))))
        return jobs


def test_a_new_backend_runs_a_studys_trials_through_the_runner(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.bind(StudyConfig(name="s"))
    ledger.add([Trial("aunet2", 1e11, i, 1e-3, 1024) for i in range(3)])
    rows = ledger.rows()
    toy = ToyBackend()
    returns, overheads = run_trials(ledger, toy, None, rows, lambda r: ["die"] if r.index == 1 else [r.key],
                                    tmp_path, batch_size=2)
    assert toy.batches == [[[rows[0].key], ["die"]], [[rows[2].key]]]  # two slots, refilled as jobs end
    settled = {r.index: r for r in ledger.rows()}
    assert [settled[i].status for i in range(3)] == ["finished", "failed", "finished"]
    assert settled[0].job == "toy:0" and settled[2].job == "toy:2" and settled[2].loss == 4.0
    assert settled[1].error == "job 1 ended without a result: node lost"
    assert len(returns) == 2 and len(overheads) == 1
