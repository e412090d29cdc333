"""Import an external sweep: one row per run in a CSV or Parquet file -> a study folder the analysis reads.

An external table names its columns its own way, may give compute as a model size and a
number of training tokens instead of FLOPs, and may have no status. ``import_table``
maps it onto the results table (``aunet.record.RunRecord.to_row``), validates it (every
bad row is named before anything is written) and writes ``<out>/results.csv``, which
``python -m analysis fit|report|extrapolate|validate <out>`` then read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.load import (
    BUDGET_TOLERANCE,
    DEFAULT_STATUS_MAP,
    FAMILY,
    FAMILY_ALIASES,
    UNITS,
    _read_path,
    validate_results,
)
from aunet.record import STATUSES

#: Compute from a model size N and a number of training tokens D: C = FLOPS_PER_PARAM_TOKEN · N · D
#: (the usual 6·N·D: forward and backward pass of a dense model, attention left out).
FLOPS_PER_PARAM_TOKEN = 6.0
COMPUTE_COLUMNS = ("budget", "compute", "flops")  # the first present is the run's compute, in FLOPs


def import_table(source: str | Path, out: str | Path, *, columns: dict[str, str] | None = None,
                 units: str | None = None, bytes_per_unit: float | None = None, family: str | None = None,
                 study: str | None = None, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN,
                 status_map: dict[str, str] | None = None, budget_tolerance: float = BUDGET_TOLERANCE) -> Path:
    """Write ``out``/results.csv from the external table ``source``; returns its path.

    ``columns`` maps our column names to the table's (``{"loss": "final_loss"}``).
    ``units``, ``bytes_per_unit`` and ``family`` fill a column the table lacks (units are
    never guessed: without a column or ``units``, the import fails). Compute comes from
    ``budget``, ``compute`` or ``flops``, else from ``params`` and ``tokens`` as
    ``flops_per_param_token`` · N · D. Without ``status``, runs with a loss are finished
    and the others failed. ``status_map`` reads the table's own status names (``{"crashed":
    "failed"}``) beside ``analysis.load.DEFAULT_STATUS_MAP``; the statuses are written mapped.
    Budgets are grouped on reading (``analysis.load.nominal_budgets``, ``budget_tolerance``).
    """
    for old, new in (status_map or {}).items():
        if new not in STATUSES:
            raise ValueError(f"--status {old}={new}: {new!r} is not a status; use one of {STATUSES}")
    source = Path(source)
    if source.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"import reads a .csv or .parquet table; got {source}")
    table = _read_path(source)
    mapping = columns or {}
    absent = {ours: theirs for ours, theirs in mapping.items() if theirs not in table.columns}
    if absent:
        raise ValueError(f"{source}: --column names columns the table does not have: {absent}; it has "
                         f"{list(table.columns)}")
    table = table.rename(columns={theirs: ours for ours, theirs in mapping.items()})
    table = _fill(table, FAMILY, family, "--family", aliases=FAMILY_ALIASES)
    table = _fill(table, "units", units, "--units")
    if bytes_per_unit is not None:
        table = _fill(table, "bytes_per_unit", bytes_per_unit, "--bytes-per-unit")
    needed = [c for c in (FAMILY, "lr", "bsz", "loss", "units") if c not in table.columns
              and not (c == FAMILY and set(FAMILY_ALIASES) & set(table.columns))]
    if needed:
        flags = [flag for column, flag in ((FAMILY, "--family NAME"), ("units", "--units bytes|tokens"))
                 if column in needed]
        raise ValueError(f"{source} lacks column(s) {needed}: an import needs {FAMILY}, lr, bsz, loss and units per "
                         "run, and compute (budget, compute or flops; or params and tokens); status is derived when "
                         "absent. Map your names with --column OURS=THEIRS"
                         + (f", or set one value for the whole table with {' or '.join(flags)}" if flags else ""))
    table = _compute(table, source, flops_per_param_token)
    if "status" not in table.columns:
        loss = pd.to_numeric(table["loss"], errors="coerce") if "loss" in table.columns else np.nan
        table["status"] = np.where(np.isfinite(loss), "finished", "failed")
    statuses = {**DEFAULT_STATUS_MAP, **(status_map or {})}
    table["status"] = table["status"].astype(str).str.strip().str.lower().map(lambda v: statuses.get(v, v))
    if "study" not in table.columns:
        table["study"] = study or Path(out).name
    validate_results(table, origin=str(source), budget_tolerance=budget_tolerance)  # bad rows named before writing
    path = Path(out) / "results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def _fill(table: pd.DataFrame, column: str, value, flag: str, aliases: tuple[str, ...] = ()) -> pd.DataFrame:
    """A constant for a column the table lacks; an error if the table has it too (which one would win?)."""
    present = [c for c in (column, *aliases) if c in table.columns]
    if value is None:
        return table
    if present:
        raise ValueError(f"the table has a {present[0]!r} column and {flag} {value!r} was given too; drop one")
    if column == "units" and value not in UNITS:
        raise ValueError(f"--units {value!r} is not one of {UNITS}")
    return table.assign(**{column: value})


def _compute(table: pd.DataFrame, source: Path, per_param_token: float) -> pd.DataFrame:
    given = next((c for c in COMPUTE_COLUMNS if c in table.columns), None)
    if given is not None:
        return table.assign(budget=table[given], compute_from=f"the export's {given!r} column")
    if {"params", "tokens"} <= set(table.columns):
        if not per_param_token > 0:
            raise ValueError(f"--flops-per-param-token {per_param_token} must be positive (6 for 6·N·D)")
        n, d = (pd.to_numeric(table[c], errors="coerce") for c in ("params", "tokens"))
        return table.assign(budget=per_param_token * n * d, train_units=d,
                            compute_from=f"{per_param_token:g}·N·D from the export's params and tokens")
    raise ValueError(f"{source} gives no compute: add a column {' or '.join(COMPUTE_COLUMNS)} in FLOPs, or 'params' "
                     "and 'tokens' (compute = 6·N·D), or map yours with --column budget=<name>")
