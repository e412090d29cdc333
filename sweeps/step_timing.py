"""Seconds per optimizer step of a planned trial, measured on this machine's CPU.

Small trials on a CPU are paced by per-step overhead (dispatch, optimizer, pooling bookkeeping),
not by arithmetic: FLOPs over a peak x MFU misjudge them many times over (``benchmarks/README.md``).
The dry run therefore times a few real steps of each cell's model, at its prior batch and with the
study's threads, where a step is cheap enough to time; a model too large for that keeps the
peak x MFU estimate, and the plan says which one it used.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from aunet.ladder.planner import RunPlan
from aunet.models import build_model

#: Steps above this many FLOPs (forward + backward) are not timed: a few of them would take minutes.
MAX_TIMED_STEP_FLOPS = 2e11


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sample_ids(plan: RunPlan, text: bytes, rows: int) -> torch.Tensor:
    """Rows of seq_len + 1 units: the text's bytes for a byte model (so that AU-Net pools as on the
    data), uniform tokens for a token model (its cost does not depend on which tokens)."""
    shape = (rows, plan.seq_len + 1)
    if plan.model.units == "bytes" and text:
        need = shape[0] * shape[1]
        tiled = (text * (need // len(text) + 1))[:need]
        return torch.tensor(list(tiled), dtype=torch.long).view(shape)
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, plan.model.vocab_size, shape, generator=generator)


def seconds_per_step(plan: RunPlan, text: bytes, threads: int, repeats: int = 3) -> float | None:
    """Median seconds of one AdamW step at the plan's batch (after one warm-up step), or None when
    a step is too large to time here."""
    if plan.total_flops / max(plan.steps, 1) > MAX_TIMED_STEP_FLOPS:
        return None
    torch.manual_seed(0)
    model = build_model(plan.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.lr)
    ids = sample_ids(plan, text, max(1, plan.bsz // plan.seq_len))
    seconds = []
    with torch_threads(threads):
        for _ in range(repeats + 1):
            start = time.perf_counter()
            logits = model(ids[:, :-1])
            F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten()).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])
