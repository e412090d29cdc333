"""A study: families × compute budgets × quasi-random (LR, BSZ) trials.

Each (family, budget) cell gets its own scrambled Sobol sequence, seeded from
the study seed and the cell, over a box in log LR × log BSZ centred on the prior
law's values at that budget (widths are factors: LR ×/÷ 4 means [LR/4, 4·LR]).
The same seed always yields the same trials, and adding trials to a cell extends
its sequence without moving the existing points.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import qmc

from aunet.ladder import FAMILIES, get_family, positive_number, resolve_laws
from aunet.laws import HyperLaws
from aunet.record import check_convention


@dataclass(frozen=True)
class Trial:
    """One point of the study: what a job trains."""

    family: str
    budget: float
    index: int
    lr: float
    bsz: int  # input units per optimizer step, whole sequences

    @property
    def key(self) -> str:
        """Stable name, also the trial's folder under the study: ``aunet2/C1e11/t3``."""
        return f"{self.family}/C{budget_tag(self.budget)}/t{self.index}"

    def overrides(self) -> list[str]:
        """What names the trial's job; the sweeper adds its search box and its plan (``sweeps.job.Cell``)."""
        return [f"family={self.family}", f"budget={self.budget:.6g}", f"trial={self.index}", f"trial_dir={self.key}"]


def budget_tag(budget: float) -> str:
    """3e+11 -> "3e11", 2.5e+11 -> "2.5e11": short, and safe in paths and overrides."""
    return f"{budget:.4g}".replace("e+", "e")


@dataclass
class StudyConfig:
    """What `conf/sweep/<study>.yaml` describes."""

    name: str = "demo"
    families: list[str] = field(default_factory=lambda: ["aunet2"])
    budgets: list[float] = field(default_factory=lambda: [1e11, 3e11, 1e12])
    ratio: float = 1.0  # data-to-model ratio, in LLaMA-3-token units (Sec. 2.3)
    budget_convention: str = "spent"  # what the budgets count: "spent" (head included) or "paper" (the paper's C)
    trials: int = 6  # quasi-random trials per (family, budget)
    lr_factor: float = 4.0  # the box spans [LR/f, LR·f] around the prior
    bsz_factor: float = 4.0
    prior: Any = "paper"  # "paper", a law file, or {aunet: {...}, bpe: {...}} inline (aunet.ladder.resolve_laws)
    seed: int = 0
    max_attempts: int = 2  # runs of a failed or preempted trial before it is left as it is
    batch_size: int = 0  # jobs handed to the launcher at once (0: all pending trials)

    def __post_init__(self) -> None:
        if isinstance(self.budgets, (int, float, str)):
            self.budgets = [self.budgets]
        self.budgets = [parse_budget(b) for b in self.budgets]
        self.families = list(self.families)
        self.validate()

    def validate(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"study {self.name!r}: '{name}' {message}")

        check_convention(self.budget_convention, f"study {self.name!r}: 'budget_convention'")
        if not self.name or "/" in self.name:
            fail("name", f"is {self.name!r}; give a plain name (it names the study's folder and ledger)")
        if not self.families:
            fail("families", f"is empty; name at least one of {tuple(FAMILIES)}")
        for family in self.families:
            if family not in FAMILIES:
                fail("families", f"has unknown family {family!r}; use any of {tuple(FAMILIES)}")
        if len(set(self.families)) != len(self.families):
            fail("families", f"repeats a family: {self.families}")
        if not self.budgets:
            fail("budgets", "is empty; give at least one compute budget in FLOPs, e.g. [1e11, 3e11, 1e12]")
        if len(set(self.budgets)) != len(self.budgets):
            fail("budgets", f"repeats a budget: {self.budgets}")
        if self.trials < 1:
            fail("trials", f"is {self.trials}; a study needs at least one trial per budget")
        if not math.isfinite(self.ratio) or self.ratio <= 0:
            fail("ratio", f"is {self.ratio}; a data-to-model ratio must be positive")
        for name in ("lr_factor", "bsz_factor"):
            factor = getattr(self, name)
            if not math.isfinite(factor) or factor <= 1:
                fail(name, f"is {factor}; the search box [x/f, x·f] needs a factor f > 1 (1 is a degenerate box)")
        if self.max_attempts < 1:
            fail("max_attempts", f"is {self.max_attempts}; must be >= 1")
        if self.batch_size < 0:
            fail("batch_size", f"is {self.batch_size}; must be >= 0 (0: all pending trials at once)")

    def fingerprint(self) -> str:
        """What must not change under the same study name (trial points depend on it)."""
        fixed = {k: v for k, v in asdict(self).items() if k not in ("max_attempts", "batch_size", "trials")}
        if self.budget_convention == "spent":  # the default: studies begun before the setting keep their fingerprint
            del fixed["budget_convention"]
        return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def prior_laws(self, family: str) -> HyperLaws:
        return resolve_laws(self.prior, get_family(family).units)


def parse_budget(value: Any) -> float:
    """1e11, "1e11", "3e11" -> float FLOPs, with a clear error for anything else."""
    return positive_number("budget", value, "a compute budget in FLOPs, e.g. 1e12 or 3.5e11")


def unit_points(family: str, budget: float, seed: int, n: int) -> np.ndarray:
    """The first ``n`` points of the cell's scrambled Sobol sequence in [0, 1)²."""
    cell = hashlib.sha256(f"{seed}:{family}:{budget:.6g}".encode()).digest()
    sampler = qmc.Sobol(d=2, scramble=True, seed=int.from_bytes(cell[:8], "little"))
    with warnings.catch_warnings():  # a prefix of any length is wanted: trials extend their cell's sequence
        warnings.filterwarnings("ignore", message="The balance properties of Sobol")
        return sampler.random(n)


def box(center: float, factor: float) -> tuple[float, float]:
    return center / factor, center * factor


def cell_trials(study: StudyConfig, family: str, budget: float, seq_len: int, lr0: float, bsz0: float,
                n: int | None = None) -> list[Trial]:
    """The quasi-random trials of one cell around the prior (``lr0``, ``bsz0``); BSZ snapped to
    whole sequences of ``seq_len`` units."""
    points = unit_points(family, budget, study.seed, n or study.trials)
    lr_lo, lr_hi = box(lr0, study.lr_factor)
    bsz_lo, bsz_hi = box(bsz0, study.bsz_factor)
    trials = []
    for index, (u_lr, u_bsz) in enumerate(points):
        lr = math.exp(math.log(lr_lo) + u_lr * (math.log(lr_hi) - math.log(lr_lo)))
        bsz = math.exp(math.log(bsz_lo) + u_bsz * (math.log(bsz_hi) - math.log(bsz_lo)))
        trials.append(Trial(family, budget, index, float(f"{lr:.4g}"), max(1, round(bsz / seq_len)) * seq_len))
    return trials
