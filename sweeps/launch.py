"""Launching a study's trials and settling what became of them, whatever happened meanwhile.

``run_trials`` is the one reusable step: launch these trials (so many at once) through the
configured Hydra launcher (its ``sweeps.backends`` backend) and settle each one in the ledger.
Where the backend submits jobs (submitit, local or SLURM) every job's name goes into the ledger
the moment it is submitted, and every job is waited for on its own, so one job's death decides
nothing about the others. ``reconcile``
is what a driver does first with what an earlier driver left behind: trials whose job
still runs are adopted (waited for, never launched again), trials whose job is gone are
settled from their record file, or retried. Attempts are the jobs that actually started
a trial (``sweeps.attempts``), never the launches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from aunet.record import RunRecord
from sweeps.attempts import started_jobs
from sweeps.backends import ALIVE, GONE, IN_PROCESS, Job, LauncherBackend, job_state
from sweeps.ledger import Ledger, Row

log = logging.getLogger(__name__)

#: Statuses a rerun never touches.
DONE = ("finished", "diverged")
POLL_SECONDS = 5.0


def needs_run(row: Row, max_attempts: int) -> bool:
    """Pending, or failed / preempted with attempts left. A ``running`` row is reconcile's business."""
    if row.status == "pending":
        return True
    return row.status in ("failed", "preempted") and row.attempts < max_attempts


def run_trials(ledger: Ledger, backend: LauncherBackend, launcher: Any, rows: list[Row],
               overrides: Callable[[Row], list[str]], sweep_dir: Path,
               batch_size: int = 0) -> tuple[list[JobReturn], list[tuple[float, float, float]]]:
    """Launch ``rows`` through Hydra's ``launcher`` (of that ``backend``), at most ``batch_size`` at once
    (0: all at once), and settle each in the ledger as it ends.

    Where the backend submits jobs a slot is refilled the moment one of its jobs ends (a rolling window:
    a slow trial holds one slot, not a whole batch); Hydra's in-process launcher runs them one by one.
    Returns the jobs' returns and the overhead per trial (see ``batch_overhead``)."""
    tic = time.time()
    returns: list[JobReturn] = []

    def ended(row: Row, result: JobReturn | None, error: str) -> str:
        if result is not None:
            returns.append(result)
        return settle(ledger, row, result, sweep_dir, launcher_error=error)

    if backend.submits:
        _launch_rolling(ledger, backend, launcher, rows, overrides, sweep_dir, batch_size or len(rows), ended)
    else:
        _launch_in_process(ledger, launcher, rows, overrides, sweep_dir, ended)
    return returns, [batch_overhead(ledger, rows, tic, time.time(), sweep_dir)] if rows else []


def _launch_rolling(ledger: Ledger, backend: LauncherBackend, launcher: Any, rows: list[Row],
                    overrides: Callable[[Row], list[str]], sweep_dir: Path, slots: int, ended: Callable,
                    poll: float = 1.0) -> None:
    """Keep ``slots`` submitted jobs in flight; every job's name goes into the ledger when it is
    submitted (with every slot free at once, all go as one job array), and each is waited for on
    its own: one job's death decides nothing about the others."""
    running: dict[int, Job] = {}
    queue = list(range(len(rows)))
    while queue or running:
        free = min(slots - len(running), len(queue))
        if free > 0:
            chosen, queue = queue[:free], queue[free:]
            for i, (name, job) in zip(chosen, backend.submit(launcher, [overrides(rows[i]) for i in chosen],
                                                             chosen[0])):
                ledger.mark(rows[i].key, "running", job=name, output_dir=str(sweep_dir / rows[i].key))
                running[i] = job
        done = [i for i, job in running.items() if job.done()]
        for i in done:
            ended(rows[i], *_wait(running.pop(i)))
        if running and not done:
            time.sleep(poll)


class DriverStopped(RuntimeError):
    """A signal (SIGTERM, SIGUSR2) reached the driver while it ran a trial in-process: the trial
    checkpointed, and the driver stops instead of starting the next one."""


def _launch_in_process(ledger: Ledger, launcher: Any, rows: list[Row], overrides: Callable[[Row], list[str]],
                       sweep_dir: Path, ended: Callable) -> None:
    """Hydra's basic launcher runs each trial inside this process, one by one. A trial that comes back
    preempted was stopped by a signal sent to this very process, i.e. to the driver: it stops."""
    me = IN_PROCESS.this_job()
    for i, row in enumerate(rows):
        ledger.mark(row.key, "running", job=me, output_dir=str(sweep_dir / row.key))
        try:
            (result,) = launcher.launch([overrides(row)], i)
            status = ended(row, result, "the launcher returned no result")
        except Exception as err:  # the launcher itself failed
            log.error("launcher failed on trial %s: %s", row.key, err)
            status = ended(row, None, f"the launcher failed: {err}")
        if status == "preempted":
            raise DriverStopped(f"stopped by a signal during trial {row.key}, which checkpointed; run the same "
                                "command again to resume the study")


def _wait(job: Job) -> tuple[JobReturn | None, str]:
    try:
        return job.results()[0], ""
    except Exception as err:  # this job died (killed, cancelled, node lost): the others go on
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return None, f"job {job.job_id} ended without a result: {first_line}"


def read_record(path: Path) -> RunRecord | None:
    """The record file, or None when there is none or it is unreadable (then named in the log)."""
    if not path.exists():
        return None
    try:
        return RunRecord.read(path)
    except (OSError, ValueError, TypeError) as err:
        log.warning("record %s is unreadable (%s): the trial is treated as having no record", path,
                    str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None


def settle(ledger: Ledger, row: Row, result: JobReturn | None, sweep_dir: Path, launcher_error: str) -> str:
    """Record what became of a trial's job, and return the status recorded. A complete record file on
    disk wins, then what the job returned, then the job's error. Attempts: the jobs that started the trial."""
    trial_dir = sweep_dir / row.key
    attempts = len(started_jobs(trial_dir))
    found = read_record(trial_dir / "record.json")
    record = found.to_dict() if found is not None and found.status != "running" else None
    error = launcher_error
    if record is None and result is not None:
        if result.status == JobStatus.COMPLETED and isinstance(result.return_value, dict):
            record = result.return_value
        elif result.status == JobStatus.FAILED:
            error = f"{type(result._return_value).__name__}: {result._return_value}"
    if record is not None:
        ledger.mark(row.key, record["status"], record=record, error=record.get("error", ""), attempts=attempts)
        return record["status"]
    ledger.mark(row.key, "failed", error=error or "the job ended without a record", attempts=attempts)
    return "failed"


def reconcile(ledger: Ledger, sweep_dir: Path) -> list[Row]:
    """What earlier drivers left: trials whose job still runs are returned (to be waited for); those
    whose job is gone get their record, or go back to pending (never started) or failed (interrupted)."""
    adopted: list[Row] = []
    for row in ledger.rows():
        if row.status in DONE:
            continue
        trial_dir = sweep_dir / row.key
        jobs = started_jobs(trial_dir)
        candidates = list(dict.fromkeys(([row.job] if row.status == "running" and row.job else []) + jobs[-1:]))
        states = {job: job_state(job) for job in candidates}
        live = [job for job, state in states.items() if state == ALIVE]
        unknown = {job: state for job, state in states.items() if state not in (ALIVE, GONE)}
        if live:
            ledger.mark(row.key, "running", job=live[0], attempts=len(jobs), output_dir=str(trial_dir))
            adopted.append(next(r for r in ledger.rows() if r.key == row.key))
        elif unknown:
            job, why = next(iter(unknown.items()))
            log.warning("trial %s: cannot tell whether its job %s still runs (%s); left as running, not "
                        "launched again", row.key, job, why)
            ledger.mark(row.key, "running", error=f"job {job}: {why}", job=job, attempts=len(jobs))
        elif row.status == "running":
            _settle_gone(ledger, row, trial_dir, jobs)
    return adopted


def _settle_gone(ledger: Ledger, row: Row, trial_dir: Path, jobs: list[str]) -> None:
    """A ``running`` trial whose job is gone: its record if it wrote one, else interrupted or never started."""
    started = row.job in jobs if row.job else bool(jobs)
    found = read_record(trial_dir / "record.json")
    if found is not None and found.status != "running":
        ledger.mark(row.key, found.status, record=found.to_dict(), error=found.error, attempts=len(jobs))
    elif started:
        ledger.mark(row.key, "failed", attempts=len(jobs),
                    error=f"interrupted: job {row.job or jobs[-1]} ended without writing a record (killed, out "
                          "of memory, or its node lost)")
    else:
        ledger.mark(row.key, "pending", attempts=len(jobs))


def wait_for_jobs(ledger: Ledger, rows: list[Row], sweep_dir: Path, poll: float = POLL_SECONDS) -> None:
    """Wait for jobs an earlier driver started (never launch them again), settling each as it ends."""
    waiting = list(rows)
    if waiting:
        log.info("waiting for %d trials still running from an earlier driver: %s", len(waiting),
                 ", ".join(r.key for r in waiting))
    while waiting:
        for row in [r for r in waiting if job_state(r.job) != ALIVE]:
            settle(ledger, row, None, sweep_dir, launcher_error=f"job {row.job} ended without a record")
            waiting.remove(row)
        if waiting:
            time.sleep(poll)


def batch_overhead(ledger: Ledger, batch: list[Row], tic: float, toc: float,
                   sweep_dir: Path) -> tuple[float, float, float]:
    """Per trial: the batch's wall time not covered by any training run (composing, submitting,
    queueing, collecting; never negative, whether the runs went one by one or side by side), and
    the runs' own mean setup and teardown."""
    keys = {row.key for row in batch}
    spans, metrics = [], []
    for row in ledger.rows():
        if row.key in keys and row.record:
            found = row.record.get("metrics", {})
            metrics.append(found)
            path = sweep_dir / row.key / "record.json"
            if path.exists() and found.get("wall_time"):
                end = min(path.stat().st_mtime, toc)
                spans.append((max(end - found["wall_time"], tic), end))
    covered, reach = 0.0, tic
    for begin, end in sorted(spans):
        covered += max(0.0, end - max(begin, reach))
        reach = max(reach, end)
    n = max(len(metrics), 1)
    return (max(0.0, toc - tic - covered) / len(batch), sum(m.get("setup_seconds", 0.0) for m in metrics) / n,
            sum(m.get("teardown_seconds", 0.0) for m in metrics) / n)
