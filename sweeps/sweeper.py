"""The study runner behind ``python sweep.py -m``: a study's trials, through any launcher.

It reads the study (``sweep=<study>``), validates it and the launcher settings before
anything is submitted, then runs rounds: every cell whose trials are settled proposes
its next ones (``sweeps.adaptive``: phase 1, box moves, phase 2), the ledger registers
them, and the trials that still need running (pending; failed or preempted ones below
their attempt limit) go to the configured launcher (in-process locally, or submitit on
SLURM: one job array per batch). Each job's overrides show its real LR and BSZ. After
each batch the ledger records what every job returned; a job that crashed, even one
the launcher could not report on, is recorded as failed and the study goes on. The
study ends when no cell proposes and nothing is left to run; after each round its
settled trials are mirrored into an Optuna storage for ``optuna-dashboard``.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from aunet.data import DataConfig
from aunet.record import RunRecord
from sweeps.adaptive import Cell, next_trials
from sweeps.dashboard import mirror_to_optuna
from sweeps.job import cell_center, plan_cell
from sweeps.ledger import Ledger, Row
from sweeps.report import status_table
from sweeps.study import StudyConfig, Trial

log = logging.getLogger(__name__)

#: Overrides the sweeper sets per trial; on the command line they would fight it.
TRIAL_KEYS = ("arch", "budget", "trial", "trial_dir", "bsz", "optim.lr", "box")


def run_study(config: DictConfig, launcher: Any, arguments: list[str], mlflow: bool = True) -> list[JobReturn]:
    """Everything ``python sweep.py -m`` does after Hydra composed the config."""
    for argument in arguments:
        key = argument.split("=", 1)[0].lstrip("+~")
        if key in TRIAL_KEYS:
            raise ValueError(f"'{argument}': {key} is set by the study for each trial; change the study "
                             f"(conf/sweep/) instead")
    study = StudyConfig(**OmegaConf.to_container(config.sweep, resolve=True))
    data = DataConfig.from_dict(OmegaConf.to_container(config.data, resolve=True))
    check_launcher(config.hydra.launcher)
    cells = study_cells(study, data)
    sweep_dir = Path(config.hydra.sweep.dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    ledger = Ledger(sweep_dir / "ledger.sqlite")
    ledger.bind(study)
    reconcile(ledger, sweep_dir)
    extra = tracking_overrides(config, study, ledger, sweep_dir) if mlflow else []
    returns: list[JobReturn] = []
    overheads: list[tuple[float, float, float]] = []
    launched = 0
    for round_number in itertools.count(1):
        ledger.add(propose(study, cells, ledger.rows()))
        todo = [r for r in ledger.rows() if needs_run(r, study.max_attempts)]
        log.info("study %s, round %d: %d trials, %d to run", study.name, round_number, len(ledger.rows()), len(todo))
        if not todo:
            break
        size = study.batch_size or len(todo)
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            results, overhead = launch_and_settle(ledger, launcher, batch, arguments, extra, sweep_dir, launched)
            launched += len(batch)
            returns += [r for r in results if r is not None]
            overheads.append(overhead)
        settled = [r for r in ledger.rows() if not needs_run(r, study.max_attempts)]
        mirror_to_optuna(settled, sweep_dir / OPTUNA_STORAGE, study.name)
    ledger.to_frame().to_csv(sweep_dir / "results.csv", index=False)
    print(status_table(ledger))
    if overheads:
        launcher_s, setup_s, teardown_s = (sum(o[i] for o in overheads) / len(overheads) for i in range(3))
        print(f"overhead per trial: {launcher_s:.1f} s launcher (composing, submitting, collecting), "
              f"{setup_s:.1f} s run start to first step, {teardown_s:.1f} s after training "
              f"(held-out evaluation, record)")
    print(f"ledger: {ledger.path}\nresults: {sweep_dir / 'results.csv'}\n"
          f"dashboard: optuna-dashboard sqlite:///{sweep_dir / OPTUNA_STORAGE}")
    return returns


#: The Optuna storage that mirrors the study's ledger (one Optuna study per cell), next to it.
OPTUNA_STORAGE = "optuna.db"


def study_cells(study: StudyConfig, data: DataConfig) -> list[Cell]:
    """Every (architecture, budget) of the study with its prior centre, from the trial's own plan
    (contraction measured on the data): a budget too small for the family is refused here, before
    anything is submitted."""
    cells = []
    for arch in study.archs:
        for budget in study.budgets:
            plan = plan_cell(study, arch, budget, data)
            lr0, bsz0 = cell_center(study, arch, budget, plan)
            cells.append(Cell(arch, budget, lr0, bsz0, plan.seq_len))
    return cells


def propose(study: StudyConfig, cells: list[Cell], rows: list[Row]) -> list[Trial]:
    """Every cell whose trials are all settled proposes its next ones; a cell with trials to run waits."""
    proposals = []
    for cell in cells:
        history = [r for r in rows if r.arch == cell.arch and r.budget == cell.budget]
        if not any(needs_run(r, study.max_attempts) for r in history):
            proposals += next_trials(study, cell, history)
    return proposals


def launch_and_settle(ledger: Ledger, launcher: Any, batch: list[Row], arguments: list[str], extra: list[str],
                      sweep_dir: Path, first_job: int) -> tuple[list[JobReturn | None], tuple[float, float, float]]:
    """Launch a batch of trials and record what each returned; the launcher's overhead per trial."""
    for row in batch:
        ledger.mark(row.key, "running", attempt=True, output_dir=str(sweep_dir / row.key))
    overrides = [[*arguments, *row.trial.overrides(), *extra] for row in batch]
    tic = time.time()
    try:
        results = list(launcher.launch(overrides, initial_job_idx=first_job))
    except Exception as err:  # the launcher itself failed (e.g. a job array lost)
        log.error("launcher failed for a batch of %d trials: %s", len(batch), err)
        results = [None] * len(batch)
    for row, result in zip(batch, results):
        settle(ledger, row, result, sweep_dir, launcher_error="the launcher returned no result")
    return results, batch_overhead(ledger, batch, time.time() - tic)


def tracking_overrides(config: DictConfig, study: StudyConfig, ledger: Ledger, sweep_dir: Path) -> list[str]:
    """Every trial logs to the study's MLflow store, as a child of the study's run."""
    tracking = config.tracking
    if not tracking.enabled:
        return []
    from aunet.tracking import default_tracking_uri, ensure_experiment

    uri = tracking.tracking_uri or default_tracking_uri(sweep_dir)
    overrides = [f"tracking.tracking_uri='{uri}'", f"tracking.experiment={tracking.experiment}"]
    parent = ledger.get_meta("mlflow_parent_run")
    if parent is None:
        try:
            import mlflow
            from mlflow.tracking import MlflowClient

            mlflow.set_tracking_uri(uri)
            experiment = ensure_experiment(mlflow, tracking.experiment, sweep_dir / "mlartifacts")
            run = MlflowClient(uri).create_run(experiment, run_name=f"study:{study.name}",
                                               tags={"study": study.name, "kind": "study"})
            parent = run.info.run_id
            ledger.set_meta("mlflow_parent_run", parent)
        except Exception as err:  # tracking never stops a study
            log.warning("no MLflow parent run for the study: %s", err)
            return overrides
    return [*overrides, f"tracking.parent_run_id={parent}"]


def batch_overhead(ledger: Ledger, batch: list[Row], wall: float) -> tuple[float, float, float]:
    """Mean seconds per trial outside the runs, and the runs' own setup and teardown."""
    keys = {row.key for row in batch}
    metrics = [r.record.get("metrics", {}) for r in ledger.rows() if r.key in keys and r.record]
    inside = sum(m.get("wall_time", 0.0) for m in metrics)
    n = max(len(metrics), 1)
    return ((wall - inside) / len(batch), sum(m.get("setup_seconds", 0.0) for m in metrics) / n,
            sum(m.get("teardown_seconds", 0.0) for m in metrics) / n)


def needs_run(row: Row, max_attempts: int) -> bool:
    if row.status == "pending":
        return True
    return row.status in ("failed", "preempted", "running") and row.attempts < max_attempts


def reconcile(ledger: Ledger, sweep_dir: Path) -> None:
    """Trials left 'running' by an interrupted sweep: take the record a job may have written since."""
    for row in ledger.rows():
        if row.status == "running":
            path = sweep_dir / row.key / "record.json"
            if path.exists():
                record = RunRecord.read(path)
                ledger.mark(row.key, record.status, record=record.to_dict(), error=record.error)


def settle(ledger: Ledger, row: Row, result: JobReturn | None, sweep_dir: Path, launcher_error: str) -> None:
    """Record what a job returned; fall back to its record file, then to the launcher's error."""
    record: dict[str, Any] | None = None
    error = launcher_error
    if result is not None:
        if result.status == JobStatus.COMPLETED and isinstance(result.return_value, dict):
            record = result.return_value
        elif result.status == JobStatus.FAILED:
            error = f"{type(result._return_value).__name__}: {result._return_value}"
    path = sweep_dir / row.key / "record.json"
    if record is None and path.exists():
        record = RunRecord.read(path).to_dict()
    if record is None:
        ledger.mark(row.key, "failed", error=error)
        return
    ledger.mark(row.key, record["status"], record=record, error=record.get("error", ""))


def check_launcher(launcher: DictConfig) -> None:
    """Settings SLURM would reject, caught before anything is submitted."""
    target = str(launcher.get("_target_", ""))
    if "Slurm" not in target:
        return
    if not shutil.which("sinfo"):
        raise ValueError("hydra/launcher=submitit_slurm needs a SLURM client (sinfo, sbatch) on this machine")
    partition = launcher.get("partition")
    if partition:
        found = subprocess.run(["sinfo", "-h", "-p", str(partition), "-o", "%P"], capture_output=True, text=True)
        if not found.stdout.strip():
            known = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()
            raise ValueError(f"SLURM partition {partition!r} does not exist; known partitions: {known}")
    if launcher.get("timeout_min") is not None and int(launcher.timeout_min) < 1:
        raise ValueError(f"hydra.launcher.timeout_min={launcher.timeout_min}: SLURM needs at least 1 minute")
    for key in ("nodes", "tasks_per_node", "cpus_per_task"):
        value = launcher.get(key)
        if value is not None and int(value) < 1:
            raise ValueError(f"hydra.launcher.{key}={value}: must be at least 1")
