"""MLflow tracking that never slows a run down nor takes it down.

``import mlflow`` costs seconds and its store can be slow or locked by a sibling
trial, so all MLflow work happens on a background thread fed by a queue: the run
starts training at once, and a tracking failure is logged, not raised. The default
store is a local SQLite file (``sqlite:///<outputs>/mlflow.db``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class TrackingConfig:
    enabled: bool = True
    tracking_uri: str | None = None  # None: sqlite:///<root>/mlflow.db
    experiment: str = "aunet"
    run_name: str | None = None
    parent_run_id: str | None = None  # a sweep's study run; this run becomes its child
    tags: dict[str, str] = field(default_factory=dict)  # e.g. a sweep's family, budget and trial


def import_mlflow() -> Any:
    """``import mlflow`` with its usage telemetry off: a run makes no network call (MLflow 3 would
    otherwise send usage data to its telemetry host even for a local SQLite store)."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import mlflow

    return mlflow


def default_tracking_uri(root: str | Path) -> str:
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def ensure_experiment(client: Any, name: str, artifact_root: Path) -> str:
    """The experiment's id in ``client``'s store, creating it with an explicit artifact location (Hydra
    moves the cwd). Through a client, not mlflow's process-wide tracking URI: the trackers of a pack's
    members run in one process, each in its own thread and store."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=(artifact_root / name).resolve().as_uri())
    except Exception:  # a sibling process created it first
        return client.get_experiment_by_name(name).experiment_id


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


#: In a run's output folder: the id of its MLflow run, so that a restart continues it.
RUN_ID_FILE = "mlflow_run_id"


class Tracker:
    """Queue-fed MLflow run. Methods return at once; ``close`` waits for the queue to drain."""

    def __init__(self, cfg: TrackingConfig, artifact_root: str | Path, params: dict[str, Any]):
        self.cfg = cfg
        self.run_id: str | None = None
        self._queue: queue.Queue[Callable[[Any], None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        if cfg.enabled:
            root = Path(artifact_root)
            self._thread = threading.Thread(target=self._work, args=(root, params), daemon=True)
            self._thread.start()

    def _work(self, root: Path, params: dict[str, Any]) -> None:
        try:
            mlflow = import_mlflow()
            from mlflow.tracking import MlflowClient

            uri = self.cfg.tracking_uri or default_tracking_uri(root)
            client = MlflowClient(uri)
            experiment_id = ensure_experiment(client, self.cfg.experiment, root / "mlartifacts")
            self.run_id = self._resumed_run(client, root, experiment_id)
            if self.run_id is None:
                tags = dict(self.cfg.tags or {})
                if self.cfg.parent_run_id:
                    tags["mlflow.parentRunId"] = self.cfg.parent_run_id
                run = client.create_run(experiment_id, run_name=self.cfg.run_name, tags=tags)
                self.run_id = run.info.run_id
                flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
                items = list(flat.items())
                for i in range(0, len(items), 100):
                    client.log_batch(self.run_id, params=[mlflow.entities.Param(k, v) for k, v in items[i : i + 100]])
                root.mkdir(parents=True, exist_ok=True)  # the trainer may not have made its folder yet
                (root / RUN_ID_FILE).write_text(self.run_id)
        except Exception as err:  # tracking must never take the run down
            log.warning("MLflow tracking disabled for this run: %s", err)
            self._drain()
            return
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                job(client)
            except Exception as err:
                log.warning("MLflow call failed (the run goes on): %s", err)

    @staticmethod
    def _resumed_run(client: Any, root: Path, experiment_id: str) -> str | None:
        """The MLflow run an earlier start of this run (same output folder, same store) created: a
        restarted or retried run goes on logging there instead of leaving a second, orphaned run."""
        marker = root / RUN_ID_FILE
        if not marker.is_file():
            return None
        run_id = marker.read_text().strip()
        try:
            run = client.get_run(run_id)
        except Exception:  # another store, or the run was deleted: start a new one
            return None
        if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
            return None
        client.update_run(run_id, status="RUNNING")
        return run_id

    def _drain(self) -> None:
        while self._queue.get() is not None:
            pass

    def metrics(self, values: dict[str, float], step: int) -> None:
        if self._thread is None:
            return
        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}

        def job(client: Any) -> None:
            import mlflow

            stamp = int(time.time() * 1000)
            client.log_batch(self.run_id, metrics=[mlflow.entities.Metric(k, v, stamp, step) for k, v in clean.items()])

        self._queue.put(job)

    def artifact(self, path: str | Path) -> None:
        if self._thread is not None:
            self._queue.put(lambda client: client.log_artifact(self.run_id, str(path)))

    def close(self, status: str) -> None:
        """End the run with an MLflow status matching ours, and wait for the queue."""
        if self._thread is None:
            return
        mlflow_status = {"finished": "FINISHED", "preempted": "KILLED"}.get(status, "FAILED")
        self._queue.put(lambda client: client.set_terminated(self.run_id, mlflow_status))
        self._queue.put(None)
        self._thread.join()
