"""The entropy model as the splitter runs it: a fixed-window byte MLP on integer-valued weights, in numpy.

The model predicts byte t from the ``context`` bytes before it (fewer at a row's start, the rest
of the window filled with :data:`NONE`): one table row per (window slot, byte), summed, a ReLU, and
a linear layer to 256 logits. That is a causal convolution of width ``context`` followed by a
pointwise layer, so the entropy of byte t is a function of bytes t - context .. t - 1 only, and the
byte step and the whole-string fast path compute it from the same window.

Both must agree bit for bit (a threshold decides on the entropy), and floating-point sums do not
(a batched matmul may add in another order than a one-row one). So the trained weights are rounded
to integers times a power of two, and every sum before the softmax runs on integer values in
float64, exact in any order while it stays below 2^53 (checked when the weights are rounded). The
softmax and entropy are elementwise and per-row reductions, the same code on a row of the batch as
on a row alone; the entropy is kept as an integer count of :data:`ENTROPY_UNIT` nats.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The context id of "no byte": before the first byte of a row.
NONE = 256
#: Ids a window slot may hold: the 256 bytes and :data:`NONE`.
SLOT_IDS = 257
#: Entropies are integers in units of 2^-20 nats (BLT's thresholds are in nats).
ENTROPY_UNIT = 2.0**-20
#: Weights are integers times 2^-WEIGHT_BITS.
WEIGHT_BITS = 10
#: Every integer-valued partial sum of the logits stays below this (float64 is exact up to 2^53),
#: and of the hidden layer below EXACT_HIDDEN (float32's 2^24).
EXACT_BELOW = 2.0**52
EXACT_HIDDEN = 2.0**23
#: Rows of windows evaluated at once by the fast path (bounds its memory).
CHUNK = 8192
#: The version of the file format and of the entropies it holds.
FORMAT = 1


@dataclass(frozen=True)
class Shape:
    """The entropy model's size: how many bytes it reads and its hidden width."""

    context: int = 8
    width: int = 64

    @property
    def forward_flops(self) -> float:
        """FLOPs of one forward pass per byte, as the repo counts a model: 2 per weight the byte is
        multiplied through (the output layer); the window's table rows are looked up and summed,
        like an embedding, which the counting leaves out."""
        return 2.0 * self.width * 256


class WindowModel:
    """The rounded weights, and the entropy of the next byte for any windows of context."""

    def __init__(self, shape: Shape, tables: np.ndarray, hidden_bias: np.ndarray, out: np.ndarray,
                 out_bias: np.ndarray) -> None:
        self.shape = shape
        self._tables = tables.reshape(shape.context * SLOT_IDS, shape.width)  # integer-valued float64
        self._hidden_bias, self._out, self._out_bias = hidden_bias, out, out_bias
        self._slot_offset = np.arange(shape.context, dtype=np.int64) * SLOT_IDS
        check_exact(self._tables.reshape(shape.context, SLOT_IDS, -1), hidden_bias, out, out_bias)
        self._tables32, self._hidden_bias32 = self._tables.astype(np.float32), hidden_bias.astype(np.float32)

    @classmethod
    def from_float(cls, shape: Shape, tables: np.ndarray, hidden_bias: np.ndarray, out: np.ndarray,
                   out_bias: np.ndarray) -> WindowModel:
        """Round trained float weights (tables [context, 257, width], out [width, 256]) to the grid."""
        scale = 2.0**WEIGHT_BITS
        return cls(shape, np.round(tables * scale), np.round(hidden_bias * scale), np.round(out * scale),
                   np.round(out_bias * scale * scale))

    def entropies(self, windows: np.ndarray) -> np.ndarray:
        """Next-byte entropies (int64, in ENTROPY_UNIT nats) for windows [N, context] of slot ids, oldest first."""
        out = np.empty(len(windows), dtype=np.int64)
        for start in range(0, len(windows), CHUNK):
            out[start: start + CHUNK] = self._entropies(windows[start: start + CHUNK])
        return out

    def _entropies(self, windows: np.ndarray) -> np.ndarray:
        # The hidden sums are integers below 2^24 (checked): exact in float32, in any order.
        hidden = self._tables32[windows + self._slot_offset].sum(axis=1, dtype=np.float32) + self._hidden_bias32
        logits = np.maximum(hidden, 0.0).astype(np.float64) @ self._out + self._out_bias  # integers below 2^52
        z = ((logits - logits.max(axis=1, keepdims=True)) * 2.0**(-2 * WEIGHT_BITS)).astype(np.float32)
        e = np.exp(z)
        total = e.sum(axis=1)
        nats = np.log(total) - (e * z).sum(axis=1) / total
        return np.round(nats.astype(np.float64) / ENTROPY_UNIT).astype(np.int64)

    def text_entropies(self, data: np.ndarray) -> np.ndarray:
        """The entropy of every byte of a row given the bytes before it (the fast path's)."""
        padded = np.concatenate([np.full(self.shape.context, NONE, dtype=np.int64), data.astype(np.int64)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.shape.context)[: len(data)]
        return self.entropies(windows)

    def of_text(self, text: Any) -> np.ndarray:
        """``text_entropies`` of a ``registry.Text``: a key of ``Text.shared``, so the rules reading this
        model share one pass over a string."""
        return self.text_entropies(text.array)

    def __deepcopy__(self, memo: dict) -> WindowModel:
        return self  # immutable: a copied splitter shares its weights

    def arrays(self) -> dict[str, np.ndarray]:
        c, w = self.shape.context, self.shape.width
        return {"tables": self._tables.reshape(c, SLOT_IDS, w), "hidden_bias": self._hidden_bias,
                "out": self._out, "out_bias": self._out_bias}


def check_exact(tables: np.ndarray, hidden_bias: np.ndarray, out: np.ndarray, out_bias: np.ndarray) -> None:
    """Refuse weights whose integer sums could leave the exact range: the hidden sums float32's (2^24), the
    logits float64's (a model too large for the grid)."""
    hidden = np.abs(tables).max(axis=1).sum(axis=0) + np.abs(hidden_bias)
    if hidden.max() >= EXACT_HIDDEN or float((hidden @ np.abs(out)).max() + np.abs(out_bias).max()) >= EXACT_BELOW:
        raise ValueError("entropy model: its weights are too large to be summed exactly on the integer grid")


@dataclass(frozen=True)
class Statistics:
    """What the rule's thresholds are read from: the entropies of a sample of the training split, sorted,
    and their rises over the previous byte (monotonic mode), each counted over all the sample's bytes."""

    entropies: np.ndarray  # int64, sorted
    rises: np.ndarray  # int64, sorted: H(t) - H(t-1) within a row, t >= 1
    sample_bytes: int  # bytes of the sample: the denominator of a contraction


@dataclass(frozen=True)
class Meta:
    """Where the model comes from: the corpus it was trained on and how."""

    fingerprint: str  # the corpus's (``aunet.data`` split fingerprint)
    corpus: str  # the sources, as the train command takes them ("default": the default corpus)
    shape: dict[str, int]
    seed: int
    steps: int
    train_bytes: int
    seconds: float
    heldout_bits_per_byte: float


@dataclass(frozen=True)
class Saved:
    model: WindowModel
    stats: Statistics
    meta: Meta


def model_path(cache: Path, fingerprint: str) -> Path:
    """Where the entropy model of a corpus lives: one directory per corpus fingerprint."""
    return cache / "entropy" / fingerprint / "model.npz"


def save(path: Path, saved: Saved) -> None:
    from aunet.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {k: v.astype(np.int32) for k, v in saved.model.arrays().items()}
    arrays.update(entropies=saved.stats.entropies.astype(np.int32), rises=saved.stats.rises.astype(np.int32),
                  meta=np.array(json.dumps({"format": FORMAT, "sample_bytes": saved.stats.sample_bytes,
                                            **asdict(saved.meta)})))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load(path: Path) -> Saved:
    """The saved model, statistics and meta; ValueError (one line) for a file this code cannot read."""
    try:
        with np.load(path) as f:
            raw = json.loads(str(f["meta"]))
            arrays = {k: f[k].astype(np.float64) for k in ("tables", "hidden_bias", "out", "out_bias")}
            stats = Statistics(f["entropies"].astype(np.int64), f["rises"].astype(np.int64), int(raw["sample_bytes"]))
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"entropy model {path}: unreadable ({err}); train it again") from None
    if raw.pop("format") != FORMAT:
        raise ValueError(f"entropy model {path}: written by another version of this code; train it again")
    raw.pop("sample_bytes")
    meta = Meta(**raw)
    return Saved(WindowModel(Shape(**meta.shape), **arrays), stats, meta)
