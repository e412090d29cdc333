"""Latency of submitit on the local SLURM cluster (scripts/slurm_cluster.sh up first).

    .venv/bin/python scripts/slurm/bench_submitit.py [--repeats 5]

Prints, as JSON: submit-to-result wall time of a trivial job (submitit polls its result file every 1 s in
job.result(); we poll every 0.1 s to see the cluster's own latency too), of a job array of 5, and the
per-job split from accounting (queue wait = Submit->Start, run = Start->End, which includes the Python
start-up inside the job).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import submitit


def trivial(x: int) -> int:
    return x + 1


def wait_fast(job: submitit.Job, poll: float = 0.1):
    while not job.done():
        time.sleep(poll)
    return job.result()


def sacct_times(job_ids: list[str]) -> list[tuple[float, float]]:
    """(queue wait, run time) in seconds per job, from accounting (second resolution)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,Submit,Start,End", "-j", ",".join(job_ids)],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        _, submit, start, end = line.split("|")
        try:
            s, b, e = (datetime.fromisoformat(v) for v in (submit, start, end))
        except ValueError:
            continue
        rows.append(((b - s).total_seconds(), (e - b).total_seconds()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if "SLURM_CONF" not in os.environ and not Path("/etc/slurm/slurm.conf").exists():
        sys.exit("no SLURM_CONF: run `eval \"$(scripts/slurm_cluster.sh env)\"` first")

    folder = Path(tempfile.mkdtemp(prefix="bench-submitit-"))
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(timeout_min=10, slurm_partition="debug", cpus_per_task=1)

    results: dict[str, object] = {}
    t = time.perf_counter()
    assert executor.submit(trivial, 0).result() == 1  # warm-up, counted apart: the first job after `up`
    results["first_job_result_s"] = round(time.perf_counter() - t, 2)

    single, single_poll, ids = [], [], []
    for i in range(args.repeats):
        t = time.perf_counter()
        job = executor.submit(trivial, i)
        assert job.result() == i + 1
        single.append(time.perf_counter() - t)
        ids.append(job.job_id)
        t = time.perf_counter()
        job = executor.submit(trivial, i)
        assert wait_fast(job) == i + 1
        single_poll.append(time.perf_counter() - t)
        ids.append(job.job_id)
    results["single_job_result_s_median"] = round(statistics.median(single), 2)
    results["single_job_fast_poll_s_median"] = round(statistics.median(single_poll), 2)

    arrays = []
    for _ in range(max(1, args.repeats // 2)):
        t = time.perf_counter()
        jobs = executor.map_array(trivial, range(5))
        assert [job.result() for job in jobs] == [1, 2, 3, 4, 5]
        arrays.append(time.perf_counter() - t)
    results["array_of_5_result_s_median"] = round(statistics.median(arrays), 2)

    time.sleep(3)  # accounting lags
    times = sacct_times(ids)
    if times:
        results["accounting_queue_wait_s_mean"] = round(statistics.mean(w for w, _ in times), 2)
        results["accounting_run_s_mean"] = round(statistics.mean(r for _, r in times), 2)
    t = time.perf_counter()
    trivial(0)
    results["same_call_in_process_s"] = round(time.perf_counter() - t, 6)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
