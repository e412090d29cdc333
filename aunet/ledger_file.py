"""A study's ledger file (``ledger.sqlite``, which ``sweeps.ledger`` writes) read as results rows.

Below both the sweeps and the analysis: the analysis reads a ledger without importing the sweeping code,
read-only, so it never changes a ledger it reads (one from before a column was added reads with that
column's default); the sweeper turns its own rows into the same results rows with :func:`trial_row`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd

from aunet.record import RunRecord

#: The columns a ledger's first version lacked, as the SQL value its trials then take.
ADDED_DEFAULTS = {"phase": "'qmc'", "seed": "0"}
#: The trial columns a results row is made of (:func:`trial_row`'s arguments).
TRIAL_COLUMNS = ("family", "budget", "idx", "lr", "bsz", "status", "error", "record", "phase", "seed")


def read_ledger_file(path: Path) -> tuple[pd.DataFrame, str | None]:
    """Every trial of the ledger at ``path`` as a results row (its record's row where it wrote one, else
    what the ledger knows), ordered by family, budget and index; and the ledger's ``study`` entry (JSON),
    None when it was never bound to a study config."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    except sqlite3.Error as err:
        raise _unreadable(path, err) from err
    try:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        trials = _trials(db) if "trials" in tables else []
        found = db.execute("SELECT value FROM meta WHERE key='study'").fetchone() if "meta" in tables else None
    except sqlite3.DatabaseError as err:
        if type(err) is not sqlite3.DatabaseError:  # "not a database", "malformed"; not a locked or bad query
            raise
        raise _unreadable(path, err) from err
    finally:
        db.close()
    rows = []
    for values in trials:
        trial = dict(zip(TRIAL_COLUMNS, values))
        trial["record"] = json.loads(trial["record"]) if trial["record"] else None
        rows.append(trial_row(**trial))
    return pd.DataFrame(rows), found[0] if found else None


def _trials(db: sqlite3.Connection) -> list[tuple]:
    have = {column[1] for column in db.execute("PRAGMA table_info(trials)")}
    columns = [c if c in have else ADDED_DEFAULTS.get(c, c) for c in TRIAL_COLUMNS]
    return db.execute(f"SELECT {', '.join(columns)} FROM trials ORDER BY family, budget, idx").fetchall()


def trial_row(family: str, budget: float, idx: int, lr: float, bsz: int, status: str, error: str,
              record: dict[str, Any] | None, phase: str, seed: int) -> dict[str, Any]:
    """One trial as a results row: its record's row where it wrote one, else what the ledger knows.
    ``at_prediction`` flags the run at the hyperparameters the laws predicted (``analysis.holdout``)."""
    labels = {"phase": phase, "at_prediction": phase == "predicted"}
    if record is not None:
        return {**RunRecord.from_dict(record).to_row(), **labels}
    return {"status": status, "family": family, "budget": budget, "lr": lr, "bsz": bsz, "trial": idx,
            "error": error, "seed": seed, **labels}


def _unreadable(path: Path, err: Exception) -> ValueError:
    return ValueError(f"ledger {path} cannot be read ({err}); rebuild it from the trials' record files "
                      f"with: python -m sweeps rebuild {path.parent} (it keeps the damaged file)")
