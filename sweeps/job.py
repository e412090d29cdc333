"""One trial of a study, as a job: (arch, budget, LR, BSZ) -> ladder model -> training run.

The job's overrides carry its real LR and BSZ (``optim.lr=... bsz=...``); the model
and the number of steps follow from the architecture and budget through the ladder,
with contraction and BPE compression measured on the data, so every trial of a cell
trains the same model on the same number of units.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aunet import ladder
from aunet.data import DataConfig, open_dataset
from aunet.eval.suite import EvalConfig
from aunet.optim import OptimConfig
from aunet.tracking import TrackingConfig
from aunet.train import TrainConfig, train
from sweeps.study import StudyConfig


def plan_cell(study: StudyConfig, arch: str, budget: float, data: DataConfig | None = None) -> ladder.RunPlan:
    """The ladder's plan for one cell; with ``data``, contraction and compression are measured on it."""
    laws = study.prior_laws(arch)
    first = ladder.plan(arch, budget, study.ratio, laws=laws)
    if data is None:
        return first
    model = first.model
    dataset = open_dataset(DataConfig.from_dict({**data.to_dict(), "units": model.units, "seq_len": model.seq_len}))
    bpe = model.units == "bpe"
    return ladder.plan(arch, budget, study.ratio, laws=laws,
                       contraction=dataset.contraction(model) if model.arch == "aunet" else None,
                       bpe_bytes_per_token=dataset.bytes_per_unit if bpe else None,
                       vocab_size=dataset.vocab_size if bpe else None)


def cell_center(study: StudyConfig, arch: str, budget: float, cell: ladder.RunPlan) -> tuple[float, float]:
    """The prior (LR, BSZ) at the centre of a cell's search box."""
    laws = study.prior_laws(arch)
    at = ladder.law_compute(cell.model, budget, laws, cell.contraction or None)
    return laws.lr(at), laws.bsz(at)


def trial_config(cfg: DictConfig | dict[str, Any]) -> TrainConfig:
    """The training config of the trial a job's composed config describes."""
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    study = StudyConfig(**raw["sweep"])
    arch, budget = raw["arch"], float(raw["budget"])
    if arch not in study.archs:
        raise ValueError(f"arch {arch!r} is not one of study {study.name!r}'s architectures {study.archs}")
    data = DataConfig.from_dict(raw["data"])
    cell = plan_cell(study, arch, budget, data)
    search_box = [float(v) for v in raw["box"]]  # the cell's box when the sweeper proposed the trial
    return TrainConfig(
        model=cell.model,
        data=DataConfig.from_dict({**data.to_dict(), "units": cell.model.units, "seq_len": cell.model.seq_len}),
        optim=OptimConfig(**raw["optim"]),
        tracking=TrackingConfig(**raw["tracking"]),
        eval=EvalConfig(**raw["eval"]),
        budget=budget,
        bsz=int(raw["bsz"]) if raw.get("bsz") is not None else None,
        ratio=study.ratio,
        seed=int(raw.get("seed", 0)),
        output_dir=raw["output_dir"],
        arch=arch,
        study=study.name,
        trial=int(raw["trial"]),
        lr_box=search_box[:2],
        bsz_box=search_box[2:],
        **{k: raw[k] for k in ("device", "compile", "precision", "parallel", "max_micro_batch", "eval_bytes",
                               "progress", "log_every") if k in raw},
    )


def run_trial(cfg: DictConfig) -> dict[str, Any]:
    """The task function body of ``sweep.py``: train one trial and return its record."""
    export_slurm_distributed_env()
    return train(trial_config(cfg)).to_dict()


def export_slurm_distributed_env() -> None:
    """A trial over several SLURM tasks (one per GPU) is one torch.distributed run: give every task
    its rank and its peers, as torchrun would, so the trainer joins the process group."""
    in_submitit_job = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"  # not a sweep run inside an salloc
    if in_submitit_job and int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "RANK" not in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()
