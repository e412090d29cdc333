"""Results from an MLflow experiment: one run per row, params/metrics/tags named like the row columns.

``import mlflow`` takes seconds, so it happens here, only when MLflow runs are asked for.
"""

from __future__ import annotations

import pandas as pd

#: MLflow's own run status, for runs that did not log ours.
MLFLOW_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "failed", "RUNNING": "running",
                 "SCHEDULED": "pending"}
_SOURCES = ("metrics.", "params.", "tags.")


def read_mlflow(experiment: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per run of ``experiment`` (name or id) in the store at ``tracking_uri`` (not yet validated).

    A column comes from the run's metric of that name, else its param, else its tag
    (``loss`` from ``metrics.loss``, ``arch`` from ``params.arch``, ...); ``status``
    falls back to MLflow's own run status when the run did not log one.
    """
    import mlflow

    if tracking_uri is None:
        raise ValueError("reading MLflow runs needs the tracking URI of the store, e.g. sqlite:////abs/path/mlflow.db")
    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None and experiment.isdigit():
        found = client.get_experiment(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}; experiments there: {names}")
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_ids=[found.experiment_id], output_format="pandas")
    if runs.empty:
        raise ValueError(f"MLflow experiment {experiment!r} at {tracking_uri} has no runs")
    table = pd.DataFrame(index=runs.index)
    names = dict.fromkeys(c.split(".", 1)[1] for c in runs.columns
                          if c.startswith(_SOURCES) and not c.startswith("tags.mlflow."))
    for name in names:
        column = pd.Series(pd.NA, index=runs.index, dtype=object)
        for source in reversed(_SOURCES):  # metrics last: they win
            if source + name in runs.columns:
                values = runs[source + name]
                column = column.where(values.isna(), values)
        table[name] = column
    native = runs["status"].map(MLFLOW_STATUS).fillna("failed")
    table["status"] = table["status"].where(table["status"].notna(), native) if "status" in table else native
    table["mlflow_run_id"] = runs["run_id"]
    return table
