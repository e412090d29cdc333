"""The study runner behind ``python sweep.py -m``: a study's trials, through any launcher.

It reads the study (``sweep=<study>``), validates it and the launcher settings before
anything is submitted. One driver at a time holds a study (``sweeps.lock``); it first
reconciles what earlier drivers left (jobs still running are waited for, never launched twice),
then runs rounds: every cell whose trials are settled proposes
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf

from aunet.data import DataConfig
from sweeps.adaptive import CellPrior, cell_box
from sweeps.backends import LauncherBackend, backend_for
from sweeps.cell import Cell, plan_cells
from sweeps.dashboard import mirror_to_optuna
from sweeps.launch import needs_run, reconcile, run_trials, wait_for_jobs
from sweeps.ledger import Ledger, Row, rows_frame
from sweeps.lock import StudyLock
from sweeps.report import status_report
from sweeps.study import CellKey, StudyConfig, Trial, budget_tag, ratio_tag, trial_at, with_key_ratio

log = logging.getLogger(__name__)

#: Overrides the sweeper sets per trial; on the command line they would fight it.
TRIAL_KEYS = ("family", "budget", "trial", "trial_dir", "plan", "model", "lr_box", "bsz_box", "bsz", "optim.lr",
              "ratio")


#: What a held-out budget's predicted trial asks: (LR, BSZ) at ``budget`` from the laws that the runs
#: below it fit (``analysis.holdout.predict_optimum``, handed in by the sweeper plugin: the study runner
#: knows nothing of fitting), or ValueError when they fit none.
Predictor = Callable[[Any, str, float], tuple[float, float]]


def run_study(config: DictConfig, launcher: Any, arguments: list[str], mlflow: bool = True,
              predict: Predictor | None = None) -> list[JobReturn]:
    """Everything ``python sweep.py -m`` does after Hydra composed the config."""
    for argument in arguments:
        key = argument.split("=", 1)[0].lstrip("+~")
        if key in TRIAL_KEYS:
            raise ValueError(f"'{argument}': {key} is set by the study for each trial; change the study "
                             f"(conf/sweep/) instead")
    study: StudyConfig = OmegaConf.to_object(config.sweep)
    if study.holdout and predict is None:
        raise ValueError(f"study {study.name!r} holds out {study.holdout:.3g} but the runner was given no predictor "
                         "for its predicted trial (sweeps.sweeper.run_study(predict=...))")
    backend = backend_for(config.hydra.launcher)
    backend.check(config.hydra.launcher)  # settings the scheduler would reject, before anything is submitted
    cells = study_cells(study, config.data)
    sweep_dir = Path(config.hydra.sweep.dir).resolve()
    with StudyLock(sweep_dir):
        OmegaConf.save(config, sweep_dir / "multirun.yaml")
        ledger = Ledger(sweep_dir / "ledger.sqlite")
        ledger.bind(study)
        adopted = reconcile(ledger, sweep_dir)
        extra = tracking_overrides(config, study, ledger, sweep_dir) if mlflow else []
        try:
            returns, overheads = run_rounds(study, cells, ledger, backend, launcher, arguments + extra, sweep_dir,
                                            adopted, predict)
        finally:  # stopped or not, what finished is in the results table
            ledger.to_frame().to_csv(sweep_dir / "results.csv", index=False)
        if extra:
            close_study_run(config, ledger, study, sweep_dir)
    print(status_report(ledger))
    if overheads:
        launcher_s, setup_s, teardown_s = (sum(o[i] for o in overheads) / len(overheads) for i in range(3))
        print(f"overhead per trial: {launcher_s:.1f} s launcher (composing, submitting, collecting), "
              f"{setup_s:.1f} s run start to first step, {teardown_s:.1f} s after training "
              f"(held-out evaluation, record)")
    print(f"ledger: {ledger.path}\nresults: {sweep_dir / 'results.csv'}\n"
          f"dashboard: optuna-dashboard sqlite:///{sweep_dir / OPTUNA_STORAGE}")
    return returns


def run_rounds(study: StudyConfig, cells: dict[CellKey, Cell], ledger: Ledger, backend: LauncherBackend,
               launcher: Any, arguments: list[str], sweep_dir: Path, adopted: list[Row],
               predict: Predictor | None = None) -> tuple[list[JobReturn], list]:
    """Propose, register, run, until no cell proposes and nothing is left to run; returns the jobs'
    returns and the overhead per batch."""
    returns: list[JobReturn] = []
    overheads: list[tuple[float, float, float]] = []
    for round_number in itertools.count(1):
        ledger.add(propose(study, cells, ledger.rows(), predict))
        todo = [r for r in ledger.rows() if needs_run(r, study.max_attempts)]
        log.info("study %s, round %d: %d trials, %d to run, %d still running from an earlier driver",
                 study.name, round_number, len(ledger.rows()), len(todo), len(adopted))
        if todo:
            ran, overhead = run_trials(
                ledger, backend, launcher, todo,
                lambda row: [*arguments, *cells[row_trial(row).cell].overrides(row_trial(row)),
                             *trial_labels(row)],
                sweep_dir, study.batch_size)
            returns += ran
            overheads += overhead
        elif adopted:  # their cells propose once these are settled
            wait_for_jobs(ledger, adopted, sweep_dir)
            adopted = []
        else:
            break
        mirror_to_optuna([r for r in ledger.rows() if settled(r, study)], sweep_dir / OPTUNA_STORAGE, study.name)
    return returns, overheads


#: The Optuna storage that mirrors the study's ledger (one Optuna study per cell), next to it.
OPTUNA_STORAGE = "optuna.db"


def study_cells(study: StudyConfig, data: DictConfig | DataConfig) -> dict[CellKey, Cell]:
    """Each cell planned once, with contraction measured on the data: a budget too small for the
    family, or an isoFLOP budget with too few model sizes, is refused here, before anything is submitted."""
    cells, notes = plan_cells(study, data)
    for note in notes:
        log.info("%s", note)
    return cells


def row_trial(row: Row) -> Trial:
    """The ledger row's trial, with the ratio its key names."""
    return with_key_ratio(row.trial, row.key)


def settled(row: Row, study: StudyConfig) -> bool:
    return row.status != "running" and not needs_run(row, study.max_attempts)


def propose(study: StudyConfig, cells: dict[CellKey, Cell], rows: list[Row],
            predict: Predictor | None = None) -> list[Trial]:
    """Every cell whose trials are all settled proposes its next ones; a cell with trials to run waits.
    Once a family's cells are all done, its held-out cell gets its run at the predicted hyperparameters."""
    proposals, done = [], set()
    of_cell: dict[CellKey, list[Row]] = {key: [] for key in cells}
    for row in rows:
        of_cell.setdefault(row_trial(row).cell, []).append(row)
    for key, cell in cells.items():
        history = of_cell[key]
        if all(settled(r, study) for r in history):
            found = cell.next_trials(history)
            proposals += found
            done |= set() if found else {key}
    for family in study.families if study.holdout else ():
        held = [r for r in rows if r.family == family and r.budget == study.holdout]
        if all((family, b, None) in done for b in study.budgets) and not any(r.phase == "predicted" for r in held):
            proposals += predicted_trial(study, cells[family, study.holdout, None].start, rows, predict)
    return proposals


def predicted_trial(study: StudyConfig, cell: CellPrior, rows: list[Row], predict: Predictor) -> list[Trial]:
    """One trial in the held-out ``cell`` at the LR and BSZ that the laws fitted on the budgets below it
    predict there (``predict``: as ``python -m analysis validate --holdout`` fits them): the prediction put
    to the test."""
    below = rows_frame([r for r in rows if r.family == cell.family and r.budget < cell.budget])
    try:
        lr, bsz = predict(below, cell.family, cell.budget)
    except ValueError as err:
        log.warning("%s: no law to predict the held-out budget %.3g from (%s); no run at the prediction",
                    cell.family, cell.budget, err)
        return []
    held = [r for r in rows if r.family == cell.family and r.budget == cell.budget]
    log.info("%s: the laws predict LR %.4g, BSZ %.4g at the held-out %.3g; trial %d runs there",
             cell.family, lr, bsz, cell.budget, len(held))
    return [trial_at(cell.family, cell.budget, len(held), lr, bsz, cell.seq_len, "predicted",
                     cell_box(study, cell, held))]


def trial_labels(row: Row) -> list[str]:
    """The trial's MLflow run is named like its folder and tagged, so the MLflow UI tells trials apart
    (and ``sweeps.rebuild`` finds the trial's phase again in its record)."""
    tags = {"family": row.family, "budget": budget_tag(row.budget), "trial": str(row.index), "phase": row.phase}
    ratio = row_trial(row).ratio
    tags |= {"ratio": ratio_tag(ratio)} if ratio is not None else {}
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
            import_mlflow()
            from mlflow.tracking import MlflowClient

            client = MlflowClient(uri)
            experiment = ensure_experiment(client, tracking.experiment, sweep_dir / "mlartifacts")
            run = client.create_run(experiment, run_name=f"study:{study.name}",
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

