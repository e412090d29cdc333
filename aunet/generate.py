"""Cached autoregressive decoding for every architecture.

Each model keeps its own state (key/value caches; for AU-Net also the latest output
of each stage and the incremental splitter), so one new byte costs one step of the
byte stage plus, only at split positions, one step of the deeper stages
(Sec. 2.1.2). BPE models generate tokens until enough bytes are decoded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn

from aunet.config import EOS_ID

SMALL_MODEL_PARAMS = 100_000_000


@contextlib.contextmanager
def step_threads(model: nn.Module, threads: int | None) -> Iterator[None]:
    """Run a small model on ``threads`` intra-op threads (then restore the setting).

    A step (and a forward pass of a tiny model) is a chain of small kernels; on a busy
    CPU every kernel's thread barrier can wait for a descheduled worker, so one thread is
    much faster there (figures: ``benchmarks/README.md``). None: 1 thread for CPU models
    under ``SMALL_MODEL_PARAMS`` parameters, the current setting otherwise; 0: the current
    setting.
    """
    device = next(model.parameters()).device
    if threads is None:
        small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
        threads = 1 if device.type == "cpu" and small else 0
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TokenCodec(Protocol):
    """What a BPE model needs to turn bytes into its units and back."""

    eos_id: int

    def encode(self, doc: bytes) -> list[int]: ...

    def decode(self, ids: list[int]) -> bytes: ...


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None,
                allowed: int) -> int:
    """Greedy when temperature is 0; otherwise temperature and optional top-k sampling."""
    logits = logits[:allowed].float()
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        threshold = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate(model: nn.Module, prompt: bytes, max_new_bytes: int, temperature: float = 0.0,
             top_k: int | None = None, seed: int | None = None, stop_at_eos: bool = True,
             codec: TokenCodec | None = None) -> bytes:
    """Continue ``prompt`` by up to ``max_new_bytes`` bytes (fewer if EOS comes first).

    The prompt is preceded by EOS, the document separator the models saw in training.
    BPE models need ``codec`` to encode the prompt and decode their tokens.
    """
    if max_new_bytes < 0:
        raise ValueError(f"max_new_bytes must be >= 0, got {max_new_bytes}")
    bpe = getattr(model, "cfg", None) is not None and model.cfg.units == "bpe"
    if bpe and codec is None:
        raise ValueError("a BPE model needs a codec (its tokenizer) to generate bytes")
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    eos = codec.eos_id if bpe else EOS_ID
    context = codec.encode(prompt) if bpe else list(prompt)
    # Byte models sample bytes, and EOS only when it may end the text (never BOS or PAD).
    allowed = model.cfg.vocab_size if bpe else (EOS_ID + 1 if stop_at_eos else 256)
    state = model.init_state()
    with step_threads(model, None):
        for token in [eos, *context]:
            logits = model.step(token, state)
        out = continue_from(model, state, logits, max_new_bytes, eos=eos, allowed=allowed, codec=codec if bpe else None,
                            temperature=temperature, top_k=top_k, generator=generator, stop_at_eos=stop_at_eos)
    model.train(was_training)
    return out


def continue_from(model: nn.Module, state, logits: torch.Tensor, max_new_bytes: int, *, eos: int, allowed: int,
                  codec: TokenCodec | None = None, temperature: float = 0.0, top_k: int | None = None,
                  generator: torch.Generator | None = None, stop_at_eos: bool = True) -> bytes:
    """Sample from a model state whose next-unit ``logits`` are given, until ``max_new_bytes`` bytes
    (or EOS). ``codec``: the BPE tokenizer of a BPE model, None for byte models."""
    out_ids: list[int] = []
    produced = 0
    while produced < max_new_bytes:
        token = sample_next(logits, temperature, top_k, generator, allowed)
        if token == eos and stop_at_eos:
            break
        out_ids.append(token)
        produced = len(codec.decode(out_ids)) if codec is not None else len(out_ids)
        if produced >= max_new_bytes:
            break
        logits = model.step(token, state)
    if codec is not None:
        return codec.decode(out_ids)[:max_new_bytes]
    return bytes(t for t in out_ids if t < 256)
