"""Approaches 2 and 3 on synthetic isoFLOP studies drawn from a known L(N, D).

The truth is Chinchilla's fit (E 1.69, A 406.4, B 410.7, α 0.34, β 0.28, C = 6ND), the loss noise
multiplicative (log-normal, 1% by default), the budgets 1e18 to 1e21 FLOPs. Each design places its
grid of sizes, evenly spaced in ln N, around the true N_opt of every budget:

* centred-wide: 9 sizes over a factor of 64, centred on N_opt;
* centred-narrow: 5 sizes over a factor of 8;
* shifted-wide: the wide grid centred on 3·N_opt at every budget (a constant offset);
* tilted-wide: centred on N_opt/3 at the smallest budget and 3·N_opt at the largest (the offset a
  study centred on a wrong guess of a drifts by);
* shifted-narrow: the narrow grid centred on 3·N_opt: its vertices leave the grid (bounds).

Per design it prints approach 3's coverage of the true α, β and a by its 95% intervals (target
0.90-0.98), their median widths, and approach 2's bias in a (mean and sd over seeds), its interval's
coverage, the share of its vertices that are bounds, and the median share of compute its N_opt would
misallocate at 100x the largest budget under the true L. The last column is approach 3's.

    python benchmarks/bench_allocation.py                  # 100 seeds (minutes)
    python benchmarks/bench_allocation.py --quick          # 10 seeds
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # thousands of tiny solves: threads only contend

import numpy as np
import pandas as pd

from analysis.allocation import ALLOCATION_FITS, Approach3Result
from analysis.allocation.compare import misallocated_share

TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
K = 6.0
DESIGNS = {  # sizes, total span of the grid (max/min), offset of its centre from N_opt (smallest, largest budget)
    "centred-wide": (9, 64.0, (1.0, 1.0)),
    "centred-narrow": (5, 8.0, (1.0, 1.0)),
    "shifted-wide": (9, 64.0, (3.0, 3.0)),
    "tilted-wide": (9, 64.0, (1 / 3, 3.0)),
    "shifted-narrow": (5, 8.0, (3.0, 3.0)),
}
COVERAGE = (0.90, 0.98)


def truth() -> Approach3Result:
    """The true law as a fit result, so its closed forms price allocations."""
    return Approach3Result(**TRUTH, ci={}, k=K, k_range=(K, K), objective=0.0, grad_norm=0.0, starts=0,
                           starts_at_best=0, failed_replicates=0)


def study(design: str, budgets: np.ndarray, noise: float, rng: np.random.Generator) -> pd.DataFrame:
    sizes, span, (first, last) = DESIGNS[design]
    law = truth()
    offsets = np.geomspace(first, last, len(budgets))
    rows = []
    for budget, offset in zip(budgets, offsets, strict=True):
        for n in law.n_opt(budget) * offset * np.geomspace(span**-0.5, span**0.5, sizes):
            d = budget / (K * n)
            loss = float(law.loss(n, d)) * math.exp(noise * rng.standard_normal())
            rows.append({"budget": budget, "params": n, "train_units": d, "loss": loss})
    return pd.DataFrame(rows)


def run(design: str, seeds: int, n_boot: int, budgets: np.ndarray, noise: float) -> dict[str, float]:
    law = truth()
    target = 100 * budgets[-1]
    true = {"alpha": law.alpha, "beta": law.beta, "a": law.a}
    cover = {name: [] for name in true}
    width = {name: [] for name in true}
    a2, a2_cover, bounds, waste2, waste3 = [], [], [], [], []
    for seed in range(seeds):
        table = study(design, budgets, noise, np.random.default_rng(seed))
        fit3 = ALLOCATION_FITS["approach3"].fit(table, n_boot=n_boot, seed=seed)
        for name, value in true.items():
            lo, hi = fit3.ci[name]
            cover[name].append(lo <= value <= hi)
            width[name].append(hi - lo)
        waste3.append(misallocated_share(law, float(fit3.n_opt(target)), target))
        fit2 = ALLOCATION_FITS["approach2"].fit(table, n_boot=n_boot, seed=seed)
        bounds.append(np.mean([v.kind != "value" for v in fit2.vertices]))
        if math.isfinite(fit2.a):
            a2.append(fit2.a - law.a)
            a2_cover.append(fit2.a_ci[0] <= law.a <= fit2.a_ci[1])
            waste2.append(misallocated_share(law, float(fit2.n_opt(target)), target))
    out = {f"cover_{n}": float(np.mean(v)) for n, v in cover.items()}
    out |= {f"width_{n}": float(np.median(v)) for n, v in width.items()}
    return out | {"a2_bias": nan_if_empty(np.mean, a2), "a2_sd": nan_if_empty(np.std, a2),
                  "a2_cover": nan_if_empty(np.mean, a2_cover), "a2_laws": len(a2) / seeds,
                  "bounds": float(np.mean(bounds)), "waste2": nan_if_empty(np.median, waste2),
                  "waste3": float(np.median(waste3))}


def nan_if_empty(f, values: list) -> float:
    return float(f(values)) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="10 seeds")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates per fit")
    parser.add_argument("--budgets", type=int, default=4, help="budgets from 1e18 to 1e21 FLOPs")
    parser.add_argument("--noise", type=float, default=0.01, help="relative sd of the loss noise")
    parser.add_argument("--designs", nargs="+", choices=tuple(DESIGNS), default=tuple(DESIGNS))
    args = parser.parse_args()
    seeds = 10 if args.quick else args.seeds
    budgets = np.geomspace(1e18, 1e21, args.budgets)
    print(f"{seeds} seeds, {args.bootstrap} replicates, {args.budgets} budgets, {args.noise:.1%} loss noise; "
          f"true a = {truth().a:.4f}; coverage target {COVERAGE[0]:.2f}-{COVERAGE[1]:.2f}")
    header = ("design", "cov α", "cov β", "cov a", "width α", "width β", "width a", "a2 bias", "a2 sd",
              "a2 cov", "a2 laws", "bounds", "waste2", "waste3", "s")
    print(" | ".join(header))
    for design in args.designs:
        start = time.perf_counter()
        r = run(design, seeds, args.bootstrap, budgets, args.noise)
        cells = [r["cover_alpha"], r["cover_beta"], r["cover_a"], r["width_alpha"], r["width_beta"], r["width_a"],
                 r["a2_bias"], r["a2_sd"], r["a2_cover"], r["a2_laws"], r["bounds"], r["waste2"], r["waste3"]]
        print(" | ".join([design, *(f"{c:.3f}" for c in cells), f"{time.perf_counter() - start:.0f}"]), flush=True)
    print("waste: median share of compute the N_opt misallocates at 100x the largest budget, under the true L")


if __name__ == "__main__":
    main()
