"""The one atomic-write helper: a failed write leaves the old file and no temporary file behind."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aunet import checkpoint
from aunet.atomic import atomic_path, write_json_atomic
from aunet.record import RunRecord


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "file.bin"
    with atomic_path(path) as tmp:  # the directories are made, the file renamed into place
        tmp.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_json_is_strict_and_replaces_the_old_file(tmp_path):
    path = tmp_path / "scores.json"
    write_json_atomic(path, {"acc": 0.5})
    write_json_atomic(path, {"acc": math.nan, "ci": (math.inf, 1.0), "where": tmp_path})
    assert json.loads(path.read_text()) == {"acc": None, "ci": [None, 1.0], "where": str(tmp_path)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_records_and_checkpoints_go_through_it(tmp_path):
    record = RunRecord(status="finished", family="aunet2", budget=1e15, lr=1e-3, bsz=4096.0)
    record.write(tmp_path / "record.json")
    assert RunRecord.read(tmp_path / "record.json").budget == 1e15
    checkpoint.save(tmp_path / "ckpt.pt", {"step": 3, "w": torch.ones(2)})
    with pytest.raises(AttributeError, match="pickle"):  # an unpicklable state fails inside torch.save: the old checkpoint survives
        checkpoint.save(tmp_path / "ckpt.pt", {"step": 4, "w": lambda: 0})
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "record.json"]


def test_file_lock_makes_processes_take_turns(tmp_path):
    """Another process holds the lock until told to let go: ours must wait for that, however loaded
    the machine (nothing here depends on how long a step takes)."""
    import subprocess
    import sys
    import threading
    import time

    from aunet.atomic import file_lock

    lock, held, release = tmp_path / ".lock", tmp_path / "held", tmp_path / "release"
    holder = (f"from aunet.atomic import file_lock\nimport pathlib, time\nwith file_lock({str(lock)!r}):\n"
              f"    pathlib.Path({str(held)!r}).touch()\n"
              f"    while not pathlib.Path({str(release)!r}).exists():\n        time.sleep(0.01)")
    other = subprocess.Popen([sys.executable, "-c", holder])
    while not held.exists():  # the other process holds the lock from now on, until `release` exists
        assert other.poll() is None
        time.sleep(0.02)
    acquired = threading.Event()

    def take() -> None:
        with file_lock(lock):
            acquired.set()

    taker = threading.Thread(target=take)
    taker.start()
    assert not acquired.wait(0.5)  # held elsewhere: a working lock never lets us in
    release.touch()
    assert acquired.wait(120)
    taker.join()
    assert other.wait(120) == 0 and lock.exists()
