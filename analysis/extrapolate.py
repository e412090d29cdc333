"""The recipe for a bigger run: LR, BSZ, model, data, steps and predicted loss at a target budget.

LR and BSZ come from the fitted laws, the loss from L(C), each with the interval of
its bootstrap replicates. The model, data size and steps come from the ladder
(``aunet.ladder.plan``) in the regime the law was fitted in: the study's own data-to-model
ratio, sequence length, vocabulary and bytes per token, since the law depends on compute
alone and says nothing about runs of another kind. ``ratio`` chooses another ratio by hand
(the verdict then weighs the difference). A family the ladder does not know (an external
sweep's) gets the law-only answer, and a note says why. Every recipe carries the verdict of ``aunet.verdict.judge`` on its law at the
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
    ratio_source: str  # where the ratio came from: the study's own, or given by hand
    card: LawCard
    verdict: Verdict | None = None  # set once the plan (the target run's sequence) is known
    plan: Any | None = None  # aunet.ladder.RunPlan
    steps: Estimate | None = None
    note: str = ""  # what is missing, and why

    def provenance(self) -> list[str]:
        """Where the recipe comes from and what it is worth: the lines a YAML file and a report carry."""
        lo, hi = self.card.fitted_range
        lines = [f"verdict: {self.verdict.line()}",
                 f"source: {self.card.source or '-'} (sha256 of its fitted runs, not of a file: "
                 f"{self.card.source_sha256[:16]}), toolkit {self.card.toolkit}",
                 f"fitted: {len(self.card.budgets)} budgets from {lo:.3g} to {hi:.3g} FLOPs ({self.card.convention}); "
                 f"the target is {self.budget / hi:.3g}x the largest",
                 f"fitted runs: {self.card.regime.describe()}"]
        return lines + [f"note: {n}" for n in self.verdict.notes]

    def rows(self) -> list[tuple[str, str, str]]:
        """(quantity, value [interval], unit) for printing and for the report."""
        rows = [("LR", str(self.lr), "peak learning rate"), ("BSZ", str(self.bsz), f"{self.units} per step (law)")]
        if self.plan is not None:
            p = self.plan
            rows += [("model", p.name, f"dims {p.model.dims}, layers {p.model.layers}, {p.params:,} params"),
                     ("data", f"{p.train_units:.4g}",
                      f"{p.units} (ratio {p.ratio:g}, {self.ratio_source}; achieved {p.achieved_ratio:.3g}: "
                      f"{p.tokens_per_param:.3g} LLaMA-3 tokens per parameter)"),
                     ("sequence", f"{p.model.seq_len:,}", f"{p.units}, vocabulary {p.model.vocab_size:,}"
                      + (f", {p.bytes_per_unit:.3g} bytes per token" if p.units == "tokens" else "")),
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
    verdict. ``ratio``: the data-to-model ratio of the big run (default: the study's own)."""
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ValueError(f"target budget {budget} must be a positive number of FLOPs, e.g. 1e22")
    if ratio is not None and not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"--ratio {ratio} must be a positive data-to-model ratio, e.g. 10")
    fit = analysis.law(family, estimator)
    card = law_card(analysis, family, fit.estimator, source)
    ratio_source = "given by hand (--ratio)"
    if ratio is None:
        ratio, ratio_source = study_ratio(card), "the study's own"
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
                           ratio, ratio_source, card)
    unplannable = _add_plan(result)
    intervals = {"lr": (lr.value, lr.lo, lr.hi), "bsz": (bsz.value, bsz.lo, bsz.hi)}
    run = result.plan.regime() if result.plan is not None else None
    verdict = judge(card, budget, limits, intervals=intervals, run=run)
    if unplannable:
        verdict = dataclasses.replace(verdict, reasons=(*verdict.reasons, Reason(REFUSED, unplannable, "model")))
    result.verdict = verdict
    return result


def study_ratio(card: LawCard) -> float:
    """The data-to-model ratio the law's runs were trained at: the recipe's default."""
    ratios = card.regime.ratios
    if len(ratios) == 1:
        return ratios[0]
    if not ratios:
        raise ValueError(f"the {card.family} runs record no data-to-model ratio: give the big run's with --ratio "
                         "(the verdict weighs it against the runs' tokens per parameter where they are known)")
    raise ValueError(f"the {card.family} runs were trained at ratios {', '.join(f'{r:g}' for r in ratios)}: the law "
                     "does not say which the big run should take; give one with --ratio")


def _add_plan(result: Extrapolation) -> str | None:
    """Model, data and steps from the ladder, for the families it knows, in the fitted runs' regime
    (their sequence, vocabulary and bytes per token where the card records one of each); the steps'
    interval is the data over the BSZ interval rounded to whole sequences, as the plan rounds its own
    batch. Returns why the ladder has no model for the target, if it has none (a refusal reason)."""
    from aunet import ladder

    if result.family not in ladder.FAMILIES:
        result.note = (f"no model shape, data size or steps: the ladder knows no family {result.family!r} (it knows "
                       f"{', '.join(sorted(ladder.FAMILIES))}); LR, BSZ and loss come from the fitted laws alone")
        return None
    fitted, fam = result.card.regime, ladder.FAMILIES[result.family]
    largest = result.card.fitted_range[1]
    keep = {}
    if len(fitted.seq_lens) == 1:  # the fitted runs' sequence, with the window they had
        keep.update(seq_len=fitted.seq_lens[0], window=fam.regime(largest)[1])
    if fam.units == "bpe":
        if len(fitted.vocab_sizes) == 1:
            keep["vocab_size"] = fitted.vocab_sizes[0]
        if fitted.bytes_per_unit:
            keep["bpe_bytes_per_token"] = sum(fitted.bytes_per_unit) / 2
    try:
        plan = ladder.plan(result.family, result.budget, result.ratio, laws=result.card.hyper_laws(), **keep)
    except ValueError as err:  # e.g. beyond the ladder's largest model: the laws still answer, with a verdict
        result.note = f"no model: {err}"
        return result.note
    result.plan = plan
    units, seq = float(plan.train_units), plan.model.seq_len
    result.steps = Estimate(float(plan.steps), units / ladder.whole_sequences(result.bsz.hi, seq),
                            units / ladder.whole_sequences(result.bsz.lo, seq))
    return None
