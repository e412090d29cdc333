"""The MLflow loader against a real local SQLite store (``import mlflow`` takes seconds: its own file)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.fits import fit_hyper_laws
from analysis.load import load_results, validate_results
from analysis.synthetic import SweepDesign, synthetic_sweep

PARAMS = ("arch", "budget", "lr", "bsz", "units", "bytes_per_unit", "study", "trial", "lr_min", "lr_max",
          "bsz_min", "bsz_max")
METRICS = ("loss", "bpb", "eval_hellaswag", "eval_piqa")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An MLflow SQLite store holding one synthetic sweep; runs log the row columns as params and metrics."""
    mlflow = pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    df = synthetic_sweep("aunet3", design=SweepDesign(budgets=(1e18, 1e19, 1e20), trials=10), seed=31)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("sweep", artifact_location=(root / "artifacts").as_uri())
    for i, row in df.iterrows():
        run = client.create_run(experiment, run_name=f"trial-{row['trial']}")
        params = [mlflow.entities.Param(k, str(row[k])) for k in PARAMS]
        if i % 2:  # half the runs log our status; the rest leave it to MLflow's own
            params.append(mlflow.entities.Param("status", row["status"]))
        metrics = [mlflow.entities.Metric(k, float(row[k]), 0, 0) for k in METRICS if math.isfinite(row[k])]
        client.log_batch(run.info.run_id, params=params, metrics=metrics)
        client.set_terminated(run.info.run_id, "FINISHED" if row["status"] == "finished" else "FAILED")
    return uri, df


def test_mlflow_runs_load_like_the_table(store):
    uri, df = store
    table = load_results("mlflow:sweep", tracking_uri=uri).sort_values("trial").reset_index(drop=True)
    reference = validate_results(df)
    # MLflow knows FINISHED and FAILED only: a diverged run that logged no status of its own reads as failed
    expected_status = reference["status"].where(reference.index % 2 == 1,
                                                reference["status"].replace({"diverged": "failed"}))
    assert table["status"].tolist() == expected_status.tolist()
    for column in ("budget", "lr", "bsz", "loss", "bpb", "eval_piqa", "lr_max", "bytes_per_unit"):
        assert np.allclose(table[column], reference[column], equal_nan=True, rtol=1e-12), column
    assert (table["arch"] == "aunet3").all() and table["mlflow_run_id"].str.len().gt(0).all()
    from_mlflow = fit_hyper_laws(table, "aunet3", n_boot=50)
    from_table = fit_hyper_laws(reference, "aunet3", n_boot=50)
    assert from_mlflow.lr.exponent == pytest.approx(from_table.lr.exponent, rel=1e-12)


def test_mlflow_errors_are_clear(store):
    uri, _ = store
    with pytest.raises(ValueError, match=r"no MLflow experiment 'nope' at .*experiments there: \[.*'sweep'"):
        load_results("mlflow:nope", tracking_uri=uri)
    with pytest.raises(ValueError, match="needs the tracking URI"):
        load_results("mlflow:sweep")
    with pytest.raises(ValueError, match="no runs of study 'other'"):
        load_results("mlflow:sweep", tracking_uri=uri, study="other")
    assert isinstance(load_results("mlflow:sweep", tracking_uri=uri, study="synthetic"), pd.DataFrame)
