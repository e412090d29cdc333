"""AU-Net: stages of Llama blocks, bytes pooled by splitting rules into each deeper stage and upsampled back
(Sec. 2); the byte stage attends over a sliding window."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from aunet.archs.base import ArchSpec, Fail, FamilyShape, ModelFields
from aunet.archs.shapes import ffn_dim_for, grid_multiple, head_dim_for, snap
from aunet.archs.terms import (
    WHY_WEIGHTS,
    CounterTerm,
    StageFlops,
    attention_stage,
    block_params,
    full_attention_terms,
    sdpa_counted,
)
from aunet.splitting import default_rules, family_suffix, is_learned, learned_targets, parse_rule
from aunet.splitting.learned import fixed_prefix

UPSAMPLING = ("multilinear", "simple", "repeat")
POOLING = ("select", "average")

WHY_WINDOW = ("blocked sliding window: each block of W queries scores its own and the previous block's "
              "keys (T x 2W) and FlopCounterMode charges 14d per score: 28dTW vs the paper's 6dTW")


WHY_SPLITTING = ("the splitting rules' models (the entropy rule's) run outside torch, in numpy on the data "
                 "loader's side, so FlopCounterMode never sees them; F counts their forward pass per byte")


#: Chunks per block of the smoothing EMA (aunet.models.routing.chunk_ema): a [b, b] weight matrix inside a
#: block, a carried state across blocks, so its work grows as L·b, not L².
EMA_BLOCK = 64

WHY_EMA = ("the smoothing EMA runs blockwise as [b, b] weight matrices times the chunks (2·b²·d forward, "
           "4·b²·d backward per block of b <= EMA_BLOCK chunks); F counts it as elementwise work, as a scan would")


def ema_block_squares(length: int) -> int:
    """Sum of b² over the EMA's blocks of a stage of ``length`` chunks: what its matmuls scale with."""
    return sum(min(EMA_BLOCK, length - start) ** 2 for start in range(0, length, EMA_BLOCK))


def splitting_flops(cfg: ModelFields) -> float:
    """Forward FLOPs per byte of the models the config's splitting rules run (each model once, however many
    rules read it): inference only, as the rules run without gradients."""
    costs: dict[str, float] = {}
    for spec in cfg.splits or ():
        costs.update(parse_rule(spec).per_byte_flops())
    return sum(costs.values())


def router_flops(dim: int) -> float:
    """A learned rule's router per vector of the stage it reads: q and k, two dim x dim projections,
    forward and backward (6 FLOPs per weight); the cosine and the EMA are elementwise."""
    return 6.0 * 2 * dim * dim


def upsample_out(cfg: ModelFields) -> int:
    """Output vectors of one upsampling projection per coarse vector (one per position, plus the shared one)."""
    return cfg.upsample_positions + 1 if cfg.upsampling == "multilinear" else 1


def byte_width_for(main: int) -> int:
    """AU-Net byte-stage width: a quarter of the main width (Table 9's scaling rows); 16 for
    the tiny main widths below 64, else at least 32."""
    if main < 64:
        return 16
    x = main / 4
    return max(32, snap(x, 128 if x >= 256 else 32, half_down=True))


def side_layers_for(main: int) -> int:
    """Layers per side of AU-Net's non-final stages: 3 (Table 9), fewer for tiny models."""
    return 3 if main >= 512 else 2 if main >= 256 else 1


class AUNetSpec(ArchSpec):
    name = "aunet"
    model = "aunet.models.aunet:AUNet"
    fsdp_units = ("aunet.models.layers:Block",)
    min_stages, max_stages = 2, None
    pools = windowed = True
    families = tuple(FamilyShape(f"aunet{k}", "bytes", k) for k in (2, 3, 4))
    paper_laws = {"bytes": "aunet"}

    def fill_defaults(self, cfg: ModelFields) -> None:
        if cfg.splits is None:
            cfg.splits = default_rules(len(cfg.dims))

    def validate(self, cfg: ModelFields, fail: Fail) -> None:
        n = cfg.n_stages
        assert cfg.splits is not None
        if len(cfg.splits) != n - 1:
            fail("splits", f"has {len(cfg.splits)} rules; {n} stages need {n - 1} (one per pooled stage)")
        for spec in cfg.splits:
            try:
                parse_rule(spec)
            except ValueError as err:
                fail("splits", str(err))
        try:
            fixed_prefix(cfg.splits)
        except ValueError as err:
            fail("splits", str(err))
        if cfg.upsampling not in UPSAMPLING:
            fail("upsampling", f"is {cfg.upsampling!r}; use one of {UPSAMPLING}")
        if cfg.pooling not in POOLING:
            fail("pooling", f"is {cfg.pooling!r}; use one of {POOLING}")
        if cfg.upsample_positions < 1:
            fail("upsample_positions", f"is {cfg.upsample_positions}; must be >= 1")
        if cfg.max_pooled is not None:
            if len(cfg.max_pooled) != n - 1:
                fail("max_pooled", f"has {len(cfg.max_pooled)} entries; give one per pooled stage ({n - 1})")
            previous = cfg.seq_len
            for k, m in enumerate(cfg.max_pooled):
                if not 1 <= m <= previous:
                    fail("max_pooled", f"stage {k + 2}: {m} must be between 1 and the previous stage's {previous}")
                previous = m

    def family_name(self, cfg: ModelFields) -> str:
        splits = cfg.splits or []
        if any(is_learned(s) for s in splits):  # aunet2_learned4: the learned stages' targets
            return f"aunet{cfg.n_stages}_" + "_".join(f"learned{t:g}" for t in learned_targets(splits) if t)
        return f"aunet{cfg.n_stages}{family_suffix(splits)}"

    def body_params(self, cfg: ModelFields) -> dict[str, int]:
        d, L, f, K = cfg.dims, cfg.layers, cfg.ffn_dims, cfg.n_stages
        parts = {}
        for k in range(K):
            sides = 2 if k < K - 1 else 1
            parts[f"stage{k + 1}_blocks"] = sides * L[k] * block_params(d[k], f[k])
        for k in range(K - 1):
            parts[f"pool{k + 1}"] = d[k] + d[k] * d[k + 1]  # RMSNorm(d_k) + Linear(d_k -> d_{k+1})
            up = d[k + 1] + d[k + 1] * upsample_out(cfg) * d[k]  # RMSNorm(d_{k+1}) + projection
            if cfg.upsampling == "repeat":
                up += cfg.upsample_positions * d[k]  # learned per-position bias
            parts[f"upsample{k + 1}"] = up
        for k, target in enumerate(learned_targets(cfg.splits or [])):
            if target is not None:
                parts[f"router{k + 2}"] = 2 * d[k] * d[k]  # q and k of the router on stage k+1's vectors
        return parts

    def stage_flops(self, cfg: ModelFields, contraction: Sequence[float]) -> tuple[StageFlops, ...]:
        d, L, f, K, c = cfg.dims, cfg.layers, cfg.ffn_dims, cfg.n_stages, contraction
        stages = []
        for k in range(K):
            blocks = 2 * L[k] if k < K - 1 else L[k]
            if k == 0:
                S = float(min(cfg.window, cfg.seq_len) if cfg.window is not None else cfg.seq_len)
            else:
                S = cfg.seq_len / c[k]
            pooling = upsampling = 0.0
            if k > 0:
                pooling = 6.0 * d[k - 1] * d[k]
                upsampling = 6.0 * d[k] * upsample_out(cfg) * d[k - 1]
            stages.append(attention_stage(k + 1, d[k], f[k], blocks, S, c[k], pooling, upsampling))
        for k, target in enumerate(learned_targets(cfg.splits or [])):
            if target is not None:  # the router reads every vector of stage k+1 (0-based k)
                stages[k] = replace(stages[k], routing=router_flops(d[k]))
        return (replace(stages[0], splitting=splitting_flops(cfg)), *stages[1:])

    def counter_terms(self, cfg: ModelFields, batch: int,
                      lengths: Sequence[int]) -> tuple[tuple[float, ...], list[CounterTerm]]:
        d, L, f, K = cfg.dims, cfg.layers, cfg.ffn_dims, cfg.n_stages
        if len(lengths) != K:
            raise ValueError(f"{K}-stage AU-Net: give {K} stage lengths, got {list(lengths)}")
        T = int(lengths[0])
        terms: list[CounterTerm] = []
        for k in range(K):
            blocks = 2 * L[k] if k < K - 1 else L[k]
            n = int(lengths[k])
            full = full_attention_terms(f"stage {k + 1}", d[k], f[k], cfg.head_dims[k], blocks, batch, n)
            if k == 0 and cfg.window is not None and T > cfg.window:
                W, heads = cfg.window, d[k] // cfg.head_dims[k]
                counted = blocks * sdpa_counted(batch * math.ceil(T / W) * heads, W, 2 * W, cfg.head_dims[k])
                full[1] = CounterTerm("stage 1 attention (window)", counted, 6.0 * d[k] * blocks * W * (batch * T),
                                      WHY_WINDOW)
            terms += full
            if k > 0:
                r = 6.0 * d[k - 1] * d[k] * (1 + upsample_out(cfg)) * (batch * n)
                terms.append(CounterTerm(f"pool + upsample {k}<->{k + 1}", r, r, WHY_WEIGHTS))
        for k, target in enumerate(learned_targets(cfg.splits or [])):
            if target is not None:
                r = router_flops(d[k]) * batch * int(lengths[k])
                terms.append(CounterTerm(f"router {k + 1}->{k + 2} (learned rule)", r, r, WHY_WEIGHTS))
                ema = 6.0 * batch * ema_block_squares(int(lengths[k + 1])) * d[k + 1]
                terms.append(CounterTerm(f"smoothing {k + 2} (EMA over chunks)", ema, 0.0, WHY_EMA))
        splitting = splitting_flops(cfg) * batch * T
        if splitting:
            terms.append(CounterTerm("splitting rules' models (forward)", 0.0, splitting, WHY_SPLITTING))
        return tuple(T / int(n) for n in lengths), terms

    def activation_width_tokens(self, cfg: ModelFields, tokens: float, contraction: Sequence[float]) -> float:
        last = cfg.n_stages - 1
        return sum(tokens / c * d * layers * (1 if k == last else 2)
                   for k, (c, d, layers) in enumerate(zip(contraction, cfg.dims, cfg.layers)))

    def shape(self, main: int, depth: int, n_stages: int) -> dict[str, list[int]]:
        widths = [byte_width_for(main), main]
        while len(widths) < n_stages:
            widths.append(snap(1.5 * widths[-1], grid_multiple(1.5 * widths[-1])))
        side = side_layers_for(main)
        return {"dims": widths, "layers": [side] * (n_stages - 1) + [depth],
                "head_dims": [head_dim_for(w) for w in widths], "ffn_dims": [ffn_dim_for(w) for w in widths]}


AUNET = AUNetSpec()
