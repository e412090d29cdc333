"""``hydra/sweeper=study``: Hydra's entry to the study runner (the logic lives in ``sweeps``)."""

import os
import sys
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class StudySweeperConf:
    _target_: str = "hydra_plugins.aunet_sweeper.study_sweeper.StudySweeper"
    mlflow: bool = True  # one parent MLflow run per study, a child run per trial


ConfigStore.instance().store(group="hydra/sweeper", name="study", node=StudySweeperConf, provider="aunet")


class StudySweeper(Sweeper):
    def __init__(self, mlflow: bool = True):
        self.mlflow = mlflow
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        # imported late: Hydra scans plugins on every start. The plugin, above both, hands the study
        # runner the analysis's predictor, so that sweeps never imports analysis.
        from analysis.holdout import predict_optimum
        from sweeps.lock import StudyLocked
        from sweeps.sweeper import run_study

        assert self.config is not None
        try:
            return run_study(self.config, self.launcher, arguments, mlflow=self.mlflow, predict=predict_optimum)
        except (ValueError, StudyLocked) as err:  # a refusal: one line, the traceback only on request
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
