"""Atomic, safely loadable checkpoints.

A checkpoint holds only tensors and plain Python values (no pickled objects), so it
loads with ``torch.load(weights_only=True)``. It is written to a temporary file and
renamed, so a kill mid-write leaves the previous checkpoint intact. It carries the
fingerprint of the config that made it: resuming under another config is refused.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def fingerprint(config: dict[str, Any]) -> str:
    """Stable hash of what must not change across a resume."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` durably: when this returns, the file is on disk (fsynced), so a
    caller may delete what it replaces. A full disk is said in plain words, naming the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:  # a Python file: a failed write raises OSError with its errno
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if _disk_full(err):
            raise OSError(errno.ENOSPC, f"no space left on device writing {path}; free space on "
                                        f"{path.parent} and run again (files already there are kept)") from None
        raise


def _disk_full(err: BaseException | None) -> bool:
    """ENOSPC anywhere in the chain: torch may report the failed write as a RuntimeError around it."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        err = err.__cause__ or err.__context__
    return False


def load(path: str | Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None if there is none. Refuses one from another config."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint {path} cannot be loaded safely ({err}); delete it to start over") from err
    found = state.get("fingerprint")
    if found != expected_fingerprint:
        raise ValueError(
            f"checkpoint {path} was written by a different config (fingerprint {found}, this run "
            f"{expected_fingerprint}); use a fresh output directory or the config that wrote it"
        )
    return state
