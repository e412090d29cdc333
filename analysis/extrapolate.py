"""The recipe for a bigger run: LR, BSZ, model, data, steps and predicted loss at a target budget.

LR and BSZ come from the fitted laws, the loss from L(C), each with the interval of
its bootstrap replicates. The model, data size and steps come from the ladder
(``aunet.ladder.plan``), which turns a budget, a data-to-model ratio and a law into a
concrete run; its overrides are what a training config needs. A family the ladder
does not know (an external sweep's) gets the law-only answer, and a note says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.fits import Analysis
from analysis.load import FAMILY


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.lo:.4g}, {self.hi:.4g}]"


@dataclass
class Extrapolation:
    """Everything known about one family at one target budget."""

    family: str
    budget: float
    estimator: str
    units: str  # what BSZ counts
    level: float
    lr: Estimate
    bsz: Estimate
    bpb: Estimate | None  # None when bytes per unit are unknown
    loss: Estimate | None  # nats per input unit
    ratio: float | None
    plan: Any | None = None  # aunet.ladder.RunPlan
    steps: Estimate | None = None
    note: str = ""  # what is missing, and why

    def rows(self) -> list[tuple[str, str, str]]:
        """(quantity, value [interval], unit) for printing and for the report."""
        rows = [("LR", str(self.lr), "peak learning rate"), ("BSZ", str(self.bsz), f"{self.units} per step (law)")]
        if self.plan is not None:
            p = self.plan
            rows += [("model", p.name, f"dims {p.model.dims}, layers {p.model.layers}, {p.params:,} params"),
                     ("data", f"{p.train_units:.4g}",
                      f"{p.units} (ratio {p.ratio:g}, achieved {p.achieved_ratio:.3g})"),
                     ("batch", f"{p.bsz:,}", f"{p.units} per step = {p.sequences_per_step} x {p.model.seq_len}")]
        if self.steps is not None:
            rows.append(("steps", str(self.steps), "optimizer steps"))
        if self.loss is not None:
            rows.append(("loss", str(self.loss), f"nats per {self.units.removesuffix('s')}"))
        if self.bpb is not None:
            rows.append(("bpb", str(self.bpb), "bits per byte"))
        return rows

    def command_line(self) -> list[str]:
        """Hydra overrides of the training config (``conf/train.yaml``) that run the recipe.

        With a plan, the ladder's own (model, family, budget, ratio, BSZ, steps, LR);
        without one, the law's LR and BSZ at the budget. ``++`` sets a key whether or
        not the composed config has it.
        """
        if self.plan is not None:
            return list(self.plan.to_overrides())
        return [f"++family={self.family}", f"++budget={self.budget!r}", f"++bsz={round(self.bsz.value)}",
                f"++optim.lr={float(f'{self.lr.value:.4g}')!r}"]

    def overrides(self) -> dict[str, Any]:
        """The same overrides as a dict of dotted keys to values (parsed with Hydra's grammar)."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(self.command_line())}

    def text(self) -> str:
        head = f"{self.family} at C = {self.budget:.3g} FLOPs ({self.estimator} law, {self.level:.0%} intervals)"
        width = max(len(q) for q, _, _ in self.rows())
        lines = [head] + [f"  {q:<{width}}  {v}  {u}" for q, v, u in self.rows()]
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join([*lines, "overrides:", "  " + " ".join(self.command_line())])

    def yaml(self) -> str:
        """A Hydra config file of the overrides (``# @package _global_``: drop it in a config group)."""
        import yaml

        nested: dict[str, Any] = {}
        for key, value in self.overrides().items():
            *parents, leaf = key.split(".")
            node = nested
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = value.item() if isinstance(value, np.generic) else value
        comments = ["# @package _global_",
                    f"# {self.family} at C = {self.budget:.3g} FLOPs, {self.estimator} law ({self.level:.0%} intervals)"]
        comments += [f"#   {q}: {v} {u}" for q, v, u in self.rows()]
        if self.note:
            comments.append(f"# note: {self.note}")
        return "\n".join(comments) + "\n" + yaml.safe_dump(nested, sort_keys=False)


def extrapolate(analysis: Analysis, family: str, budget: float, *, estimator: str | None = None,
                ratio: float | None = None) -> Extrapolation:
    """The recipe at ``budget`` from an analysis (the bowl law by default, else the band)."""
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"target budget {budget} must be a positive number of FLOPs, e.g. 1e22")
    fit = analysis.law(family, estimator)
    lr, bsz = (Estimate(*(float(v[0]) for v in law.predict(budget))) for law in (fit.lr, fit.bsz))
    runs = analysis.results[analysis.results[FAMILY] == family]
    bpb = loss = None
    if family in analysis.loss:
        curve = analysis.loss[family]
        predicted = Estimate(*(float(v[0]) for v in curve.predict(budget)))
        if curve.metric == "bpb":
            bpb, to_loss = predicted, math.log(2) * float(runs["bytes_per_unit"].median())
            loss = Estimate(bpb.value * to_loss, bpb.lo * to_loss, bpb.hi * to_loss)
        else:  # nats per unit: bytes per unit unknown, so no bits per byte
            loss = predicted
    if ratio is None and "ratio" in runs.columns and np.isfinite(runs["ratio"]).any():
        ratio = float(runs["ratio"].median())
    result = Extrapolation(family, float(budget), fit.estimator, fit.units, fit.lr.level, lr, bsz, bpb, loss, ratio)
    _add_plan(result, fit)
    return result


def _add_plan(result: Extrapolation, fit) -> None:
    """Model, data and steps from the ladder, for the families it knows."""
    from aunet import ladder

    if result.family not in ladder.FAMILIES:
        result.note = (f"no model shape, data size or steps: the ladder knows no family {result.family!r} (it knows "
                       f"{', '.join(sorted(ladder.FAMILIES))}); LR, BSZ and loss come from the fitted laws alone")
        return
    if result.ratio is None or not math.isfinite(result.ratio):
        result.note = "model, data size and steps need a data-to-model ratio: pass --ratio"
        return
    plan = ladder.plan(result.family, result.budget, result.ratio, laws=fit.hyper_laws())
    result.plan = plan
    units = float(plan.train_units)
    result.steps = Estimate(float(plan.steps), units / result.bsz.hi, units / result.bsz.lo)
