"""How many times a trial really started, and which jobs started it.

Every job that starts a trial appends its name (``sweeps.backends``: the name the driver gave the
job when it submitted it) to the trial's start marker, ``<trial>/starts.jsonl``, one line per start.
So after any crash the next driver can tell, from the ledger and the files alone, whether a trial
never started (it is still pending), started and died (an attempt, retried), or still runs (it is
waited for, never launched a second time).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from sweeps.backends import backend_here

log = logging.getLogger(__name__)

STARTS = "starts.jsonl"


def is_main_task() -> bool:
    """One start per trial even when a trial spans several processes (DDP tasks)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def note_start(trial_dir: str | Path) -> None:
    """Append this job's start to the trial's marker (one short line: atomic with O_APPEND)."""
    if not is_main_task():
        return
    path = Path(trial_dir) / STARTS
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"job": backend_here().this_job(), "time": time.time(), "host": socket.gethostname(),
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
