"""Run statuses: other tools' words for them, reading them from a table, and which runs have ended.

One place for what a status means, so that loading (``analysis.load``) and importing
(``analysis.external``) read a W&B ``state`` or an MLflow status the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.columns import STATUS_ALIASES
from aunet.record import FINAL_STATUSES, STATUSES

#: Status spellings of other tools, and the status each means here (``--status OLD=NEW`` adds more).
DEFAULT_STATUS_MAP = {
    "completed": "finished", "complete": "finished", "success": "finished", "succeeded": "finished",
    "done": "finished", "ok": "finished", "crashed": "failed", "crash": "failed", "error": "failed",
    "errored": "failed", "killed": "failed", "oom": "failed", "cancelled": "failed", "canceled": "failed",
    "timeout": "failed", "timed_out": "failed", "timedout": "failed", "preemption": "preempted",
    "requeued": "preempted", "preempting": "preempted", "nan_loss": "diverged", "diverge": "diverged",
    "queued": "pending", "scheduled": "pending", "submitted": "pending", "started": "running",
    "in_progress": "running",
}
#: Runs in these statuses have not ended: their loss is not a result yet, and their compute may be
#: what they have spent so far. They are left out before anything else (counted in a warning), so
#: that a ``running`` row never forms a budget of its own.
NOT_ENDED = tuple(s for s in STATUSES if s not in FINAL_STATUSES)


def with_status(table: pd.DataFrame, origin: str, status_map: dict[str, str] | None = None, *,
                derive: bool = False) -> pd.DataFrame:
    """``table`` with one ``status`` column in our words, read from its status column or aliases.

    Each of ``STATUS_ALIASES`` (any case) is read through ``DEFAULT_STATUS_MAP`` and ``status_map``;
    several must agree where both have a value, and the aliases are then dropped. Without any, an
    import (``derive``) calls runs with a finite loss finished and the others failed: a table that
    says nothing better. Unknown words are left for the caller to refuse.
    """
    table = table.loc[:, ~table.columns.duplicated()]
    names = [c for c in table.columns if str(c).strip().lower() in STATUS_ALIASES]
    if not names:
        if not derive:
            return table
        loss = pd.to_numeric(table["loss"], errors="coerce") if "loss" in table.columns else np.nan
        return table.assign(status=np.where(np.isfinite(loss), "finished", "failed"))
    statuses = {**DEFAULT_STATUS_MAP, **(status_map or {})}
    read = [table[c].map(lambda v: statuses.get(str(v).strip().lower(), str(v).strip().lower()), na_action="ignore")
            for c in names]
    status = read[0]
    for name, other in zip(names[1:], read[1:]):
        clash = status.notna() & other.notna() & (status != other)
        if clash.any():
            first = clash.idxmax()
            raise ValueError(f"{origin}: columns {names[0]!r} and {name!r} both give a run's status and disagree in "
                             f"rows {rows_of(clash)} (row {first}: {table.at[first, names[0]]!r} vs "
                             f"{table.at[first, name]!r}); drop the one you do not mean")
        status = status.fillna(other)
    return table.drop(columns=names).assign(status=status.fillna("nan"))


def not_ended(table: pd.DataFrame) -> str:
    """The runs of a table (in our statuses) that have not ended, counted by status, or "" when all have."""
    counts = table["status"].value_counts()
    waiting = {status: int(counts[status]) for status in NOT_ENDED if status in counts}
    if not waiting:
        return ""
    return f"{sum(waiting.values())} run(s) not ended: " + ", ".join(f"{s} {n}" for s, n in waiting.items())


def rows_of(mask: pd.Series) -> str:
    """The rows ``mask`` marks, by index label: a validated table's labels are the input's row numbers."""
    index = list(mask.index[np.asarray(mask, dtype=bool)])
    shown = ", ".join(str(i) for i in index[:8])
    return shown + (f" ... ({len(index)} in all)" if len(index) > 8 else "")
