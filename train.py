"""One training run: ``python train.py model=<preset> budget=<FLOPs> [lr=... bsz=...]``.

See conf/train.yaml for every option; the run writes record.json (and model.pt) to
its output directory and logs to MLflow.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from aunet.train import TrainConfig, train


def refuse(err: Exception) -> None:
    """One line, exit 2, and no trace of a run that never started: Hydra made its folder before the check."""
    print(f"error: {err}", file=sys.stderr)
    logging.shutdown()
    out = Path(HydraConfig.get().runtime.output_dir)
    if all(p.name == ".hydra" or p.suffix == ".log" for p in out.iterdir()):
        shutil.rmtree(out)
    sys.exit(2)


@hydra.main(version_base=None, config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        record = train(TrainConfig.from_hydra(cfg))
    except (ValueError, OmegaConfBaseException) as err:  # a config error, or a law that refuses this run
        refuse(err)
    summary = (f"{record.status}: {record.family} {record.model} budget={record.budget:.3g} lr={record.lr:.3g} "
               f"bsz={record.bsz:.0f} steps={record.steps} bpb={record.bpb:.4f}")
    logging.getLogger("aunet.train").info(summary)
    print(summary)
    if record.status == "failed":
        print(f"error: {record.error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
