"""Import an external sweep: one row per run in a CSV or Parquet file -> a study folder the analysis reads.

An external table names its columns its own way, may give compute as a model size and a
number of training tokens instead of FLOPs, may count its batch in sequences, and may have
no status (or W&B's ``state``). ``import_table`` maps it onto the results table
(``aunet.record.RunRecord.to_row``), validates it (every bad row is named before anything
is written) and writes ``<out>/results.csv``, which ``python -m analysis
fit|report|extrapolate|validate <out>`` then read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.columns import FLOPS_PER_PARAM_TOKEN
from analysis.load import (
    BUDGET_TOLERANCE,
    FAMILY,
    FAMILY_ALIASES,
    HYPERPARAMETERS,
    UNITS,
    _numeric,
    allocation_only,
    validate_results,
)
from analysis.readers import read_path
from analysis.status import rows_of, with_status
from aunet.record import STATUSES

COMPUTE_COLUMNS = ("budget", "compute", "flops")  # the first present is the run's compute, in FLOPs
#: What an export's batch size counts: input units (bytes or tokens, ours) or sequences of ``seq_len`` units.
BSZ_UNITS = ("units", "sequences")
#: Batch columns converted with the batch size (the search box's ends).
BSZ_COLUMNS = ("bsz", "bsz_min", "bsz_max")


def import_table(source: str | Path, out: str | Path, *, columns: dict[str, str] | None = None,
                 units: str | None = None, bytes_per_unit: float | None = None, family: str | None = None,
                 study: str | None = None, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN,
                 status_map: dict[str, str] | None = None, budget_tolerance: float = BUDGET_TOLERANCE,
                 bsz_unit: str = "units", seq_len: float | None = None) -> Path:
    """Write ``out``/results.csv from the external table ``source``; returns its path.

    ``columns`` maps our column names to the table's (``{"loss": "final_loss"}``).
    ``units``, ``bytes_per_unit`` and ``family`` fill a column the table lacks (units are
    never guessed: without a column or ``units``, the import fails). Compute comes from
    ``budget``, ``compute`` or ``flops``, else from ``params`` and ``tokens`` as
    ``flops_per_param_token`` · N · D. The status comes from ``status`` or W&B's ``state``
    (``analysis.status.with_status``); without either, runs with a loss are finished and the
    others failed. ``status_map`` reads the table's own status names (``{"crashed":
    "failed"}``) beside ``analysis.status.DEFAULT_STATUS_MAP``; the statuses are written mapped,
    runs that have not ended included (every analysis leaves them out). ``bsz_unit="sequences"``:
    the batch counts sequences of ``seq_len`` units (or a ``seq_len`` column), written in units.
    Budgets are grouped on reading (``analysis.load.nominal_budgets``, ``budget_tolerance``).
    """
    _check_options(bsz_unit, seq_len, status_map)
    source = Path(source)
    if source.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"import reads a .csv or .parquet table; got {source}")
    table = read_path(source)
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
    hyper = () if allocation_only(table) and "params" in table.columns else HYPERPARAMETERS
    needed = [c for c in (FAMILY, *hyper, "loss", "units") if c not in table.columns
              and not (c == FAMILY and set(FAMILY_ALIASES) & set(table.columns))]
    if needed:
        flags = [flag for column, flag in ((FAMILY, "--family NAME"), ("units", "--units bytes|tokens"))
                 if column in needed]
        raise ValueError(f"{source} lacks column(s) {needed}: an import needs {FAMILY}, lr, bsz, loss and units per "
                         "run, and compute (budget, compute or flops; or params and tokens); status is derived when "
                         "absent. Map your names with --column OURS=THEIRS"
                         + (f", or set one value for the whole table with {' or '.join(flags)}" if flags else ""))
    table = _compute(table, source, flops_per_param_token)
    if bsz_unit == "sequences":
        table = _sequences_to_units(_fill(table, "seq_len", seq_len, "--seq-len"), source)
    table = with_status(table, str(source), status_map, derive=True)
    if "study" not in table.columns:
        table["study"] = study or Path(out).name
    validate_results(table, origin=str(source), budget_tolerance=budget_tolerance)  # bad rows named before writing
    path = Path(out) / "results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def _check_options(bsz_unit: str, seq_len: float | None, status_map: dict[str, str] | None) -> None:
    """Refuse options that contradict each other or name no status, before the table is read."""
    if bsz_unit not in BSZ_UNITS:
        raise ValueError(f"--bsz-unit {bsz_unit!r} is not one of {BSZ_UNITS}")
    if seq_len is not None and bsz_unit != "sequences":
        raise ValueError(f"--seq-len {seq_len:g} converts a batch counted in sequences: give --bsz-unit sequences "
                         "too (without it the batch is read in input units)")
    for old, new in (status_map or {}).items():
        if new not in STATUSES:
            raise ValueError(f"--status {old}={new}: {new!r} is not a status; use one of {STATUSES}")


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


def _sequences_to_units(table: pd.DataFrame, source: Path) -> pd.DataFrame:
    """Batch sizes counted in sequences, in input units: times each run's ``seq_len``."""
    if "seq_len" not in table.columns:
        raise ValueError(f"--bsz-unit sequences needs the sequence length in input units: give --seq-len N, or a "
                         f"seq_len column (map yours with --column seq_len=<name>); {source} has neither")
    seq_len = _numeric(table["seq_len"], "seq_len", str(source))
    bad = ~(np.isfinite(seq_len) & (seq_len > 0))
    if bad.any():
        raise ValueError(f"{source}: seq_len must be a positive number of input units per sequence in every row; "
                         f"rows {rows_of(bad)} have {table.loc[bad, 'seq_len'].head(3).tolist()}")
    converted = {c: _numeric(table[c], c, str(source)) * seq_len for c in BSZ_COLUMNS if c in table.columns}
    return table.assign(seq_len=seq_len, **converted)


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
