"""Launcher backends: all the study runner knows of how trials are launched and how their jobs are found again.

A trial runs in a job, and a backend names its jobs ``<kind>:<rest>`` the same way on both sides
(the driver when it submits a job, the job when it starts), so that after any crash the next driver
can tell from the names alone whether a job still runs. A backend also refuses settings its scheduler
would reject before anything is submitted, submits jobs without waiting for them (where the trials
run outside the driver), and readies a job's process before it trains. The backends:

* ``process:<host>:<pid>:<start>``: Hydra's basic launcher, each trial inside the driver, one by one;
* ``local:<host>:<pid>:<start>``: submitit's local executor (the name is its controller process);
* ``slurm:<job id>`` (array tasks as ``123_4``): submitit on SLURM, checked with ``squeue``.

``<start>`` is the process's start time in clock ticks (Linux), so a recycled PID is not taken for the
job. Hydra's launcher config picks the driver's backend (``backend_for``), submitit's environment the
job's (``backend_here``), and a job's name the backend that can tell whether it runs (``job_state``);
a new launcher is one class here, added to ``BACKENDS``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

ALIVE, GONE = "alive", "gone"  # a job's states; anything else says why it cannot be told
SLURM_ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}


class Job(Protocol):
    """A submitted job, as submitit hands it back."""

    job_id: str

    def done(self) -> bool: ...

    def results(self) -> list[Any]: ...


class LauncherBackend(Protocol):
    """One launcher, as the study runner (``sweeps.launch``, ``sweeps.sweeper``) and a trial's job see it."""

    kind: str  # the first field of its jobs' names
    submits: bool  # its trials run outside the driver (submitted, then polled); else inside it, one by one
    time_limits: bool  # its jobs stop at timeout_min and run as arrays (the dry run checks both)

    def check(self, settings: DictConfig) -> None:
        """Refuse, with one ValueError line, launcher settings the scheduler would reject."""

    def submit(self, launcher: Any, job_overrides: list[list[str]], first_index: int) -> list[tuple[str, Job]]:
        """Submit one job per override list without waiting for them: (name, job) of each."""

    def state(self, rest: str) -> str:
        """ALIVE, GONE, or why it cannot tell, of the job named ``<kind>:<rest>``."""

    def this_job(self) -> str:
        """The name of the job this process runs in, as the driver named it when it submitted it."""

    def prepare_job(self) -> None:
        """Ready this job's process before it trains."""


def process_job(kind: str, pid: int) -> str:
    return f"{kind}:{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the command name


def _process_state(rest: str) -> str:
    host, number, ticks = rest.split(":")
    pid = int(number)
    if host != socket.gethostname():
        return f"it ran on host {host}, not this one ({socket.gethostname()})"
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


class InProcess:
    """Hydra's basic launcher (or any other that is not submitit's): ``launcher.launch`` runs each trial
    inside the driver, so the job is the driver's own process."""

    kind = "process"
    submits = False
    time_limits = False

    def check(self, settings: DictConfig) -> None:
        """No scheduler: nothing to refuse."""

    def submit(self, launcher: Any, job_overrides: list[list[str]], first_index: int) -> list[tuple[str, Job]]:
        raise TypeError("Hydra's in-process launcher runs each trial itself (launcher.launch); it submits nothing")

    def state(self, rest: str) -> str:
        return _process_state(rest)

    def this_job(self) -> str:
        return process_job(self.kind, os.getpid())

    def prepare_job(self) -> None:
        """Nothing to ready: the trial runs in the driver's process."""


class Submitit(InProcess):
    """Hydra's submitit launchers: ``kind`` is the name of the submitit executor."""

    submits = True

    def submit(self, launcher: Any, job_overrides: list[list[str]], first_index: int) -> list[tuple[str, Job]]:
        """One job per trial as ``BaseSubmititLauncher.launch`` submits them (same executor, same
        parameters, same job arguments; one job array when there are several), but not waited for."""
        import submitit
        from hydra.core.singleton import Singleton
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(
            cluster=self.kind, folder=launcher.params["submitit_folder"],
            **{f"{self.kind}_max_num_timeout": launcher.params[k] for k in ("max_num_timeout",) if k in launcher.params})
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{self.kind}_{k}": v for k, v in launcher.params.items()
                                      if k not in init_keys})
        Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        arguments = [(list(o), "hydra.sweep.dir", first_index + i, f"job_id_for_{first_index + i}",
                      Singleton.get_state()) for i, o in enumerate(job_overrides)]
        return [(self.job_name(job), job) for job in executor.map_array(launcher, *zip(*arguments))]

    def job_name(self, job: Job) -> str:
        """The name of a job just submitted."""
        raise NotImplementedError


class SubmititLocal(Submitit):
    """submitit's local executor: each trial a process of this machine, watched by a controller process."""

    kind = "local"

    def job_name(self, job: Job) -> str:
        return process_job(self.kind, int(job.job_id))

    def this_job(self) -> str:
        return process_job(self.kind, int(os.environ["SUBMITIT_LOCAL_JOB_ID"]))


class SubmititSlurm(Submitit):
    """submitit on SLURM: each trial a SLURM job (an array task), which may span several tasks (one per GPU)."""

    kind = "slurm"
    time_limits = True

    def check(self, settings: DictConfig) -> None:
        """Settings SLURM would reject, caught before anything is submitted."""
        if not shutil.which("sinfo"):
            raise ValueError("hydra/launcher=submitit_slurm needs a SLURM client (sinfo, sbatch) on this machine")
        partition = settings.get("partition")
        if partition:
            found = subprocess.run(["sinfo", "-h", "-p", str(partition), "-o", "%P"], capture_output=True, text=True)
            if not found.stdout.strip():
                known = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()
                raise ValueError(f"SLURM partition {partition!r} does not exist; known partitions: {known}")
        if settings.get("timeout_min") is not None and int(settings.timeout_min) < 1:
            raise ValueError(f"hydra.launcher.timeout_min={settings.timeout_min}: SLURM needs at least 1 minute")
        for key in ("nodes", "tasks_per_node", "cpus_per_task"):
            value = settings.get(key)
            if value is not None and int(value) < 1:
                raise ValueError(f"hydra.launcher.{key}={value}: must be at least 1")

    def job_name(self, job: Job) -> str:
        return f"{self.kind}:{job.job_id}"

    def state(self, rest: str) -> str:
        try:
            found = subprocess.run(["squeue", "-h", "-j", rest, "-o", "%T"], capture_output=True, text=True,
                                   timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"squeue failed ({err})"
        if found.returncode == 0:
            states = set(found.stdout.split())
            return ALIVE if states & SLURM_ACTIVE else GONE
        if "Invalid job id" in found.stderr:  # finished and purged from the queue
            return GONE
        return f"squeue failed ({found.stderr.strip() or found.returncode})"

    def this_job(self) -> str:
        import submitit

        return f"{self.kind}:{submitit.JobEnvironment().job_id}"

    def prepare_job(self) -> None:
        """A trial over several SLURM tasks (one per GPU) is one torch.distributed run: give every task
        its rank and its peers, as torchrun would, so the trainer joins the process group."""
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "RANK" not in os.environ:
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export()


IN_PROCESS = InProcess()
BACKENDS: dict[str, LauncherBackend] = {b.kind: b for b in (IN_PROCESS, SubmititLocal(), SubmititSlurm())}
#: The backend of each Hydra launcher class (``hydra.launcher._target_``); any other runs trials in-process.
LAUNCHERS = {"LocalLauncher": BACKENDS["local"], "SlurmLauncher": BACKENDS["slurm"]}


def backend_for(settings: DictConfig) -> LauncherBackend:
    """The driver's backend, from Hydra's launcher config (``hydra.launcher``)."""
    return LAUNCHERS.get(str(settings.get("_target_", "")).rsplit(".", 1)[-1], IN_PROCESS)


def backend_here() -> LauncherBackend:
    """The backend of the job this process runs in: submitit says which in the environment it gives its
    jobs; without it, this is the driver running a trial itself."""
    return BACKENDS.get(os.environ.get("SUBMITIT_EXECUTOR", ""), IN_PROCESS)


def job_state(job: str) -> str:
    """ALIVE, GONE, or the reason it cannot be told from here, of a job named by any backend."""
    kind, _, rest = job.partition(":")
    backend = BACKENDS.get(kind)
    return backend.state(rest) if backend is not None else f"unknown job name {job!r}"
