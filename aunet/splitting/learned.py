"""``learned:c=C``: H-Net's dynamic chunking as an AU-Net stage's rule.

The boundaries of a learned stage are scored by a router inside the model from the hidden
states of the stage's input (:mod:`aunet.models.routing`), so the byte splitter cannot compute
them: the spec is registered here so configs, family names and FLOP plans can read it, and
its step and fast path refuse with one line. ``C`` is H-Net's N: input vectors per pooled
vector, the ratio its loss targets (at stage 2, bytes per vector).

Fixed rules may come before learned ones, not after (a fixed rule deeper than a learned one
would have to add positions to a stage the router already chose): the model's splitter runs
the fixed prefix (:func:`fixed_splitter`) and the router every later stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from aunet.splitting.registry import Rule, Stream, Text, canonical_spec


class LearnedRule(Rule):
    """``learned:c=C`` (or ``learned:C``, as ``aunet2_learned4`` reads back): a router scores each position;
    the ratio loss targets C vectors per pooled vector."""

    name = "learned"
    params = "c=C"

    def __init__(self, spec: str, target: float) -> None:
        super().__init__(spec)
        self.target = target

    @classmethod
    def parse(cls, spec: str, arg: str) -> Rule:
        key, equals, text = arg.partition("=") if "=" in arg else ("c", "=", arg)  # learned:4 (a family's suffix)
        try:
            value = float(text) if equals and key == "c" else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"splitting rule {spec!r}: give a target contraction c=C (input vectors per "
                             "pooled vector), e.g. learned:c=4")
        if value <= 1.0:
            raise ValueError(f"splitting rule {spec!r}: a target contraction of {text} is below or at 1 "
                             "(a stage cannot keep more vectors than its input has); give c > 1")
        return cls(spec, value)

    def _refuse(self) -> ValueError:
        return ValueError(f"splitting rule {self.spec!r} scores the hidden states of an AU-Net stage; the "
                          "byte splitter has none to score (it is computed inside the model, not from bytes)")

    def step(self, stream: Stream):
        raise self._refuse()

    def marks(self, text: Text) -> np.ndarray:
        raise self._refuse()


def is_learned(spec: str) -> bool:
    """Whether a stage's spec names the learned rule (without parsing anything else)."""
    return canonical_spec(spec).partition(":")[0] == LearnedRule.name


def learned_targets(splits: Sequence[str]) -> list[float | None]:
    """Per transition (stage k -> k+1), the learned rule's target contraction, or None for a fixed rule."""
    from aunet.splitting.registry import parse_rule

    out: list[float | None] = []
    for spec in splits:
        rule = parse_rule(spec) if is_learned(spec) else None
        out.append(rule.target if isinstance(rule, LearnedRule) else None)
    return out


def with_learned_targets(fixed: Sequence[float], splits: Sequence[str]) -> list[float]:
    """Bytes per vector at every stage from the fixed stages' factors (byte stage first): each learned
    stage planned at its target, input vectors per pooled vector. A plan, not a measurement: the
    router's realised contraction varies around its target (``AUNet.realised_contraction``)."""
    values = list(fixed)
    for target in learned_targets(splits)[len(values) - 1:]:
        values.append(values[-1] * target)
    return values


def fixed_prefix(splits: Sequence[str]) -> list[str]:
    """The fixed rules before the first learned one; raises if a fixed rule follows a learned one."""
    flags = [is_learned(s) for s in splits]
    n = flags.index(True) if True in flags else len(flags)
    if not all(flags[n:]):
        raise ValueError(f"splits {list(splits)}: a fixed rule follows a learned one; put learned rules "
                         "last (a router chooses a stage's positions, deeper stages choose among them)")
    return list(splits[:n])


def fixed_splitter(n_stages: int, splits: Sequence[str] | None):
    """The byte splitter of a model's fixed rules: all of them, or those before its learned stages."""
    from aunet.splitting.splitter import Splitter

    if splits is None:
        return Splitter(n_stages, None)
    prefix = fixed_prefix(splits)
    return Splitter(n_stages - (len(splits) - len(prefix)), prefix)
