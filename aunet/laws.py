"""Hyperparameter power laws: BSZ = A·C^α and LR = B·C^β (Sec. 2.3, App. D).

The paper's fitted laws are the built-in priors of the ladder; a law fitted by
``analysis`` can replace them (``HyperLaws.from_file``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class PowerLaw:
    """y = coef · C^exponent, with C in FLOPs."""

    coef: float
    exponent: float

    def __call__(self, compute: float) -> float:
        return self.coef * compute**self.exponent


@dataclass(frozen=True)
class HyperLaws:
    """Batch size (input units per step) and peak learning rate as functions of compute."""

    bsz: PowerLaw
    lr: PowerLaw
    units: str = "bytes"  # what BSZ counts: bytes or tokens
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HyperLaws:
        try:
            return cls(
                bsz=PowerLaw(float(data["bsz"]["coef"]), float(data["bsz"]["exponent"])),
                lr=PowerLaw(float(data["lr"]["coef"]), float(data["lr"]["exponent"])),
                units=str(data.get("units", "bytes")),
                source=str(data.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                "a hyperparameter law needs {bsz: {coef, exponent}, lr: {coef, exponent}, units}; "
                f"got {data!r} ({err})"
            ) from err

    @classmethod
    def from_file(cls, path: str | Path) -> HyperLaws:
        """The laws of a law file (``LawCard``): an older file is refused, naming what it lacks."""
        return LawCard.read(path).hyper_laws()


#: App. D / Table 6. AU-Net's law is in bytes per step, the BPE baseline's in tokens.
PAPER_LAWS: dict[str, HyperLaws] = {
    "aunet": HyperLaws(PowerLaw(0.66, 0.321), PowerLaw(6.6, -0.176), "bytes", "paper App. D (AU-Net)"),
    "bpe": HyperLaws(PowerLaw(29.9, 0.231), PowerLaw(19.3, -0.177), "tokens", "paper App. D (BPE)"),
}


#: The outer tenth of a log search box counts as its edge (the analysis warns, the sweeper moves the box).
BOX_EDGE = 0.1


#: Budgets a power law in C needs: a slope and one degree of freedom for its scatter (the analysis's
#: fits, and a study's held-out budget, which is predicted from the budgets below it).
MIN_BUDGETS = 3


def box_edge(value: float, lo: float, hi: float) -> str:
    """"lower" or "upper" if ``value`` sits in the outer tenth of the log box [lo, hi] (or beyond it), else ""."""
    if hi <= lo:
        return ""
    position = (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return "lower" if position < BOX_EDGE else "upper" if position > 1 - BOX_EDGE else ""


# ---------------------------------------------------------------------------- law files: a law and its limits

#: The law file format. A file of an older schema, or with a field missing, is refused by name.
LAW_SCHEMA = "aunet.law/2"


@dataclass(frozen=True)
class FittedLaw:
    """One fitted power law with its uncertainty: intervals at ``level``, and the covariance of
    (ln coef, exponent) that carries the interval of a prediction to any budget."""

    coef: float
    exponent: float
    coef_ci: tuple[float, float]
    exponent_ci: tuple[float, float]
    cov: tuple[float, float, float]  # var ln coef, cov, var exponent (of the law's draws)
    dispersion: float | None  # the budgets' scatter around the law in their own noise's units (~1: consistent)
    dof: int  # fitted budgets minus 2: the degrees of freedom of that scatter

    def power_law(self) -> PowerLaw:
        return PowerLaw(self.coef, self.exponent)

    def predict(self, compute: float, level: float = 0.95) -> tuple[float, float, float]:
        """(value, lo, hi) at ``compute``: a normal interval in log space from ``cov`` (the analysis's own
        draws give the same to within their sampling; a law file has only the covariance)."""
        from statistics import NormalDist

        z = NormalDist().inv_cdf((1 + level) / 2)
        x = math.log(compute)
        sd = math.sqrt(max(self.cov[0] + 2 * x * self.cov[1] + x * x * self.cov[2], 0.0))
        value = self.coef * compute**self.exponent
        return value, value * math.exp(-z * sd), value * math.exp(z * sd)


@dataclass(frozen=True)
class BudgetFacts:
    """What one fitted budget showed: its runs, its best run, and its flags (``FLAGS``)."""

    budget: float
    finished: int
    best_lr: float
    best_bsz: float
    flags: tuple[str, ...] = ()


#: Per-budget flags a law file may carry, each a reason of ``aunet.verdict``.
FLAGS = {
    "lr_floor": "the best run's LR is the smallest tried", "lr_ceiling": "the best run's LR is the largest tried",
    "bsz_floor": "the best run's BSZ is the smallest tried", "bsz_ceiling": "the best run's BSZ is the largest tried",
    "lr_edge": "the best run's LR sits on the edge of the search box",
    "bsz_edge": "the best run's BSZ sits on the edge of the search box",
    "bowl_outside": "the bowl's optimum lies outside the search box",
    "band_fills_box": "most of the box is within the band: the loss is flat across it",
}


@dataclass(frozen=True)
class LawCard:
    """A fitted law with everything needed to judge it (``aunet.verdict.judge``): the law file format.

    The fitted range and runs per budget, the estimator, units and compute convention, both
    laws with intervals and dispersion, the loss against compute L(C) with its intervals and
    budgets (None: not fitted), the seed noise measured against the band (None: no
    configuration was run with several seeds), the fit's warnings, and where it came from:
    the source table's hash and the toolkit version.
    """

    family: str
    estimator: str
    units: str  # what BSZ counts: bytes or tokens
    convention: str  # what the budgets count: a key of aunet.record.BUDGET_CONVENTIONS
    tolerance: float  # the near-optimal band (fraction of the best loss)
    level: float  # of every interval
    lr: FittedLaw
    bsz: FittedLaw
    budgets: tuple[BudgetFacts, ...]
    seed_spread: float | None  # the largest relative loss spread over seeds of one configuration
    loss: dict | None  # L(C) = E + A·C^-alpha: metric, label, e, a, alpha, their intervals, fitted budgets, floor
    warnings: tuple[str, ...]
    source: str
    source_sha256: str
    toolkit: str
    schema: str = LAW_SCHEMA

    @property
    def fitted_range(self) -> tuple[float, float]:
        values = [b.budget for b in self.budgets]
        return min(values), max(values)

    def hyper_laws(self) -> HyperLaws:
        return HyperLaws(self.bsz.power_law(), self.lr.power_law(), self.units,
                         f"{self.estimator} fit of {self.family}" + (f" ({self.source})" if self.source else ""))

    def to_dict(self) -> dict:
        return {"schema": self.schema, **{k: v for k, v in asdict(self).items() if k != "schema"}}

    def write(self, path: str | Path) -> None:
        from aunet.atomic import write_json_atomic

        write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict, where: str = "law") -> LawCard:
        """Validated: a missing field or another schema is refused, naming what is missing."""
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != LAW_SCHEMA:
            raise ValueError(f"{where} is in schema {schema!r}, not {LAW_SCHEMA!r}: it lacks the fitted range, "
                             "intervals and provenance a recipe needs; refit it with python -m analysis fit "
                             "<results> --family <family> --law-out <file>")
        names = [f.name for f in fields(cls) if f.name != "schema"]
        missing = [n for n in names if n not in data]
        missing += [f"{law}.{n}" for law in ("lr", "bsz") if isinstance(data.get(law), dict)
                    for n in (f.name for f in fields(FittedLaw)) if n not in data[law]]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)} (schema {LAW_SCHEMA}); refit it with "
                             "python -m analysis fit <results> --family <family> --law-out <file>")
        try:
            laws = {k: FittedLaw(**{n: tuple(v) if isinstance(v, list) else v for n, v in data[k].items()})
                    for k in ("lr", "bsz")}
            budgets = tuple(BudgetFacts(**{**b, "flags": tuple(b.get("flags", ()))}) for b in data["budgets"])
            rest = {n: data[n] for n in names if n not in ("lr", "bsz", "budgets")}
            rest["warnings"] = tuple(rest["warnings"])
            return cls(**rest, lr=laws["lr"], bsz=laws["bsz"], budgets=budgets)
        except (TypeError, KeyError) as err:
            raise ValueError(f"{where}: malformed law file ({err})") from err

    @classmethod
    def read(cls, path: str | Path) -> LawCard:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"hyperparameter law file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"law file {path} is not JSON ({err})") from err
        return cls.from_dict(data, f"law file {path}")
