"""A study small enough for seconds per trial, run through ``sweep.py`` as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The ladder's smallest AU-Nets on a few dozen KB, so some trials train fewer than 200 steps
# (forced: these tests check the machinery, not a law).
TINY_STUDY = ["sweep.families=[aunet2]", "sweep.budgets=[2e10,4e10]", "sweep.trials=3", "sweep.ratio=0.005",
              "sweep.force=true", "sweep.phases=[qmc]", "sweep.max_moves=0", "data.valid_bytes=65536",
              "eval_bytes=4096", "tracking=off"]


def run_sweep(sweep_dir: Path, *overrides: str, timeout: float = 900, env: dict | None = None):
    """``sweep.py -m`` of ``TINY_STUDY`` with ``overrides`` into ``sweep_dir``, from the repository root."""
    cmd = [sys.executable, "sweep.py", "-m", *TINY_STUDY, f"hydra.sweep.dir={sweep_dir}", *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
