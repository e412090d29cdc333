"""``python -m sweeps rebuild <study>``: a new ledger from what the trials left on disk.

The record files are the truth about every trial that ended (each run writes its own,
atomically); the study's config is in ``multirun.yaml``; attempts are in each trial's start
marker; the study's MLflow run is found again by its tags. Trials that never wrote a record
come back as pending the next time the study runs (and a job of theirs that still runs is
found by its start marker and waited for). A damaged ledger is kept beside the new one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import OmegaConf

from sweeps.attempts import started_jobs
from sweeps.launch import read_record
from sweeps.ledger import Ledger
from sweeps.lock import StudyLock
from sweeps.study import StudyConfig, Trial

log = logging.getLogger(__name__)


def rebuild(sweep_dir: Path) -> str:
    """Rebuild ``sweep_dir``'s ledger; returns the summary to print."""
    config_path = sweep_dir / "multirun.yaml"
    if not config_path.is_file():
        raise ValueError(f"{sweep_dir} has no multirun.yaml (the study config every run saves); "
                         "give the folder of a study that has run at least once")
    config = OmegaConf.load(config_path)
    study = StudyConfig(**OmegaConf.to_container(config.sweep, resolve=True))
    with StudyLock(sweep_dir):
        path = sweep_dir / "ledger.sqlite"
        kept = None
        if path.exists():
            kept = path.with_name(f"ledger.sqlite.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(kept)
        ledger = Ledger(path)
        ledger.bind(study)
        found, skipped = 0, []
        for record_path in sorted(sweep_dir.glob("*/C*/t*/record.json")):  # trial folders: Trial.key
            trial_dir = record_path.parent
            key = trial_dir.relative_to(sweep_dir).as_posix()
            record = read_record(record_path)
            if record is None or record.study != study.name:
                skipped.append(str(record_path))
                continue
            config_of = record.config or {}
            lr = (config_of.get("optim") or {}).get("lr") or record.lr
            phase = ((config_of.get("tracking") or {}).get("tags") or {}).get("phase", "qmc")  # sweeper.trial_labels
            search_box = (*(config_of.get("lr_box") or ()), *(config_of.get("bsz_box") or ()))
            trial = Trial(record.family, record.budget, record.trial, float(lr), int(config_of.get("bsz") or record.bsz),
                          phase, tuple(float(v) for v in search_box), int(record.seed or 0),
                          ratio=record.ratio if study.ratios is not None else None)  # an isoFLOP cell's key names it
            if trial.key != key:
                skipped.append(str(record_path))
                continue
            ledger.add([trial])
            ledger.mark(key, record.status, record=record.to_dict(), error=record.error,
                        attempts=len(started_jobs(trial_dir)), output_dir=str(trial_dir))
            found += 1
        parent = find_study_run(config, study, sweep_dir)
        if parent:
            ledger.set_meta("mlflow_parent_run", parent)
    lines = [f"rebuilt {path}: {found} trials from their record files"
             + (f"; the damaged ledger is kept as {kept}" if kept else "")
             + ("; MLflow study run found again" if parent else "")]
    lines += [f"skipped (unreadable, or not a trial of study {study.name!r}): {p}" for p in skipped]
    lines.append("trials without a record run again (as pending) the next time the study runs")
    return "\n".join(lines)


def find_study_run(config, study: StudyConfig, sweep_dir: Path) -> str | None:
    """The study's MLflow run, by the tags the sweeper gave it."""
    tracking = config.get("tracking")
    if not tracking or not tracking.get("enabled"):
        return None
    from aunet.tracking import default_tracking_uri, import_mlflow

    uri = tracking.get("tracking_uri") or default_tracking_uri(sweep_dir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    try:
        import_mlflow()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(tracking.get("experiment", "aunet"))
        if experiment is None:
            return None
        runs = client.search_runs([experiment.experiment_id],
                                  f"tags.kind = 'study' and tags.study = '{study.name}'")
        return runs[0].info.run_id if runs else None
    except Exception as err:  # the ledger is rebuilt all the same
        log.warning("could not search the MLflow store %s for the study's run: %s", uri, err)
        return None
