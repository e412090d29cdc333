"""Reading results from files: a study's output folder (its ledger, else its record files, else its
one table), a ledger, a CSV, Parquet or JSONL table of rows or records, or one record JSON. MLflow
runs are read by ``analysis.mlflow_io``; validation is ``analysis.load``'s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.columns import REQUIRED
from aunet.ledger_file import read_ledger_file
from aunet.record import RunRecord

TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".json")
LEDGER = "ledger.sqlite"  # a study's ledger (sweeps.ledger), in outputs/sweeps/<study>/
ARTIFACT_DIRS = {"mlartifacts", "mlruns"}  # MLflow keeps copies of record.json there
_NESTED_RECORD_KEYS = ("downstream", "metrics", "config", "lr_box", "bsz_box", "contraction")


def read_path(path: Path) -> pd.DataFrame:
    """A sweep directory (its ledger, else its record files, else its one table) or a results file."""
    if path.is_dir():
        ledgers = sorted(path.glob(LEDGER)) or sorted(path.glob(f"*/{LEDGER}"))
        if ledgers:
            return pd.concat([read_ledger(p) for p in ledgers], ignore_index=True)
        records = [p for p in sorted(path.glob("**/record.json")) if not set(p.parts) & ARTIFACT_DIRS]
        if records:
            return pd.DataFrame([_row(json.loads(p.read_text()), p) for p in records])
        tables = sorted(p for p in path.iterdir() if p.suffix in TABLE_SUFFIXES)
        if len(tables) == 1:
            return read_path(tables[0])
        raise ValueError(
            f"{path} holds no {LEDGER}, no **/record.json files and {len(tables)} table files "
            f"({[t.name for t in tables]}); point at one results file (CSV, Parquet or JSONL) or at a sweep's "
            "output directory"
        )
    if not path.exists():
        raise ValueError(f"results path {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".sqlite":
        return read_ledger(path)
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


def read_ledger(path: Path) -> pd.DataFrame:
    """A study's ledger: every trial, also those that failed before writing a record, named by its study
    (else by the ledger's folder)."""
    table, meta = read_ledger_file(path)
    for column in REQUIRED:
        if column not in table.columns:
            table[column] = np.nan
    study = json.loads(meta or "{}").get("name", path.parent.name)
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
