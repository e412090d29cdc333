"""One trial of a study, as a job: the body of ``sweep.py``'s task function, in the job's process.

The trial's config carries its plan (``sweeps.cell``); the job readies its process for its launcher
(``sweeps.backends``), marks its start (``sweeps.attempts``) and trains.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from aunet.train import train
from sweeps.attempts import note_start
from sweeps.backends import backend_here
from sweeps.cell import TrialConfig, trial_config

__all__ = ["TrialConfig", "run_trial"]  # TrialConfig: the schema's path named by conf/sweep.yaml and the README


def run_trial(cfg: DictConfig) -> dict[str, Any]:
    """The task function body of ``sweep.py``: train one trial and return its record."""
    backend_here().prepare_job()
    note_start(cfg.output_dir)  # the driver counts attempts, and finds this job again, from this mark
    return train(trial_config(cfg)).to_dict()
