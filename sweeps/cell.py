"""A study's cells, planned before anything runs, and the schema of a trial's config.

Each (family, budget) cell is planned once by the ladder, with contraction and BPE compression
measured on the data; each trial's plan (the cell's model, the trial's LR and BSZ, the steps they
buy) ships with its job as ``plan={...}``, and the job trains it (``sweeps.job``). In an isoFLOP
study each (family, budget) is one cell per ratio: the ladder snaps each ratio to a model of its
grid, two ratios that give the same model are one cell (the first ratio names it), and a budget
left with fewer than ``MIN_SIZES`` models is refused before anything runs.

A job's composed config (``conf/sweep.yaml``, schema ``TrialConfig``) is a training config plus the
study it belongs to; the training config is that config without the study, type-checked by OmegaConf.
Nothing here loads the trainer: the sweeper and the dry run plan with this module alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from aunet import ladder
from aunet.data import DataConfig, prepare_data
from aunet.ladder import DataMeasurements, RunPlan
from aunet.train_config import TrainConfig
from sweeps.adaptive import CellPrior, Outcome, next_trials
from sweeps.study import CellKey, StudyConfig, Trial, box, cell_trials

#: Model sizes an isoFLOP study needs at each budget: a parabola in log N has 3 coefficients.
MIN_SIZES = 3


@dataclass
class TrialConfig(TrainConfig):
    """The schema of ``conf/sweep.yaml``: a training config, the study, and the trial's folder."""

    sweep: StudyConfig = field(default_factory=StudyConfig)
    trial_dir: str = ""


ConfigStore.instance().store(name="sweep_schema", node=TrialConfig)
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))


@dataclass(frozen=True)
class Cell:
    """One (family, budget) of a study, or of an isoFLOP study one (family, budget, ratio), planned once:
    its trials differ only in LR and BSZ (and seed)."""

    study: StudyConfig
    prior: RunPlan  # the plan at the prior's LR and BSZ: the centre of the search box
    measured: DataMeasurements

    @property
    def ratio(self) -> float | None:
        """An isoFLOP cell's requested ratio (None: the study's one ratio)."""
        return self.prior.ratio if self.study.ratios is not None else None

    @property
    def key(self) -> CellKey:
        return self.prior.family, self.prior.budget, self.ratio

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

    def next_trials(self, history: Sequence[Outcome]) -> list[Trial]:
        """The cell's next trials given its settled ones (none: the cell is done): at the prior in an
        isoFLOP study that does not search, else the search of ``sweeps.adaptive``."""
        if self.study.at_prior:
            found = self.prior_trials(history)
        else:
            seeds = self.study.seeds_at(self.prior.budget)
            found = next_trials(self.study if seeds == self.study.seeds else replace(self.study, seeds=seeds),
                                self.start, history)
        return [replace(t, ratio=self.ratio) for t in found]

    def prior_trials(self, history: Sequence[Outcome]) -> list[Trial]:
        """The prior's LR and BSZ with every seed the cell still lacks, all at once: there is no search
        to wait for (seed 0 is the ``prior`` run, the others its ``seed`` reruns)."""
        p, done = self.prior, {h.trial.seed for h in history}
        missing = [s for s in range(self.study.seeds_at(p.budget)) if s not in done]
        return [Trial(p.family, p.budget, len(history) + k, float(f"{p.lr:.4g}"), p.bsz, "seed" if s else "prior",
                      (), s) for k, s in enumerate(missing)]

    def trial_plan(self, trial: Trial) -> RunPlan:
        """The plan of one trial: the cell's model at the trial's LR and BSZ."""
        return plan_family(self.study, trial.family, trial.budget, self.measured, bsz=trial.bsz, lr=trial.lr,
                           ratio=self.prior.ratio)

    def check_steps(self) -> None:
        """Refuse, before anything is submitted, a cell whose largest batch trains fewer than
        ``ladder.MIN_STEPS`` optimizer steps (unless the study forces it)."""
        try:
            ladder.check_steps(self.prior, batch_range(self.study, self.prior)[1], force=self.study.force)
        except ValueError as err:
            raise ValueError(f"study {self.study.name!r}: {err} (sweep.force=true)") from None

    def overrides(self, trial: Trial) -> list[str]:
        """The overrides of the trial's job: its name, its search box (where the sweeper proposed it), its plan."""
        return [*trial.overrides(), f"ratio={self.prior.ratio!r}", f"lr_box={ladder.hydra_value(trial.box[:2])}",
                f"bsz_box={ladder.hydra_value(trial.box[2:])}", self.trial_plan(trial).to_override()]


def batch_range(study: StudyConfig, prior: RunPlan) -> tuple[int, int]:
    """The smallest and largest batch a cell's trials start with, whole sequences: the box around the
    prior's BSZ, or the prior's own batch where the cell does not search."""
    if study.at_prior:
        return prior.bsz, prior.bsz
    lo, hi = box(prior.law_bsz, study.bsz_factor)
    return ladder.whole_sequences(lo, prior.seq_len), ladder.whole_sequences(hi, prior.seq_len)


def plan_family(study: StudyConfig, family: str, budget: float, measured: DataMeasurements,
                bsz: int | None = None, lr: float | None = None, ratio: float | None = None) -> RunPlan:
    """The ladder's plan of the family at the budget and ``ratio`` (None: the study's first, or only, one)."""
    return ladder.plan(family, budget, study.planned_ratios[0] if ratio is None else ratio,
                       laws=study.prior_laws(family),
                       contraction=measured.contraction, bpe_bytes_per_token=measured.bpe_bytes_per_token,
                       vocab_size=measured.vocab_size, convention=study.budget_convention, bsz=bsz, lr=lr)


def measure(family: str, budget: float, data: DictConfig | DataConfig) -> DataMeasurements:
    """What the family's plans at this budget need of the data (contraction, BPE compression): the same
    for every ratio, since they depend on the regime's units and sequences, not on the model's size."""
    probe = ladder.get_family(family).probe(budget)
    cell_data = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), data,  # typed, even from YAML
                                                    {"units": probe.units, "seq_len": probe.seq_len}))
    return DataMeasurements.of(prepare_data(cell_data), probe)


def cell_at(study: StudyConfig, family: str, budget: float, measured: DataMeasurements,
            ratio: float | None = None) -> Cell:
    """Plan one cell on measured data (refuses a budget the ladder has no model for, or a batch that
    gives a trial too few steps)."""
    try:
        prior = plan_family(study, family, budget, measured, ratio=ratio)
    except ValueError as err:
        raise ValueError(f"study {study.name!r}: {err}") from None
    cell = Cell(study, prior, measured)
    cell.check_steps()
    return cell


def plan_cell(study: StudyConfig, family: str, budget: float, data: DictConfig | DataConfig,
              ratio: float | None = None) -> Cell:
    """Measure the data for the family at this budget and plan the cell (refuses a budget too small, or
    a box that gives a trial too few steps)."""
    return cell_at(study, family, budget, measure(family, budget, data), ratio)


def plan_cells(study: StudyConfig, data: DictConfig | DataConfig) -> tuple[dict[CellKey, Cell], list[str]]:
    """Every cell of the study, planned before anything runs, and a note per isoFLOP cell merged into
    another: ratios the ladder snaps to the same model run it once, named by the first of them."""
    cells: dict[CellKey, Cell] = {}
    notes = []
    for family in study.families:
        for budget in study.budgets:
            measured = measure(family, budget, data)
            sizes: dict[tuple, Cell] = {}
            snapped = []
            for ratio in study.planned_ratios:
                cell = cell_at(study, family, budget, measured, ratio)
                snapped.append(f"{ratio} -> {cell.prior.params:,}")
                kept = sizes.setdefault(model_shape(cell.prior), cell)
                if kept is not cell:
                    notes.append(f"note: {family} at {budget:.3g}: ratio {ratio:g} gives the same model as ratio "
                                 f"{kept.prior.ratio:g} ({kept.prior.params:,} params, achieved ratio "
                                 f"{kept.prior.achieved_ratio:.3g}): it runs once, as ratio {kept.prior.ratio:g}")
                    continue
                cells[cell.key] = cell
            if study.ratios is not None and len(sizes) < MIN_SIZES:
                raise ValueError(f"study {study.name!r}: {family} at {budget:.3g} has {len(sizes)} model size(s) "
                                 f"once the ladder snaps the ratios to its grid (ratio -> params: "
                                 f"{', '.join(snapped)}); an "
                                 f"isoFLOP fit needs at least {MIN_SIZES} per budget: spread the ratios further apart")
    return cells, notes


def model_shape(plan: RunPlan) -> tuple:
    """What makes two plans the same model: its config but its name (which names the ratio asked for)."""
    return tuple(sorted((k, str(v)) for k, v in replace(plan.model, name="").to_dict().items()))


def trial_config(cfg: DictConfig) -> TrainConfig:
    """The training config of the trial a job's composed config describes."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    return TrainConfig.from_hydra({key: raw[key] for key in TRAIN_KEYS if key in raw})
