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
#: The paper's law for a model reading each kind of unit: the prior of any architecture's study.
PAPER_LAW_FOR_UNITS = {"bytes": "aunet", "bpe": "bpe"}


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


# ---------------------------------------------------------------------------- what the data identify

#: Beyond these an interval says the data do not pin a quantity down: it is shown as "not identified"
#: with its interval, never as a number (the report, ``fit``'s lines and the law file's flags alike). A
#: coefficient known to within a factor of 1,000 still carries information (a power law's coefficient
#: trades off against its exponent). An exponent is identified when its interval excludes zero (the
#: data tell which way the optimum moves) and is at most 1 wide: wider spans every law from flat to
#: far steeper than any published one (the paper's are 0.18-0.32 in size).
COEF_IDENTIFIED = 1e3
EXPONENT_IDENTIFIED = 1.0


def coef_identified(ci: tuple[float, float]) -> bool:
    lo, hi = ci
    return bool(lo > 0 and math.isfinite(hi) and hi / lo <= COEF_IDENTIFIED)


def exponent_identified(ci: tuple[float, float]) -> bool:
    lo, hi = ci
    return bool(math.isfinite(lo) and math.isfinite(hi) and hi - lo <= EXPONENT_IDENTIFIED
                and (lo > 0 or hi < 0))


def why_not_identified(ci: tuple[float, float], exponent: bool) -> str:
    """Why an interval does not identify its quantity ("" when it does)."""
    lo, hi = ci
    if exponent:
        if exponent_identified(ci):
            return ""
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return "unbounded"
        return f"wider than {EXPONENT_IDENTIFIED:g}" if hi - lo > EXPONENT_IDENTIFIED else "crosses zero"
    return "" if coef_identified(ci) else f"a factor over {COEF_IDENTIFIED:.0e}"


# ---------------------------------------------------------------------------- law files: a law and its limits

#: The law file format. A file of an older schema, or with a field missing, is refused by name.
LAW_SCHEMA = "aunet.law/3"
#: What refusals of an old file name: a file that kept its budgets and intervals can be rewritten.
UPGRADE_HINT = ("refit it with python -m analysis fit <results> --family <family> --law-out <file>, or rewrite it "
                "with python scripts/upgrade_law_file.py OLD.json NEW.json --family <family> --source <what it was "
                "fitted on> (give the fitted runs' --ratio, --seq-len and --vocab)")
#: Bytes per LLaMA-3 token on DCLM (Sec. 2.3): the unit of the data-to-model ratio γ, and of the tokens per
#: parameter printed beside it (a BPE of another vocabulary counts other tokens).
LLAMA3_BYTES_PER_TOKEN = 4.56


def tokens_per_param(train_units, bytes_per_unit, params):
    """LLaMA-3 tokens of training text per model parameter: the ratio's unit made physical (numbers or
    columns alike)."""
    return train_units * bytes_per_unit / LLAMA3_BYTES_PER_TOKEN / params


@dataclass(frozen=True)
class Regime:
    """The kind of run: of a law's fitted runs (ranges over them) or of a target run (one value each).

    A law depends on compute alone, but its optimum moves with model size and data separately and
    its units change meaning with the sequence and the tokenizer: a recipe is the law's only for runs
    of the kind it was fitted on (``aunet.verdict`` compares the two). Empty fields: not recorded.
    """

    family: str = ""
    ratios: tuple[float, ...] = ()  # requested data-to-model ratios γ (LLaMA-3-token units)
    tokens_per_param: tuple[float, float] | None = None  # LLaMA-3 tokens per parameter: (min, max)
    seq_lens: tuple[int, ...] = ()  # input units per sequence
    vocab_sizes: tuple[int, ...] = ()  # the model's input vocabulary (259 for bytes: 256 and specials)
    bytes_per_unit: tuple[float, float] | None = None  # (min, max): 1 for bytes, a BPE's compression
    origin: str = "recorded"  # "recorded" (the runs' own columns), "planned", or how it was derived

    @classmethod
    def from_dict(cls, data: dict) -> Regime:
        def pair(v):
            return None if v is None else (float(v[0]), float(v[1]))

        return cls(str(data["family"]), tuple(float(r) for r in data["ratios"]), pair(data["tokens_per_param"]),
                   tuple(int(s) for s in data["seq_lens"]), tuple(int(v) for v in data["vocab_sizes"]),
                   pair(data["bytes_per_unit"]), str(data["origin"]))

    def describe_span(self, name: str) -> str:
        """One field as a value or a min-max span ("-" when not recorded)."""
        values = sorted(set(getattr(self, name) or ()))
        if not values:
            return "-"
        fmt = "{:,}" if name in ("seq_lens", "vocab_sizes") else "{:.3g}"
        return fmt.format(values[0]) if len(values) == 1 else f"{fmt.format(values[0])}-{fmt.format(values[-1])}"

    def describe(self) -> str:
        names = {"ratios": "ratio {}", "tokens_per_param": "{} LLaMA-3 tokens per parameter",
                 "seq_lens": "sequences of {}", "vocab_sizes": "vocabulary {}", "bytes_per_unit": "{} bytes per unit"}
        shown = [n for n in names if getattr(self, n) and (n != "bytes_per_unit" or self.bytes_per_unit != (1, 1))]
        return ", ".join(names[n].format(self.describe_span(n)) for n in shown) or "not recorded"


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


#: Per-budget flags a law file may carry, each a reason of ``aunet.verdict``: the estimator's optimum (the
#: bowl's vertex, the band's centre), not the single best run, judged against the values tried around it.
FLAGS = {
    "lr_floor": "the optimal LR lies at the low end of the LRs tried, with nothing tried below it",
    "lr_ceiling": "the optimal LR lies at the high end of the LRs tried, with nothing tried above it",
    "bsz_floor": "the optimal BSZ lies at the low end of the BSZs tried, with nothing tried below it",
    "bsz_ceiling": "the optimal BSZ lies at the high end of the BSZs tried, with nothing tried above it",
    "lr_edge": "the optimal LR sits on the edge of the search box, with nothing tried beyond it",
    "bsz_edge": "the optimal BSZ sits on the edge of the search box, with nothing tried beyond it",
    "bowl_outside": "the bowl's optimum lies outside the search box",
    "band_fills_box": "most of the box is within the band: the loss is flat across it",
}


@dataclass(frozen=True)
class LawCard:
    """A fitted law with everything needed to judge it (``aunet.verdict.judge``): the law file format.

    The fitted range and runs per budget, the estimator, units and compute convention, both
    laws with intervals and dispersion, the loss against compute L(C) with its intervals and
    budgets (None: not fitted), the seed noise measured against the band (None: no
    configuration was run with several seeds), the fit's warnings, where it came from (the
    source table's hash and the toolkit version), and the regime of its runs (ratio, tokens per
    parameter, sequence length, vocabulary, bytes per unit).
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
    source_sha256: str  # of the fitted runs' table (``analysis.cards.source_hash``), not of any file
    toolkit: str
    regime: Regime  # the kind of run the law was fitted on
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
                             f"intervals, provenance or regime a recipe needs; {UPGRADE_HINT}")
        names = [f.name for f in fields(cls) if f.name != "schema"]
        missing = [n for n in names if n not in data]
        missing += [f"{law}.{n}" for law in ("lr", "bsz") if isinstance(data.get(law), dict)
                    for n in (f.name for f in fields(FittedLaw)) if n not in data[law]]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)} (schema {LAW_SCHEMA}); {UPGRADE_HINT}")
        try:
            laws = {k: FittedLaw(**{n: tuple(v) if isinstance(v, list) else v for n, v in data[k].items()})
                    for k in ("lr", "bsz")}
            budgets = tuple(BudgetFacts(**{**b, "flags": tuple(b.get("flags", ()))}) for b in data["budgets"])
            rest = {n: data[n] for n in names if n not in ("lr", "bsz", "budgets", "regime")}
            rest["warnings"] = tuple(rest["warnings"])
            return cls(**rest, lr=laws["lr"], bsz=laws["bsz"], budgets=budgets,
                       regime=Regime.from_dict(data["regime"]))
        except (TypeError, KeyError, IndexError, ValueError) as err:
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
