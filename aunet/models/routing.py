"""H-Net's dynamic chunking (Hwang, Wang and Gu, 2025) adapted to AU-Net's pooling and upsampling.

Router: p_t = (1 - cos(q(h_{t-1}), k(h_t))) / 2 on the hidden states of a stage's input, p_0 = 1;
a boundary (a pooled position) where p_t >= 0.5. It reads positions t-1 and t only, so it is
causal by construction, and generation needs only the previous hidden state.

Hard boundaries have no gradient; two paths carry one to the router, as in H-Net:

* smoothing: each coarse output z_c of the deeper stage becomes an EMA over chunks,
  s_c = p_c z_c + (1 - p_c) s_{c-1}, with p_c the probability at its pooled position, before
  AU-Net's upsampling spreads it over its segment (H-Net's dechunking does the same before
  plugging chunks back);
* straight-through: the upsampled vector at every position is multiplied by STE(q_t), q_t the
  probability of the decision taken there (p_t at a boundary, 1 - p_t elsewhere): 1 in the
  forward pass, identity in the backward pass, before the skip connection is added.

The ratio loss (H-Net's) pulls the fraction of boundaries towards 1/N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aunet.archs.aunet import EMA_BLOCK

#: p is clamped inside the EMA (as H-Net does) so every weight stays finite.
EMA_EPS = 1e-4


@dataclass
class Routing:
    """One learned transition's decisions on a batch: what the ratio loss and the logs read."""

    prob: torch.Tensor  # [B, L]: boundary probability p_t
    boundary: torch.Tensor  # [B, L] bool: hard boundaries (p_t >= 0.5, first position, real positions only)
    valid: torch.Tensor  # [B, L] bool: real positions of the stage's input
    target: float  # N: input vectors per pooled vector

    def ratio_loss(self) -> torch.Tensor:
        """H-Net's ratio loss: N/(N-1) ((N-1) F G + (1-F)(1-G)), F the fraction of boundaries (no
        gradient), G the mean probability; minimal at F = G = 1/N."""
        n, w = self.target, self.valid.float()
        total = w.sum().clamp(min=1.0)
        f = (self.boundary.float() * w).sum() / total
        g = (self.prob.float() * w).sum() / total
        return n / (n - 1) * ((n - 1) * f * g + (1 - f) * (1 - g))

    def contraction(self) -> float:
        """Realised input vectors per pooled vector on this batch."""
        return float(self.valid.sum()) / max(1.0, float(self.boundary.sum()))


class _StraightThrough(torch.autograd.Function):
    """Ones in the forward pass, the incoming gradient unchanged in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def straight_through(x: torch.Tensor) -> torch.Tensor:
    return _StraightThrough.apply(x)


class Router(nn.Module):
    """Scores boundaries from a stage's hidden states (q and k start as the identity, as in H-Net)."""

    def __init__(self, dim: int):
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.q.weight.copy_(torch.eye(dim))
            self.k.weight.copy_(torch.eye(dim))

    def prob(self, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """p from the previous and current hidden states [..., D] -> [...]."""
        cos = (F.normalize(self.q(previous), dim=-1) * F.normalize(self.k(current), dim=-1)).sum(-1)
        return ((1 - cos) / 2).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, target: float) -> Routing:
        """Decisions on hidden states x [B, L, D] whose real positions are ``valid`` [B, L]."""
        p = F.pad(self.prob(x[:, :-1], x[:, 1:]), (1, 0), value=1.0)  # p_0 = 1: always a boundary
        boundary = (p >= 0.5) & valid
        boundary[:, 0] = True
        return Routing(p, boundary, valid, target)

    def step(self, x: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """p for one new position x [1, 1, D] given the previous hidden state (None: the first)."""
        if previous is None:
            return torch.ones(x.shape[:-1], device=x.device, dtype=x.dtype)
        return self.prob(previous, x)


def chunk_ema(z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """s_c = p_c z_c + (1 - p_c) s_{c-1} over chunks (s_{-1} = 0): z [B, L, D], p [B, L].

    Blockwise, so that work and memory grow as L·b rather than L² and long cumulative sums never
    lose precision: inside a block of b <= EMA_BLOCK chunks the closed form
    s_c = sum_{j<=c} p_j prod_{j<i<=c} (1 - p_i) z_j as one [b, b] weight matrix from cumulative
    log(1 - p); across blocks the previous block's last s, decayed by prod_{i<=c} (1 - p_i).
    """
    p = p.float().clamp(EMA_EPS, 1 - EMA_EPS)
    z32 = z.float()
    blocks, carry = [], None
    for start in range(0, z.shape[1], EMA_BLOCK):
        pb, zb = p[:, start:start + EMA_BLOCK], z32[:, start:start + EMA_BLOCK]
        log_keep = torch.log1p(-pb).cumsum(-1)  # A_c = sum_{start<=i<=c} log(1 - p_i)
        exponent = log_keep.unsqueeze(-1) - log_keep.unsqueeze(-2)  # [B, c, j] = A_c - A_j
        causal = torch.ones(pb.shape[1], pb.shape[1], dtype=torch.bool, device=z.device).tril()
        weights = torch.exp(exponent.masked_fill(~causal, float("-inf"))) * pb.unsqueeze(-2)
        s = torch.bmm(weights, zb)
        if carry is not None:
            s = s + log_keep.exp().unsqueeze(-1) * carry.unsqueeze(1)
        carry = s[:, -1]
        blocks.append(s)
    return torch.cat(blocks, 1).type_as(z)


def ema_step(z: torch.Tensor, p: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """One EMA step for a new coarse vector z [1, 1, D] with probability p [1, 1] (generation)."""
    q = p.float().clamp(EMA_EPS, 1 - EMA_EPS).unsqueeze(-1)
    out = q * z.float() if previous is None else q * z.float() + (1 - q) * previous.float()
    return out.type_as(z)
