"""What a splitting rule is, and the one table its spec is looked up in.

A rule is a class with a name (the part of its spec before ``:``), a way to read its
parameters (the part after), a causal one-byte step (what ``Splitter.push`` runs during
generation) and, when it can, a whole-string fast path (what the data loader runs). The
rules of one splitter share per-byte work through a :class:`Stream` and per-string work
through a :class:`Text`, so that, say, two word-count rules decode the text once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from aunet.names import did_you_mean


class Part(Protocol):
    """Per-byte work that several rules of one splitter read (decoded characters, a byte buffer)."""

    def push(self, byte: int) -> None: ...


class Step(Protocol):
    """One rule's causal step for one splitter: called with every pushed byte, after the
    stream's parts took it; True when that byte is a pool position of the rule."""

    def __call__(self, byte: int) -> bool: ...


P = TypeVar("P", bound=Part)
T = TypeVar("T")


class Stream:
    """The bytes pushed into one splitter, as its rules' steps read them.

    A part is made on its first request and takes every byte before any step runs, so the
    steps that ask for the same kind of part read one shared state.
    """

    def __init__(self) -> None:
        self._parts: dict[type, Any] = {}

    def part(self, kind: type[P]) -> P:
        if kind not in self._parts:
            self._parts[kind] = kind()
        return self._parts[kind]

    def push(self, byte: int) -> None:
        for part in self._parts.values():
            part.push(byte)


class Text:
    """A whole byte string as the fast paths read it; ``shared`` computes what several rules need once."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.array = np.frombuffer(data, dtype=np.uint8)
        self._shared: dict[Callable[[Text], Any], Any] = {}

    def shared(self, compute: Callable[[Text], T]) -> T:
        if compute not in self._shared:
            self._shared[compute] = compute(self)
        return self._shared[compute]


class Rule(ABC):
    """One stage's splitting rule, parsed from its spec.

    A subclass sets ``name`` (and ``params`` when its spec takes parameters), reads them in
    ``parse``, gives its causal ``step`` and, when it has one, overrides ``marks`` with its
    fast path; :func:`register` makes its specs known.
    """

    #: The spec's name: the whole spec of a rule without parameters, else the part before ``:``.
    name: ClassVar[str]
    #: How the parameters after ``name:`` are written, for the error that lists the rules
    #: (``N`` in ``words:N``); empty for a rule without parameters.
    params: ClassVar[str] = ""
    #: Short specs that stand for a full one (``words2`` for ``words:2``).
    aliases: ClassVar[dict[str, str]] = {}

    def __init__(self, spec: str) -> None:
        self.spec = spec

    @classmethod
    def parse(cls, spec: str, arg: str) -> Rule:
        """The rule ``spec`` names; ``arg`` is the text after ``name:`` (empty without parameters).

        Raises ValueError naming the spec and what is wrong with its parameters.
        """
        return cls(spec)

    @abstractmethod
    def step(self, stream: Stream) -> Step:
        """A fresh step for one splitter reading ``stream``. Its state lives in attributes, not in
        a closure, so that copying a splitter mid-text (generation does) copies the state."""

    def marks(self, text: Text) -> np.ndarray:
        """The fast path: the rule's pool positions in a whole string (a boolean mask or byte
        indices), exactly the bytes its step marks. A rule without one is pushed byte by byte."""
        raise NotImplementedError

    def per_byte_flops(self) -> dict[str, float]:
        """Forward FLOPs per byte of the models the rule runs to decide (the entropy rule's), by model: rules
        reading one model share its cost. Counted in the AU-Net's F; a rule on the bytes alone costs none."""
        return {}

    def suffix(self) -> str | None:
        """How a family name writes this rule when ``<name><digits>`` cannot (several parameters, a
        decimal): a subclass's own spelling, which :meth:`from_suffix` must read back; None: no own one."""
        return None

    @classmethod
    def from_suffix(cls, suffix: str) -> str | None:
        """The spec a family name's suffix in this rule's own spelling stands for, or None."""
        return None

    @property
    def has_fast_path(self) -> bool:
        return type(self).marks is not Rule.marks


_RULES: dict[str, type[Rule]] = {}


def _aliases() -> dict[str, str]:
    return {alias: spec for rule in _RULES.values() for alias, spec in rule.aliases.items()}


def register(rule: type[Rule]) -> type[Rule]:
    """Make a rule's specs known (usable as a class decorator); names and aliases must be new."""
    taken = set(_RULES) | set(_aliases())
    clash = sorted(taken & {rule.name, *rule.aliases})
    if clash:
        raise ValueError(f"splitting rule {rule.__name__}: {clash} already registered")
    _RULES[rule.name] = rule
    return rule


def unregister(name: str) -> None:
    """Forget the rule registered under ``name`` (a test's toy rule)."""
    del _RULES[name]


def _known_rules() -> str:
    """The accepted specs, as the error for an unknown one lists them."""
    items = [repr(_bare_specs())] + [f"'{form}'" for form in _parameter_forms()]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _bare_specs() -> list[str]:
    return sorted([name for name, rule in _RULES.items() if not rule.params] + list(_aliases()))


def _parameter_forms() -> list[str]:
    return [f"{name}:{rule.params}" for name, rule in _RULES.items() if rule.params]


def parse_rule(spec: str) -> Rule:
    """Parse one stage's spec (``word``, ``words2``, ``words:N``, ``regex:<pattern>``, any registered rule).

    Raises ValueError naming the spec, the close known specs and the accepted forms.
    """
    name, colon, arg = canonical_spec(spec).partition(":")
    rule = _RULES.get(name)
    if rule is None or bool(colon) != bool(rule.params):
        if rule is None:
            close = did_you_mean(spec, _bare_specs() + _parameter_forms())
        else:  # the right name, with parameters it does not take or without those it needs
            close = f" (did you mean {name}:{rule.params}?)" if rule.params else f" (did you mean {name}?)"
        raise ValueError(f"unknown splitting rule {spec!r}{close}: use one of {_known_rules()}")
    return rule.parse(spec, arg)


def canonical_spec(spec: str) -> str:
    """The full spec an alias stands for (``words2`` -> ``words:2``); any other spec as it is."""
    return _aliases().get(spec, spec)


# ---- rule specs in family names (``aunet2_stride4``) ------------------------------------


def rule_suffix(spec: str) -> str | None:
    """How a family name writes a rule: its alias if it has one (``word1``), else the spec without
    its ``:`` when that reads back as the same rule (``stride:4`` -> ``stride4``), else the rule's own
    spelling (``entropy:global:c=5`` -> ``entropy_c5``); None otherwise (``regex:<pattern>``)."""
    full = canonical_spec(spec)
    alias = next((a for a, target in _aliases().items() if target == full), None)
    if alias is not None:
        return alias
    generic = full.replace(":", "", 1)
    try:
        if canonical_spec(rule_from_suffix(generic)) == full:
            return generic
    except ValueError:
        pass
    try:
        return parse_rule(full).suffix()  # its own spelling reads back as the same rule (from_suffix)
    except ValueError:
        return None


def rule_from_suffix(suffix: str) -> str:
    """The rule spec a family name's suffix stands for (inverse of :func:`rule_suffix`): a bare spec or
    alias as it is, ``<name><digits>`` as ``<name>:<digits>`` for a rule with parameters.

    Raises the ValueError of :func:`parse_rule` (an unknown rule, bad parameters).
    """
    own = next((spec for rule in _RULES.values() if (spec := rule.from_suffix(suffix)) is not None), None)
    if own is not None:
        parse_rule(own)
        return own
    name = suffix.rstrip("0123456789")
    digits = suffix[len(name):]
    rule = _RULES.get(name)
    if suffix not in _RULES and suffix not in _aliases() and rule is not None and rule.params and digits:
        suffix = f"{name}:{digits}"
    parse_rule(suffix)
    return suffix
