"""Loading and validating the results table (one row per run, as ``RunRecord.to_row``).

Every entry point of the analysis goes through :func:`load_results`, so every bad
input (empty table, missing columns, text in numeric columns, mixed units, unknown
statuses, non-positive hyperparameters) fails here once, with a message that names
the rows and the fix, instead of deep inside a fit.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aunet.record import STATUSES, RunRecord

REQUIRED = ("status", "arch", "budget", "lr", "bsz", "loss")
NUMERIC = ("budget", "lr", "bsz", "bytes_per_unit", "ratio", "flops_per_unit", "flops", "params", "steps",
           "train_units", "loss", "bpb", "lr_min", "lr_max", "bsz_min", "bsz_max", "bsz_bytes", "trial", "seed")
POSITIVE = ("budget", "lr", "bsz")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".json")
LEDGER = "ledger.sqlite"  # a study's ledger (sweeps.ledger), in outputs/sweeps/<study>/
ARTIFACT_DIRS = {"mlartifacts", "mlruns"}  # MLflow keeps copies of record.json there
#: ``eval_`` columns that are evaluation bookkeeping (record.metrics), not downstream task scores.
NOT_TASKS = ("eval_units", "eval_bytes", "eval_loss", "eval_bpb")
_NESTED_RECORD_KEYS = ("downstream", "metrics", "config", "lr_box", "bsz_box", "contraction")


class AnalysisWarning(UserWarning):
    """Something the user should look at (an optimum on the edge of its box, a dropped run or budget)."""


def warn(message: str) -> str:
    """Emit an :class:`AnalysisWarning` and hand the message back, so fits can keep it for the report."""
    warnings.warn(message, AnalysisWarning, stacklevel=3)
    return message


def load_results(source: Any, *, tracking_uri: str | None = None, study: str | None = None) -> pd.DataFrame:
    """The validated results table from any of the forms a sweep leaves behind.

    ``source`` is a DataFrame of rows; a CSV, Parquet or JSONL table of rows (or of
    nested record dicts); one record JSON; a study's ``ledger.sqlite``; a directory: a
    study's output (its ledger), a folder of studies (every ``*/ledger.sqlite``), or any
    folder of ``**/record.json`` files (MLflow's artifact copies skipped) or with one
    table file; or ``"mlflow:<experiment>"`` with ``tracking_uri``. ``study`` keeps only
    that study's rows.
    """
    if isinstance(source, pd.DataFrame):
        table = source.copy()
        origin = "the DataFrame"
    elif isinstance(source, str) and source.startswith("mlflow:"):
        from analysis.mlflow_io import read_mlflow

        experiment = source.removeprefix("mlflow:")
        table = read_mlflow(experiment, tracking_uri=tracking_uri)
        origin = f"MLflow experiment {experiment!r}"
    else:
        path = Path(source)
        table = _read_path(path)
        origin = str(path)
    if study is not None:
        if "study" not in table.columns or not (table["study"] == study).any():
            found = sorted(set(table["study"].dropna())) if "study" in table.columns else []
            raise ValueError(f"no runs of study {study!r} in {origin}; studies found: {found}")
        table = table[table["study"] == study]
    return validate_results(table, origin=origin)


def _read_path(path: Path) -> pd.DataFrame:
    """A sweep directory (its ledger, else its record files, else its one table) or a results file."""
    if path.is_dir():
        ledgers = sorted(path.glob(LEDGER)) or sorted(path.glob(f"*/{LEDGER}"))
        if ledgers:
            return pd.concat([_read_ledger(p) for p in ledgers], ignore_index=True)
        records = [p for p in sorted(path.glob("**/record.json")) if not set(p.parts) & ARTIFACT_DIRS]
        if records:
            return pd.DataFrame([_row(json.loads(p.read_text()), p) for p in records])
        tables = sorted(p for p in path.iterdir() if p.suffix in TABLE_SUFFIXES)
        if len(tables) == 1:
            return _read_path(tables[0])
        raise ValueError(
            f"{path} holds no {LEDGER}, no **/record.json files and {len(tables)} table files "
            f"({[t.name for t in tables]}); point at one results file (CSV, Parquet or JSONL) or at a sweep's "
            "output directory"
        )
    if not path.exists():
        raise ValueError(f"results path {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".sqlite":
        return _read_ledger(path)
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".jsonl":
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            return pd.DataFrame([_row(json.loads(line), path) for line in lines])
        if suffix == ".json":
            data = json.loads(path.read_text())
            items = data if isinstance(data, list) else [data]
            return pd.DataFrame([_row(item, path) for item in items])
    except (ValueError, OSError) as err:  # json.JSONDecodeError and pandas parser errors are ValueErrors
        raise ValueError(f"cannot read results file {path}: {err}") from err
    raise ValueError(f"results file {path} has suffix {suffix!r}; use one of {TABLE_SUFFIXES} or a directory")


def _read_ledger(path: Path) -> pd.DataFrame:
    """A study's ledger (``sweeps.ledger``): every trial, also those that failed before writing a record."""
    from sweeps.ledger import Ledger

    ledger = Ledger(path)
    table = ledger.to_frame()
    for column in REQUIRED:
        if column not in table.columns:
            table[column] = np.nan
    study = json.loads(ledger.get_meta("study") or "{}").get("name", path.parent.name)
    table["study"] = table["study"].fillna(study) if "study" in table.columns else study
    return table


def _row(item: Any, origin: Path) -> dict[str, Any]:
    """A flat row from either a row dict or a full (nested) record dict."""
    if not isinstance(item, dict):
        raise ValueError(f"{origin}: expected a JSON object per run, got {type(item).__name__}")
    if any(key in item for key in _NESTED_RECORD_KEYS):
        try:
            return RunRecord.from_dict(item).to_row()
        except (TypeError, ValueError) as err:
            raise ValueError(f"{origin}: not a valid run record ({err})") from err
    return item


def validate_results(table: pd.DataFrame, origin: str = "the results table") -> pd.DataFrame:
    """Check and normalise a results table; adds ``usable`` (finished with a finite loss)."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{origin}: expected a pandas DataFrame of runs, got {type(table).__name__}")
    if table.empty:
        raise ValueError(f"{origin} is empty: there are no runs to analyse")
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(
            f"{origin} lacks column(s) {missing}; every row needs {list(REQUIRED)} "
            "(the columns of aunet.record.RunRecord.to_row)"
        )
    df = table.reset_index(drop=True).copy()
    for column in [c for c in df.columns if c in NUMERIC or c.startswith("eval_")]:
        df[column] = _numeric(df[column], column, origin)
    df["status"] = df["status"].astype(str).str.strip().str.lower()
    unknown = sorted(set(df["status"]) - set(STATUSES))
    if unknown:
        raise ValueError(f"{origin}: unknown status value(s) {unknown}; a run's status is one of {STATUSES}")
    df["arch"] = df["arch"].astype(str).str.strip()
    if (df["arch"].isin(["", "nan", "None"])).any():
        raise ValueError(f"{origin}: rows {_rows(df['arch'].isin(['', 'nan', 'None']))} have no architecture ('arch')")
    for column in POSITIVE:
        bad = ~(np.isfinite(df[column]) & (df[column] > 0))
        if bad.any():
            raise ValueError(
                f"{origin}: column {column!r} must be a positive finite number in every row; "
                f"rows {_rows(bad)} have {df.loc[bad, column].head(3).tolist()}"
            )
    df["budget"] = df["budget"].map(lambda c: float(f"{c:.6g}"))  # one group per target budget
    _check_units(df, origin)
    if "bpb" not in df.columns:
        df["bpb"] = np.nan
    fill = ~np.isfinite(df["bpb"]) & np.isfinite(df["loss"])
    df.loc[fill, "bpb"] = df.loc[fill, "loss"] / (math.log(2) * df.loc[fill, "bytes_per_unit"])
    for column in ("lr_min", "lr_max", "bsz_min", "bsz_max"):
        if column not in df.columns:
            df[column] = np.nan
    bad_loss = (df["status"] == "finished") & ~(np.isfinite(df["loss"]) & (df["loss"] > 0))
    if bad_loss.any():
        warn(f"{origin}: {int(bad_loss.sum())} finished run(s) (rows {_rows(bad_loss)}) have a non-finite or "
             "non-positive loss; they are shown as failed and kept out of every fit")
    df["usable"] = (df["status"] == "finished") & ~bad_loss
    return df


def _numeric(column: pd.Series, name: str, origin: str) -> pd.Series:
    values = pd.to_numeric(column.replace({None: np.nan}), errors="coerce").astype(float)
    text = values.isna() & column.notna() & ~column.astype(str).str.strip().str.lower().isin(["nan", "none", ""])
    if text.any():
        raise ValueError(
            f"{origin}: column {name!r} must be numeric; rows {_rows(text)} hold {column[text].head(3).tolist()}"
        )
    return values


def _check_units(df: pd.DataFrame, origin: str) -> None:
    """One unit per architecture, and batch sizes in bytes that agree with the units."""
    if "units" not in df.columns:
        df["units"] = "bytes"
    df["units"] = df["units"].fillna("bytes").astype(str).str.strip().str.lower()
    odd = sorted(set(df["units"]) - {"bytes", "tokens"})
    if odd:
        raise ValueError(f"{origin}: unknown units {odd}; a row's 'units' is 'bytes' or 'tokens'")
    for arch, group in df.groupby("arch"):
        counts = group["units"].value_counts()
        if len(counts) > 1:
            raise ValueError(
                f"{origin}: mixed units for arch {arch!r} ({dict(counts)}); one architecture's runs must all "
                "count batch size in the same unit, or the fitted law means nothing"
            )
    if "bytes_per_unit" not in df.columns:
        df["bytes_per_unit"] = np.nan
    df["bytes_per_unit"] = df["bytes_per_unit"].fillna(1.0)
    bad = ~(df["bytes_per_unit"] > 0) | ((df["units"] == "bytes") & (df["bytes_per_unit"] != 1.0))
    if bad.any():
        raise ValueError(
            f"{origin}: rows {_rows(bad)} have bytes_per_unit {df.loc[bad, 'bytes_per_unit'].head(3).tolist()}; "
            "it is 1 for byte models and the positive compression k for token models (mixed units?)"
        )
    expected = df["bsz"] * df["bytes_per_unit"]
    if "bsz_bytes" in df.columns:
        given = df["bsz_bytes"]
        bad = np.isfinite(given) & ~np.isclose(given, expected, rtol=1e-6)
        if bad.any():
            raise ValueError(
                f"{origin}: rows {_rows(bad)} have bsz_bytes != bsz x bytes_per_unit; the table mixes "
                "batch sizes in tokens and in bytes"
            )
    df["bsz_bytes"] = expected


def _rows(mask: pd.Series) -> str:
    index = list(np.flatnonzero(np.asarray(mask)))
    shown = ", ".join(str(i) for i in index[:8])
    return shown + (f" ... ({len(index)} in all)" if len(index) > 8 else "")
