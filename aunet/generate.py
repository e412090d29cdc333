"""Cached autoregressive decoding for every architecture.

Each model keeps its own state (key/value caches; for AU-Net also the latest output
of each stage and the incremental splitter), so one new byte costs one step of the
byte stage plus, only at split positions, one step of the deeper stages
(Sec. 2.1.2). BPE models generate tokens until enough bytes are decoded.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from aunet.config import EOS_ID


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
    logits = None
    for token in [eos, *context]:
        logits = model.step(token, state)
    out_ids: list[int] = []
    produced = 0
    while produced < max_new_bytes:
        token = sample_next(logits, temperature, top_k, generator, allowed)
        if token == eos and stop_at_eos:
            break
        out_ids.append(token)
        produced = len(codec.decode(out_ids)) if bpe else len(out_ids)
        if produced >= max_new_bytes:
            break
        logits = model.step(token, state)
    model.train(was_training)
    if bpe:
        return codec.decode(out_ids)[:max_new_bytes]
    return bytes(t for t in out_ids if t < 256)
