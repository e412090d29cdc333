"""The one rule that turns a fitted law into a decision: usable, use with care, or not usable.

Everything that hands a user a recipe goes through :func:`judge`: ``python -m analysis
extrapolate``, ``train.py law=<file>`` and the first section of the report. The rule reads
a ``aunet.laws.LawCard`` (the law and its limits) and a target budget, and gives every
reason it finds; one "not usable" reason refuses the recipe.

The thresholds (``Limits``), each with why it sits where it does and the measurements behind
it, are in the README ("When a law is usable"; ``benchmarks/bench_verdict.py``):

* **range**: at least 3 budgets spanning at least one decade of compute: over less, an
  exponent is a local slope.
* **extrapolation**: at most ``max_extrapolation`` (100x) past the largest fitted budget,
  never below the smallest: past that the law's form is an assumption, not data.
* **interval at the target**: the 95% interval of LR or BSZ wider than a factor 4 (2x either
  way) refuses: a confirmation sweep of x/2, x, 2x could not be sure to bracket the optimum.
  Wider than 2 asks for care.
* **optimum pinned at the floor or ceiling of what was tried**, or **on the edge of the
  search box** (or the bowl's optimum outside it), at any fitted budget: the data bound the
  optimum from one side only. A band that fills the box (flat loss) asks for care.
* **dispersion**: the budgets scatter around the law more than their own noise explains:
  above 3 refuses, above 2 asks for care (chosen from clean synthetic sweeps, on which a
  chi-square test of it is miscalibrated).
* **seed noise**: seeds of one configuration differing by the band or more (the band then
  selects noise). Unmeasured seed noise is said, not held against the law.
* **the recipe itself**: a batch below one sequence of the target run cannot be run.
* **the run's regime**: the law depends on compute alone, so the target run must be the kind of
  run it was fitted on. Another family, another vocabulary or a BPE whose tokens hold other amounts
  of text (bytes per token off by more than ``units_tolerance``) refuses: the law's units no longer
  mean the same thing. A data-to-model ratio (or, where the run's ratio is not known, LLaMA-3 tokens
  per parameter) or sequence length outside the fitted runs' own by more than ``regime_factor`` asks
  for care, with the factor: the optimum moves with model size and data separately, and with the
  sequence.
* **the compute-optimal model** (where the study's isoFLOP fits chose the model size, ``Allocation``): the
  range and extrapolation rules above, on the isoFLOP budgets; every budget's vertex bracketed by the
  study's sizes (one that is a bound refuses: the grid saw the optimum from one side only); the 95%
  interval of N_opt at the target wider than ``n_opt_width_refuse`` refuses, wider than ``n_opt_width_care``
  asks for care (chosen from the synthetic benchmark's intervals, ``benchmarks/bench_allocation.py``: a
  well-designed study stays under the care limit at 100x; an interval end sqrt(width) from N_opt wastes
  a share of the compute that grows fast past it); approaches 2 and 3 disagreeing by more compute than
  ``analysis.allocation.compare`` flags asks for care, as does an approach-3 fit whose starts did not
  agree; a ladder model outside N_opt's interval refuses (it is not the compute-optimal model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from aunet.laws import FLAGS, LawCard, Regime, exponent_identified, why_not_identified

USABLE, CARE, REFUSED = "usable", "use with care", "not usable"
_RANK = {USABLE: 0, CARE: 1, REFUSED: 2}


@dataclass(frozen=True)
class Limits:
    """The verdict's thresholds; the module docstring says why each is where it is."""

    max_extrapolation: float = 100.0  # how far past the largest fitted budget a law may be taken
    width_care: float = 2.0  # factor width (hi / lo) of a 95% prediction interval asking for care
    width_refuse: float = 4.0  # ... that refuses
    min_budgets: int = 3
    min_decades: float = 1.0
    dispersion_care: float = 2.0  # the budgets' scatter around the law, in units of their own noise
    dispersion_refuse: float = 3.0
    # A target's ratio, tokens per parameter or sequence this factor beyond the fitted runs' asks for care: a
    # quarter past what was run (one requested ratio already spans a factor 1.6 in tokens per parameter).
    regime_factor: float = 1.25
    units_tolerance: float = 0.1  # bytes per token beyond the fitted runs' by this fraction: another tokenizer
    # Factor width of N_opt's 95% interval at the target: care above what wide, centred isoFLOP grids give at 100x
    # their largest budget, refusal where a model at an end of the interval wastes a large share of the compute
    # (benchmarks/bench_allocation.py; the figures are in benchmarks/README.md).
    n_opt_width_care: float = 3.0
    n_opt_width_refuse: float = 8.0

    def __post_init__(self) -> None:
        if not (isinstance(self.max_extrapolation, (int, float)) and math.isfinite(self.max_extrapolation)
                and self.max_extrapolation > 1):
            raise ValueError(f"max_extrapolation {self.max_extrapolation!r} must be a number above 1 (a factor past "
                             "the largest fitted budget, e.g. 100)")
        if not 1 < self.width_care <= self.width_refuse:
            raise ValueError(f"interval widths must satisfy 1 < width_care ({self.width_care}) <= width_refuse "
                             f"({self.width_refuse})")
        if not 1 < self.n_opt_width_care <= self.n_opt_width_refuse:
            raise ValueError(f"N_opt interval widths must satisfy 1 < n_opt_width_care ({self.n_opt_width_care}) <= "
                             f"n_opt_width_refuse ({self.n_opt_width_refuse})")


#: What a reason is about, so callers can act on it without reading its text.
KINDS = ("range", "extrapolation", "interval", "flag", "dispersion", "seed", "recipe", "regime", "model", "allocation")


@dataclass(frozen=True)
class Reason:
    level: str  # CARE or REFUSED
    text: str
    kind: str = "recipe"  # one of KINDS


@dataclass(frozen=True)
class Allocation:
    """The isoFLOP fits that chose a recipe's model size, as the verdict reads them (``analysis.allocation``)."""

    budgets: tuple[float, ...]  # the isoFLOP budgets fitted
    n_opt: tuple[float, float, float]  # approach 3's N_opt at the target: value, lo, hi
    chosen: float | None  # parameters of the model the ladder gives (None: it gives none)
    bounds: tuple[str, ...] = ()  # approach 2's vertices that are bounds: each says where and why
    misallocated: float = math.nan  # share of the target's compute approach 2's N_opt wastes under approach 3's L
    misallocation_flag: float = math.inf  # the share above which the two approaches disagree
    converged: bool = True  # approach 3's starts agree on its optimum
    no_cross_check: str = ""  # why approach 2 has no law to check approach 3 with ("" when it has one)
    level: float = 0.95  # of N_opt's interval


@dataclass(frozen=True)
class Verdict:
    """A law at one target budget: its level, every reason, and notes that are not reasons."""

    target: float
    reasons: tuple[Reason, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def level(self) -> str:
        return max((r.level for r in self.reasons), key=_RANK.__getitem__, default=USABLE)

    @property
    def usable(self) -> bool:
        return self.level != REFUSED

    def line(self) -> str:
        """One line: the level, then every reason under its own level, worst first."""
        groups = [f"[{level}] " + "; ".join(r.text for r in self.reasons if r.level == level)
                  for level in (REFUSED, CARE) if any(r.level == level for r in self.reasons)]
        return f"{self.level} at C = {self.target:.3g}" + (": " + " ".join(groups) if groups else "")

    def has(self, kind: str) -> bool:
        return any(r.kind == kind for r in self.reasons)


def judge(card: LawCard, target: float, limits: Limits | None = None, *,
          intervals: dict[str, tuple[float, float, float]] | None = None, run: Regime | None = None,
          allocation: Allocation | None = None) -> Verdict:
    """The verdict on ``card`` at ``target`` FLOPs (in the card's convention).

    ``intervals``: (value, lo, hi) of "lr" and "bsz" at the target when the caller has better ones
    than the card's covariance (the analysis's own draws). ``run``: the target run's regime where
    known (``RunPlan.regime()``): compared with the fitted runs', and a BSZ below its sequence
    cannot be run. ``allocation``: the isoFLOP fits that chose the model size, where they did.
    """
    limits = limits or Limits()
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ValueError(f"target budget {target!r} must be a positive number of FLOPs, e.g. 1e22")
    intervals = intervals or {name: getattr(card, name).predict(target, card.level) for name in ("lr", "bsz")}
    lo, hi = card.fitted_range
    steps = [(_reach_reasons(len({b.budget for b in card.budgets}), lo, hi, target, limits, "fitted"), []),
             (_interval_reasons(card, intervals, limits), []), (_flag_reasons(card), []),
             _law_reasons(card, limits), _seed_reasons(card)]
    if run is not None:
        steps.append(_run_reasons(card, run, intervals["bsz"][0], limits))
    if allocation is not None:
        steps.append((allocation_reasons(allocation, target, limits),
                      [f"approach 2 does not check approach 3's N_opt: {allocation.no_cross_check}"]
                      if allocation.no_cross_check else []))
    return Verdict(float(target), tuple(r for found, _ in steps for r in found),
                   tuple(n for _, noted in steps for n in noted))


def _reach_reasons(budgets: int, lo: float, hi: float, target: float, limits: Limits, which: str) -> list[Reason]:
    """The range and extrapolation rules on ``budgets`` budgets from ``lo`` to ``hi``: ``which`` is "fitted"
    (the hyperparameter laws' budgets) or "isoFLOP" (N_opt's)."""
    reasons = []
    decades = math.log10(hi / lo)
    span, law = ("fitted on", "a law") if which == "fitted" else ("the isoFLOP fits span", "N_opt's law")
    if budgets < limits.min_budgets or decades < limits.min_decades:
        reasons.append(Reason(REFUSED, f"{span} {budgets} budgets over {decades:.2g} decade(s) ({lo:.3g} to "
                                       f"{hi:.3g}); {law} needs {limits.min_budgets} over {limits.min_decades:g} or "
                                       "more", "range"))
    if target > hi * limits.max_extrapolation:
        reasons.append(Reason(REFUSED, f"{target:.3g} is {math.log10(target / hi):.2g} decades past the largest "
                                       f"{which} budget {hi:.3g} (at most {limits.max_extrapolation:g}x)",
                              "extrapolation"))
    elif target < lo:
        reasons.append(Reason(REFUSED, f"{target:.3g} is below the smallest {which} budget {lo:.3g}", "extrapolation"))
    return reasons


def _interval_reasons(card: LawCard, intervals: dict[str, tuple[float, float, float]],
                      limits: Limits) -> list[Reason]:
    """LR's and BSZ's intervals at the target: too wide to bracket the optimum with a confirmation sweep."""
    reasons = []
    for name, (_, low, high) in intervals.items():
        width = high / low if low > 0 else math.inf
        text = (f"the {card.level:.0%} interval of {name.upper()} at the target, [{low:.3g}, {high:.3g}], spans a "
                f"factor of {width:.3g}")
        if not math.isfinite(width) or width > limits.width_refuse:
            reasons.append(Reason(REFUSED, f"{text} (at most {limits.width_refuse:g})", "interval"))
        elif width > limits.width_care:
            reasons.append(Reason(CARE, f"{text} (above {limits.width_care:g})", "interval"))
    return reasons


def _flag_reasons(card: LawCard) -> list[Reason]:
    """The fitted budgets whose optimum the search did not bracket, or whose band fills the box."""
    reasons = []
    for flag in FLAGS:
        at = [b.budget for b in card.budgets if flag in b.flags]
        if at:
            fills = flag == "band_fills_box"
            reasons.append(Reason(CARE if fills else REFUSED, f"{FLAGS[flag]} at budget(s) "
                                  f"{', '.join(f'{b:.3g}' for b in at)}"
                                  + ("" if fills else ": the optimum is bounded from one side only"), "flag"))
    return reasons


def _law_reasons(card: LawCard, limits: Limits) -> tuple[list[Reason], list[str]]:
    """Each law's scatter around its budgets (a reason) and an exponent it does not identify (a note)."""
    reasons, notes = [], []
    for name in ("lr", "bsz"):
        law = getattr(card, name)
        if not exponent_identified(law.exponent_ci):
            notes.append(f"the {name.upper()} exponent is not identified ([{law.exponent_ci[0]:.3g}, "
                         f"{law.exponent_ci[1]:.3g}]: {why_not_identified(law.exponent_ci, exponent=True)}); the "
                         "interval at the target carries it")
        if law.dispersion is None:
            notes.append(f"the {name.upper()} law's dispersion was not recorded")
        elif law.dof >= 1:
            text = f"the budgets scatter around the {name.upper()} law {law.dispersion:.3g}x their own noise"
            if law.dispersion > limits.dispersion_refuse:
                reasons.append(Reason(REFUSED, f"{text} (at most {limits.dispersion_refuse:g})", "dispersion"))
            elif law.dispersion > limits.dispersion_care:
                reasons.append(Reason(CARE, f"{text} (above {limits.dispersion_care:g})", "dispersion"))
    return reasons, notes


def _seed_reasons(card: LawCard) -> tuple[list[Reason], list[str]]:
    """Seed noise as large as the band refuses; unmeasured, it is said, not held against the law."""
    if card.seed_spread is None:
        return [], ["seed noise not measured (no configuration was run with several seeds)"]
    if card.seed_spread >= card.tolerance:
        return [Reason(REFUSED, f"seeds of one configuration differ by up to {card.seed_spread:.1%} in loss, at "
                                f"least the {card.tolerance:.1%} band: the band selects noise", "seed")], []
    return [], []


def _run_reasons(card: LawCard, run: Regime, bsz: float, limits: Limits) -> tuple[list[Reason], list[str]]:
    """The target run against the law: a BSZ (``bsz``, the law's at the target) below one of its sequences
    cannot be run, and a run of another kind than the fitted ones (``regime_reasons``)."""
    reasons = []
    seq_len = run.seq_lens[0] if run.seq_lens else None
    if seq_len and bsz < seq_len:
        reasons.append(Reason(REFUSED, f"the law's BSZ at the target, {bsz:.3g} {card.units}, is below one sequence "
                                       f"({seq_len:g} {card.units})", "recipe"))
    reasons += [Reason(level, text, "regime") for level, text in regime_reasons(card, run, limits)]
    return reasons, [f"the fitted runs' regime: {card.regime.origin}"] if card.regime.origin != "recorded" else []


def allocation_reasons(fits: Allocation, target: float, limits: Limits) -> list[Reason]:
    """Every reason the isoFLOP fits give to doubt the compute-optimal model at ``target`` (see the module
    docstring)."""
    reasons = _reach_reasons(len(fits.budgets), min(fits.budgets), max(fits.budgets), target, limits, "isoFLOP")
    reasons += [Reason(REFUSED, f"the sizes do not bracket the optimum: {bound}", "allocation") for bound in fits.bounds]
    value, low, high = fits.n_opt
    width = high / low if low > 0 else math.inf
    text = f"the {fits.level:.0%} interval of N_opt at the target, [{low:.3g}, {high:.3g}], spans a factor of {width:.3g}"
    if not math.isfinite(width) or width > limits.n_opt_width_refuse:
        reasons.append(Reason(REFUSED, f"{text} (at most {limits.n_opt_width_refuse:g})", "interval"))
    elif width > limits.n_opt_width_care:
        reasons.append(Reason(CARE, f"{text} (above {limits.n_opt_width_care:g})", "interval"))
    if fits.misallocated > fits.misallocation_flag:
        reasons.append(Reason(CARE, f"approaches 2 and 3 disagree: approach 2's N_opt would misallocate "
                                    f"{fits.misallocated:.1%} of the compute at the target (above "
                                    f"{fits.misallocation_flag:.0%})", "allocation"))
    if not fits.converged:
        reasons.append(Reason(CARE, "approach 3's starts did not agree on its optimum (a local minimum?)", "allocation"))
    if fits.chosen is not None and math.isfinite(width) and not low <= fits.chosen <= high:
        reasons.append(Reason(REFUSED, f"the ladder's nearest model has {fits.chosen:.3g} parameters, outside N_opt's "
                                       f"interval: it is not the compute-optimal model", "model"))
    return reasons


def _beyond(value: float, lo: float, hi: float) -> float:
    """How far ``value`` lies outside [lo, hi], as a factor (1: inside)."""
    return max(lo / value, value / hi, 1.0)


def regime_reasons(card: LawCard, run: Regime, limits: Limits) -> list[tuple[str, str]]:
    """(level, text) for every way the target run differs from the runs the law was fitted on."""
    fitted, out = card.regime, []
    if run.family and run.family != card.family:
        out.append((REFUSED, f"the law was fitted on {card.family}, the run is {run.family}"))
    if card.units == "tokens":
        if run.vocab_sizes and fitted.vocab_sizes and run.vocab_sizes[0] not in fitted.vocab_sizes:
            out.append((REFUSED, f"the run's vocabulary of {run.vocab_sizes[0]:,} is not the fitted runs' "
                                 f"({', '.join(f'{v:,}' for v in fitted.vocab_sizes)}): the law's tokens are another "
                                 "tokenizer's"))
        if run.bytes_per_unit and fitted.bytes_per_unit:
            off = _beyond(run.bytes_per_unit[0], *fitted.bytes_per_unit)
            if off > 1 + limits.units_tolerance:
                out.append((REFUSED, f"the run's tokens hold {run.bytes_per_unit[0]:.3g} bytes, the fitted runs' "
                                     f"{fitted.describe_span('bytes_per_unit')} (x{off:.3g}): another tokenizer or text"))
    if run.seq_lens and fitted.seq_lens:
        off = _beyond(run.seq_lens[0], min(fitted.seq_lens), max(fitted.seq_lens))
        if off > limits.regime_factor:
            out.append((CARE, f"the run's sequences of {run.seq_lens[0]:,} {card.units} are x{off:.3g} the fitted "
                              f"runs' ({fitted.describe_span('seq_lens')})"))
    # The ladder's own measure where both sides have it (along one ratio, tokens per parameter drift with
    # scale as attention and the head change F/N); tokens per parameter where the run's ratio is unknown.
    if run.ratios and fitted.ratios:
        off = _beyond(run.ratios[0], min(fitted.ratios), max(fitted.ratios))
    elif run.tokens_per_param and fitted.tokens_per_param:
        off = _beyond(run.tokens_per_param[0], *fitted.tokens_per_param)
    else:
        off = 1.0
    if off > limits.regime_factor:
        trains = [f"at ratio {run.ratios[0]:g}"] if run.ratios else []
        trains += [f"{run.tokens_per_param[0]:.3g} LLaMA-3 tokens per parameter"] if run.tokens_per_param else []
        out.append((CARE, f"the run trains {': '.join(trains)}, x{off:.3g} beyond the fitted runs' "
                          f"(ratio {fitted.describe_span('ratios')}, {fitted.describe_span('tokens_per_param')} "
                          "tokens per parameter): the optimum moves with model size and data apart"))
    return out

