"""The MLflow loader against a real local SQLite store (``import mlflow`` takes seconds: its own file)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.fits import fit_hyper_laws
from analysis.load import load_results, validate_results
from analysis.synthetic import SweepDesign, synthetic_sweep
from aunet.record import RunRecord

PARAMS = ("family", "budget", "lr", "bsz", "units", "bytes_per_unit", "study", "trial", "lr_min", "lr_max",
          "bsz_min", "bsz_max")
METRICS = ("loss", "bpb", "eval_hellaswag", "eval_piqa")
TASKS = ("hellaswag", "piqa")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An MLflow SQLite store holding one synthetic sweep as a study would log it.

    Every third trial logs only its record.json artifact and the trainer's metrics (as
    aunet.train does); the others log the row columns as params and metrics, half of
    them without our status. A parent run (the study's) carries no trial.
    """
    mlflow = pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    df = synthetic_sweep("aunet3", design=SweepDesign(budgets=(1e18, 1e19, 1e20), trials=10), seed=31)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("sweep", artifact_location=(root / "artifacts").as_uri())
    client.create_run(experiment, run_name="study", tags={"study": "synthetic"})
    for i, row in df.iterrows():
        run = client.create_run(experiment, run_name=f"trial-{row['trial']}").info.run_id
        schedule_end = mlflow.entities.Metric("lr", 0.01 * row["lr"], 0, 1)  # the trainer logs the schedule
        if i % 3 == 0:
            record = RunRecord(
                status=row["status"], family=row["family"], budget=row["budget"], lr=row["lr"], bsz=row["bsz"],
                study=row["study"], trial=int(row["trial"]), loss=row["loss"], bpb=row["bpb"],
                lr_box=(row["lr_min"], row["lr_max"]), bsz_box=(row["bsz_min"], row["bsz_max"]),
                downstream={t: row[f"eval_{t}"] for t in TASKS if math.isfinite(row[f"eval_{t}"])})
            record.write(root / "staging" / str(i) / "record.json")
            client.log_artifact(run, str(root / "staging" / str(i) / "record.json"))
            client.log_batch(run, params=[mlflow.entities.Param("config.optim.lr", str(row["lr"]))],
                             metrics=[schedule_end])
        else:
            params = [mlflow.entities.Param(k, str(row[k])) for k in PARAMS]
            if i % 2:
                params.append(mlflow.entities.Param("status", row["status"]))
            metrics = [mlflow.entities.Metric(k, float(row[k]), 0, 0) for k in METRICS if math.isfinite(row[k])]
            client.log_batch(run, params=params, metrics=[*metrics, schedule_end])
        client.set_terminated(run, "FINISHED" if row["status"] == "finished" else "FAILED")
    return uri, df


def test_mlflow_runs_load_like_the_table(store):
    uri, df = store
    table = load_results("mlflow:sweep", tracking_uri=uri).sort_values("trial").reset_index(drop=True)
    reference = validate_results(df)
    assert len(table) == len(reference)  # the parent run is not a trial
    # MLflow knows FINISHED and FAILED only: a diverged run that logged neither our status nor a record
    # reads as failed
    own_status = (reference.index % 3 == 0) | (reference.index % 2 == 1)
    expected = reference["status"].where(own_status, reference["status"].replace({"diverged": "failed"}))
    assert table["status"].tolist() == expected.tolist()
    for column in ("budget", "lr", "bsz", "loss", "bpb", "eval_piqa", "lr_max", "bytes_per_unit"):
        assert np.allclose(table[column], reference[column], equal_nan=True, rtol=1e-12), column
    assert (table["family"] == "aunet3").all() and table["mlflow_run_id"].str.len().gt(0).all()
    from_mlflow = fit_hyper_laws(table, "aunet3", n_boot=50)
    from_table = fit_hyper_laws(reference, "aunet3", n_boot=50)
    assert from_mlflow.lr.exponent == pytest.approx(from_table.lr.exponent, rel=1e-12)
    # Same runs, same seed, same intervals: the runs are resampled in one canonical order.
    for name in ("lr", "bsz"):
        assert getattr(from_mlflow, name).exponent_ci == pytest.approx(getattr(from_table, name).exponent_ci, rel=1e-9)


def test_mlflow_errors_are_clear(store):
    uri, _ = store
    with pytest.raises(ValueError, match=r"no MLflow experiment 'nope' at .*experiments there: \[.*'sweep'"):
        load_results("mlflow:nope", tracking_uri=uri)
    with pytest.raises(ValueError, match="needs the tracking URI"):
        load_results("mlflow:sweep")
    with pytest.raises(ValueError, match="no runs of study 'other'"):
        load_results("mlflow:sweep", tracking_uri=uri, study="other")
    assert isinstance(load_results("mlflow:sweep", tracking_uri=uri, study="synthetic"), pd.DataFrame)
