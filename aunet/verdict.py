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

    def __post_init__(self) -> None:
        if not (isinstance(self.max_extrapolation, (int, float)) and math.isfinite(self.max_extrapolation)
                and self.max_extrapolation > 1):
            raise ValueError(f"max_extrapolation {self.max_extrapolation!r} must be a number above 1 (a factor past "
                             "the largest fitted budget, e.g. 100)")
        if not 1 < self.width_care <= self.width_refuse:
            raise ValueError(f"interval widths must satisfy 1 < width_care ({self.width_care}) <= width_refuse "
                             f"({self.width_refuse})")


#: What a reason is about, so callers can act on it without reading its text.
KINDS = ("range", "extrapolation", "interval", "flag", "dispersion", "seed", "recipe", "regime", "model")


@dataclass(frozen=True)
class Reason:
    level: str  # CARE or REFUSED
    text: str
    kind: str = "recipe"  # one of KINDS


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
          intervals: dict[str, tuple[float, float, float]] | None = None, run: Regime | None = None) -> Verdict:
    """The verdict on ``card`` at ``target`` FLOPs (in the card's convention).

    ``intervals``: (value, lo, hi) of "lr" and "bsz" at the target when the caller has better ones
    than the card's covariance (the analysis's own draws). ``run``: the target run's regime where
    known (``RunPlan.regime()``): compared with the fitted runs', and a BSZ below its sequence
    cannot be run.
    """
    limits = limits or Limits()
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ValueError(f"target budget {target!r} must be a positive number of FLOPs, e.g. 1e22")
    reasons: list[Reason] = []
    notes: list[str] = []

    def refuse(text: str, kind: str) -> None:
        reasons.append(Reason(REFUSED, text, kind))

    def care(text: str, kind: str) -> None:
        reasons.append(Reason(CARE, text, kind))

    lo, hi = card.fitted_range
    budgets = sorted({b.budget for b in card.budgets})
    decades = math.log10(hi / lo)
    if len(budgets) < limits.min_budgets or decades < limits.min_decades:
        refuse(f"fitted on {len(budgets)} budgets over {decades:.2g} decade(s) ({lo:.3g} to {hi:.3g}); a law needs "
               f"{limits.min_budgets} over {limits.min_decades:g} or more", "range")
    if target > hi * limits.max_extrapolation:
        refuse(f"{target:.3g} is {math.log10(target / hi):.2g} decades past the largest fitted budget {hi:.3g} "
               f"(at most {limits.max_extrapolation:g}x)", "extrapolation")
    elif target < lo:
        refuse(f"{target:.3g} is below the smallest fitted budget {lo:.3g}", "extrapolation")
    intervals = intervals or {name: getattr(card, name).predict(target, card.level) for name in ("lr", "bsz")}
    for name, (_, low, high) in intervals.items():
        width = high / low if low > 0 else math.inf
        text = (f"the {card.level:.0%} interval of {name.upper()} at the target, [{low:.3g}, {high:.3g}], spans a "
                f"factor of {width:.3g}")
        if not math.isfinite(width) or width > limits.width_refuse:
            refuse(f"{text} (at most {limits.width_refuse:g})", "interval")
        elif width > limits.width_care:
            care(f"{text} (above {limits.width_care:g})", "interval")
    for flag in FLAGS:
        at = [b.budget for b in card.budgets if flag in b.flags]
        if at:
            (care if flag == "band_fills_box" else refuse)(
                f"{FLAGS[flag]} at budget(s) {', '.join(f'{b:.3g}' for b in at)}"
                + ("" if flag == "band_fills_box" else ": the optimum is bounded from one side only"), "flag")
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
                refuse(f"{text} (at most {limits.dispersion_refuse:g})", "dispersion")
            elif law.dispersion > limits.dispersion_care:
                care(f"{text} (above {limits.dispersion_care:g})", "dispersion")
    if card.seed_spread is None:
        notes.append("seed noise not measured (no configuration was run with several seeds)")
    elif card.seed_spread >= card.tolerance:
        refuse(f"seeds of one configuration differ by up to {card.seed_spread:.1%} in loss, at least the "
               f"{card.tolerance:.1%} band: the band selects noise", "seed")
    if run is not None:
        seq_len = run.seq_lens[0] if run.seq_lens else None
        if seq_len and intervals["bsz"][0] < seq_len:
            refuse(f"the law's BSZ at the target, {intervals['bsz'][0]:.3g} {card.units}, is below one sequence "
                   f"({seq_len:g} {card.units})", "recipe")
        for level, text in regime_reasons(card, run, limits):
            reasons.append(Reason(level, text, "regime"))
        if card.regime.origin != "recorded":
            notes.append(f"the fitted runs' regime: {card.regime.origin}")
    return Verdict(float(target), tuple(reasons), tuple(notes))


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

