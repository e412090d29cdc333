"""A study's cells, planned before anything runs, and the schema of a trial's config.

Each (family, budget) cell is planned once by the ladder, with contraction and BPE compression
measured on the data; each trial's plan (the cell's model, the trial's LR and BSZ, the steps they
buy) ships with its job as ``plan={...}``, and the job trains it (``sweeps.job``).

A job's composed config (``conf/sweep.yaml``, schema ``TrialConfig``) is a training config plus the
study it belongs to; the training config is that config without the study, type-checked by OmegaConf.
Nothing here loads the trainer: the sweeper and the dry run plan with this module alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from aunet import ladder
from aunet.data import DataConfig, prepare_data
from aunet.ladder import DataMeasurements, RunPlan
from aunet.train_config import TrainConfig
from sweeps.adaptive import CellPrior
from sweeps.study import StudyConfig, Trial, box, cell_trials


@dataclass
class TrialConfig(TrainConfig):
    """The schema of ``conf/sweep.yaml``: a training config, the study, and the trial's folder."""

    sweep: StudyConfig = field(default_factory=StudyConfig)
    trial_dir: str = ""


ConfigStore.instance().store(name="sweep_schema", node=TrialConfig)
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))


@dataclass(frozen=True)
class Cell:
    """One (family, budget) of a study, planned once: its trials differ only in LR and BSZ."""

    study: StudyConfig
    prior: RunPlan  # the plan at the prior's LR and BSZ: the centre of the search box
    measured: DataMeasurements

    @property
    def start(self) -> CellPrior:
        """What the proposer needs of the cell (``sweeps.adaptive``): its prior optimum and BSZ grain."""
        units = self.prior.budget / self.prior.budget_per_unit  # every trial of the cell trains these
        limit = math.inf if self.study.force else (units / ladder.MIN_STEPS) // self.prior.seq_len * self.prior.seq_len
        return CellPrior(self.prior.family, self.prior.budget, self.prior.lr, self.prior.law_bsz, self.prior.seq_len,
                         limit)

    def trials(self) -> list[Trial]:
        """Phase 1: the cell's quasi-random trials over the prior box."""
        return cell_trials(self.study, self.prior.family, self.prior.budget, self.prior.seq_len, self.prior.lr,
                           self.prior.law_bsz)

    def trial_plan(self, trial: Trial) -> RunPlan:
        """The plan of one trial: the cell's model at the trial's LR and BSZ."""
        return plan_family(self.study, trial.family, trial.budget, self.measured, bsz=trial.bsz, lr=trial.lr)

    def check_steps(self) -> None:
        """Refuse, before anything is submitted, a box whose largest batch trains fewer than
        ``ladder.MIN_STEPS`` optimizer steps (unless the study forces it)."""
        top = ladder.whole_sequences(box(self.prior.law_bsz, self.study.bsz_factor)[1], self.prior.seq_len)
        try:
            ladder.check_steps(self.prior, top, force=self.study.force)
        except ValueError as err:
            raise ValueError(f"study {self.study.name!r}: {err} (sweep.force=true)") from None

    def overrides(self, trial: Trial) -> list[str]:
        """The overrides of the trial's job: its name, its search box (where the sweeper proposed it), its plan."""
        return [*trial.overrides(), f"lr_box={ladder.hydra_value(trial.box[:2])}",
                f"bsz_box={ladder.hydra_value(trial.box[2:])}", self.trial_plan(trial).to_override()]


def plan_family(study: StudyConfig, family: str, budget: float, measured: DataMeasurements,
                bsz: int | None = None, lr: float | None = None) -> RunPlan:
    return ladder.plan(family, budget, study.ratio, laws=study.prior_laws(family), contraction=measured.contraction,
                       bpe_bytes_per_token=measured.bpe_bytes_per_token, vocab_size=measured.vocab_size,
                       convention=study.budget_convention, bsz=bsz, lr=lr)


def plan_cell(study: StudyConfig, family: str, budget: float, data: DictConfig | DataConfig) -> Cell:
    """Measure the data for the family at this budget and plan the cell (refuses a budget too small, or
    a box that gives a trial too few steps)."""
    probe = ladder.get_family(family).probe(budget)
    cell_data = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), data,  # typed, even from YAML
                                                    {"units": probe.units, "seq_len": probe.seq_len}))
    measured = DataMeasurements.of(prepare_data(cell_data), probe)
    cell = Cell(study, plan_family(study, family, budget, measured), measured)
    cell.check_steps()
    return cell


def trial_config(cfg: DictConfig) -> TrainConfig:
    """The training config of the trial a job's composed config describes."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    return TrainConfig.from_hydra({key: raw[key] for key in TRAIN_KEYS if key in raw})
