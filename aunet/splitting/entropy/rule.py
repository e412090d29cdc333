"""``entropy:<mode>:c=C`` and ``entropy:<mode>:t=NATS``: BLT's entropy patching.

H(t) is the entropy (nats) of a small causal byte model's prediction of byte t from the bytes
before it (:mod:`aunet.splitting.entropy.model`). A byte starts a patch, and is a pool position:

* ``global``: when H(t) > θ (BLT's global threshold);
* ``monotonic``: when H(t) - H(t-1) > θ (BLT's approximate monotonic constraint); never byte 0,
  which has no predecessor (the splitter keeps it anyway).

Users ask for a contraction, not a threshold: with ``c=C`` (bytes per vector) θ is the quantile
of the statistic over a sample of the corpus's training split at which a C-th of the bytes are
marked; ``t=NATS`` gives θ itself, as BLT's configs do. Both are checked on that sample: a θ that
marks no byte, or every byte, is refused. The mark of byte t depends on bytes 0..t-1 only.
"""

from __future__ import annotations

import math
import re

import numpy as np

from aunet.splitting.entropy.model import ENTROPY_UNIT, NONE, Saved, Statistics, WindowModel
from aunet.splitting.entropy.store import corpus_in_use, model_for
from aunet.splitting.registry import Rule, Stream, Text

MODES = ("global", "monotonic")

#: The default target contraction of ``entropy`` and ``entropy_monotonic`` (the family names'
#: ``aunet2_entropy``): App. B's ``word`` rule's bytes per vector on the default corpus (README).
WORD_CONTRACTION = 3.92


class _Entropies:
    """The entropy of each pushed byte given the bytes before it, per model: the rules of one splitter that
    read the same model run it once per byte."""

    def __init__(self) -> None:
        self.tracks: dict[int, _Track] = {}

    def track(self, model: WindowModel) -> _Track:
        return self.tracks.setdefault(id(model), _Track(model))

    def push(self, byte: int) -> None:
        for track in self.tracks.values():
            track.push(byte)


class _Track:
    def __init__(self, model: WindowModel) -> None:
        self.model = model
        self.window = np.full((1, model.shape.context), NONE, dtype=np.int64)
        self.entropy: int | None = None  # of the byte just pushed
        self.previous: int | None = None  # of the byte before it

    def push(self, byte: int) -> None:
        self.previous = self.entropy
        self.entropy = int(self.model.entropies(self.window)[0])
        self.window = np.concatenate([self.window[:, 1:], [[byte]]], axis=1)


class _EntropyStep:
    def __init__(self, track: _Track, monotonic: bool, threshold: float) -> None:
        self._track, self._monotonic, self._threshold = track, monotonic, threshold

    def __call__(self, byte: int) -> bool:
        entropy, previous = self._track.entropy, self._track.previous
        assert entropy is not None
        if self._monotonic:
            return previous is not None and entropy - previous > self._threshold
        return entropy > self._threshold


#: A family name's spelling of an entropy rule (:meth:`EntropyRule.suffix`).
_SUFFIX = re.compile(r"entropy(?P<monotonic>_monotonic)?_(?P<target>[ct])(?P<value>\d+(?:\.\d+)?)")


class EntropyRule(Rule):
    """``entropy:<global|monotonic>:c=C`` (a target contraction) or ``...:t=NATS`` (a threshold)."""

    name = "entropy"
    params = "<global|monotonic>:c=C"
    aliases = {"entropy": f"entropy:global:c={WORD_CONTRACTION}",
               "entropy_monotonic": f"entropy:monotonic:c={WORD_CONTRACTION}"}

    def __init__(self, spec: str, mode: str, target: str, value: float) -> None:
        super().__init__(spec)
        self.mode, self.target, self.value = mode, target, value

    @classmethod
    def parse(cls, spec: str, arg: str) -> Rule:
        mode, _, setting = arg.partition(":")
        if mode not in MODES:
            raise ValueError(f"splitting rule {spec!r}: the mode is {mode!r}; use one of {MODES} "
                             "(entropy:global:c=4, entropy:monotonic:t=0.5)")
        target, equals, text = setting.partition("=")
        try:
            value = float(text) if equals and target in ("c", "t") else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"splitting rule {spec!r}: give a target contraction c=C (bytes per vector) or a "
                             f"threshold t=NATS after the mode, e.g. entropy:{mode}:c=4")
        if target == "c" and value <= 1.0:
            raise ValueError(f"splitting rule {spec!r}: a contraction of {text} bytes per vector keeps every byte; "
                             "give c > 1")
        return cls(spec, mode, target, value)

    def suffix(self) -> str:
        """``entropy_c5``, ``entropy_monotonic_t0.5``: the alias of the mode, then the setting."""
        return f"entropy{'_monotonic' if self.mode == 'monotonic' else ''}_{self.target}{self.value:g}"

    @classmethod
    def from_suffix(cls, suffix: str) -> str | None:
        found = _SUFFIX.fullmatch(suffix)
        if found is None:
            return None
        mode = "monotonic" if found["monotonic"] else "global"
        return f"entropy:{mode}:{found['target']}={found['value']}"

    def resolved(self) -> tuple[Saved, float]:
        """The model of the corpus in use and θ on its grid (EntropyModelError / ValueError: one line)."""
        saved = model_for(corpus_in_use(), self.spec)
        key = (id(saved), self.mode, self.target, self.value)
        if key not in _THRESHOLDS:
            _THRESHOLDS[key] = threshold(self.spec, saved, self.mode, self.target, self.value)
        return saved, _THRESHOLDS[key]

    def step(self, stream: Stream) -> _EntropyStep:
        saved, theta = self.resolved()
        return _EntropyStep(stream.part(_Entropies).track(saved.model), self.mode == "monotonic", theta)

    def marks(self, text: Text) -> np.ndarray:
        saved, theta = self.resolved()
        entropies = text.shared(saved.model.of_text)
        if self.mode == "global":
            return entropies > theta
        marks = np.zeros(len(entropies), dtype=bool)
        marks[1:] = np.diff(entropies) > theta
        return marks

    def per_byte_flops(self) -> dict[str, float]:
        saved, _ = self.resolved()
        return {f"entropy model {saved.meta.fingerprint}": saved.model.shape.forward_flops}


_THRESHOLDS: dict[tuple[int, str, str, float], float] = {}


def threshold(spec: str, saved: Saved, mode: str, target: str, value: float) -> float:
    """θ in ENTROPY_UNITs: given (``t``), or the midpoint between the sample's statistics on either side of
    the ``c``-th quantile (a θ no statistic equals, so both paths agree on every tie)."""
    stats = statistic(saved.stats, mode)
    if target == "t":
        theta = value / ENTROPY_UNIT
    else:
        cut = min(max(len(stats) - round(saved.stats.sample_bytes / value), 0), len(stats))  # how many stay below
        below = float(stats[cut - 1]) if cut > 0 else float(stats[0]) - 1
        above = float(stats[cut]) if cut < len(stats) else float(stats[-1]) + 1
        theta = (below + above) / 2
    marked = len(stats) - int(np.searchsorted(stats, theta, side="right"))
    if marked == 0 or marked == len(stats):
        what = "no byte" if marked == 0 else "every byte it can"
        raise ValueError(f"splitting rule {spec!r}: marks {what} on the {saved.stats.sample_bytes:,}-byte sample of "
                         f"{saved.meta.corpus}'s training split ({mode} entropies {_range(stats)})")
    return theta


def statistic(stats: Statistics, mode: str) -> np.ndarray:
    return stats.entropies if mode == "global" else stats.rises


def _range(stats: np.ndarray) -> str:
    return f"from {stats[0] * ENTROPY_UNIT:.3f} to {stats[-1] * ENTROPY_UNIT:.3f} nats"
