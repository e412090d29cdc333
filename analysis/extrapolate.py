"""The recipe for a bigger run: LR, BSZ, model, data, steps and predicted loss at a target budget.

LR and BSZ come from the fitted laws, the loss from L(C), each with the interval of
its bootstrap replicates. The model, data size and steps come from the ladder
(``aunet.ladder.plan``) at its own default ratio (``DEFAULT_RATIO``) unless one is given: a
sweep's ratio is chosen for its own small budgets (the CPU studies' 0.2), not for a big run.
A family the ladder does not know (an external sweep's) gets the law-only answer, and a
note says why. Every recipe carries the verdict of ``aunet.verdict.judge`` on its law at the
target, with its reasons; ``python -m analysis extrapolate`` refuses one that is not usable.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.cards import law_card
from analysis.fits import Analysis
from analysis.load import FAMILY
from aunet.ladder.families import DEFAULT_RATIO
from aunet.laws import LawCard
from aunet.verdict import REFUSED, Limits, Reason, Verdict, judge


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        """The value, its interval, and the interval's factor width (hi / lo)."""
        width = self.hi / self.lo if self.lo > 0 else math.inf
        return f"{self.value:.4g} [{self.lo:.4g}, {self.hi:.4g}] (x{width:.3g})"


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
    card: LawCard
    verdict: Verdict | None = None  # set once the plan (the target run's sequence) is known
    plan: Any | None = None  # aunet.ladder.RunPlan
    steps: Estimate | None = None
    note: str = ""  # what is missing, and why

    def provenance(self) -> list[str]:
        """Where the recipe comes from and what it is worth: the lines a YAML file and a report carry."""
        lo, hi = self.card.fitted_range
        lines = [f"verdict: {self.verdict.line()}",
                 f"source: {self.card.source or '-'} (sha256 {self.card.source_sha256[:16]}), toolkit "
                 f"{self.card.toolkit}",
                 f"fitted: {len(self.card.budgets)} budgets from {lo:.3g} to {hi:.3g} FLOPs ({self.card.convention}); "
                 f"the target is {self.budget / hi:.3g}x the largest"]
        return lines + [f"note: {n}" for n in self.verdict.notes]

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
        lines = [head, *(f"  {line}" for line in self.provenance())]
        lines += [f"  {q:<{width}}  {v}  {u}" for q, v, u in self.rows()]
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
        comments += [f"# {line}" for line in self.provenance()]
        comments += [f"#   {q}: {v} {u}" for q, v, u in self.rows()]
        if self.note:
            comments.append(f"# note: {self.note}")
        return "\n".join(comments) + "\n" + yaml.safe_dump(nested, sort_keys=False)


def extrapolate(analysis: Analysis, family: str, budget: float, *, estimator: str | None = None,
                ratio: float | None = None, limits: Limits | None = None, source: str = "") -> Extrapolation:
    """The recipe at ``budget`` from an analysis (the bowl law by default, else the band), with its
    verdict. ``ratio``: the data-to-model ratio of the big run (default: the ladder's own)."""
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ValueError(f"target budget {budget} must be a positive number of FLOPs, e.g. 1e22")
    if ratio is not None and not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"--ratio {ratio} must be a positive data-to-model ratio, e.g. 10")
    fit = analysis.law(family, estimator)
    card = law_card(analysis, family, fit.estimator, source)
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
    result = Extrapolation(family, float(budget), fit.estimator, fit.units, fit.lr.level, lr, bsz, bpb, loss,
                           ratio if ratio is not None else DEFAULT_RATIO, card)
    unplannable = _add_plan(result)
    intervals = {"lr": (lr.value, lr.lo, lr.hi), "bsz": (bsz.value, bsz.lo, bsz.hi)}
    seq_len = result.plan.model.seq_len if result.plan is not None else None
    verdict = judge(card, budget, limits, intervals=intervals, seq_len=seq_len)
    if unplannable:
        verdict = dataclasses.replace(verdict, reasons=(*verdict.reasons, Reason(REFUSED, unplannable)))
    result.verdict = verdict
    return result


def _add_plan(result: Extrapolation) -> str | None:
    """Model, data and steps from the ladder, for the families it knows; the steps' interval is the
    data over the BSZ interval rounded to whole sequences, as the plan rounds its own batch. Returns
    why the ladder has no model for the target, if it has none (a refusal reason)."""
    from aunet import ladder

    if result.family not in ladder.FAMILIES:
        result.note = (f"no model shape, data size or steps: the ladder knows no family {result.family!r} (it knows "
                       f"{', '.join(sorted(ladder.FAMILIES))}); LR, BSZ and loss come from the fitted laws alone")
        return None
    try:
        plan = ladder.plan(result.family, result.budget, result.ratio, laws=result.card.hyper_laws())
    except ValueError as err:  # e.g. beyond the ladder's largest model: the laws still answer, with a verdict
        result.note = f"no model: {err}"
        return result.note
    result.plan = plan
    units, seq = float(plan.train_units), plan.model.seq_len
    result.steps = Estimate(float(plan.steps), units / ladder.whole_sequences(result.bsz.hi, seq),
                            units / ladder.whole_sequences(result.bsz.lo, seq))
    return None
