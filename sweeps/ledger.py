"""The durable ledger of a study: one SQLite row per trial.

Why SQLite rows and not an Optuna study: a trial here is a whole training run with
a rich record (status, error, attempts, the full result), and the ledger must stay
readable by pandas (``pd.read_sql``) and by a person with ``sqlite3``; updates are
transactions, so a crash between two trials never corrupts it. Only the sweeping
process writes it (jobs write their own record files atomically), so it also works
when jobs run on nodes that share no SQLite-safe file system with it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aunet.ledger_file import trial_row
from sweeps.study import StudyConfig, Trial

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    budget REAL NOT NULL,
    idx INTEGER NOT NULL,
    lr REAL NOT NULL,
    bsz INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    loss REAL,
    bpb REAL,
    error TEXT NOT NULL DEFAULT '',
    record TEXT,
    output_dir TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    job TEXT NOT NULL DEFAULT '',
    phase TEXT NOT NULL DEFAULT 'qmc',
    box TEXT NOT NULL DEFAULT '',
    seed INTEGER NOT NULL DEFAULT 0
);
"""
#: Columns added since the first ledgers: (name, definition), added to older files when opened.
ADDED_COLUMNS = (("job", "TEXT NOT NULL DEFAULT ''"), ("phase", "TEXT NOT NULL DEFAULT 'qmc'"), ("box", "TEXT NOT NULL DEFAULT ''"),
                 ("seed", "INTEGER NOT NULL DEFAULT 0"))


@dataclass
class Row:
    key: str
    family: str
    budget: float
    index: int
    lr: float
    bsz: int
    status: str
    attempts: int
    loss: float | None
    bpb: float | None
    error: str
    record: dict[str, Any] | None
    output_dir: str
    job: str = ""  # the job that runs or last ran the trial (sweeps.backends names it)
    phase: str = "qmc"
    box: tuple[float, ...] = ()
    seed: int = 0

    @property
    def trial(self) -> Trial:
        return Trial(self.family, self.budget, self.index, self.lr, self.bsz, self.phase, self.box, self.seed)


class LedgerError(ValueError):
    """The ledger file cannot be read as a ledger; the message names it and the fix."""


class Ledger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)
            have = {column[1] for column in db.execute("PRAGMA table_info(trials)")}
            for name, definition in ADDED_COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE trials ADD COLUMN {name} {definition}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=60)
        except sqlite3.Error as err:
            raise self._unreadable(err) from err
        try:
            with db:  # one transaction
                yield db
        except sqlite3.DatabaseError as err:
            if type(err) is not sqlite3.DatabaseError:  # "not a database", "malformed"; not a locked or bad query
                raise
            raise self._unreadable(err) from err
        finally:
            db.close()

    def _unreadable(self, err: Exception) -> LedgerError:
        return LedgerError(f"ledger {self.path} cannot be read ({err}); rebuild it from the trials' record files "
                           f"with: python -m sweeps rebuild {self.path.parent} (it keeps the damaged file)")

    def bind(self, study: StudyConfig) -> None:
        """Tie the ledger to a study config; refuse one written by a different config."""
        fingerprint = study.fingerprint()
        with self._connect() as db:
            found = db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
            if found is None:
                db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
                db.execute("INSERT INTO meta VALUES ('study', ?)", (json.dumps(study.__dict__, default=str),))
            elif found[0] != fingerprint:
                old = db.execute("SELECT value FROM meta WHERE key='study'").fetchone()
                raise ValueError(
                    f"the ledger {self.path} belongs to a different config of study {study.name!r} "
                    f"(was {old[0] if old else '?'}); give the study a new name, or remove {self.path.parent} "
                    "to start over"
                )

    def get_meta(self, key: str) -> str | None:
        with self._connect() as db:
            found = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return found[0] if found else None

    def set_meta(self, key: str, value: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def add(self, trials: list[Trial]) -> None:
        """Register trials as pending; existing ones are left untouched (so reruns never duplicate)."""
        now = time.time()
        with self._connect() as db:
            db.executemany(
                "INSERT OR IGNORE INTO trials (key, family, budget, idx, lr, bsz, status, updated, phase, box, seed) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                [(t.key, t.family, t.budget, t.index, t.lr, t.bsz, now, t.phase, json.dumps(t.box), t.seed)
                 for t in trials],
            )

    def mark(self, key: str, status: str, *, record: dict[str, Any] | None = None, error: str = "",
             output_dir: str = "", attempts: int | None = None, job: str | None = None) -> None:
        """Set a trial's status; ``attempts`` (the jobs that started it) and ``job`` only when given."""
        loss = bpb = None
        if record is not None:
            loss, bpb = record.get("loss"), record.get("bpb")
        with self._connect() as db:
            db.execute(
                "UPDATE trials SET status=?, error=?, updated=?, attempts=COALESCE(?, attempts), "
                "loss=COALESCE(?, loss), bpb=COALESCE(?, bpb), record=COALESCE(?, record), "
                "output_dir=CASE WHEN ?='' THEN output_dir ELSE ? END, job=COALESCE(?, job) WHERE key=?",
                (status, error, time.time(), attempts, loss, bpb,
                 json.dumps(record) if record is not None else None, output_dir, output_dir, job, key),
            )

    def rows(self) -> list[Row]:
        with self._connect() as db:
            found = db.execute(
                "SELECT key, family, budget, idx, lr, bsz, status, attempts, loss, bpb, error, record, output_dir, "
                "job, phase, box, seed FROM trials ORDER BY family, budget, idx"
            ).fetchall()
        return [Row(*r[:11], json.loads(r[11]) if r[11] else None, r[12], r[13], r[14], tuple(json.loads(r[15] or "[]")),
                    r[16]) for r in found]

    def to_frame(self) -> pd.DataFrame:
        """Finished and failed trials as the analysis's results table (one flat row per record)."""
        return rows_frame(self.rows())


def rows_frame(rows: list[Row]) -> pd.DataFrame:
    """Trials as the analysis's results table (one flat row per record)."""
    return pd.DataFrame([trial_row(r.family, r.budget, r.index, r.lr, r.bsz, r.status, r.error, r.record, r.phase,
                                   r.seed) for r in rows])
