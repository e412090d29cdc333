"""Greedy cached generation for many prompts that share a long prefix (CUTE's worked examples).

Same decoding as :func:`aunet.generate.generate` (EOS prefix, the model's ``step``
with its caches, greedy, stop at EOS, byte models never emit BOS/PAD, BPE output
decoded and cut to the byte budget), and the same unit ids stepped in the same
order, so the output is identical; the only difference is that the units all
prompts share are stepped once and the model state is copied for each prompt.
CUTE prompts share their long instructions and worked examples, so most of the work is done once.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from aunet.config import EOS_ID
from aunet.eval.codec import check_codec, encode, is_bpe, prefix_id
from aunet.generate import continue_from, step_threads


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    if not rows:
        return 0
    first = rows[0]
    n = min(len(r) for r in rows)
    for other in rows[1:]:
        k = 0
        while k < n and other[k] == first[k]:
            k += 1
        n = k
    return n


@torch.inference_mode()
def greedy_generations(model: nn.Module, prompts: Sequence[str | bytes], max_new_bytes: Sequence[int] | int,
                       codec: Any = None, threads: int | None = None) -> list[bytes]:
    """Greedy continuation of each prompt, up to ``max_new_bytes`` bytes (fewer if EOS comes first).

    ``threads``: intra-op threads while stepping (see :func:`step_threads`).
    """
    check_codec(model, codec)
    bpe = is_bpe(model)
    budgets = [max_new_bytes] * len(prompts) if isinstance(max_new_bytes, int) else list(max_new_bytes)
    if len(budgets) != len(prompts):
        raise ValueError(f"{len(budgets)} byte budgets for {len(prompts)} prompts")
    eos = prefix_id(model, codec)
    rows = [[eos, *encode(model, p, codec)] for p in prompts]
    # Keep at least one unit per prompt to step after the copy, so each prompt's logits are its own.
    shared = max(0, min(_common_prefix(rows), min((len(r) for r in rows), default=1) - 1))
    allowed = model.cfg.vocab_size if bpe else EOS_ID + 1
    with step_threads(model, threads):
        was_training = model.training
        model.eval()
        try:
            base = model.init_state()
            for token in rows[0][:shared] if rows else []:
                model.step(token, base)
            out = []
            for row, budget in zip(rows, budgets):
                state = copy.deepcopy(base)
                logits = None
                for token in row[shared:]:
                    logits = model.step(token, state)
                out.append(bytes(continue_from(model, state, logits, budget, eos=eos, allowed=allowed,
                                               codec=codec if bpe else None)))
            return out
        finally:
            model.train(was_training)
