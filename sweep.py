"""``python sweep.py -m``: run a study (conf/sweep/) through a Hydra launcher. See README."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from sweeps.job import run_trial


@hydra.main(version_base=None, config_path="conf", config_name="sweep")
def main(cfg: DictConfig) -> dict:
    return run_trial(cfg)


if __name__ == "__main__":
    main()
