"""One study, three launchers, back to back: local (in-process), SLURM with 2 CPUs per job (one job
at a time on a 2-core node), SLURM with 1 CPU per job (two at once). Prints wall times, their ratios,
each launcher's median training bytes/s and the threads the trials trained with: jobs that share a
node must not oversubscribe its cores (``aunet.threads``).

The study: AU-Net 2 at 3e10, 1e11 and 3e11 FLOPs, 3 trials each, ``eval=none``, through the README's
SLURM command on the local cluster (``scripts/slurm_cluster.sh up``, partition ``debug``).

    eval "$(scripts/slurm_cluster.sh env)"
    python benchmarks/bench_slurm_threads.py [--repo DIR] [--launchers local,slurm2,slurm1]

``--repo`` runs another checkout's ``sweep.py`` (e.g. an export of an older commit, for a before/after).
Wall times on a shared machine are noisy: compare the ratios of one run, and run again if it was busy.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The study: AU-Net 2 alone, quasi-random trials only, at the old demo's ratio (few steps: forced).
STUDY = ["sweep=demo", "sweep.name=threads", "eval=none", "sweep.families=[aunet2]", "sweep.phases=[qmc]",
         "sweep.max_moves=0", "sweep.ratio=0.005", "sweep.force=true"]
LAUNCHERS = {
    "local": [],
    "slurm2": ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=30",
               "hydra.launcher.tasks_per_node=1", "hydra.launcher.cpus_per_task=2"],
    "slurm1": ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=30",
               "hydra.launcher.tasks_per_node=1", "hydra.launcher.cpus_per_task=1"],
}


def run_study(repo: Path, launcher: str, sweep_dir: Path, study: list[str]) -> tuple[float, list[dict[str, str]]]:
    """Wall time of the whole study and its results table."""
    cmd = [sys.executable, "sweep.py", "-m", *study, *LAUNCHERS[launcher], f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{launcher}: the study failed\n{proc.stderr[-3000:]}")
    with open(sweep_dir / "results.csv") as handle:
        return wall, list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose sweep.py runs the study")
    parser.add_argument("--launchers", default="local,slurm2,slurm1")
    parser.add_argument("--budgets", default="3e10,1e11,3e11", help="the study's budgets; fewer on a busy machine")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    study = [*STUDY, f"sweep.budgets=[{args.budgets}]", f"sweep.trials={args.trials}"]
    launchers = args.launchers.split(",")
    unknown = sorted(set(launchers) - set(LAUNCHERS))
    if unknown:
        sys.exit(f"unknown launcher(s) {unknown}; choose from {sorted(LAUNCHERS)}")
    if any(name.startswith("slurm") for name in launchers) and "SLURM_CONF" not in os.environ:
        sys.exit('no SLURM_CONF: run `scripts/slurm_cluster.sh up` and `eval "$(scripts/slurm_cluster.sh env)"`')

    out = Path(tempfile.mkdtemp(prefix="bench-slurm-threads-"))
    walls, losses = {}, {}
    print(f"study: {' '.join(study[1:])}")
    print(f"{'launcher':<8} {'wall s':>7} {'trials':>6} {'median bytes/s':>14}  threads (source)")
    for name in launchers:
        wall, rows = run_study(args.repo.resolve(), name, out / name, study)
        walls[name] = wall
        finished = [r for r in rows if r["status"] == "finished"]
        losses[name] = {(r["budget"], r["trial"]): float(r["loss"]) for r in finished}
        rate = statistics.median(float(r["bytes_per_s"]) for r in finished) if finished else float("nan")
        threads = sorted({f"{r.get('threads', '?')} ({r.get('threads_source', 'not recorded')})" for r in finished})
        print(f"{name:<8} {wall:>7.1f} {len(finished):>3}/{len(rows):<2} {rate:>14,.0f}  {', '.join(threads)}",
              flush=True)

    if {"slurm1", "slurm2"} <= walls.keys():
        ratio = walls["slurm1"] / walls["slurm2"]
        print(f"SLURM 1 CPU (two jobs at once) / SLURM 2 CPUs (one at a time): {ratio:.2f}x  (target <= 1.00)")
    if {"slurm1", "local"} <= walls.keys():
        ratio = walls["slurm1"] / walls["local"]
        print(f"SLURM 1 CPU / local: {ratio:.2f}x  (target <= 2.50)")
    if {"slurm2", "local"} <= walls.keys():
        print(f"SLURM 2 CPUs / local: {walls['slurm2'] / walls['local']:.2f}x")
    reference = losses[launchers[0]]
    for name in launchers[1:]:
        same = [k for k in reference if k in losses[name]]
        worst = max((abs(losses[name][k] - reference[k]) / reference[k] for k in same), default=float("nan"))
        print(f"loss, {name} vs {launchers[0]}: {len(same)} trials, largest relative difference {worst:.1e}")
    print(f"outputs: {out}")


if __name__ == "__main__":
    main()
