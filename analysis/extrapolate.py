"""The recipe for a bigger run: LR, BSZ, model, data, steps and predicted loss at a target budget.

LR and BSZ come from the fitted laws, the loss from L(C), each with the interval of
its bootstrap replicates. The model, data size and steps come from the ladder
(``aunet.ladder.plan``) in the regime the law was fitted in: the study's own data-to-model
ratio, sequence length, vocabulary and bytes per token, since the law depends on compute
alone and says nothing about runs of another kind. ``ratio`` chooses another ratio by hand
(the verdict then weighs the difference). A family the ladder does not know (an external
sweep's) gets the law-only answer, and a note says why. Every recipe carries the verdict of ``aunet.verdict.judge`` on its law at the
target, with its reasons; ``python -m analysis extrapolate`` refuses one that is not usable.

Where the study swept model size at fixed compute (an isoFLOP design, by ``analysis.optimal``'s rule, whose
fits it reads: budgets with too few sizes are left out and named), its allocation fits choose the model
instead of a ratio: approach 3's N_opt at the target, approach 2's beside it, and the ladder's model nearest
N_opt, planned at the ratio that model implies. The verdict then also weighs the isoFLOP fits
(``aunet.verdict.Allocation``). ``ratio`` still chooses by hand, and the recipe says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.allocation import MISALLOCATION_FLAG, Approach2Result, Approach3Result
from analysis.cards import law_card
from analysis.fits import Analysis
from analysis.load import FAMILY
from analysis.optimal import FamilyOptimum, design_tables, optimal_study
from aunet.laws import LawCard
from aunet.verdict import REFUSED, Allocation, Limits, Reason, Verdict, judge

OPTIMAL = "compute-optimal (approach 3)"  # where the recipe's model size comes from when the isoFLOP fits chose it
MANUAL = "given by hand (--ratio)"
#: Ratios (LLaMA-3-token units) spanning every model the ladder can build at a budget: the search for the
#: model nearest N_opt starts between them.
RATIO_SPAN = (1e-6, 1e6)


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
class Optimal:
    """The compute-optimal model size at the target, read from the study's isoFLOP fits (``analysis.optimal``)."""

    fits: FamilyOptimum
    n_opt: Estimate  # approach 3's closed form, parameters
    n_opt2: Estimate | None  # approach 2's power law, where it has one
    misallocated: float  # share of the target's compute approach 2's N_opt wastes under approach 3's L (NaN: no law)

    @classmethod
    def at(cls, fits: FamilyOptimum, target: float) -> Optimal:
        """``fits`` (made at ``target``) read there; one ValueError line where approach 3 could not be fitted."""
        if fits.fit3 is None:
            raise ValueError(f"{fits.family}: no compute-optimal model: approach 3 not fitted "
                             f"({fits.not_fitted['approach3']})")
        n_opt2 = _estimate(fits.optimum("approach2", target)) if fits.fit2 is not None and fits.fit2.law is not None else None
        share = next((c.share for c in fits.comparisons if c.target == target), math.nan)  # NaN: no approach-2 law
        return cls(fits, _estimate(fits.optimum("approach3", target)), n_opt2, share)

    @property
    def approach3(self) -> Approach3Result:
        return self.fits.fit3

    @property
    def approach2(self) -> Approach2Result | None:
        """None when the study has too few budgets for it."""
        return self.fits.fit2

    @property
    def budgets(self) -> tuple[float, ...]:
        """The isoFLOP budgets fitted."""
        return tuple(float(b) for b in self.fits.budgets)

    @property
    def runs(self) -> int:
        return len(self.fits.table)

    @property
    def no_cross_check(self) -> str:
        """Why approach 2 cannot check approach 3 ("" when it can)."""
        return self.fits.not_fitted.get("approach2") or self.fits.fit2.reason

    def facts(self, chosen: float | None) -> Allocation:
        """What the verdict reads of these fits, ``chosen`` the parameters of the ladder's model (None: none)."""
        bounds = () if self.approach2 is None else tuple(
            f"at budget {v.budget:.3g} {v.reason}" for v in self.approach2.vertices if v.kind != "value")
        return Allocation(self.budgets, (self.n_opt.value, self.n_opt.lo, self.n_opt.hi), chosen, bounds,
                          self.misallocated, MISALLOCATION_FLAG, self.approach3.converged, self.no_cross_check,
                          self.approach3.level)

    def rows(self) -> list[tuple[str, str, str]]:
        rows = [("N_opt", str(self.n_opt), f"parameters, approach 3 (L(N, D) fitted to every run; a "
                                           f"{self.approach3.a:.3g} {_interval(self.approach3.ci['a'])})")]
        if self.n_opt2 is not None:
            a2 = self.approach2
            rows.append(("N_opt a2", str(self.n_opt2), f"parameters, approach 2 (a vertex per budget; a {a2.a:.3g} "
                                                       f"{_interval(a2.a_ci)}): {self.misallocated:.1%} of the "
                                                       "compute misallocated under approach 3's L"))
        return rows


def _interval(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def _estimate(optimum: dict[str, Any]) -> Estimate:
    """N_opt and its interval of ``FamilyOptimum.optimum``."""
    return Estimate(optimum["n_opt"], *optimum["n_opt_ci"])


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
    optimal: Optimal | None = None  # the isoFLOP fits' model size, where they chose it
    isoflop: bool = False  # the study has an isoFLOP design (the recipe then says how its model was chosen)

    def provenance(self) -> list[str]:
        """Where the recipe comes from and what it is worth: the lines a YAML file and a report carry."""
        lo, hi = self.card.fitted_range
        lines = [f"verdict: {self.verdict.line()}",
                 f"source: {self.card.source or '-'} (sha256 of its fitted runs, not of a file: "
                 f"{self.card.source_sha256[:16]}), toolkit {self.card.toolkit}",
                 f"fitted: {len(self.card.budgets)} budgets from {lo:.3g} to {hi:.3g} FLOPs ({self.card.convention}); "
                 f"the target is {self.budget / hi:.3g}x the largest",
                 f"fitted runs: {self.card.regime.describe()}"]
        if self.isoflop:
            lines.append(f"model: {self.model_choice()}")
        return lines + [f"note: {n}" for n in self.verdict.notes]

    def model_choice(self) -> str:
        """How the model size was chosen, on a study that could have fitted it."""
        if self.optimal is None:
            return (f"manual ratio {self.ratio:g} (--ratio; without it the study's isoFLOP fits choose the "
                    "compute-optimal size)")
        o = self.optimal
        chosen = (f"the ladder's model nearest N_opt, at the ratio it implies ({self.ratio:.4g})" if self.plan
                  else "the ladder has no model for it")
        left = f"; {o.fits.left_out_text()}" if o.fits.left_out else ""
        return (f"{OPTIMAL}: {chosen}; isoFLOP fits of {o.runs} runs at {len(o.budgets)} budgets from "
                f"{min(o.budgets):.3g} to {max(o.budgets):.3g} FLOPs{left}")

    def rows(self) -> list[tuple[str, str, str]]:
        """(quantity, value [interval], unit) for printing and for the report."""
        rows = [("LR", str(self.lr), "peak learning rate"), ("BSZ", str(self.bsz), f"{self.units} per step (law)")]
        if self.optimal is not None:
            rows += self.optimal.rows()
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
            node[leaf] = value  # Hydra's parser gives plain Python values, which YAML writes as they are
        comments = ["# @package _global_",
                    f"# {self.family} at C = {self.budget:.3g} FLOPs, {self.estimator} law ({self.level:.0%} intervals)"]
        comments += [f"# {line}" for line in self.provenance()]
        comments += [f"#   {q}: {v} {u}" for q, v, u in self.rows()]
        if self.note:
            comments.append(f"# note: {self.note}")
        return "\n".join(comments) + "\n" + yaml.safe_dump(nested, sort_keys=False)


def extrapolate(analysis: Analysis, family: str, budget: float, *, estimator: str | None = None,
                ratio: float | None = None, limits: Limits | None = None, source: str = "", n_boot: int = 200,
                seed: int = 0) -> Extrapolation:
    """The recipe at ``budget`` from an analysis (the bowl law by default, else the band), with its
    verdict. ``ratio``: the data-to-model ratio of the big run (default: the compute-optimal model where the
    study has an isoFLOP design, else the study's own ratio). ``n_boot``, ``seed``: the isoFLOP fits' bootstrap."""
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ValueError(f"target budget {budget} must be a positive number of FLOPs, e.g. 1e22")
    if ratio is not None and not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"--ratio {ratio} must be a positive data-to-model ratio, e.g. 10")
    fit = analysis.law(family, estimator)
    card = law_card(analysis, family, fit.estimator, source)
    isoflop = family in design_tables(analysis.results, [family], strict=False)[0]
    optimal = None
    ratio_source = MANUAL
    if ratio is None and isoflop:
        optimal, ratio_source = compute_optimal(analysis.results, family, budget, n_boot=n_boot, seed=seed), OPTIMAL
    elif ratio is None:
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
                           ratio, ratio_source, card, optimal=optimal, isoflop=isoflop)
    unplannable = _add_plan(result)
    intervals = {"lr": (lr.value, lr.lo, lr.hi), "bsz": (bsz.value, bsz.lo, bsz.hi)}
    run = result.plan.regime() if result.plan is not None else None
    facts = optimal.facts(result.plan.params if result.plan is not None else None) if optimal else None
    verdict = judge(card, budget, limits, intervals=intervals, run=run, allocation=facts)
    if unplannable:
        verdict = dataclasses.replace(verdict, reasons=(*verdict.reasons, Reason(REFUSED, unplannable, "model")))
    result.verdict = verdict
    return result


def compute_optimal(results: Any, family: str, budget: float, *, n_boot: int = 200, seed: int = 0) -> Optimal:
    """The family's isoFLOP fits (``analysis.optimal``: its design rule, the family judged as one found by
    looking) read at the target ``budget``; one ValueError line where the family has no isoFLOP design."""
    study = optimal_study(results, families=[family], targets=[budget], n_boot=n_boot, seed=seed, strict=False)
    if family not in study.families:
        raise ValueError(f"{family}: {study.skipped[family]}")
    return Optimal.at(study.families[family], budget)


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

    def plan_at(ratio: float) -> ladder.RunPlan:
        return ladder.plan(result.family, result.budget, ratio, laws=result.card.hyper_laws(), **keep)

    try:
        if result.optimal is not None:
            plan = nearest_model(plan_at, result.optimal.n_opt.value)
            result.ratio = plan.ratio
        else:
            plan = plan_at(result.ratio)
    except ValueError as err:  # e.g. beyond the ladder's largest model: the laws still answer, with a verdict
        result.note = f"no model: {err}"
        return result.note
    result.plan = plan
    units, seq = float(plan.train_units), plan.model.seq_len
    result.steps = Estimate(float(plan.steps), units / ladder.whole_sequences(result.bsz.hi, seq),
                            units / ladder.whole_sequences(result.bsz.lo, seq))
    return None


def implied_ratio(plan: Any) -> float:
    """The ratio at which the ladder's cost of ``plan``'s model spends its budget exactly: the ratio that picks
    that model (its achieved ratio, before the budget is rounded to whole steps)."""
    return plan.achieved_ratio * plan.budget / (plan.train_units * plan.budget_per_unit)


def nearest_model(plan_at: Callable[[float], Any], n_target: float) -> Any:
    """The plan (``plan_at(ratio)``, an ``aunet.ladder.RunPlan``) of the ladder's model nearest ``n_target``
    parameters in log, at the ratio that model implies (to 4 digits, rounded down: under a thousandth lower,
    far less than the ladder's models are apart in cost, so the same model comes back).

    A larger ratio never gives a larger model, so a bisection in log ratio over ``RATIO_SPAN`` finds the two
    models either side of ``n_target``; a ratio the ladder refuses lies past its largest model (below the
    ratios it plans) or its smallest (above). One ValueError (the ladder's) when no ratio gives a model."""
    def attempt(ratio: float) -> Any:
        try:
            return plan_at(ratio)
        except ValueError as err:
            return err

    anchors = {r: attempt(r) for r in np.geomspace(*RATIO_SPAN, 13)}
    planned = [r for r, p in anchors.items() if not isinstance(p, Exception)]
    if not planned:
        raise anchors[min(anchors, key=lambda r: abs(math.log(r)))]
    inside = planned[0]

    def big_enough(ratio: float, plan: Any) -> bool:
        return plan.params >= n_target if not isinstance(plan, Exception) else ratio < inside

    lo, hi = RATIO_SPAN
    found = {lo: attempt(lo), hi: attempt(hi)}
    if big_enough(lo, found[lo]) and not big_enough(hi, found[hi]):
        for _ in range(60):
            mid = math.sqrt(lo * hi)
            found[mid] = attempt(mid)
            lo, hi = (mid, hi) if big_enough(mid, found[mid]) else (lo, mid)
    sides = [p for p in (found[lo], found[hi]) if not isinstance(p, Exception)]  # after the bisection, one at least
    best = min(sides, key=lambda p: abs(math.log(p.params / n_target)))
    ratio = implied_ratio(best)
    step = 10.0 ** (math.floor(math.log10(ratio)) - 3)
    return plan_at(float(f"{math.floor(ratio / step) * step:.4g}"))
