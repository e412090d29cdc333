"""Cells of a dry run small enough to work out by hand (``sweeps.plan``): stand-ins for a planned cell with
just the fields the plan's arithmetic reads."""

from __future__ import annotations

import types

from aunet.config import ModelConfig
from sweeps.plan import CellCost

MODEL = ModelConfig(arch="transformer", name="t", dims=[64], layers=[2], head_dims=[32], ffn_dims=[128], seq_len=128,
                    window=None)


def prior(**changes) -> types.SimpleNamespace:
    """A byte cell's plan: 1e12 FLOPs at 1e5 FLOPs per byte (1e7 bytes), 3e5 FLOPs per byte forward + backward,
    BSZ 4,096 bytes (2,442 steps)."""
    base = dict(family="aunet2", name="cell", budget=1e12, budget_per_unit=1e5, seq_len=128, law_bsz=4096.0,
                bytes_per_unit=1.0, flops_per_unit=3e5, model=MODEL, contraction=None, total_flops=1e12,
                train_units=1e7, units="bytes", params=12345, steps=2442)
    return types.SimpleNamespace(**{**base, **changes})


def cell(vocab_size: int = 259, **changes) -> types.SimpleNamespace:
    return types.SimpleNamespace(prior=prior(**changes), measured=types.SimpleNamespace(vocab_size=vocab_size))


def cost(epochs: float, name: str = "cell", **changes) -> CellCost:
    return CellCost(cell(name=name, **changes), (10, 1), {"qmc": 8, "move": 0}, 1e12, 1e10, 1e9, epochs,
                    1010.0)  # 1.01e12 FLOPs at 1e9 FLOP/s
