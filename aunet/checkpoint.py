"""Atomic, safely loadable checkpoints.

A checkpoint holds only tensors and plain Python values (no pickled objects), so it
loads with ``torch.load(weights_only=True)``. It is written to a temporary file and
renamed, so a kill mid-write leaves the previous checkpoint intact. It carries the
fingerprint of the config that made it: resuming under another config is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from aunet.atomic import atomic_path


def fingerprint(config: dict[str, Any]) -> str:
    """Stable hash of what must not change across a resume."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` durably: when this returns, the file is on disk (fsynced), so a
    caller may delete what it replaces. A full disk is said in plain words, naming the file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a Python file: a failed write keeps its errno
        torch.save(state, handle)


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
