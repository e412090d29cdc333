"""Atomic file writes: readers see the old file or the new one, never half of one.

Every file the toolkit leaves behind (records, checkpoints, tokenizers, cached splits
and benchmark data) is written to a temporary file beside its target, flushed to disk,
then renamed onto it: a kill or preemption mid-write leaves the previous file intact
and at most a hidden ``.<name>.*.tmp`` file, which a failed write removes itself.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` (after fsync) if the block succeeds.

    The temporary file exists (empty, mode 0600) when the block starts; writers that
    create their own file (``torch.save``, a tokenizer's ``save``) may overwrite it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:  # the data must be on disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)  # and the rename too, before a caller deletes what it replaced
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if disk_full(err):
            raise OSError(errno.ENOSPC, f"no space left on device writing {path}; free space on "
                                        f"{path.parent} and run again (files already there are kept)") from None
        raise


def disk_full(err: BaseException | None) -> bool:
    """ENOSPC anywhere in the chain: torch may report a failed write as a RuntimeError around it."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        err = err.__cause__ or err.__context__
    return False


def json_safe(value: Any) -> Any:
    """JSON has no NaN: None instead of every non-finite float, so the output is strictly valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json_atomic(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON (non-finite floats as null, other objects as ``str``), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False, default=str))


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block: processes that
    prepare the same cache entry take turns, and the kernel frees the lock if its holder dies."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
