"""Which job ran a trial, whether it still runs, and how many times the trial really started.

A job names itself the same way on both sides: the driver when it submits it (the name
goes into the ledger) and the job when it starts (the name goes into the trial's start
marker, ``<trial>/starts.jsonl``, one line per start). So after any crash the next driver
can tell, from the ledger and the files alone, whether a trial never started (it is still
pending), started and died (an attempt, retried), or still runs (it is waited for, never
launched a second time). Names:

* ``slurm:<job id>`` (array tasks as ``123_4``), checked with ``squeue``;
* ``local:<host>:<pid>:<start>``, a submitit local job (its controller process);
* ``process:<host>:<pid>:<start>``, a trial run inside the driver (Hydra's basic launcher).

``<start>`` is the process's start time in clock ticks (Linux), so a recycled PID is not
taken for the job.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STARTS = "starts.jsonl"
ALIVE, GONE = "alive", "gone"  # job_state's answers; anything else says why it cannot tell
SLURM_ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}


def process_job(kind: str, pid: int) -> str:
    return f"{kind}:{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the command name


def current_job() -> str:
    """This process's job, named as the driver named it when it submitted the job."""
    executor = os.environ.get("SUBMITIT_EXECUTOR")
    if executor == "slurm":
        import submitit

        return f"slurm:{submitit.JobEnvironment().job_id}"
    if executor == "local":
        return process_job("local", int(os.environ["SUBMITIT_LOCAL_JOB_ID"]))
    return process_job("process", os.getpid())


def submitted_job(job: Any) -> str:
    """The name of a submitit job the driver has just submitted."""
    if type(job).__name__.startswith("Slurm"):
        return f"slurm:{job.job_id}"
    return process_job("local", int(job.job_id))


def job_state(job: str) -> str:
    """ALIVE, GONE, or the reason it cannot be told from here."""
    kind, _, rest = job.partition(":")
    if kind == "slurm":
        return _slurm_state(rest)
    if kind in ("local", "process"):
        host, pid, ticks = rest.split(":")
        if host != socket.gethostname():
            return f"it ran on host {host}, not this one ({socket.gethostname()})"
        return _process_state(int(pid), ticks)
    return f"unknown job name {job!r}"


def _process_state(pid: int, ticks: str) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return GONE
    except OSError:  # no /proc (not Linux): the PID alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return GONE
        except PermissionError:
            pass
        return ALIVE
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X") or (ticks and fields[19] != ticks):
        return GONE  # a zombie, or the PID now belongs to another process
    return ALIVE


def _slurm_state(job_id: str) -> str:
    try:
        found = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                               timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"squeue failed ({err})"
    if found.returncode == 0:
        states = set(found.stdout.split())
        return ALIVE if states & SLURM_ACTIVE else GONE
    if "Invalid job id" in found.stderr:  # finished and purged from the queue
        return GONE
    return f"squeue failed ({found.stderr.strip() or found.returncode})"


def is_main_task() -> bool:
    """One start per trial even when a trial spans several processes (DDP tasks)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def note_start(trial_dir: str | Path) -> None:
    """Append this job's start to the trial's marker (one short line: atomic with O_APPEND)."""
    if not is_main_task():
        return
    path = Path(trial_dir) / STARTS
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"job": current_job(), "time": time.time(), "host": socket.gethostname(),
                       "pid": os.getpid()})
    with open(path, "a") as handle:
        handle.write(line + "\n")


def starts(trial_dir: str | Path) -> list[dict[str, Any]]:
    """Every start of the trial, oldest first; a torn or garbled line is skipped (and named)."""
    path = Path(trial_dir) / STARTS
    if not path.exists():
        return []
    found = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            found.append(json.loads(line))
        except ValueError:
            log.warning("%s line %d is not JSON; skipped", path, number)
    return found


def started_jobs(trial_dir: str | Path) -> list[str]:
    """The jobs that started the trial, in order: its attempts. A requeued SLURM or submitit job starts
    again under its own name and is one attempt; a trial run inside the driver cannot be requeued, and
    the driver's retries of it share the driver's name, so each of its starts is an attempt."""
    jobs: list[str] = []
    for start in starts(trial_dir):
        job = str(start.get("job", ""))
        if job.startswith("process:") or job not in jobs:
            jobs.append(job)
    return jobs
