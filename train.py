"""One training run: ``python train.py model=<preset> budget=<FLOPs> [lr=... bsz=...]``.

See conf/train.yaml for every option; the run writes record.json (and model.pt) to
its output directory and logs to MLflow.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from aunet.train import TrainConfig, train


@hydra.main(version_base=None, config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train_cfg = TrainConfig.from_hydra(cfg)
    except (ValueError, OmegaConfBaseException) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    record = train(train_cfg)
    summary = (f"{record.status}: {record.family} {record.model} budget={record.budget:.3g} lr={record.lr:.3g} "
               f"bsz={record.bsz:.0f} steps={record.steps} bpb={record.bpb:.4f}")
    logging.getLogger("aunet.train").info(summary)
    print(summary)
    if record.status == "failed":
        print(f"error: {record.error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
