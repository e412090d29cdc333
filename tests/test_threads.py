"""Threads follow the CPU allocation: SLURM, affinity, torchrun; overrides; children; the record; real SLURM jobs."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch

from aunet.threads import CHILD_THREAD_VARIABLES, Allocation, choose_threads, cpu_allocation
from aunet.train import train
from sweeps.ledger import Ledger
from tests.helpers.sweeps import run_sweep
from tests.helpers.train import tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("environ", "affinity", "cpus", "source"), [
    ({}, 2, 2, "sched_getaffinity=2"),  # the local launcher: every core, as before
    ({"LOCAL_WORLD_SIZE": "2"}, 2, 1, "sched_getaffinity=2 / 2 processes on the node"),  # torchrun
    ({"SLURM_CPUS_PER_TASK": "1", "SLURM_CPUS_ON_NODE": "1"}, 2, 1, "SLURM_CPUS_PER_TASK=1"),  # no binding
    # submitit's two tasks (one process each): each task has its own CPUs.
    ({"SLURM_CPUS_PER_TASK": "4", "SLURM_NTASKS_PER_NODE": "2", "LOCAL_WORLD_SIZE": "2"}, 16, 4,
     "SLURM_CPUS_PER_TASK=4"),
    # torchrun with 4 processes inside one SLURM task of 8 CPUs.
    ({"SLURM_CPUS_PER_TASK": "8", "SLURM_NTASKS_PER_NODE": "1", "LOCAL_WORLD_SIZE": "4"}, 64, 2,
     "SLURM_CPUS_PER_TASK=8 / 4 processes on the node"),
    # A SLURM job without --cpus-per-task: its CPUs on the node, shared by its tasks there.
    ({"SLURM_CPUS_ON_NODE": "6", "SLURM_TASKS_PER_NODE": "3(x2)"}, 64, 2,
     "SLURM_CPUS_ON_NODE=6 / 3 processes on the node"),
    ({"SLURM_CPUS_PER_TASK": "8"}, 2, 2, "SLURM_CPUS_PER_TASK=8"),  # never more than the CPUs it may run on
    ({"LOCAL_WORLD_SIZE": "4"}, 2, 1, "sched_getaffinity=2 / 4 processes on the node"),  # at least one
])
def test_the_allocation_comes_from_slurm_or_affinity_divided_among_local_processes(environ, affinity, cpus,
                                                                                   source):
    assert cpu_allocation(environ, affinity) == Allocation(cpus, source)


def test_an_override_above_the_allocation_warns_and_loses_unless_forced(caplog):
    allocation = Allocation(2, "SLURM_CPUS_PER_TASK=2")
    assert choose_threads(allocation, 0).count == 2
    below = choose_threads(allocation, 1)
    assert below.count == 1 and below.source == "config threads=1 (allocation 2: SLURM_CPUS_PER_TASK=2)"
    with caplog.at_level(logging.WARNING, logger="aunet.threads"):
        above = choose_threads(allocation, 8)
    assert above.count == 2 and above.source == "SLURM_CPUS_PER_TASK=2"
    (warning,) = caplog.records
    assert "\n" not in warning.getMessage() and "threads=8" in warning.getMessage()
    assert "threads_force=true" in warning.getMessage()
    forced = choose_threads(allocation, 8, force=True)
    assert forced.count == 8 and "forced" in forced.source


def test_a_process_and_its_children_follow_slurm_cpus_per_task():
    probe = (
        "import os, subprocess, sys, torch\n"
        "from aunet.threads import use_allocated_threads\n"
        "t = use_allocated_threads()\n"
        "child = subprocess.run([sys.executable, '-c', 'import torch; print(torch.get_num_threads())'],\n"
        "                       capture_output=True, text=True, check=True).stdout.strip()\n"
        "print(t.count, torch.get_num_threads(), torch.get_num_interop_threads(), os.environ['OMP_NUM_THREADS'],\n"
        "      os.environ['MKL_NUM_THREADS'], child)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMP_", "MKL_"))}
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "SLURM_CPUS_PER_TASK": "1"}, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1"] * 6


def test_the_record_carries_the_threads_and_where_they_came_from(tmp_path, monkeypatch):
    for name in CHILD_THREAD_VARIABLES:  # restored after the test, for the processes later tests start
        monkeypatch.setenv(name, os.environ.get(name, ""))
    before = torch.get_num_threads()
    try:
        record = train(tiny_config(tmp_path, steps=2, threads=1))
    finally:
        torch.set_num_threads(before)
    assert record.status == "finished", record.error
    assert record.threads == 1
    assert record.threads_source.startswith("config threads=1 (allocation ")
    assert record.to_row()["threads"] == 1  # a column of the results table
    assert os.environ["OMP_NUM_THREADS"] == "1"  # for the run's child processes


def test_a_negative_thread_count_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="'threads' is -1"):
        tiny_config(tmp_path, threads=-1)


@pytest.mark.slurm
@pytest.mark.slow
def test_two_single_cpu_slurm_jobs_at_once_each_train_on_one_thread(tmp_path, slurm_cluster):
    sweep_dir = tmp_path / "one_cpu"
    proc = run_sweep(sweep_dir, "sweep.name=onecpu", "sweep.budgets=[2e10]", "sweep.trials=2",
                     *slurm_cluster.launcher(), env=slurm_cluster.env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = Ledger(sweep_dir / "ledger.sqlite").rows()
    assert len(rows) == 2 and {r.status for r in rows} == {"finished"}, [(r.status, r.error) for r in rows]
    for row in rows:
        assert row.record["threads"] == 1, row.record["threads_source"]
        assert row.record["threads_source"] == "SLURM_CPUS_PER_TASK=1"
    # The two jobs of the array ran at the same time, each on its one CPU of the 2-core node.
    array = {p.name.split("_")[0] for p in sweep_dir.glob(".submitit/*") if re.fullmatch(r"\d+_\d+", p.name)}
    (job,) = array
    sacct = subprocess.run(["sacct", "-j", job, "-X", "-n", "-P", "-o", "JobID,Start,End"], capture_output=True,
                           text=True, check=True, env={**os.environ, **slurm_cluster.env}).stdout.split()
    spans = [tuple(datetime.fromisoformat(v) for v in line.split("|")[1:]) for line in sacct]
    assert len(spans) == 2
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans
