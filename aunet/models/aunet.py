"""The Autoregressive U-Net (Sec. 2.1): bytes in, next-byte logits out.

Contracting path: stage k's blocks, then pooling keeps the vectors at stage k+1's
split positions (select, or average over the segment), normalises them and projects
them to the next width. Expanding path: each coarse output is spread over the
positions of its own segment, which start at its split position, so the vector that
has read "sat_" serves the bytes of "on_" (Fig. 2); it is added to the skip
connection and goes through the stage's expanding blocks.

Causality: a pooled vector at byte p has read bytes 0..p and is used only at bytes
>= p; truncation to a static pooled length keeps the first vectors and maps later
bytes to the last kept one; padding sits after all real positions. So the logits at
byte t depend on bytes 0..t only, whatever the lengths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from aunet.config import ModelConfig
from aunet.models.layers import KVCache, RMSNorm, Stack, init_weights
from aunet.models.routing import Router, Routing, chunk_ema, ema_step, straight_through
from aunet.splitting import Splitter, fixed_splitter, learned_targets


@dataclass
class StageIndex:
    """How stage k's positions map to stage k+1's (one transition of the hierarchy)."""

    pool_idx: torch.Tensor  # [B, L_next]: position in stage k of each pooled vector
    valid: torch.Tensor  # [B, L_next]: real pooled vectors (the rest is padding)
    segment: torch.Tensor  # [B, L_k]: which pooled vector serves each stage-k position
    offset: torch.Tensor  # [B, L_k]: position within that segment


def transition_index(boundary: torch.Tensor, length: int | None) -> StageIndex:
    """The index map of one transition from its boundaries [B, L_k] on stage k's positions.

    ``length`` is the static length of stage k+1 (None: the longest row of the batch).
    """
    segment = boundary.long().cumsum(-1) - 1
    count = boundary.sum(-1)
    L = int(count.max()) if length is None else length
    positions = torch.arange(boundary.shape[1], device=boundary.device).expand_as(segment)
    slot = torch.where(boundary & (segment < L), segment, L)
    pool_idx = torch.zeros(boundary.shape[0], L + 1, dtype=torch.long, device=boundary.device)
    pool_idx.scatter_(1, slot, positions)
    pool_idx = pool_idx[:, :L]
    segment = segment.clamp(max=L - 1)
    offset = positions - pool_idx.gather(1, segment)
    next_valid = torch.arange(L, device=boundary.device)[None, :] < count.clamp(max=L)[:, None]
    return StageIndex(pool_idx, next_valid, segment, offset)


def hierarchy_indices(levels: torch.Tensor, lengths: list[int | None]) -> list[StageIndex]:
    """Index maps for every stage transition, from per-byte levels [B, T].

    ``lengths[k]`` is the static length of stage k+1 (None: the longest row of the batch).
    """
    levels = levels.clone()
    levels[:, 0] = len(lengths)  # the sequence start is kept at every stage
    valid = torch.ones_like(levels, dtype=torch.bool)
    out = []
    for k, length in enumerate(lengths):
        index = transition_index((levels > k) & valid, length)
        out.append(index)
        levels = torch.where(index.valid, levels.gather(1, index.pool_idx), -1)
        valid = index.valid
    return out


def stage_lengths(levels: torch.Tensor, cfg: ModelConfig) -> list[int]:
    """Vectors per row that each stage of ``cfg`` runs on a batch of per-byte levels [B, T] (byte stage
    first): the static ``max_pooled`` lengths, else the longest row's count. A learned stage's count is
    only known in the forward pass: it is planned as its input's length over the target contraction."""
    lengths = list(cfg.max_pooled or [None] * (cfg.n_stages - 1))
    targets = learned_targets(cfg.splits or [])
    fixed = sum(t is None for t in targets)
    out = [int(levels.shape[1])] + [int(i.pool_idx.shape[1]) for i in hierarchy_indices(levels, lengths[:fixed])]
    for k in range(fixed, cfg.n_stages - 1):
        out.append(lengths[k] or max(1, math.ceil(out[-1] / targets[k])))
    return out


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, T, D], index [B, L] -> [B, L, D]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Pool(nn.Module):
    """Stage k -> k+1: keep (or average up to) the split positions, normalise, project."""

    def __init__(self, dim: int, next_dim: int, mode: str, eps: float):
        super().__init__()
        self.mode = mode
        self.norm = RMSNorm(dim, eps)
        self.proj = nn.Linear(dim, next_dim, bias=False)

    def forward(self, x: torch.Tensor, index: StageIndex) -> torch.Tensor:
        if self.mode == "select":
            pooled = _gather(x, index.pool_idx)
        else:  # average over (previous split, this split]
            csum = F.pad(x.float().cumsum(1), (0, 0, 1, 0))  # csum[:, t + 1] = sum of x[:, :t + 1]
            end = index.pool_idx
            start = F.pad(end[:, :-1] + 1, (1, 0))
            total = _gather(csum, end + 1) - _gather(csum, start)
            pooled = (total / (end - start + 1).clamp(min=1).unsqueeze(-1)).type_as(x)
        pooled = self.proj(self.norm(pooled))
        return pooled * index.valid.unsqueeze(-1)

    def reduce(self, vectors: list[torch.Tensor]) -> torch.Tensor:
        """The pooled vector of one segment during generation, from its stage-k vectors."""
        pooled = vectors[-1] if self.mode == "select" else torch.stack(vectors).float().mean(0).type_as(vectors[-1])
        return self.proj(self.norm(pooled))


class Upsample(nn.Module):
    """Stage k+1 -> k: spread each coarse vector over its segment.

    multilinear: a linear per position within the segment (``positions`` of them,
    wrapping around) plus one shared linear, computed as one matmul at the coarse rate;
    simple: the coarse vector only at its split position; repeat: the same vector at
    every position plus a learned per-position bias.
    """

    def __init__(self, coarse_dim: int, dim: int, mode: str, positions: int, eps: float):
        super().__init__()
        self.mode, self.positions, self.dim = mode, positions, dim
        self.norm = RMSNorm(coarse_dim, eps)
        n_out = positions + 1 if mode == "multilinear" else 1
        self.proj = nn.Linear(coarse_dim, n_out * dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(positions, dim)) if mode == "repeat" else None

    def project(self, coarse: torch.Tensor) -> torch.Tensor:
        """Coarse vectors [B, L, Dc] -> per-vector projections [B, L, n_out, D]."""
        B, L, _ = coarse.shape
        return self.proj(self.norm(coarse)).view(B, L, -1, self.dim)

    def spread(self, projected: torch.Tensor, segment: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Projections [B, L, n_out, D] -> fine vectors [B, T, D] at (segment, offset)."""
        B, L, n_out, D = projected.shape
        flat = projected.reshape(B, L * n_out, D)
        if self.mode == "multilinear":
            specific = _gather(flat, segment * n_out + offset % self.positions)
            shared = _gather(flat, segment * n_out + self.positions)
            return specific + shared
        out = _gather(flat, segment)
        if self.mode == "simple":
            return out * (offset == 0).unsqueeze(-1)
        return out + self.bias[offset % self.positions]

    def forward(self, coarse: torch.Tensor, index: StageIndex) -> torch.Tensor:
        return self.spread(self.project(coarse), index.segment, index.offset)


@dataclass
class AUNetState:
    """Generation state: per-stage caches, the latest output of each stage, segment offsets; for a
    learned transition, the router's previous hidden state, the latest p and the EMA's last value."""

    splitter: Splitter
    caches_down: list[list[KVCache]]
    caches_up: list[list[KVCache]]
    positions: list[int]  # how many vectors each stage has seen
    offsets: list[int]  # stage-k positions since stage k+1's last split
    segment_vectors: list[list[torch.Tensor]] = field(default_factory=list)  # for average pooling
    projected: list[torch.Tensor | None] = field(default_factory=list)  # upsampling of each latest coarse output
    router_previous: list[torch.Tensor | None] = field(default_factory=list)  # stage k's last hidden state
    router_prob: list[torch.Tensor | None] = field(default_factory=list)  # p at stage k's latest position
    smoothed: list[torch.Tensor | None] = field(default_factory=list)  # the EMA's last coarse vector


class AUNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        K, d, eps = cfg.n_stages, cfg.dims, cfg.norm_eps
        self.embed = nn.Embedding(cfg.vocab_size, d[0])

        def stack(k: int) -> Stack:
            window = cfg.window if k == 0 else None
            return Stack(d[k], cfg.layers[k], cfg.head_dims[k], cfg.ffn_dims[k], window, eps, cfg.rope_theta)

        self.down = nn.ModuleList(stack(k) for k in range(K - 1))
        self.pool = nn.ModuleList(Pool(d[k], d[k + 1], cfg.pooling, eps) for k in range(K - 1))
        self.trunk = stack(K - 1)
        self.upsample = nn.ModuleList(
            Upsample(d[k + 1], d[k], cfg.upsampling, cfg.upsample_positions, eps) for k in range(K - 1)
        )
        self.up = nn.ModuleList(stack(k) for k in range(K - 1))
        self.norm = RMSNorm(d[0], eps)
        self.head = nn.Linear(d[0], cfg.vocab_size, bias=False)
        init_weights(self, cfg.init_std, n_layers=2 * sum(cfg.layers[:-1]) + cfg.layers[-1])
        # Learned transitions (stage k -> k+1): a router on stage k's hidden states, made after
        # init_weights so that its projections start as the identity (H-Net's init).
        self.targets = learned_targets(cfg.splits or [])
        self.n_fixed = sum(t is None for t in self.targets)
        learned = [k for k, t in enumerate(self.targets) if t is not None]
        self.routers = nn.ModuleDict({str(k): Router(d[k]) for k in learned}) if learned else None
        self.routing: dict[int, Routing] = {}  # the last forward pass's decisions, by transition

    def levels(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-byte pooling levels of each row from the fixed rules (computed from scratch, as generation
        does); learned stages are decided in the forward pass."""
        splitter = fixed_splitter(self.cfg.n_stages, self.cfg.splits)
        rows = [splitter.levels(row) for row in ids.tolist()]
        return torch.tensor(rows, dtype=torch.long, device=ids.device)

    def forward(self, ids: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        if ids.shape[-1] == 0:
            raise ValueError("AU-Net got an empty input: give at least one byte per row")
        if levels is None:
            levels = self.levels(ids)
        lengths = list(self.cfg.max_pooled or [None] * (self.cfg.n_stages - 1))
        index = hierarchy_indices(levels, lengths[: self.n_fixed])
        self.routing = {}
        x = self.embed(ids)
        skips = []
        for k, (down, pool) in enumerate(zip(self.down, self.pool)):
            x = down(x)
            skips.append(x)
            if k >= self.n_fixed:  # a learned transition: the router chooses stage k+1's positions
                valid = index[k - 1].valid if k > 0 else torch.ones_like(ids, dtype=torch.bool)
                self.routing[k] = self.routers[str(k)](x, valid, self.targets[k])
                index.append(transition_index(self.routing[k].boundary, lengths[k]))
            x = pool(x, index[k])
        x = self.trunk(x)
        for k in reversed(range(self.cfg.n_stages - 1)):
            x = self.up[k](self.expand(k, x, index[k]) + skips[k])
        return self.head(self.norm(x))

    def expand(self, k: int, coarse: torch.Tensor, index: StageIndex) -> torch.Tensor:
        """Stage k+1's outputs spread over stage k's positions; at a learned transition smoothed first
        and scaled by STE(p of the decision taken), the paths that carry gradients to the router."""
        routing = self.routing.get(k)
        if routing is None:
            return self.upsample[k](coarse, index)
        coarse = chunk_ema(coarse, routing.prob.gather(1, index.pool_idx))
        fine = self.upsample[k](coarse, index)
        chosen = torch.where(routing.boundary, routing.prob, 1 - routing.prob)
        return fine * straight_through(chosen).unsqueeze(-1).type_as(fine)

    # ---- what the trainer reads after a forward pass ---------------------------------------

    def ratio_loss(self) -> torch.Tensor:
        """The sum of H-Net's ratio loss over the learned transitions of the last forward pass (0 without
        any): the trainer adds it to the LM loss times ``ratio_loss_weight``."""
        losses = [r.ratio_loss() for r in self.routing.values()]
        return torch.stack(losses).sum() if losses else self.head.weight.new_zeros(())

    def realised_contraction(self) -> dict[int, tuple[float, float]]:
        """(realised, target) input vectors per pooled vector of each learned stage (1-based) in the last
        forward pass."""
        return {k + 2: (r.contraction(), r.target) for k, r in self.routing.items()}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Refuse, in one line, a checkpoint without the routers this model's learned rules need."""
        missing = [key for key in self.state_dict() if key.startswith("routers.") and key not in state_dict]
        if strict and missing:
            raise ValueError(f"the checkpoint has no router for the learned rule {self.cfg.splits} "
                             f"(missing {missing[0]!r}): it was saved by a model with a fixed rule at that stage")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ---- cached generation -------------------------------------------------------------

    def init_state(self) -> AUNetState:
        K = self.cfg.n_stages
        return AUNetState(
            splitter=fixed_splitter(K, self.cfg.splits),
            caches_down=[s.new_cache() for s in self.down] + [self.trunk.new_cache()],
            caches_up=[s.new_cache() for s in self.up],
            positions=[0] * K,
            offsets=[0] * (K - 1),
            segment_vectors=[[] for _ in range(K - 1)],
            projected=[None] * (K - 1),
            router_previous=[None] * (K - 1),
            router_prob=[None] * (K - 1),
            smoothed=[None] * (K - 1),
        )

    def fixed_level(self, token: int, state: AUNetState) -> int:
        """The byte's level from the fixed rules, cut where a fixed stage is full (as the forward pass truncates)."""
        level = state.splitter.push(token)
        for k, limit in enumerate(self.cfg.max_pooled or []):
            if level > k and state.positions[k + 1] >= limit:
                return k
        return level

    def splits_at(self, k: int, x: torch.Tensor, fixed_level: int, state: AUNetState) -> bool:
        """Whether stage k's newest vector x [1, 1, D] is pooled into stage k+1."""
        if k < self.n_fixed:
            return fixed_level > k
        p = self.routers[str(k)].step(x, state.router_previous[k])
        state.router_previous[k], state.router_prob[k] = x, p
        full = self.cfg.max_pooled is not None and state.positions[k + 1] >= self.cfg.max_pooled[k]
        return bool(p.item() >= 0.5) and not full

    @torch.no_grad()
    def step(self, token: int, state: AUNetState) -> torch.Tensor:
        """Feed one byte; return next-byte logits [vocab]. Deep stages run only at their splits."""
        K = self.cfg.n_stages
        fixed_level = self.fixed_level(token, state)
        x = self.embed(torch.tensor([[token]], device=self.head.weight.device))
        skips: list[torch.Tensor] = []
        level = K - 1  # the deepest stage this byte reaches
        # Contracting path, as deep as this byte's splits reach.
        for k in range(K):
            stack = self.trunk if k == K - 1 else self.down[k]
            x = stack.step(x, state.positions[k], state.caches_down[k])
            state.positions[k] += 1
            if k == K - 1:
                break
            skips.append(x)
            if self.cfg.pooling == "average":
                state.segment_vectors[k].append(x)
            if not self.splits_at(k, x, fixed_level, state):
                level = k
                break
            vectors = state.segment_vectors[k] if self.cfg.pooling == "average" else [x]
            x = self.pool[k].reduce(vectors)
            state.segment_vectors[k] = []
        # Expanding path: every stage that received a vector produces its output.
        top = len(skips)  # stages 0..top-1 have a new position; stage `top` produced `x`
        for k in reversed(range(top)):
            if level > k:  # a split of stage k+1 at this byte: a new coarse vector, new segment
                if k >= self.n_fixed:
                    x = state.smoothed[k] = ema_step(x, state.router_prob[k], state.smoothed[k])
                state.projected[k] = self.upsample[k].project(x)
                state.offsets[k] = 0
            else:
                state.offsets[k] += 1
            segment = torch.zeros(1, 1, dtype=torch.long, device=x.device)
            offset = torch.full((1, 1), state.offsets[k], dtype=torch.long, device=x.device)
            fine = self.upsample[k].spread(state.projected[k], segment, offset)
            x = self.up[k].step(fine + skips[k], state.positions[k] - 1, state.caches_up[k])
        return self.head(self.norm(x))[0, -1]
