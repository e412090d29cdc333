"""Results from an MLflow experiment: one row per trial run.

A run's row is its ``record.json`` artifact when it logged one (what ``aunet.train``
does: the record is the whole truth), else its params, metrics and tags named like
the row columns (``family`` from ``params.family``, ``loss`` from ``metrics.loss``, ...).
``import mlflow`` takes seconds, so it happens here, only when MLflow runs are asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from analysis.columns import FAMILY
from aunet.record import RunRecord

#: MLflow's own run status, for runs that did not log ours.
MLFLOW_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "failed", "RUNNING": "running",
                 "SCHEDULED": "pending"}


def read_mlflow(experiment: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per trial run of ``experiment`` (name or id) at ``tracking_uri`` (not yet validated).

    Without a record, a column is the run's param of that name, else its metric, else
    its tag: a param is what was set (a metric of the same name, like the trainer's
    ``lr``, is a time series whose last value is not the setting). Runs that are not
    trials (a study's parent run: no record and no ``family``) are left out; ``status``
    falls back to MLflow's own run status when a run logged none.
    """
    from aunet.tracking import import_mlflow

    mlflow = import_mlflow()
    if tracking_uri is None:
        raise ValueError("reading MLflow runs needs the tracking URI of the store, e.g. sqlite:////abs/path/mlflow.db")
    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None and experiment.isdigit():
        found = client.get_experiment(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}; experiments there: {names}")
    runs, token = [], None
    while True:  # the client pages through runs (no global tracking URI is set)
        page = client.search_runs([found.experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    if not runs:
        raise ValueError(f"MLflow experiment {experiment!r} at {tracking_uri} has no runs")
    rows = []
    for run in runs:
        row = _record_row(run.info.artifact_uri)
        if row is None:
            tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
            row = {**tags, **run.data.metrics, **run.data.params}  # first source wins: params, metrics, tags
            if FAMILY not in row:
                continue  # not a trial
            row.setdefault("status", MLFLOW_STATUS.get(run.info.status, "failed"))
        row["mlflow_run_id"] = run.info.run_id
        rows.append(row)
    if not rows:
        raise ValueError(f"MLflow experiment {experiment!r} at {tracking_uri} has no trial runs (none logged a "
                         f"record.json artifact or a {FAMILY!r} param)")
    return pd.DataFrame(rows)


def _record_row(artifact_uri: str) -> dict | None:
    """The row of the run's ``record.json`` artifact, for artifact stores on this file system."""
    if not isinstance(artifact_uri, str) or not artifact_uri.startswith("file:"):
        return None
    path = Path(unquote(urlparse(artifact_uri).path)) / "record.json"
    if not path.is_file():
        return None
    return RunRecord.from_dict(json.loads(path.read_text())).to_row()
