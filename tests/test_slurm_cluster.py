"""submitit (the backend of Hydra's submitit launcher) against a real single-node SLURM cluster.

The cluster comes from the session fixture `slurm_cluster` (tests/conftest.py, scripts/slurm_cluster.sh):
partition `debug` (default) and `urgent` (preempts `debug`), accounting through slurmdbd.

Timings on a 2-core machine: a trivial job about 1-2 s, an array of 3 about 2-3 s, each requeue about
12-16 s (SLURM holds a requeued job for AuthInfo cred_expire + 1 = 11 s), the time-limit signal 10-40 s.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

pytestmark = pytest.mark.slurm

# The jobs unpickle these functions in a fresh interpreter where `tests/` is not importable: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NPROC = os.cpu_count() or 1


# ---------------------------------------------------------------- job functions (run on the cluster)


def where_am_i(x: int) -> dict:
    return {
        "value": x * 2,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
    }


def count_steps(workdir: str, total: int, block_at: int) -> dict:
    """Sums 0..total-1 one step at a time and saves its progress after each step; resumes from it.

    The first attempt stops at step `block_at` and waits to be interrupted (preempted, timed out or
    requeued); a later attempt goes on from the saved step. `starts` records where each attempt began.
    """
    wd = Path(workdir)
    state_path = wd / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"step": 0, "acc": 0, "starts": []}
    state["starts"].append(state["step"])
    _save(state_path, state)
    while state["step"] < total:
        if state["step"] == block_at and len(state["starts"]) == 1:
            (wd / "blocked").write_text(os.environ.get("SLURM_JOB_ID", ""))
            # Wait for SLURM or submitit to interrupt this attempt, in short sleeps: a signal that the kernel
            # hands to another thread of this process would not wake one long sleep() of the main thread,
            # and Python runs signal handlers in the main thread only.
            for _ in range(6000):
                time.sleep(0.1)
        state["acc"] += state["step"]
        state["step"] += 1
        _save(state_path, state)
    return state


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


class CheckpointableCount(submitit.helpers.Checkpointable):
    """count_steps as a submitit Checkpointable: on USR2 submitit calls checkpoint() and requeues the job."""

    def __call__(self, workdir: str, total: int, block_at: int) -> dict:
        return count_steps(workdir, total, block_at)

    def checkpoint(self, workdir: str, total: int, block_at: int) -> submitit.helpers.DelayedSubmission:
        with open(Path(workdir) / "checkpoints", "a") as handle:
            handle.write(f"{os.environ.get('SLURM_JOB_ID')}\n")
        return super().checkpoint(workdir, total, block_at)


# ---------------------------------------------------------------- helpers


def make_executor(folder: Path, **params) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**{"timeout_min": 30, "slurm_partition": "debug", "cpus_per_task": 1, **params})
    return executor


def wait_result(job: submitit.Job, timeout: float = 90):
    """job.result() with a deadline: on timeout, cancel the job and fail with its logs."""
    deadline = time.monotonic() + timeout
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(
                f"job {job.job_id} gave no result in {timeout:.0f}s\n"
                f"--- stdout\n{job.stdout()}\n--- stderr\n{job.stderr()}"
            )
        time.sleep(0.2)
    return job.result()


def wait_file(path: Path, job: submitit.Job, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"{path.name} did not appear in {timeout:.0f}s\n--- stderr\n{job.stderr()}")
        time.sleep(0.2)


def sacct_states(job_id: str) -> list[str]:
    """Every accounting record of the job (a requeued job has one per attempt), oldest first."""
    out = subprocess.run(
        ["sacct", "-j", job_id, "-X", "-D", "-n", "-P", "-o", "State"], capture_output=True, text=True
    )
    return out.stdout.split()


def wait_sacct(job_id: str, predicate, timeout: float = 30) -> list[str]:
    """Polls sacct until predicate(states) holds (accounting lags the job by a second or two)."""
    deadline = time.monotonic() + timeout
    states = sacct_states(job_id)
    while not predicate(states):
        if time.monotonic() > deadline:
            pytest.fail(f"sacct for job {job_id} still says {states} after {timeout:.0f}s")
        time.sleep(0.5)
        states = sacct_states(job_id)
    return states


def run_counter(tmp_path: Path, executor: submitit.AutoExecutor, fn) -> tuple[submitit.Job, Path]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    job = executor.submit(fn, str(workdir), 10, 4)
    wait_file(workdir / "blocked", job)
    return job, workdir


def simulate_preemption(job: submitit.Job, timeout: float = 30) -> None:
    """What job._interrupt() does (SIGTERM, then USR2 to the job's steps), with the USR2 sent only once
    submitit has seen the SIGTERM. _interrupt() sends both at once; slurmstepd may then deliver the SIGTERM
    after the USR2, to the `scontrol requeue` that submitit's USR2 handler has just started, which kills it
    and fails the job (about 1 in 40 here)."""
    subprocess.run(["scancel", "--signal", "SIGTERM", job.job_id], check=True)
    deadline = time.monotonic() + timeout
    while "Bypassing signal SIGTERM" not in (job.stdout() or ""):
        assert time.monotonic() < deadline, f"job {job.job_id} never got SIGTERM:\n{job.stderr()}"
        time.sleep(0.1)
    job._interrupt(timeout=True)  # USR2 only


def assert_resumed(result: dict, workdir: Path, checkpoints: int) -> None:
    assert result["acc"] == sum(range(10))
    assert result["starts"] == [0, 4], "the second attempt must start from the saved step, not from 0"
    written = (workdir / "checkpoints").read_text().split() if (workdir / "checkpoints").exists() else []
    assert len(written) == checkpoints


# ---------------------------------------------------------------- tests


def test_job_returns_its_result_through_the_cluster(slurm_cluster, tmp_path):
    executor = make_executor(tmp_path)
    assert executor.cluster == "slurm"
    job = executor.submit(where_am_i, 21)
    out = wait_result(job, timeout=60)
    assert out["value"] == 42
    assert out["job_id"] == job.job_id
    assert out["partition"] == slurm_cluster.partition
    # Accounting is on: sacct knows the job (this is what submitit polls for job states).
    wait_sacct(job.job_id, lambda states: states[-1:] == ["COMPLETED"])


def test_job_array_returns_every_result(slurm_cluster, tmp_path):
    executor = make_executor(tmp_path)
    jobs = executor.map_array(where_am_i, [1, 2, 3])
    outs = [wait_result(job, timeout=60) for job in jobs]
    assert [out["value"] for out in outs] == [2, 4, 6]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, "one SLURM job array"
    assert sorted(out["array_task_id"] for out in outs) == ["0", "1", "2"]


def test_interrupted_and_timed_out_jobs_requeue_and_resume(slurm_cluster, tmp_path):
    """Two Checkpointable jobs at once (one CPU each): one gets submitit's simulated preemption
    (SIGTERM then USR2, as job._interrupt()), the other SLURM's real time-limit signal (--signal=USR2@50 on
    a 1-minute job). Both checkpoint, requeue themselves and finish from their saved step."""
    (tmp_path / "timeout").mkdir()
    (tmp_path / "interrupt").mkdir()
    timed = make_executor(tmp_path / "timeout" / "logs", timeout_min=1, slurm_signal_delay_s=50)
    timed_job, timed_dir = run_counter(tmp_path / "timeout", timed, CheckpointableCount())
    plain = make_executor(tmp_path / "interrupt" / "logs")
    job, workdir = run_counter(tmp_path / "interrupt", plain, CheckpointableCount())

    simulate_preemption(job)
    assert_resumed(wait_result(job, timeout=60), workdir, checkpoints=1)
    assert_resumed(wait_result(timed_job, timeout=100), timed_dir, checkpoints=1)
    assert "timed-out" in timed_job.stdout()
    wait_sacct(job.job_id, lambda states: states[:1] == ["REQUEUED"] and states[-1:] == ["COMPLETED"])


def test_preemption_by_urgent_partition_requeues_and_resumes(slurm_cluster, tmp_path):
    """A real preemption: a job in `urgent` needs every CPU held by a Checkpointable job in `debug`. SLURM
    sends the preempted job its --signal (preempt_send_user_signal), submitit checkpoints and requeues it."""
    low = make_executor(tmp_path / "low", cpus_per_task=NPROC)
    job, workdir = run_counter(tmp_path, low, CheckpointableCount())
    high = make_executor(tmp_path / "high", cpus_per_task=NPROC, slurm_partition="urgent")
    urgent = high.submit(where_am_i, 1)
    assert wait_result(urgent, timeout=60)["partition"] == "urgent"
    assert_resumed(wait_result(job, timeout=90), workdir, checkpoints=1)
    assert "Caught signal SIGUSR2" in job.stdout()


def test_scontrol_requeue_resumes_from_the_tasks_own_checkpoint(slurm_cluster, tmp_path):
    """An admin's (or a node failure's) requeue sends no USR2: submitit reruns the original submission, and
    the task resumes from its own saved state, as Hydra's launcher jobs must."""
    executor = make_executor(tmp_path / "logs")
    job, workdir = run_counter(tmp_path, executor, count_steps)
    subprocess.run(["scontrol", "requeue", job.job_id], check=True)
    assert_resumed(wait_result(job, timeout=90), workdir, checkpoints=0)


def _free_port_base(count: int = 4) -> int:
    for _ in range(50):
        base = random.randrange(20000, 40000)
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


def test_down_stops_every_daemon_and_up_is_idempotent(slurm_cluster):
    """A second, throw-away cluster (own state directory, ports and munged): `up` twice, a running job,
    then `down` must leave no daemon, slurmstepd or job process behind; `down` twice is fine."""
    state_dir = Path(f"/tmp/aunet-slurm-test-{os.getpid()}")
    env = {
        **os.environ,
        "SLURM_CLUSTER_DIR": str(state_dir),
        "SLURM_CLUSTER_PORT_BASE": str(_free_port_base()),
        "SLURM_CLUSTER_NAME": "aunettest",
    }
    sleeper = f"sleep {random.randrange(10_000, 20_000)}"
    try:
        up = slurm_cluster.run_script("up", env=env)
        assert up.returncode == 0, up.stderr
        names = {line.split()[1].rstrip(":") for line in slurm_cluster.processes(state_dir)}
        assert {"munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"} <= names

        started = time.monotonic()
        again = slurm_cluster.run_script("up", env=env)
        assert again.returncode == 0 and "already up" in again.stderr
        assert time.monotonic() - started < 10
        assert slurm_cluster.run_script("status", env=env).returncode == 0

        job_env = {**env, "SLURM_CONF": str(state_dir / "etc" / "slurm.conf")}
        subprocess.run(["sbatch", "-o", "/dev/null", "--wrap", f"srun {sleeper}"], env=job_env, check=True)
        deadline = time.monotonic() + 30
        while not any(sleeper in line for line in _all_cmdlines()):
            assert time.monotonic() < deadline, "the test job did not start"
            time.sleep(0.2)

        down = slurm_cluster.run_script("down", env=env)
        assert down.returncode == 0, down.stderr
        assert slurm_cluster.processes(state_dir) == []
        assert not any(sleeper in line for line in _all_cmdlines())
        assert slurm_cluster.run_script("status", env=env).returncode != 0
        assert slurm_cluster.run_script("down", env=env).returncode == 0
    finally:
        slurm_cluster.run_script("reset", env=env)
    # The session's own cluster is untouched.
    assert slurm_cluster.run_script("status").returncode == 0


def _all_cmdlines() -> list[str]:
    lines = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                status = (proc / "status").read_text()
                if "\nState:\tZ" in status:
                    continue
                lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return lines
