"""One driver per study: an exclusive lock on the study's folder.

Two drivers on one study would run every trial twice into the same folders. The lock is
``flock`` on ``<study>/study.lock``: the kernel releases it when its holder dies however it
dies (``kill -9`` included), so a stale lock is simply taken over by the next driver, and
two drivers starting at once cannot both win. The file also names its holder (host, PID,
start time), so that the driver that is refused can say who holds the study.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_NAME = "study.lock"


class StudyLocked(RuntimeError):
    """Another live driver holds the study."""


class StudyLock:
    """``with StudyLock(sweep_dir):`` the study is this process's alone until the block ends."""

    def __init__(self, sweep_dir: str | Path):
        self.path = Path(sweep_dir) / LOCK_NAME
        self._handle: Any = None

    def __enter__(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StudyLocked(f"study folder {self.path.parent} is in use by {describe_holder(self.path)} "
                              f"(lock {self.path}); wait for that driver to end, or stop it and rerun") from None
        handle.seek(0)
        handle.truncate()
        json.dump(holder(), handle)
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock; its text stays as a trace
            self._handle = None


def holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}


def describe_holder(path: Path) -> str:
    """'PID 123 on host h since 2026-01-01 10:00:00 UTC', from the lock file's text."""
    try:
        found = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(found["started"])))
        return f"PID {found['pid']} on host {found['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another driver (it has not written its name yet)"


def current_holder(sweep_dir: str | Path) -> str | None:
    """Who runs the study now, or None if nobody does (for ``python -m sweeps status``)."""
    path = Path(sweep_dir) / LOCK_NAME
    if not path.exists():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return describe_holder(path)
    return None
