"""A study: families × compute budgets × quasi-random (LR, BSZ) trials, then adaptive ones.

Each (family, budget) cell gets its own scrambled Sobol sequence, seeded from
the study seed and the cell, over a box in log LR × log BSZ centred on the prior
law's values at that budget (widths are factors: LR ×/÷ 4 means [LR/4, 4·LR]).
The same seed always yields the same trials, and adding trials to a cell extends
its sequence without moving the existing points. What follows phase 1 (box moves past an
edge optimum, phase 2's adaptive trials) is proposed by ``sweeps.adaptive``.

An isoFLOP study (``ratios``) sweeps model size at fixed compute: each (family, budget) becomes one
cell per data-to-model ratio, the ladder's model for that ratio, run at its law's prior LR and BSZ
(``isoflop_search="prior"``) or searched over LR x BSZ like any other cell (``"box"``).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy.stats import qmc

from aunet.ladder import FAMILIES, get_family, positive_number, resolve_laws, whole_sequences
from aunet.laws import MIN_BUDGETS, HyperLaws
from aunet.record import check_convention

PHASES = ("qmc", "adaptive")  # phase 1 quasi-random, phase 2 adaptive (box moves come between them)
SAMPLERS = ("gp", "tpe")  # Optuna's GPSampler and TPESampler for phase 2
#: How an isoFLOP study's cells pick LR and BSZ: the prior law's point (one run per size and seed), or
#: each size its own search over the box, as a single-ratio study's cells do.
ISOFLOP_SEARCHES = ("prior", "box")
#: Fields added to the study since ledgers were first bound, with their defaults: at these values they
#: stay out of the fingerprint, so the ledgers of studies that do not use them keep resuming.
ADDED_FIELDS = {"ratios": None, "isoflop_search": "prior", "seed_budgets": None}
#: A study's ratio when it gives none (neither ``ratio`` nor ``ratios``).
DEFAULT_RATIO = 1.0


@dataclass(frozen=True)
class Trial:
    """One point of the study: what a job trains."""

    family: str
    budget: float
    index: int
    lr: float
    bsz: int  # input units per optimizer step, whole sequences
    phase: str = "qmc"  # "qmc", "move" (a box move past an edge), "adaptive" or "seed" (a rerun of the best)
    box: tuple[float, ...] = ()  # its cell's search box when it was proposed: (lr_min, lr_max, bsz_min, bsz_max)
    seed: int = 0  # the training seed (model init and data order); only seed reruns use another
    ratio: float | None = None  # an isoFLOP cell's data-to-model ratio (None: the study's one ratio)

    @property
    def key(self) -> str:
        """Stable name, also the trial's folder under the study: ``aunet2/C1e11/t3``, or in an isoFLOP
        study ``aunet2/C1e11_r0.2/t3`` (the ratio is part of the cell)."""
        ratio = "" if self.ratio is None else f"_r{ratio_tag(self.ratio)}"
        return f"{self.family}/C{budget_tag(self.budget)}{ratio}/t{self.index}"

    @property
    def cell(self) -> CellKey:
        return self.family, self.budget, self.ratio

    def overrides(self) -> list[str]:
        """What names the trial's job; the sweeper adds its search box and its plan (``sweeps.job.Cell``)."""
        names = [f"family={self.family}", f"budget={self.budget:.6g}", f"trial={self.index}", f"trial_dir={self.key}"]
        return names + ([f"seed={self.seed}"] if self.seed else [])


#: A study's cell: (family, budget, ratio), the ratio None but in an isoFLOP study.
CellKey = tuple[str, float, "float | None"]


def key_ratio(key: str) -> float | None:
    """The ratio a ledger ``key`` names (``Trial.key``: ``aunet2/C1e11_r0.2/t3``), None outside an isoFLOP
    study: the ledger keeps no column for it."""
    _, isoflop, tag = key.split("/")[1].partition("_r")
    return float(tag) if isoflop else None


def with_key_ratio(trial: Trial, key: str) -> Trial:
    """``trial`` with the ratio its ledger ``key`` names."""
    return replace(trial, ratio=key_ratio(key))


def budget_tag(budget: float) -> str:
    """3e+11 -> "3e11", 2.5e+11 -> "2.5e11": short, and safe in paths and overrides."""
    return f"{budget:.4g}".replace("e+", "e")


def ratio_tag(ratio: float) -> str:
    """0.2 -> "0.2", 1e-05 -> "1e-05": a ratio as trial keys name it (``StudyConfig`` keeps ratios to
    these 4 significant digits, so the tag reads back as the same number)."""
    return f"{ratio:.4g}".replace("e+", "e")


@dataclass
class StudyConfig:
    """What `conf/sweep/<study>.yaml` describes."""

    name: str = "demo"
    families: list[str] = field(default_factory=lambda: ["aunet2"])
    budgets: list[float] = field(default_factory=lambda: [1e11, 3e11, 1e12])
    ratio: Any = None  # data-to-model ratio, in LLaMA-3-token units (Sec. 2.3); None: DEFAULT_RATIO, or ratios
    ratios: Any = None  # an isoFLOP study: several ratios, each (family, budget) one cell per ratio
    isoflop_search: str = "prior"  # an isoFLOP cell's LR and BSZ (ISOFLOP_SEARCHES)
    budget_convention: str = "spent"  # what the budgets count: "spent" (head included) or "paper" (the paper's C)
    trials: int = 8  # phase 1: quasi-random trials per (family, budget)
    phases: list[str] = field(default_factory=lambda: ["qmc", "adaptive"])
    adaptive_trials: int = 8  # phase 2: trials per cell proposed by Optuna's sampler
    sampler: str = "tpe"  # phase 2's sampler (measured in benchmarks/bench_adaptive.py; see README)
    adaptive_batch: int = 4  # phase 2 trials proposed per cell and round (they run in parallel)
    max_moves: int = 2  # box moves past an edge optimum, from phase 1 on (0: the box stays on the prior)
    move_trials: int = 8  # trials added past the edge per move (as many as phase 1: measured best)
    seeds: int = 1  # last: the cell's best configuration is rerun until it has this many seeds (seed noise)
    seed_budgets: Any = None  # the budgets whose cells get those seeds (None: every budget)
    holdout: Any = None  # a budget predicted from those below it: its cell also runs at the predicted LR and BSZ
    lr_factor: float = 4.0  # the box spans [LR/f, LR·f] around the prior
    bsz_factor: float = 4.0
    prior: Any = "paper"  # "paper", a law file, or {aunet: ..., bpe: ...}, each a law file or inline (resolve_laws)
    seed: int = 0
    max_attempts: int = 2  # runs of a failed or preempted trial before it is left as it is
    batch_size: int = 0  # submitit jobs in flight at once, refilled as each ends (0: all pending trials)
    force: bool = False  # run cells whose box gives a trial < aunet.ladder.MIN_STEPS steps (refused otherwise)

    def __post_init__(self) -> None:
        if isinstance(self.budgets, (int, float, str)):
            self.budgets = [self.budgets]
        self.budgets = [parse_budget(b) for b in self.budgets]
        self.families = list(self.families)
        self.phases = [self.phases] if isinstance(self.phases, str) else list(self.phases)
        if self.ratios is not None:
            self.ratios = [float(ratio_tag(self._number("ratios", r))) for r in (
                [self.ratios] if isinstance(self.ratios, (int, float, str)) else self.ratios)]
        if self.ratio is not None:
            self.ratio = self._number("ratio", self.ratio)
        if self.seed_budgets is not None:
            self.seed_budgets = [parse_budget(b) for b in (
                [self.seed_budgets] if isinstance(self.seed_budgets, (int, float, str)) else self.seed_budgets)]
        self.validate()

    def _number(self, name: str, value: Any) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"study {self.name!r}: '{name}' has {value!r}, not a number; give a data-to-model "
                             "ratio such as 0.2") from None

    def validate(self) -> None:
        """Every field checked before anything is planned, one line naming the field and the fix: a study
        found wrong after its first trials has spent compute for nothing."""
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
        if not self.phases or self.phases[0] != "qmc" or len(set(self.phases)) != len(self.phases) \
                or not set(self.phases) <= set(PHASES):
            fail("phases", f"is {self.phases}; give phase 1 'qmc', optionally followed by 'adaptive': {list(PHASES)}")
        if self.adaptive_trials < ("adaptive" in self.phases):
            fail("adaptive_trials", f"is {self.adaptive_trials}; phase 'adaptive' needs at least one trial per "
                 "cell (or drop it from phases)")
        if self.sampler not in SAMPLERS:
            fail("sampler", f"is {self.sampler!r}; phase 2's Optuna sampler is one of {SAMPLERS}")
        if self.adaptive_batch < 1:
            fail("adaptive_batch", f"is {self.adaptive_batch}; propose at least one trial per cell and round")
        if self.max_moves < 0:
            fail("max_moves", f"is {self.max_moves}; the box moves at most this many times (0: never)")
        if self.move_trials < (self.max_moves > 0):
            fail("move_trials", f"is {self.move_trials}; a box move needs at least one trial past the edge")
        if self.ratios is None:
            if not math.isfinite(self.planned_ratios[0]) or self.planned_ratios[0] <= 0:
                fail("ratio", f"is {self.ratio}; a data-to-model ratio must be positive")
        elif self.ratio is not None:
            fail("ratios", f"is {self.ratios} and 'ratio' is {self.ratio}: give one ratio or an isoFLOP study's "
                 "ratios, not both (sweep.ratio=null)")
        else:
            bad = [r for r in self.ratios if not math.isfinite(r) or r <= 0]
            if bad or not self.ratios:
                fail("ratios", f"is {self.ratios}; give data-to-model ratios > 0, one per model size at each budget")
            if len(set(self.ratios)) != len(self.ratios):
                fail("ratios", f"repeats a ratio (to 4 significant digits, as trial keys name them): {self.ratios}")
            if self.holdout is not None:
                fail("holdout", "predicts one cell's LR and BSZ per budget; an isoFLOP study has one cell per ratio")
        if self.isoflop_search not in ISOFLOP_SEARCHES:
            fail("isoflop_search", f"is {self.isoflop_search!r}; use one of {ISOFLOP_SEARCHES}")
        for name in ("lr_factor", "bsz_factor"):
            factor = getattr(self, name)
            if not math.isfinite(factor) or factor <= 1:
                fail(name, f"is {factor}; the search box [x/f, x·f] needs a factor f > 1 (1 is a degenerate box)")
        if self.holdout is not None:
            self.holdout = parse_budget(self.holdout)
            below = [b for b in self.budgets if b < self.holdout]
            if self.holdout not in self.budgets or len(below) < MIN_BUDGETS:
                fail("holdout", f"is {self.holdout:.4g}; it must be one of the budgets {self.budgets} with at least "
                     f"{MIN_BUDGETS} budgets below it (the laws it is predicted from need them)")
        if self.seeds < 1:
            fail("seeds", f"is {self.seeds}; the best configuration runs with at least its own seed (1)")
        if self.seed_budgets is not None and not set(self.seed_budgets) <= set(self.budgets):
            fail("seed_budgets", f"is {self.seed_budgets}; name budgets of the study {self.budgets} (null: all)")
        if self.max_attempts < 1:
            fail("max_attempts", f"is {self.max_attempts}; must be >= 1")
        if self.batch_size < 0:
            fail("batch_size", f"is {self.batch_size}; must be >= 0 (0: all pending trials at once)")

    def fingerprint(self) -> str:
        """What must not change under the same study name (trial points depend on it); more trials in a
        phase extend it."""
        extendable = ("max_attempts", "batch_size", "trials", "adaptive_trials", "force", "seeds", "seed_budgets")
        fixed = {k: v for k, v in asdict(self).items()
                 if k not in extendable and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
        if self.ratios is None:  # the ratio left out is the default, as when the field held it
            fixed["ratio"] = self.planned_ratios[0]
        return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def prior_laws(self, family: str) -> HyperLaws:
        return resolve_laws(self.prior, get_family(family).units)

    @property
    def planned_ratios(self) -> list[float]:
        """The ratios each (family, budget) is planned at: an isoFLOP study's, or the study's one ratio."""
        if self.ratios is not None:
            return list(self.ratios)
        return [DEFAULT_RATIO if self.ratio is None else self.ratio]

    @property
    def at_prior(self) -> bool:
        """An isoFLOP study whose cells run at the prior's LR and BSZ, without a search."""
        return self.ratios is not None and self.isoflop_search == "prior"

    def seeds_at(self, budget: float) -> int:
        """The seeds a cell at ``budget`` runs its best configuration with."""
        return self.seeds if self.seed_budgets is None or budget in self.seed_budgets else 1


def parse_budget(value: Any) -> float:
    """1e11, "1e11", "3e11" -> float FLOPs, with a clear error for anything else."""
    return positive_number("budget", value, "a compute budget in FLOPs, e.g. 1e12 or 3.5e11")


def unit_points(family: str, budget: float, seed: int, n: int, stream: str = "") -> np.ndarray:
    """The first ``n`` points of the cell's scrambled Sobol sequence in [0, 1)² (``stream`` names another one)."""
    cell = hashlib.sha256(f"{seed}:{family}:{budget:.6g}{stream}".encode()).digest()
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
    prior = (*box(lr0, study.lr_factor), *box(bsz0, study.bsz_factor))
    return [trial_at(family, budget, index, lr, bsz, seq_len, "qmc", prior)
            for index, (lr, bsz) in enumerate(in_box(points, prior))]


def in_box(points: np.ndarray, search_box: tuple[float, ...]) -> np.ndarray:
    """Points of [0, 1)² mapped log-uniformly onto the box (lr_min, lr_max, bsz_min, bsz_max): (LR, BSZ) rows."""
    lo, hi = np.log(search_box[0::2]), np.log(search_box[1::2])
    return np.exp(lo + np.asarray(points) * (hi - lo))


def trial_at(family: str, budget: float, index: int, lr: float, bsz: float, seq_len: int, phase: str,
             search_box: tuple[float, ...]) -> Trial:
    """A trial at (LR, BSZ): LR to 4 significant digits, BSZ snapped to whole sequences of ``seq_len`` units."""
    return Trial(family, budget, index, float(f"{lr:.4g}"), whole_sequences(bsz, seq_len), phase,
                 tuple(float(f"{v:.6g}") for v in search_box))
