"""Peak training memory of one process, estimated from a model config: what a dry run checks against a
device's memory before anything is submitted.

    weights + gradients + AdamW's two moments  = params x (w + w + 4 + 4) bytes   (w = 4 in fp32, 2 in bf16,
                                                  with an fp32 master copy, + 4, in bf16)
    activations kept for the backward pass     = sum over blocks of 34 x tokens x d x a / 2 bytes
                                                  (Korthikanti et al. 2022, sequence-parallel off, FlashAttention:
                                                   no s^2 term; a = 2 bytes per activation in bf16, 4 in fp32)
    output logits and their gradient           = tokens x vocabulary x 4 x 2 bytes

``tokens`` is the micro-batch's sequences times the sequence length, divided at AU-Net stage k by its
contraction (bytes per pooled vector); a non-final AU-Net stage runs its layers twice (each side).
It is an estimate for planning, not a measurement: the allocator's fragmentation and the framework's
workspaces come on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aunet.config import ModelConfig
from aunet.flops import count_params, resolve_contraction

ACTIVATION_BYTES_PER_TOKEN_WIDTH = 34  # per block, in 2-byte units (Korthikanti et al. 2022, Eq. 2 without s^2)


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: float  # weights and gradients, bytes
    optimizer: float  # AdamW's moments (and the fp32 master weights in bf16), bytes
    activations: float  # bytes, at the micro-batch
    logits: float  # bytes

    @property
    def total(self) -> float:
        return self.parameters + self.optimizer + self.activations + self.logits


def training_memory(model: ModelConfig, micro_batch: int, *, bf16: bool,
                    contraction: Sequence[float] | None = None, shards: int = 1) -> MemoryEstimate:
    """Peak memory of one process training ``model`` on ``micro_batch`` sequences; ``shards``: the
    processes FSDP spreads weights, gradients and optimizer state over (1: DDP or one process)."""
    if micro_batch < 1 or shards < 1:
        raise ValueError(f"micro_batch ({micro_batch}) and shards ({shards}) must be at least 1")
    params = count_params(model)
    word = 2 if bf16 else 4
    tokens = micro_batch * model.seq_len
    width_tokens = model.spec.activation_width_tokens(model, tokens, resolve_contraction(model, contraction))
    return MemoryEstimate(
        parameters=params * 2 * word / shards,
        optimizer=params * (8 + (4 if bf16 else 0)) / shards,
        activations=ACTIVATION_BYTES_PER_TOKEN_WIDTH * width_tokens * word / 2,
        logits=tokens * model.vocab_size * 4 * 2,
    )
