"""The study runner behind ``python sweep.py -m``: a study's trials, through any launcher.

It reads the study (``sweep=<study>``), validates it and the launcher settings before
anything is submitted, registers every trial in the study's ledger, and hands the
trials that still need running (pending; failed or preempted ones below their attempt
limit) to the configured launcher (in-process locally, or submitit on SLURM: one job
array per batch). Each job's overrides show its real LR and BSZ. One driver at a time
holds a study (``sweeps.lock``); it first reconciles what earlier drivers left (jobs still
running are waited for, never launched twice), then launches and settles the trials
(``sweeps.launch``): a job that crashed is recorded as failed on its own, and the study goes on.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf

from sweeps.job import plan_cell
from sweeps.launch import needs_run, reconcile, run_trials, wait_for_jobs
from sweeps.ledger import Ledger, Row
from sweeps.lock import StudyLock
from sweeps.report import status_table
from sweeps.study import StudyConfig, budget_tag

log = logging.getLogger(__name__)

#: Overrides the sweeper sets per trial; on the command line they would fight it.
TRIAL_KEYS = ("family", "budget", "trial", "trial_dir", "plan", "model", "lr_box", "bsz_box", "bsz", "optim.lr")


def run_study(config: DictConfig, launcher: Any, arguments: list[str], mlflow: bool = True) -> list[JobReturn]:
    """Everything ``python sweep.py -m`` does after Hydra composed the config."""
    for argument in arguments:
        key = argument.split("=", 1)[0].lstrip("+~")
        if key in TRIAL_KEYS:
            raise ValueError(f"'{argument}': {key} is set by the study for each trial; change the study "
                             f"(conf/sweep/) instead")
    study: StudyConfig = OmegaConf.to_object(config.sweep)
    check_launcher(config.hydra.launcher)
    # Each cell planned once, with contraction measured on the data: a budget too small for the
    # family is refused here, before anything is submitted. Each job gets its trial's plan.
    cells = {(f, b): plan_cell(study, f, b, config.data) for f in study.families for b in study.budgets}
    trials = [trial for cell in cells.values() for trial in cell.trials()]
    sweep_dir = Path(config.hydra.sweep.dir).resolve()
    with StudyLock(sweep_dir):
        OmegaConf.save(config, sweep_dir / "multirun.yaml")
        ledger = Ledger(sweep_dir / "ledger.sqlite")
        ledger.bind(study)
        ledger.add(trials)
        adopted = reconcile(ledger, sweep_dir)
        extra = tracking_overrides(config, study, ledger, sweep_dir) if mlflow else []
        todo = [r for r in ledger.rows() if needs_run(r, study.max_attempts)]
        log.info("study %s: %d trials, %d to run, %d still running from an earlier driver", study.name,
                 len(ledger.rows()), len(todo), len(adopted))
        returns, overheads = run_trials(ledger, launcher, todo,
                                        lambda row: [*arguments, *cells[row.family, row.budget].overrides(row.trial),
                                                    *trial_labels(row), *extra],
                                        sweep_dir, study.batch_size)
        wait_for_jobs(ledger, adopted, sweep_dir)
        ledger.to_frame().to_csv(sweep_dir / "results.csv", index=False)
        if extra:
            close_study_run(config, ledger, study, sweep_dir)
    print(status_table(ledger))
    if overheads:
        launcher_s, setup_s, teardown_s = (sum(o[i] for o in overheads) / len(overheads) for i in range(3))
        print(f"overhead per trial: {launcher_s:.1f} s launcher (composing, submitting, collecting), "
              f"{setup_s:.1f} s run start to first step, {teardown_s:.1f} s after training "
              f"(held-out evaluation, record)")
    print(f"ledger: {ledger.path}\nresults: {sweep_dir / 'results.csv'}")
    return returns


def trial_labels(row: Row) -> list[str]:
    """The trial's MLflow run is named like its folder and tagged, so the MLflow UI tells trials apart."""
    tags = {"family": row.family, "budget": budget_tag(row.budget), "trial": str(row.index)}
    return [f"tracking.run_name='{row.key}'", *(f"++tracking.tags.{k}='{v}'" for k, v in tags.items())]


def tracking_overrides(config: DictConfig, study: StudyConfig, ledger: Ledger, sweep_dir: Path) -> list[str]:
    """Every trial logs to the study's MLflow store, as a child of the study's run."""
    tracking = config.tracking
    if not tracking.enabled:
        return []
    from aunet.tracking import default_tracking_uri, ensure_experiment, import_mlflow

    uri = tracking.tracking_uri or default_tracking_uri(sweep_dir)
    overrides = [f"tracking.tracking_uri='{uri}'", f"tracking.experiment={tracking.experiment}"]
    parent = ledger.get_meta("mlflow_parent_run")
    if parent is None:
        try:
            mlflow = import_mlflow()
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


def close_study_run(config: DictConfig, ledger: Ledger, study: StudyConfig, sweep_dir: Path) -> None:
    """The study's MLflow run ends FINISHED once no trial is left to run, and stays RUNNING until then."""
    parent = ledger.get_meta("mlflow_parent_run")
    if parent is None:
        return
    from aunet.tracking import default_tracking_uri, import_mlflow

    rows = ledger.rows()
    complete = not any(r.status == "running" or needs_run(r, study.max_attempts) for r in rows)
    try:
        import_mlflow()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(config.tracking.tracking_uri or default_tracking_uri(sweep_dir))
        if complete:
            client.set_terminated(parent, "FINISHED")
        else:
            client.update_run(parent, status="RUNNING")
    except Exception as err:  # tracking never stops a study
        log.warning("could not update the study's MLflow run %s: %s", parent, err)


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
