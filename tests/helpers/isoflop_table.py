"""A synthetic isoFLOP study as a results table: runs drawn from a known L(N, D) = E + A/N^α + B/D^β,
with the columns a sweep writes, for tests of the allocation fits' command line and report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: Chinchilla's fit (Hoffmann et al.), the truth of the synthetic studies; compute C = K·N·D.
TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
K = 6.0
BUDGETS = (1e18, 1e19, 1e20, 1e21)


def true_loss(n: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
    return TRUTH["E"] + TRUTH["A"] / np.asarray(n) ** TRUTH["alpha"] + TRUTH["B"] / np.asarray(d) ** TRUTH["beta"]


def true_a() -> float:
    """N_opt ∝ C^a with a = β / (α + β)."""
    return TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])


def true_n_opt(compute: float) -> float:
    g = (TRUTH["alpha"] * TRUTH["A"] / (TRUTH["beta"] * TRUTH["B"])) ** (1 / (TRUTH["alpha"] + TRUTH["beta"]))
    return g * (compute / K) ** true_a()


def isoflop_results(*, budgets: tuple[float, ...] = BUDGETS, sizes: int = 7, span: float = 32.0,
                    offsets: tuple[float, ...] | None = None, noise: float = 0.003, seeds: int = 1, seed: int = 0,
                    family: str = "transformer_bpe") -> pd.DataFrame:
    """One finished run per (budget, size, seed) at the cell's one LR and BSZ; sizes evenly spaced in ln N
    over ``span``, centred on ``offsets[i]``·N_opt at budget i (default: on N_opt); loss noise multiplicative."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget, offset in zip(budgets, offsets or (1.0,) * len(budgets), strict=True):
        for n in true_n_opt(budget) * offset * np.geomspace(span**-0.5, span**0.5, sizes):
            n = float(f"{n:.4g}")
            d = budget / (K * n)
            for s in range(seeds):
                rows.append({"status": "finished", "family": family, "budget": budget, "lr": 3e-3, "bsz": 2.0**19,
                             "units": "tokens", "study": "isoflop", "seed": s, "model": f"{family}_C{budget:.0e}_N{n:.4g}", "params": n, "train_units": d,
                             "steps": round(d / 2**19), "convention": "spent", "flops": budget,
                             "loss": float(true_loss(n, d)) * math.exp(noise * rng.standard_normal())})
    return pd.DataFrame(rows)
