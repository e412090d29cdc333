"""Mamba on bytes, as two specs: Mamba-2 (SSD; the paper's baseline, ``arch: mamba``) and Mamba-1 (the
selective scan; a config says ``mamba_version: 1``). One stage, no attention, no rotary positions."""

from __future__ import annotations

import math
from collections.abc import Sequence

from aunet.archs.base import ArchSpec, Fail, FamilyShape, ModelFields
from aunet.archs.terms import WHY_WEIGHTS, CounterTerm, StageFlops

#: Forward FLOPs of Mamba-1's selective scan per position and per (channel, state) pair.
SCAN_FORWARD_FLOPS = 7
#: Forward FLOPs of Mamba-2's recurrence per position and per (channel, state) pair.
SSD_FORWARD_FLOPS = 5
#: Positions per SSD chunk (the reference code's ``ssm_chunk_size``).
SSD_CHUNK = 256

WHY_CONV = ("FlopCounterMode counts the padded output (T + k - 1 positions) and its grad-weight formula "
            "ignores the depthwise groups (x E·d too many); the real cost is 6·E·d·k per position")
WHY_SHIFTED_CONV = ("Mamba-2's causal depthwise convolution runs as k shifted multiply-adds (elementwise: "
                    "not counted); its real cost is 6·(E·d + 2N)·k per position")
WHY_SSD = ("the chunked SSD algorithm runs the scan as matmuls: C·Bᵀ and scores·x within each chunk of Q "
           "positions (quadratic in Q), each chunk's state, the state passed between chunks and its "
           "output, each x3 with the backward pass; F counts the recurrence, 3 x 5·E·d·N per position")
WHY_SCAN = ("the selective scan is elementwise (not counted) except y = C·h, a batched matmul: 6·E·d·N "
            "per position counted vs 3 x 7·E·d·N multiply-adds in F")


def mamba_dt_rank(d: int) -> int:
    """mambapy's ``dt_rank='auto'``."""
    return math.ceil(d / 16)


def mamba_layer_params(d: int, d_state: int, d_conv: int, expand: int) -> dict[str, int]:
    """Parameters of one mambapy ``ResidualBlock`` (MambaConfig defaults: no linear biases,
    conv bias, dt_proj bias), by tensor."""
    e = expand * d
    r = mamba_dt_rank(d)
    return {
        "norm": d,
        "in_proj": d * 2 * e,
        "conv_weight": e * d_conv,
        "conv_bias": e,
        "x_proj": e * (r + 2 * d_state),
        "dt_proj_weight": r * e,
        "dt_proj_bias": e,
        "A_log": e * d_state,
        "D": e,
        "out_proj": e * d,
    }


def mamba2_layer_params(d: int, head_dim: int, d_state: int, d_conv: int, expand: int) -> dict[str, int]:
    """Parameters of one Mamba-2 block of ``aunet.models.mamba`` (the reference code's:
    one group, no biases, no dt bias, D per head), by tensor."""
    e = expand * d
    heads = d // head_dim
    return {
        "norm": d,
        "in_proj": d * (2 * e + 2 * d_state + heads),  # z, x, B, C, dt
        "conv_weight": (e + 2 * d_state) * d_conv,  # depthwise over x, B, C
        "A_log": heads,
        "D": heads,
        "ssm_norm": e,
        "out_proj": e * d,
    }


class Mamba2Spec(ArchSpec):
    name = "mamba"
    model = "aunet.models.mamba:MambaLM"
    fsdp_units = ("aunet.models.mamba:Mamba2Block",)
    rotary = False
    head_dim_meaning = " (Mamba-2: the model width per SSM head)"
    families = (FamilyShape("mamba_bytes", "bytes", 1),)
    #: Forward FLOPs of the recurrence per position and (channel, state) pair.
    scan_forward = SSD_FORWARD_FLOPS
    #: The layer's weights every position is multiplied through (6 x these per position).
    matmul_weights = ("in_proj", "conv_weight", "out_proj")

    def select(self, cfg: ModelFields) -> ArchSpec:
        return MAMBA1 if cfg.mamba_version == 1 else self

    def validate(self, cfg: ModelFields, fail: Fail) -> None:
        if cfg.mamba_version not in (1, 2):
            fail("mamba_version", f"is {cfg.mamba_version}; use 1 (Mamba-1) or 2 (Mamba-2)")
        if min(cfg.d_state, cfg.d_conv, cfg.expand) < 1:
            fail("d_state", "d_state, d_conv and expand must all be >= 1")

    def layer_params(self, cfg: ModelFields) -> dict[str, int]:
        return mamba2_layer_params(cfg.dims[0], cfg.head_dims[0], cfg.d_state, cfg.d_conv, cfg.expand)

    def scan_flops(self, cfg: ModelFields) -> float:
        """The scan's FLOPs per position and layer, forward + backward."""
        return 3.0 * self.scan_forward * cfg.expand * cfg.dims[0] * cfg.d_state

    def body_params(self, cfg: ModelFields) -> dict[str, int]:
        return {"blocks": cfg.layers[0] * sum(self.layer_params(cfg).values())}

    def stage_flops(self, cfg: ModelFields, contraction: Sequence[float]) -> tuple[StageFlops, ...]:
        p, L = self.layer_params(cfg), cfg.layers[0]
        weights = sum(p[name] for name in self.matmul_weights)
        return (StageFlops(1, cfg.dims[0], L, 0.0, 1.0, 6.0 * L * weights, 0.0, scan=L * self.scan_flops(cfg)),)

    def ssd_counted(self, cfg: ModelFields, batch: int, T: int) -> float:
        """FlopCounterMode's count of one layer's ``ssd_scan`` (forward + backward: 3 x each matmul)."""
        Q = min(SSD_CHUNK, T)
        n = math.ceil(T / Q)
        H = cfg.dims[0] // cfg.head_dims[0]
        P, N = cfg.expand * cfg.head_dims[0], cfg.d_state
        chunks = batch * n
        forward = 2.0 * (chunks * Q * Q * N  # C·Bᵀ
                         + chunks * H * Q * Q * P  # scores·x
                         + chunks * H * P * Q * N  # each chunk's state
                         + batch * H * n * n * P * N  # states passed between chunks
                         + chunks * H * Q * N * P)  # their output
        return 3.0 * forward

    def counter_terms(self, cfg: ModelFields, batch: int,
                      lengths: Sequence[int]) -> tuple[tuple[float, ...], list[CounterTerm]]:
        T = int(lengths[0])
        units, p, L = batch * T, self.layer_params(cfg), cfg.layers[0]
        w = 6.0 * L * (p["in_proj"] + p["out_proj"]) * units
        return (1.0,), [
            CounterTerm("projections", w, w, WHY_WEIGHTS),
            CounterTerm("depthwise conv", 0.0, 6.0 * L * p["conv_weight"] * units, WHY_SHIFTED_CONV),
            CounterTerm("SSD scan", L * self.ssd_counted(cfg, batch, T), L * self.scan_flops(cfg) * units, WHY_SSD),
        ]


class Mamba1Spec(Mamba2Spec):
    """Mamba-1: mambapy's residual blocks (``head_dims`` and ``ffn_dims`` unused). Not a ladder family of its
    own: its runs are named like Mamba-2's (``mamba_bytes``)."""

    model = "aunet.models.mamba:Mamba1LM"
    fsdp_units = ("mambapy.mamba:ResidualBlock",)
    families = ()
    scan_forward = SCAN_FORWARD_FLOPS
    matmul_weights = ("in_proj", "conv_weight", "x_proj", "dt_proj_weight", "out_proj")

    def select(self, cfg: ModelFields) -> ArchSpec:
        return self

    def layer_params(self, cfg: ModelFields) -> dict[str, int]:
        return mamba_layer_params(cfg.dims[0], cfg.d_state, cfg.d_conv, cfg.expand)

    def counter_terms(self, cfg: ModelFields, batch: int,
                      lengths: Sequence[int]) -> tuple[tuple[float, ...], list[CounterTerm]]:
        T = int(lengths[0])
        units, p, L = batch * T, self.layer_params(cfg), cfg.layers[0]
        e, n, k = cfg.expand * cfg.dims[0], cfg.d_state, cfg.d_conv
        w = 6.0 * L * (p["in_proj"] + p["x_proj"] + p["dt_proj_weight"] + p["out_proj"]) * units
        padded = T + k - 1
        conv_counted = L * (2.0 * batch * e * k * padded * 2 + 2.0 * batch * e * e * k * padded)
        return (1.0,), [
            CounterTerm("projections", w, w, WHY_WEIGHTS),
            CounterTerm("depthwise conv", conv_counted, 6.0 * L * e * k * units, WHY_CONV),
            CounterTerm("selective scan", 6.0 * L * e * n * units, 3.0 * SCAN_FORWARD_FLOPS * L * e * n * units,
                        WHY_SCAN),
        ]


MAMBA2 = Mamba2Spec()
MAMBA1 = Mamba1Spec()
