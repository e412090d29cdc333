"""Loading and validating the results table (one row per run, as ``RunRecord.to_row``).

Every entry point of the analysis goes through :func:`load_results`, so every bad
input (empty table, missing columns, text in numeric columns, mixed units, unknown
statuses, non-positive hyperparameters) fails here once, with a message that names
the rows and the fix, instead of deep inside a fit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.columns import (
    ALLOCATION_REQUIRED,
    CANONICAL_ORDER,
    FAMILY,
    FAMILY_ALIASES,
    FLOPS_PER_PARAM_TOKEN,
    GROUP_KEYS,
    HYPERPARAMETERS,
    NUMERIC,
    POSITIVE,
    REQUIRED,
    RUN_DEFINING,
    RUN_IDENTITY,
    UNITS,
)
from analysis.mlflow_io import read_mlflow
from analysis.notices import AnalysisWarning, DataWarning, warn  # noqa: F401  (AnalysisWarning: re-exported)
from analysis.readers import read_ledger as _read_ledger  # noqa: F401 (its import path in tests/test_status_budgets.py)
from analysis.readers import read_path
from analysis.status import NOT_ENDED, not_ended, rows_of, with_status
from aunet.record import BUDGET_CONVENTIONS, COMPUTE_COLUMN, STATUSES, check_convention

#: The default rule for runs stored as finished that diverged: loss above this multiple of the best loss
#: of their group (the best runs of a real sweep sit near 2.5 nats, diverged ones near 7).
DIVERGED_ABOVE = 1.5
#: Runs of one family whose compute agrees within this relative tolerance are one budget: an export that
#: counts the tokens a run saw (steps x batch x sequence) gives each batch size a slightly different
#: compute for one nominal budget. Studies space their budgets far wider (x1.2 or more).
BUDGET_TOLERANCE = 0.01
#: What every fit that needs LR and BSZ says of a table without them.
ALLOCATION_ONLY = "no lr/bsz: this table serves allocation fits only"


def load_results(source: Any, *, tracking_uri: str | None = None, study: str | None = None,
                 diverged_above: float | None = DIVERGED_ABOVE, budget_convention: str | None = None,
                 budget_tolerance: float = BUDGET_TOLERANCE) -> pd.DataFrame:
    """The validated results table from any of the forms a sweep leaves behind.

    ``source`` is a DataFrame of rows; a CSV, Parquet or JSONL table of rows (or of
    nested record dicts); one record JSON; a study's ``ledger.sqlite``; a directory: a
    study's output (its ledger), a folder of studies (every ``*/ledger.sqlite``), or any
    folder of ``**/record.json`` files (MLflow's artifact copies skipped) or with one
    table file; or ``"mlflow:<experiment>"`` with ``tracking_uri``. ``study`` keeps only
    that study's rows. ``diverged_above``, ``budget_convention``: see :func:`validate_results`.
    """
    if isinstance(source, pd.DataFrame):
        table = source.copy()
        origin = "the DataFrame"
    elif isinstance(source, str) and source.startswith("mlflow:"):

        experiment = source.removeprefix("mlflow:")
        table = read_mlflow(experiment, tracking_uri=tracking_uri)
        origin = f"MLflow experiment {experiment!r}"
    else:
        path = Path(source)
        table = read_path(path)
        origin = str(path)
    if study is not None:
        if "study" not in table.columns or not (table["study"] == study).any():
            found = sorted(set(table["study"].dropna())) if "study" in table.columns else []
            raise ValueError(f"no runs of study {study!r} in {origin}; studies found: {found}")
        table = table[table["study"] == study]
    return validate_results(table, origin=origin, diverged_above=diverged_above, budget_convention=budget_convention,
                            budget_tolerance=budget_tolerance)


def validate_results(table: pd.DataFrame, origin: str = "the results table", *,
                     diverged_above: float | None = DIVERGED_ABOVE,
                     budget_convention: str | None = None, budget_tolerance: float = BUDGET_TOLERANCE,
                     status_map: dict[str, str] | None = None) -> pd.DataFrame:
    """Check and normalise a results table.

    Each row's ``budget`` counts compute in its ``convention`` (``aunet.record.BUDGET_CONVENTIONS``;
    a table without the column is "spent"). A family whose rows mix conventions is refused unless
    ``budget_convention`` names the one to fit in: every budget is then re-expressed in it, through
    the row's own compute in both (``flops`` and ``paper_compute``).

    Adds ``group`` (which runs of a family and budget belong together), ``usable``
    (finished with a finite loss, not set aside) and ``set_aside`` (finished runs whose
    loss exceeds ``diverged_above`` times their group's best: diverged runs a sweep
    stored as finished; their status stays as recorded, they are counted in a warning,
    shown as diverged and never fitted; None keeps them).

    Budgets are nominal: runs of a family whose compute agrees within ``budget_tolerance``
    (relative) are one budget (:func:`nominal_budgets`; a ``nominal_budget`` column overrides
    it), and each run's own compute stays in ``compute``. Statuses are read through
    ``analysis.status.DEFAULT_STATUS_MAP`` and ``status_map`` from the ``status`` column or an alias
    (:func:`with_status`); runs that have not ended (``NOT_ENDED``) are left out, counted in a
    warning. A table without LR and BSZ but with each run's ``params`` (and ``train_units`` or ``tokens``, else
    its compute) loads for the allocation fits alone (:func:`allocation_only`): every other fit refuses it in one
    line (:func:`results_table`). Row numbers in errors are those of ``table``.
    """
    _check_options(table, origin, diverged_above, budget_tolerance)
    df = _ended_runs(_columns(table, origin, status_map), origin)
    _check_families_and_positives(df, origin)
    _budgets_in_one_convention(df, budget_convention, origin)
    nominal_budgets(df, budget_tolerance, origin)
    _check_units(df, origin)
    if "bpb" not in df.columns:
        df["bpb"] = np.nan
    fill = ~np.isfinite(df["bpb"]) & np.isfinite(df["loss"])  # NaN where bytes per unit is unknown
    df.loc[fill, "bpb"] = df.loc[fill, "loss"] / (math.log(2) * df.loc[fill, "bytes_per_unit"])
    for column in ("lr_min", "lr_max", "bsz_min", "bsz_max"):
        if column not in df.columns:
            df[column] = np.nan
    df["group"] = _groups(df)
    _check_duplicates(df, origin)
    _mark_usable(df, origin, diverged_above)
    return df.reset_index(drop=True)


def _check_options(table: pd.DataFrame, origin: str, diverged_above: float | None, budget_tolerance: float) -> None:
    """Refuse bad arguments and an empty table before reading any row."""
    if not (isinstance(budget_tolerance, (int, float)) and 0 <= budget_tolerance < 1):
        raise ValueError(f"budget tolerance {budget_tolerance!r} must be a fraction in [0, 1), e.g. 0.01 for 1% "
                         "(--budget-tolerance)")
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{origin}: expected a pandas DataFrame of runs, got {type(table).__name__}")
    if table.empty:
        raise ValueError(f"{origin} is empty: there are no runs to analyse")
    if diverged_above is not None and not diverged_above > 1:
        raise ValueError(f"diverged_above {diverged_above} must exceed 1 (a multiple of the best loss, e.g. 1.5), "
                         "or be None to keep every finished run")


def _columns(table: pd.DataFrame, origin: str, status_map: dict[str, str] | None) -> pd.DataFrame:
    """A copy of ``table`` with our family and status columns, every required column, and numbers as numbers."""
    df = table.reset_index(drop=True).rename(columns={a: FAMILY for a in FAMILY_ALIASES if a in table.columns}
                                             if FAMILY not in table.columns else {})
    df = with_status(df, origin, status_map)
    sizes_only = allocation_only(df) and "params" in df.columns
    required = ALLOCATION_REQUIRED if sizes_only else REQUIRED
    missing = [c for c in required if c not in df.columns]
    if missing:
        fix = "; an import sets them for the whole table with --units bytes|tokens" if "units" in missing else ""
        if allocation_only(df) and not sizes_only:
            fix += ("; a table for the allocation fits alone needs params and train_units (or tokens) instead of "
                    "lr and bsz")
        raise ValueError(
            f"{origin} lacks column(s) {missing}; every row needs {list(required)} "
            f"(the columns of aunet.record.RunRecord.to_row; 'units' is bytes or tokens, never guessed{fix})"
        )
    df = df.loc[:, ~df.columns.duplicated()].copy()
    for column in [c for c in df.columns if c in NUMERIC or c.startswith("eval_") or (sizes_only and c == "tokens")]:
        df[column] = _numeric(df[column], column, origin)
    return _with_train_units(df) if sizes_only else df


def allocation_only(table: pd.DataFrame) -> bool:
    """A table without LR and BSZ columns: its runs can place the compute-optimal model size (the allocation
    fits), never a hyperparameter law."""
    return not any(c in table.columns for c in HYPERPARAMETERS)


def _with_train_units(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's data: ``train_units``, else an export's ``tokens``, else its compute as C / (6·N) (the import's
    convention; the allocation fits measure C / (N·D) on the runs, so the constant cancels in N_opt)."""
    if "train_units" in df.columns:
        return df
    if "tokens" in df.columns:
        return df.assign(train_units=df["tokens"])
    return df.assign(train_units=df["budget"] / (FLOPS_PER_PARAM_TOKEN * df["params"]))


def _ended_runs(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """The runs that have ended, after refusing unknown statuses; those still waiting are counted in a warning."""
    unknown = sorted(set(df["status"]) - set(STATUSES))
    if unknown:
        raise ValueError(f"{origin}: unknown status value(s) {unknown}; a run's status is one of {STATUSES}: map "
                         f"yours with --status {unknown[0]}=failed (or finished, diverged, ...)")
    waiting = not_ended(df)
    if waiting:
        warn(f"{origin}: {waiting}; they are left out of every budget and fit until they end", DataWarning)
        df = df[~df["status"].isin(NOT_ENDED)].copy()
        if df.empty:
            raise ValueError(f"{origin}: no run has ended yet ({waiting}): there are no results to analyse")
    return df


def _check_families_and_positives(df: pd.DataFrame, origin: str) -> None:
    """Every run names its family, and its budget, LR and BSZ (where the table has them) are positive numbers."""
    df[FAMILY] = df[FAMILY].astype(str).str.strip()
    if (df[FAMILY].isin(["", "nan", "None"])).any():
        raise ValueError(f"{origin}: rows {rows_of(df[FAMILY].isin(['', 'nan', 'None']))} have no model family "
                         f"({FAMILY!r})")
    for column in [c for c in POSITIVE if c in df.columns]:
        bad = ~(np.isfinite(df[column]) & (df[column] > 0))
        if bad.any():
            raise ValueError(
                f"{origin}: column {column!r} must be a positive finite number in every row; "
                f"rows {rows_of(bad)} have {df.loc[bad, column].head(3).tolist()}"
            )


def _mark_usable(df: pd.DataFrame, origin: str, diverged_above: float | None) -> None:
    """``usable``: finished with a positive finite loss and not set aside as diverged (``set_aside``)."""
    bad_loss = (df["status"] == "finished") & ~(np.isfinite(df["loss"]) & (df["loss"] > 0))
    if bad_loss.any():
        warn(f"{origin}: {int(bad_loss.sum())} finished run(s) (rows {rows_of(bad_loss)}) have a non-finite or "
             "non-positive loss; they are shown as failed and kept out of every fit", DataWarning)
    df["usable"] = (df["status"] == "finished") & ~bad_loss
    df["set_aside"] = False
    if diverged_above is not None:
        _set_aside_diverged(df, diverged_above, origin)


def canonical(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` in ``CANONICAL_ORDER`` (index kept): what every bootstrap resamples, so that the same runs
    draw the same replicates whichever source and row order they came from."""
    order = [c for c in CANONICAL_ORDER if c in runs.columns]
    return runs.sort_values(order, kind="mergesort", na_position="last")


def results_table(results: Any, *, allocation: bool = False) -> pd.DataFrame:
    """A validated table as is; anything else through :func:`load_results`. A table without LR and BSZ
    (:func:`allocation_only`) is refused in one line unless the caller is an ``allocation`` fit: every other
    fit reads the hyperparameters."""
    df = results if isinstance(results, pd.DataFrame) and "usable" in results.columns else load_results(results)
    if allocation_only(df) and not allocation:
        raise ValueError(ALLOCATION_ONLY)
    return df


def family_runs(results: Any, family: str, *, allocation: bool = False) -> pd.DataFrame:
    """The runs of one family (of :func:`results_table`, ``allocation`` as there), or one line naming the
    families there are."""
    df = results_table(results, allocation=allocation)
    runs = df[df[FAMILY] == family]
    if runs.empty:
        raise ValueError(f"no runs of {FAMILY} {family!r}; the table holds {sorted(df[FAMILY].unique())}")
    return runs


def describe_budget(family: str, budget: float, group: str) -> str:
    """How a message names one budget's runs (and their group, where the budget has several)."""
    return f"{family} budget {budget:.3g}" + (f" ({group})" if group else "")


def nominal_budgets(df: pd.DataFrame, tolerance: float, origin: str) -> None:
    """Each run's budget as the nominal budget of its group: per family, sorted compute values within
    ``tolerance`` of the group's smallest form one group, named by the shortest round number within
    ``tolerance`` of all of them (a lone value keeps 6 significant digits). The run's own compute is
    kept in ``compute``. A ``nominal_budget`` column, where the export has one, decides instead."""
    if "compute" not in df.columns:
        df["compute"] = df["budget"]
    if "nominal_budget" in df.columns:
        nominal = _numeric(df["nominal_budget"], "nominal_budget", origin)
        gaps = ~(np.isfinite(nominal) & (nominal > 0))
        if gaps.any():
            raise ValueError(f"{origin}: column 'nominal_budget' has gaps or non-positive values in rows "
                             f"{rows_of(gaps)}; give every run its nominal budget, or drop the column")
        df["budget"] = nominal.map(lambda c: float(f"{c:.6g}"))
        return
    budget = df["budget"].to_numpy(float)
    out = np.array([float(f"{c:.6g}") for c in budget])
    for _, index in df.groupby(FAMILY).indices.items():
        values = np.unique(budget[index])
        start = 0
        for end in range(1, len(values) + 1):
            if end < len(values) and values[end] <= values[start] * (1 + tolerance):
                continue
            members = values[start:end]
            if len(members) > 1:
                rows = index[np.isin(budget[index], members)]
                out[rows] = _round_within(members, tolerance)
            start = end
    df["budget"] = out
    _warn_if_singletons(df, tolerance, origin)


def _round_within(members: np.ndarray, tolerance: float) -> float:
    centre = float(np.exp(np.log(members).mean()))
    for digits in range(1, 7):
        value = float(f"{centre:.{digits}g}")
        if np.all(np.abs(members / value - 1) <= tolerance):
            return value
    return float(f"{centre:.6g}")


def _warn_if_singletons(df: pd.DataFrame, tolerance: float, origin: str) -> None:
    for family, runs in df.groupby(FAMILY):
        per_budget = runs.groupby("budget").size()
        if len(per_budget) >= 10 and (per_budget == 1).mean() > 0.5:
            warn(f"{origin}: {int((per_budget == 1).sum())} of {family}'s {len(per_budget)} budgets hold a single "
                 f"run: its runs' compute probably differs run to run by more than {tolerance:.2%} (tokens counted "
                 "as steps x batch x sequence); give the export a nominal_budget column, or raise --budget-tolerance", DataWarning)


def budget_groups(df: pd.DataFrame) -> pd.DataFrame:
    """What the grouping did, per family and budget: runs, and the spread of their own compute it absorbed."""
    groups = df.groupby([FAMILY, "budget"])["compute"]
    return pd.DataFrame({"runs": groups.size(), "spread": groups.max() / groups.min() - 1}).reset_index()


def _budgets_in_one_convention(df: pd.DataFrame, convention: str | None, origin: str) -> None:
    """Check each row's budget convention; refuse a family that mixes them, or convert to ``convention``."""
    df["convention"] = df["convention"].fillna("spent").astype(str).str.strip() if "convention" in df else "spent"
    for value in df["convention"].unique():
        check_convention(value, f"{origin}: convention")
    if convention is None:
        counts = df.groupby(FAMILY)["convention"].value_counts().unstack(fill_value=0)
        mixed = counts[(counts > 0).sum(axis=1) > 1]
        if len(mixed):
            family = mixed.index[0]
            raise ValueError(f"{origin}: family {family!r} mixes budget conventions "
                             f"({', '.join(f'{c}: {n} runs' for c, n in mixed.loc[family].items())}), whose budgets "
                             "are not comparable; say which to fit in: budget_convention='spent' or 'paper' "
                             "(--budget-convention)")
        return
    check_convention(convention)
    target = COMPUTE_COLUMN[convention]
    for own in set(df["convention"]) - {convention}:
        rows = df["convention"] == own
        source = COMPUTE_COLUMN[own]
        if target not in df or source not in df:
            raise ValueError(f"{origin}: rows in convention {own!r} need columns {source!r} and {target!r} to "
                             f"express their budgets as {convention!r}; the table lacks them")
        factor = (df[target] / df[source])[rows]
        # a run that failed before recording its compute takes the factor of its family and budget
        cell = [df.loc[rows, FAMILY], df.loc[rows, "budget"]]
        factor = factor.where(np.isfinite(factor), factor.groupby(cell).transform("median"))
        missing = rows & ~np.isfinite(factor).reindex(df.index, fill_value=True)
        if missing.any():
            raise ValueError(f"{origin}: rows {rows_of(missing)} (convention {own!r}) have no {source!r} and "
                             f"{target!r}, and no run of their family and budget has, to express their budget as "
                             f"{convention!r}")
        df.loc[rows, "budget"] = df.loc[rows, "budget"] * factor
        df.loc[rows, "convention"] = convention


def compute_label(results: pd.DataFrame) -> str:
    """The compute axis label of ``results``: which convention its budgets count."""
    if "compute_from" in results and results["compute_from"].notna().any():  # an import says how it counted
        return "compute C (FLOPs; " + "; ".join(dict.fromkeys(results["compute_from"].dropna().astype(str))) + ")"
    conventions = dict.fromkeys(results["convention"]) if "convention" in results else ["spent"]
    return "compute C (FLOPs; " + "; ".join(BUDGET_CONVENTIONS[c] for c in conventions) + ")"


def _groups(df: pd.DataFrame) -> pd.Series:
    """Each run's group within its family and budget: the explicit ``group`` column, else a label of the
    run-defining columns (ratio, model, params) that take several values at one family and budget."""
    if "group" in df.columns:
        return df["group"].fillna("").astype(str).str.strip()
    label = pd.Series("", index=df.index)
    keys = [df[FAMILY], df["budget"]]
    for column in [c for c in RUN_DEFINING if c in df.columns]:
        values = df[column]
        if pd.api.types.is_float_dtype(values):
            values = values.map(lambda v: float(f"{v:.6g}") if np.isfinite(v) else np.nan)
        # a row missing the value (a trial that failed before its record) joins its budget's only value
        single = values.groupby(keys).transform("nunique") <= 1
        values = values.where(values.notna() | ~single, values.groupby(keys).transform("first"))
        several = values.groupby(keys).transform("nunique") > 1
        if several.any():
            text = column + "=" + values.map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
            label = label.where(~several, (label + " " + text).str.strip())
    return label


def _check_duplicates(df: pd.DataFrame, origin: str) -> None:
    identity = [c for c in RUN_IDENTITY if c in df.columns]
    twice = df.duplicated(subset=identity, keep=False)
    if twice.any():
        raise ValueError(
            f"{origin}: rows {rows_of(twice)} repeat a run (equal {identity}); drop the repeats, or give repeats "
            "of one configuration distinct 'seed' values"
        )


def _set_aside_diverged(df: pd.DataFrame, factor: float, origin: str) -> None:
    """Finished runs far above their group's best loss diverged: mark them, count them, keep them out."""
    usable = df[df["usable"]]
    best = usable.groupby(GROUP_KEYS)["loss"].transform("min")
    far = usable.index[usable["loss"] > factor * best]
    if not len(far):
        return
    df.loc[far, ["usable", "set_aside"]] = [False, True]
    counts = df.loc[far].groupby([FAMILY, "budget"]).size()
    listing = ", ".join(f"{f} {b:.3g}: {n}" for (f, b), n in counts.items())
    warn(f"{origin}: {len(far)} finished run(s) have a loss above {factor:g}x the best of their budget "
         f"({listing}); they are set aside as diverged and not fitted (diverged_above / --diverged-above)", DataWarning)


def _numeric(column: pd.Series, name: str, origin: str) -> pd.Series:
    values = pd.to_numeric(column.replace({None: np.nan}), errors="coerce").astype(float)
    text = values.isna() & column.notna() & ~column.astype(str).str.strip().str.lower().isin(["nan", "none", ""])
    if text.any():
        raise ValueError(
            f"{origin}: column {name!r} must be numeric; rows {rows_of(text)} hold {column[text].head(3).tolist()}"
        )
    return values


def _check_units(df: pd.DataFrame, origin: str) -> None:
    """One unit per family, bytes per unit known or honestly missing, and batch sizes in bytes that agree.

    Token models without ``bytes_per_unit`` keep it NaN: their losses are per token, never
    relabelled as bits per byte.
    """
    units = df["units"].astype(str).str.strip().str.lower()
    missing = df["units"].isna() | units.isin(["", "nan", "none"])
    known = units[~missing]
    only = known.groupby(df[FAMILY][~missing]).agg(lambda u: u.iloc[0] if u.nunique() == 1 else None)
    units = units.where(~missing, df[FAMILY].map(only))  # a trial that failed before its record
    unfilled = units.isna() | (missing & (df["status"] == "finished"))
    if unfilled.any():
        raise ValueError(f"{origin}: rows {rows_of(unfilled)} have no 'units'; give each run's units "
                         f"({' or '.join(UNITS)}): the analysis never guesses them")
    df["units"] = units
    odd = sorted(set(df["units"]) - set(UNITS))
    if odd:
        raise ValueError(f"{origin}: unknown units {odd} (rows {rows_of(~df['units'].isin(UNITS))}); a row's "
                         f"'units' is one of {UNITS}")
    for family, group in df.groupby(FAMILY):
        counts = group["units"].value_counts()
        if len(counts) > 1:
            raise ValueError(
                f"{origin}: mixed units for {FAMILY} {family!r} ({dict(counts)}); one family's runs must all "
                "count batch size in the same unit, or the fitted law means nothing"
            )
    if "bytes_per_unit" not in df.columns:
        df["bytes_per_unit"] = np.nan
    byte_rows = df["units"] == "bytes"
    df.loc[byte_rows, "bytes_per_unit"] = df.loc[byte_rows, "bytes_per_unit"].fillna(1.0)
    bad = (np.isfinite(df["bytes_per_unit"]) & ~(df["bytes_per_unit"] > 0)) | (
        (df["units"] == "bytes") & (df["bytes_per_unit"] != 1.0))
    if bad.any():
        raise ValueError(
            f"{origin}: rows {rows_of(bad)} have bytes_per_unit {df.loc[bad, 'bytes_per_unit'].head(3).tolist()}; "
            "it is 1 for byte models and the positive compression k for token models (mixed units?)"
        )
    if "bsz" not in df.columns:  # a table for the allocation fits alone
        return
    expected = df["bsz"] * df["bytes_per_unit"]
    if "bsz_bytes" in df.columns:
        given = df["bsz_bytes"]
        bad = np.isfinite(given) & np.isfinite(expected) & ~np.isclose(given, expected, rtol=1e-6)
        if bad.any():
            raise ValueError(
                f"{origin}: rows {rows_of(bad)} have bsz_bytes != bsz x bytes_per_unit; the table mixes "
                "batch sizes in tokens and in bytes"
            )
    df["bsz_bytes"] = expected
