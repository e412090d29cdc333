"""What one training run is asked to do: its typed config and the law guard.

Apart from the training loop (``aunet.train``, which re-exports these names) so that composing,
checking and planning a run or a sweep never loads the trainer and its models.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from aunet.config import ModelConfig
from aunet.data.config import DataConfig
from aunet.eval.suite import EvalConfig
from aunet.ladder import RunPlan, family_of
from aunet.ladder.planner import law_path
from aunet.laws import LawCard, Regime
from aunet.optim import OptimConfig
from aunet.record import check_convention
from aunet.tracking import TrackingConfig
from aunet.verdict import Verdict, judge

log = logging.getLogger("aunet.train")  # the law guard speaks for the run it guards


@dataclass
class TrainConfig:
    """Everything one run needs; also the structured config of ``conf/train.yaml`` (``train_schema``).

    Groups are Hydra config groups; the rest is the run itself.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(enabled=False))  # downstream tasks at the end
    budget: float | None = None  # compute C in FLOPs: sets the number of training units
    budget_convention: str = "spent"  # what budget counts: "spent" (head included) or "paper" (the paper's C)
    steps: int | None = None  # or an explicit number of optimizer steps
    bsz: int | None = None  # input units per optimizer step; None: the law's prior at this budget
    micro_batch: int = 0  # sequences per forward pass and process; 0: as many as fit max_micro_batch
    max_micro_batch: int = 8
    law: str = "paper"  # "paper" or the path of a fitted law (JSON from `python -m analysis fit`)
    law_force: bool = False  # train at a fitted law's LR/BSZ even where its verdict is "not usable"
    ratio: float | None = None  # data-to-model ratio the budget was planned with (recorded)
    plan: RunPlan | None = None  # a sweep's trial ships its plan (model, bsz, steps, LR); None: plan here
    seed: int = 0
    threads: int = 0  # intra-op threads; 0: the CPUs allocated to this process (aunet.threads)
    threads_force: bool = False  # keep a `threads` above the allocation (otherwise the allocation wins)
    device: str = "auto"
    compile: str = "auto"  # "auto": torch.compile on CUDA only; "on" / "off"
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on the CPU; "fp32" / "bf16"
    parallel: str = "ddp"  # "ddp" or "fsdp" when launched on several processes
    eval_every: int = 0  # held-out evaluation every N steps (0: only at the end)
    eval_bytes: int | None = None  # cap on held-out bytes per evaluation (None: all of them)
    log_every: int = 10
    checkpoint_every: int = 0  # steps between periodic checkpoints (0: time-based only)
    checkpoint_seconds: float = 600.0
    diverge_factor: float = 2.0  # loss above this multiple of the first loss (or non-finite) = diverged
    ratio_loss_weight: float = 0.03  # a learned rule's ratio loss, added to the LM loss (H-Net's alpha)
    contraction_band: float = 0.25  # a learned stage's realised contraction this far (relative) from its target: warn
    output_dir: str = "outputs/run"
    progress: str = "auto"  # "auto": a bar on terminals, log lines otherwise; "bar" / "log" / "off"
    # Labels a sweep fills in, so that the record stands alone.
    family: str = ""  # empty: the model's (aunet2, transformer_bpe, ...)
    study: str = ""
    trial: int = -1
    lr_box: list[float] | None = None
    bsz_box: list[float] | None = None

    def __post_init__(self) -> None:
        if self.plan is not None:  # a planned run trains the model of its plan, in its convention
            self.model = self.plan.model
            self.budget_convention = self.plan.convention
        self.validate()

    def validate(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"train config: '{name}' {message}")

        check_convention(self.budget_convention, "train config: 'budget_convention'")
        if self.budget is None and self.steps is None:
            fail("budget", "is missing; give a compute budget in FLOPs (e.g. budget=1e12) or steps=N")
        if self.budget is not None and not (math.isfinite(self.budget) and self.budget > 0):
            fail("budget", f"is {self.budget}; give a positive number of FLOPs such as 1e12")
        if self.steps is not None and self.steps < 1:
            fail("steps", f"is {self.steps}; give at least 1 step, or null to derive steps from the budget")
        if self.bsz is not None and self.bsz < 1:
            fail("bsz", f"is {self.bsz}; give a positive number of input units per step, or null for the law")
        if self.threads < 0:
            fail("threads", f"is {self.threads}; give a positive number of threads, or 0 to follow the allocation")
        if self.micro_batch < 0 or self.max_micro_batch < 1:
            fail("micro_batch", "must be >= 0 (0: automatic) and max_micro_batch >= 1")
        if not (self.ratio_loss_weight >= 0 and self.contraction_band > 0):
            fail("ratio_loss_weight", f"is {self.ratio_loss_weight} (contraction_band {self.contraction_band}); "
                                      "give a weight >= 0 and a band > 0")
        if self.ratio is not None and self.ratio <= 0:
            fail("ratio", f"is {self.ratio}; a data-to-model ratio must be positive")
        if self.plan is not None:
            for name, value in (("bsz", self.bsz), ("steps", self.steps), ("optim.lr", self.optim.lr)):
                if value is not None:
                    fail(name, f"is {value}, but this run has a plan: its batch size, steps and LR come from it")
        if self.model.units != self.data.units:
            fail("data.units", f"is {self.data.units!r} but the model reads {self.model.units!r}; make them agree")
        if self.data.seq_len != self.model.seq_len:
            fail("data.seq_len", f"is {self.data.seq_len} but model.seq_len is {self.model.seq_len}; make them agree")
        choices = {"compile": ("auto", "on", "off"), "precision": ("auto", "fp32", "bf16"),
                   "parallel": ("ddp", "fsdp"), "progress": ("auto", "bar", "log", "off")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                fail(name, f"is {getattr(self, name)!r}; use one of {allowed}")
        if self.diverge_factor <= 1:
            fail("diverge_factor", f"is {self.diverge_factor}; must be > 1")
        self.check_law()

    def sets_from_law(self) -> bool:
        """Whether a fitted law file (not the paper's prior, not a shipped plan) sets this run's LR or BSZ."""
        return not (self.law == "paper" or self.plan is not None or (self.bsz is not None and self.optim.lr is not None))

    def check_law(self, plan: RunPlan | None = None) -> Verdict | None:
        """A fitted law that sets this run's LR or BSZ must fit the run (units, convention, family, and
        with the ``plan`` its ratio, sequence and vocabulary) and be usable at its budget
        (``aunet.verdict``), or be forced with law_force=true; the paper's law is a prior. Checked twice:
        what the config says before anything runs, then the planned run (measured on the data) before
        training; a refusal raises ``LawRefused``."""
        if not self.sets_from_law():
            return None
        card = LawCard.read(law_path(self.law))
        units = "tokens" if self.model.units == "bpe" else "bytes"
        if card.units != units:
            raise ValueError(f"train config: law {self.law} counts BSZ in {card.units}, but this model reads "
                             f"{units}; use a law fitted on a {units} family")
        if card.convention != self.budget_convention:
            raise ValueError(f"train config: law {self.law} was fitted on budgets in the {card.convention!r} "
                             f"convention, this run's budget_convention is {self.budget_convention!r}; make them agree")
        if self.budget is None:
            raise ValueError(f"train config: law {self.law} needs a budget to be evaluated at (give budget=...)")
        run = plan.regime() if plan is not None else Regime(self.family or family_of(self.model),
                                                             seq_lens=(self.model.seq_len,), origin="configured")
        verdict = judge(card, self.budget, run=run)
        if not verdict.usable and not self.law_force:
            raise LawRefused(f"train config: law {self.law} is {verdict.line()}; set law_force=true to train at it "
                             "anyway, or give optim.lr and bsz")
        if plan is not None and (not verdict.usable or verdict.reasons):
            log.warning("law %s: %s", self.law, verdict.line())
        return verdict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hydra(cls, cfg: Any) -> TrainConfig:
        """From a composed Hydra config (or a plain dict): type-checked by OmegaConf against this schema,
        then validated by the dataclasses themselves."""
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), cfg))


ConfigStore.instance().store(name="train_schema", node=TrainConfig)


class LawRefused(ValueError):
    """A fitted law's verdict refuses this run: a configuration error, raised before training (no record)."""
