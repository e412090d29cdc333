"""The pieces every architecture's accounting is built from: parameters of a block, one stage's FLOPs per
vector, one term of FlopCounterMode's count. Kept apart from the specs so that each spec composes them
and ``aunet.flops`` sums them without knowing which architecture it holds."""

from __future__ import annotations

from dataclasses import dataclass


def block_params(d: int, f: int) -> int:
    """One Llama block: attention (4d²), SwiGLU (3df) and two RMSNorm gains (2d)."""
    return 4 * d * d + 3 * d * f + 2 * d


def block_matmul_params(d: int, f: int) -> int:
    """The weights of one Llama block that multiply every vector: 4d² + 3df."""
    return 4 * d * d + 3 * d * f


@dataclass(frozen=True)
class StageFlops:
    """One stage's FLOPs per vector of that stage (forward + backward)."""

    stage: int  # 1-based, byte stage first
    width: int
    blocks: int  # blocks run per vector (both sides for a non-final AU-Net stage)
    attended: float  # S of the attention term
    contraction: float  # input units per vector of this stage
    linear: float  # 6 x block weights
    attention: float  # 6 d L S
    pooling: float = 0.0  # projection from the previous stage into this one
    upsampling: float = 0.0  # projection from this stage back to the previous one
    scan: float = 0.0  # Mamba's selective scan
    splitting: float = 0.0  # models the splitting rules run to decide (forward only), on the byte stage
    routing: float = 0.0  # a learned rule's router on this stage's vectors (forward + backward)

    @property
    def per_vector(self) -> float:
        return self.linear + self.attention + self.pooling + self.upsampling + self.scan + self.splitting + self.routing

    @property
    def per_unit(self) -> float:
        return self.per_vector / self.contraction


def attention_stage(stage: int, d: int, f: int, blocks: int, attended: float, contraction: float = 1.0,
                    pooling: float = 0.0, upsampling: float = 0.0) -> StageFlops:
    """A stage of Llama blocks: 6 x the block weights, and the paper's attention term 6·d·blocks·S."""
    return StageFlops(stage, d, blocks, attended, contraction, 6.0 * blocks * block_matmul_params(d, f),
                      6.0 * d * blocks * attended, pooling, upsampling)


@dataclass(frozen=True)
class CounterTerm:
    """One term of a forward + backward pass over a batch: FlopCounterMode's count vs the analytic F's."""

    name: str
    counted: float  # what FlopCounterMode counts for this term (predicted from the shapes the model runs)
    analytic: float  # what F (the paper's convention) counts for it
    why: str = ""


WHY_WEIGHTS = "same: 2 FLOPs per weight forward, 4 backward (input and weight gradients), per vector"
WHY_ATTENTION = ("FlopCounterMode counts QK^T and AV (4dTS forward), all T x S scores although causal "
                 "masking needs half, and the backward with QK^T recomputed (10dTS): 14dTS; the paper "
                 "counts QK^T only, 6dTS, with S the attended length")


def sdpa_counted(batch_heads_q: int, s_q: int, s_k: int, head_dim: int) -> float:
    """FlopCounterMode's sdpa forward (2 bmm) + backward (5 bmm) formulas, with b·h folded."""
    one = 2.0 * batch_heads_q * s_q * s_k * head_dim
    return 2 * one + 5 * one


def full_attention_terms(name: str, d: int, f: int, head_dim: int, blocks: int, batch: int,
                         n: int) -> list[CounterTerm]:
    """Weights and full causal attention of ``blocks`` Llama blocks over ``batch`` rows of ``n`` vectors."""
    rows = batch * n
    w = 6.0 * blocks * block_matmul_params(d, f) * rows
    counted = blocks * sdpa_counted(batch * (d // head_dim), n, n, head_dim)
    return [CounterTerm(f"{name} block weights" if name else "block weights", w, w, WHY_WEIGHTS),
            CounterTerm(f"{name} attention" if name else "attention", counted, 6.0 * d * blocks * n * rows,
                        WHY_ATTENTION)]
