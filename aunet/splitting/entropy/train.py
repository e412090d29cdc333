"""Training the entropy model on a corpus's training split, once, and caching it with its statistics.

The training text is the training split in file order (independent of the shuffle seed), documents
joined by newlines (the splitter reads an EOS as one), cut into rows of :data:`ROW` bytes that each
start from an empty window, as packed rows do, and taken evenly over the whole split. Training runs on one thread, so a seed gives the same
weights. The statistics the thresholds are read from are the rounded model's entropies on the same
rows. Why this model and not a Transformer: see ``aunet.splitting.entropy``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from aunet.splitting.entropy.model import (
    NONE,
    SLOT_IDS,
    WEIGHT_BITS,
    Meta,
    Saved,
    Shape,
    Statistics,
    WindowModel,
    model_path,
    save,
)
from aunet.splitting.entropy.store import CorpusRef

#: Bytes per training row: each row starts from an empty window.
ROW = 256


@dataclass(frozen=True)
class Recipe:
    """How the entropy model is trained."""

    shape: Shape = Shape()
    steps: int = 20000
    batch: int = 256
    lr: float = 3e-3
    seed: int = 0
    train_bytes: int = 2**21  # of the training split, at most (also the threshold sample)
    heldout_bytes: int = 2**16  # of the held-out split, for the bits per byte it reports

    def check(self) -> None:
        for name in ("steps", "batch", "train_bytes", "heldout_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"entropy model: {name} must be >= 1, got {getattr(self, name)}")
        if self.shape.context < 1 or self.shape.width < 1:
            raise ValueError(f"entropy model: context and width must be >= 1, got {asdict(self.shape)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"entropy model: lr must be > 0, got {self.lr}")


class TorchWindowLM(nn.Module):
    """The entropy model in float, as it is trained (and counted): per-slot table rows summed, ReLU, output layer."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape
        self.tables = nn.Embedding(shape.context * SLOT_IDS, shape.width)
        nn.init.normal_(self.tables.weight, std=1.0 / math.sqrt(shape.context))
        self.hidden_bias = nn.Parameter(torch.zeros(shape.width))
        self.out = nn.Linear(shape.width, 256)
        self.register_buffer("offsets", torch.arange(shape.context) * SLOT_IDS, persistent=False)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Next-byte logits [N, 256] for windows [N, context] of slot ids."""
        hidden = self.tables(windows + self.offsets).sum(dim=1) + self.hidden_bias
        return self.out(torch.relu(hidden))

    def rounded(self) -> WindowModel:
        c, w = self.shape.context, self.shape.width
        weights = [t.detach().double().numpy() for t in (self.tables.weight.view(c, SLOT_IDS, w), self.hidden_bias,
                                                          self.out.weight.T, self.out.bias)]
        return WindowModel.from_float(self.shape, *weights)

    @classmethod
    def of(cls, model: WindowModel) -> TorchWindowLM:
        """The float module of rounded weights (what FlopCounterMode counts)."""
        lm = cls(model.shape)
        a, scale = model.arrays(), 2.0**-WEIGHT_BITS
        with torch.no_grad():
            lm.tables.weight.copy_(torch.from_numpy(a["tables"].reshape(-1, model.shape.width) * scale))
            lm.hidden_bias.copy_(torch.from_numpy(a["hidden_bias"] * scale))
            lm.out.weight.copy_(torch.from_numpy(a["out"].T * scale))
            lm.out.bias.copy_(torch.from_numpy(a["out_bias"] * scale * scale))
        return lm


def rows_of(docs: Iterable[bytes], max_bytes: int, total_bytes: int = 0) -> np.ndarray:
    """Up to ``max_bytes`` of documents joined by newlines, as rows [R, ROW]: every row, or of a text of about
    ``total_bytes`` an evenly spaced choice of rows over all of it (a prefix would be the first books only)."""
    every = max(1, total_bytes // max_bytes)
    rows: list[bytes] = []
    carry, index = b"", 0
    for doc in docs:
        data = carry + doc + b"\n"
        whole = len(data) // ROW
        rows += [data[i * ROW: (i + 1) * ROW] for i in range(-index % every, whole, every)]
        carry, index = data[whole * ROW:], index + whole
        if len(rows) * ROW >= max_bytes:
            break
    kept = b"".join(rows[: max_bytes // ROW])
    return np.frombuffer(kept, dtype=np.uint8).reshape(-1, ROW).astype(np.int64)


def windows_of(rows: np.ndarray, context: int) -> np.ndarray:
    """Every position's window [R * ROW, context]: the bytes before it in its row, NONE before the row."""
    padded = np.concatenate([np.full((len(rows), context), NONE, dtype=np.int64), rows], axis=1)
    view = np.lib.stride_tricks.sliding_window_view(padded, context, axis=1)[:, : rows.shape[1]]
    return view.reshape(-1, context)


def fit(rows: np.ndarray, recipe: Recipe) -> TorchWindowLM:
    """Adam on random positions of the rows, one thread, seeded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(recipe.seed)
        torch.manual_seed(recipe.seed)
        lm = TorchWindowLM(recipe.shape)
        windows = torch.from_numpy(windows_of(rows, recipe.shape.context))
        targets = torch.from_numpy(rows.reshape(-1))
        optimizer = torch.optim.Adam(lm.parameters(), lr=recipe.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / recipe.steps)
        for _ in range(recipe.steps):
            pick = torch.randint(0, len(targets), (recipe.batch,), generator=generator)
            loss = nn.functional.cross_entropy(lm(windows[pick]), targets[pick])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        return lm
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def bits_per_byte(lm: TorchWindowLM, rows: np.ndarray) -> float:
    windows = torch.from_numpy(windows_of(rows, lm.shape.context))
    loss = nn.functional.cross_entropy(lm(windows), torch.from_numpy(rows.reshape(-1)))
    return float(loss) / math.log(2)


def statistics(model: WindowModel, rows: np.ndarray) -> Statistics:
    """The rounded model's entropies on the rows, and their rises within each row, sorted."""
    entropies = model.entropies(windows_of(rows, model.shape.context)).reshape(rows.shape)
    return Statistics(np.sort(entropies, axis=None), np.sort(np.diff(entropies, axis=1), axis=None), rows.size)


def train_entropy_model(corpus, recipe: Recipe = Recipe()) -> tuple[Saved, float]:
    """Train, round and save the entropy model of a prepared ``aunet.data.Corpus``; returns it and the path's
    wall time in seconds (training, statistics and saving)."""
    recipe.check()
    started = time.monotonic()
    rows = rows_of(corpus.stream.iter_file_order(), recipe.train_bytes, corpus.info.train_bytes)
    heldout = rows_of(corpus.heldout_docs(), recipe.heldout_bytes)
    if len(rows) == 0 or len(heldout) == 0:
        raise ValueError(f"entropy model: the corpus's training and held-out splits need at least {ROW} bytes each")
    lm = fit(rows, recipe)
    model = lm.rounded()
    ref = CorpusRef.of(corpus)
    seconds = time.monotonic() - started
    meta = Meta(ref.fingerprint, " ".join(ref.sources) or "the default corpus", asdict(recipe.shape), recipe.seed,
                recipe.steps, int(rows.size), round(seconds, 1), round(bits_per_byte(TorchWindowLM.of(model), heldout), 4))
    saved = Saved(model, statistics(model, rows), meta)
    save(model_path(ref.cache, ref.fingerprint), saved)
    return saved, time.monotonic() - started
