"""PyTorch threads that follow the process's CPU allocation.

PyTorch starts one intra-op thread per core of the machine, whatever the job was given: two
single-CPU SLURM jobs on a 2-core node then run four busy threads on two cores and train many
times slower than one job alone (figures: ``benchmarks/README.md``). Every training, evaluation
and data process therefore calls :func:`use_allocated_threads` once at start-up.

The allocation is ``SLURM_CPUS_PER_TASK`` when SLURM set it (CPUs per task), otherwise the CPUs
this process may run on (``os.sched_getaffinity``; a SLURM job without ``--cpus-per-task``: its
``SLURM_CPUS_ON_NODE``), divided among the processes of the job that share it on this node
(``torchrun``'s ``LOCAL_WORLD_SIZE``, SLURM's tasks per node). Without SLURM or torchrun that is
every core, as before. A ``threads`` setting overrides it within the allocation.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

log = logging.getLogger("aunet.threads")

#: Set for child processes (data workers) and libraries that start their pools later (tokenizers' rayon).
CHILD_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")


@dataclass(frozen=True)
class Allocation:
    """CPUs this process may keep busy, and where that number comes from (for the record)."""

    cpus: int
    source: str


@dataclass(frozen=True)
class Threads:
    """The threads a process runs with; ``source`` says why (the allocation, or the config)."""

    count: int
    source: str


def _positive_int(environ: Mapping[str, str], name: str) -> int | None:
    match = re.match(r"\d+", environ.get(name, ""))  # SLURM_TASKS_PER_NODE reads like "2(x3),1"
    return int(match.group()) if match and int(match.group()) > 0 else None


def cpu_allocation(environ: Mapping[str, str] = os.environ, affinity: int | None = None) -> Allocation:
    """This process's share of the CPUs its job was given on this node."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = _positive_int(environ, "LOCAL_WORLD_SIZE") or 1  # processes of one torch.distributed run here
    slurm_tasks = (_positive_int(environ, "SLURM_NTASKS_PER_NODE") or _positive_int(environ, "SLURM_TASKS_PER_NODE")
                   or 1)
    per_task = _positive_int(environ, "SLURM_CPUS_PER_TASK")
    on_node = _positive_int(environ, "SLURM_CPUS_ON_NODE")
    if per_task is not None:
        # Each SLURM task has its own CPUs; torchrun inside one task shares them among its processes.
        cpus, source, sharing = per_task, f"SLURM_CPUS_PER_TASK={per_task}", max(1, local // slurm_tasks)
    elif on_node is not None:  # a SLURM job without --cpus-per-task: its CPUs on this node, for all its tasks
        cpus, source, sharing = on_node, f"SLURM_CPUS_ON_NODE={on_node}", max(local, slurm_tasks)
    else:
        cpus, source, sharing = affinity, f"sched_getaffinity={affinity}", local
    if sharing > 1:
        source += f" / {sharing} processes on the node"
    return Allocation(max(1, min(cpus, affinity) // sharing), source)


def choose_threads(allocation: Allocation, requested: int = 0, force: bool = False) -> Threads:
    """The allocation, or a positive ``requested`` count that fits in it (or is forced)."""
    if requested <= 0:
        return Threads(allocation.cpus, allocation.source)
    if requested > allocation.cpus and not force:
        log.warning("threads=%d is more than the %d CPU(s) allocated (%s): using %d; set threads_force=true "
                    "to oversubscribe anyway", requested, allocation.cpus, allocation.source, allocation.cpus)
        return Threads(allocation.cpus, allocation.source)
    forced = " forced" if requested > allocation.cpus else ""
    return Threads(requested, f"config threads={requested}{forced} (allocation {allocation.cpus}: {allocation.source})")


def use_allocated_threads(requested: int = 0, force: bool = False) -> Threads:
    """Set PyTorch's intra- and inter-op threads (and the children's) from the allocation; see the module doc."""
    threads = choose_threads(cpu_allocation(), requested, force)
    torch.set_num_threads(threads.count)
    if torch.get_num_interop_threads() != threads.count:
        try:
            torch.set_num_interop_threads(threads.count)
        except RuntimeError:  # only possible before the first inter-op work of the process
            log.debug("inter-op threads stay at %d (already started)", torch.get_num_interop_threads())
    for name in CHILD_THREAD_VARIABLES:
        os.environ[name] = str(threads.count)
    return threads
