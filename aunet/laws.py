"""Hyperparameter power laws: BSZ = A·C^α and LR = B·C^β (Sec. 2.3, App. D).

The paper's fitted laws are the built-in priors of the ladder; a law fitted by
``analysis`` can replace them (``HyperLaws.from_file``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
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
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"hyperparameter law file {path} does not exist")
        return cls.from_dict(json.loads(path.read_text()))


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
