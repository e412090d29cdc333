"""The recipe for a bigger run: LR, BSZ, model, data, steps and predicted loss at a target budget.

LR and BSZ come from the fitted laws, the loss from L(C), each with the interval of
its bootstrap replicates. The model, data size and steps come from the ladder
(``aunet.ladder.plan``), which turns a budget, a data-to-model ratio and a law into a
concrete run; its overrides are what a training config needs.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.fits import Analysis


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.lo:.4g}, {self.hi:.4g}]"


@dataclass
class Extrapolation:
    """Everything known about one architecture at one target budget."""

    arch: str
    budget: float
    estimator: str
    units: str  # what BSZ counts
    level: float
    lr: Estimate
    bsz: Estimate
    bpb: Estimate | None
    loss: Estimate | None  # nats per input unit
    ratio: float | None
    plan: Any | None = None  # aunet.ladder.RunPlan
    steps: Estimate | None = None
    note: str = ""  # what is missing, and why

    def rows(self) -> list[tuple[str, str, str]]:
        """(quantity, value [interval], unit) for printing and for the report."""
        rows = [("LR", str(self.lr), "peak learning rate"), ("BSZ", str(self.bsz), f"{self.units} per step")]
        if self.plan is not None:
            rows.append(("model", str(getattr(self.plan, "name", "")), f"{self.plan.flops_per_unit:.4g} FLOPs/unit"))
            rows.append(("data", f"{self.plan.train_units:.4g}", f"{self.plan.units} (ratio {self.ratio:g})"))
        if self.steps is not None:
            rows.append(("steps", str(self.steps), "optimizer steps"))
        if self.loss is not None and self.bpb is not None:
            rows.append(("loss", str(self.loss), "nats per input unit"))
            rows.append(("bpb", str(self.bpb), "bits per byte"))
        return rows

    def text(self) -> str:
        head = f"{self.arch} at C = {self.budget:.3g} FLOPs ({self.estimator} law, {self.level:.0%} intervals)"
        width = max(len(q) for q, _, _ in self.rows())
        lines = [head] + [f"  {q:<{width}}  {v}  {u}" for q, v, u in self.rows()]
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)

    def overrides(self) -> dict[str, Any]:
        """Hydra overrides of the training config (dotted keys)."""
        if self.plan is not None:
            return dict(self.plan.to_overrides())
        return {"budget": self.budget, "bsz": int(round(self.bsz.value)), "optim.lr": float(f"{self.lr.value:.4g}")}

    def yaml(self) -> str:
        import yaml

        nested: dict[str, Any] = {}
        for key, value in self.overrides().items():
            *parents, leaf = key.split(".")
            node = nested
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = value.item() if isinstance(value, np.generic) else value
        comments = [f"# {self.arch} at C = {self.budget:.3g} FLOPs, {self.estimator} law "
                    f"({self.level:.0%} intervals)"] + [f"#   {q}: {v} {u}" for q, v, u in self.rows()]
        if self.note:
            comments.append(f"# note: {self.note}")
        return "\n".join(comments) + "\n" + yaml.safe_dump(nested, sort_keys=False)


def extrapolate(analysis: Analysis, arch: str, budget: float, *, estimator: str | None = None,
                ratio: float | None = None) -> Extrapolation:
    """The recipe at ``budget`` from an analysis (the bowl law by default, else the band)."""
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"target budget {budget} must be a positive number of FLOPs, e.g. 1e22")
    fit = analysis.law(arch, estimator)
    lr, bsz = (Estimate(*(float(v[0]) for v in law.predict(budget))) for law in (fit.lr, fit.bsz))
    runs = analysis.results[analysis.results["arch"] == arch]
    bpb = loss = None
    if arch in analysis.loss:
        bpb = Estimate(*(float(v[0]) for v in analysis.loss[arch].predict(budget)))
        to_loss = math.log(2) * float(runs["bytes_per_unit"].median())
        loss = Estimate(bpb.value * to_loss, bpb.lo * to_loss, bpb.hi * to_loss)
    if ratio is None and "ratio" in runs.columns and np.isfinite(runs["ratio"]).any():
        ratio = float(runs["ratio"].median())
    result = Extrapolation(arch, float(budget), fit.estimator, fit.units, fit.lr.level, lr, bsz, bpb, loss, ratio)
    _add_plan(result, fit)
    return result


def _add_plan(result: Extrapolation, fit) -> None:
    """Model, data and steps from the ladder, when it exists."""
    if importlib.util.find_spec("aunet.ladder") is None:
        result.note = "model, data size and steps wait for aunet.ladder (not in this checkout yet)"
        return
    ladder = importlib.import_module("aunet.ladder")
    if result.ratio is None:
        result.note = "model, data size and steps need a data-to-model ratio: pass --ratio"
        return
    plan = ladder.plan(result.arch, result.budget, result.ratio, laws=fit.hyper_laws())
    result.plan = plan
    units = float(plan.train_units)
    result.steps = Estimate(float(plan.steps), units / result.bsz.hi, units / result.bsz.lo)
