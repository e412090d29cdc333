"""The recipe and its verdict on synthetic sweeps with known laws: is a usable recipe right, and is a
refused one refused for a reason?

    python benchmarks/bench_verdict.py [--seeds 100] [--bootstrap 400] [--estimator bowl|band]

Per seed, one AU-Net 2 sweep of ``analysis.synthetic`` (scrambled Sobol, 24 trials per budget,
0.2% loss noise, a box centred 1.5x off the truth) for each design below, analysed as
``python -m analysis extrapolate`` would (default estimator: the bowl), then extrapolated:

* clean: 6 budgets over 2 decades (1e18 to 1e20), to 100x past the largest (1e22): the
  verdict, the share of seeds whose LR and BSZ land within 15% of the truth, and the share
  whose 95% intervals cover it (targets: usable; >= 90% within 15%; coverage 90-98%);
* the same sweep 8 decades past the data (1e28): must be refused;
* the demo's shape: 3 budgets over 0.6 decade (1e11 to 4e11 scaled to 1e18-4e18), to 100x:
  must be refused, and the table says by which reasons.

It prints one table; the README's "When a law is usable" quotes it. Its reasons column counts
seeds per kind of reason, the refusing ones apart from those asking for care: every refusal of the
clean sweep at 100x is a false one (its laws are the truth's, and the truth lies inside every box).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter

import numpy as np

from analysis.estimators import ESTIMATORS
from analysis.extrapolate import extrapolate
from analysis.fits import analyse
from analysis.load import AnalysisWarning
from analysis.synthetic import SweepDesign, default_truth, synthetic_sweep
from aunet.verdict import REFUSED

DESIGNS = {
    "clean, 6 budgets over 2 decades": (SweepDesign(), 1e22),
    "clean, 8 decades past the data": (SweepDesign(), 1e28),
    "3 budgets over 0.6 decade (demo shape)": (SweepDesign(budgets=(1e18, 2e18, 4e18)), 4e20),
}


def reason_kind(text: str) -> str:
    for key, kind in (("budgets over", "range"), ("decades past", "too far"), ("below the smallest", "below"),
                      ("interval of LR", "LR width"), ("interval of BSZ", "BSZ width"),
                      ("edge of the search box", "edge"), ("outside the search box", "bowl outside"), ("tried", "pinned"),
                      ("scatter around", "dispersion"), ("seeds", "seed noise"), ("one sequence", "one sequence"),
                      ("flat across", "band fills box"), ("no model", "no ladder model")):
        if key in text:
            return kind
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=400)
    parser.add_argument("--estimator", choices=tuple(ESTIMATORS), default=None, help="default: extrapolate's (the bowl)")
    args = parser.parse_args()
    truth = default_truth("aunet2").laws
    warnings.simplefilter("ignore", AnalysisWarning)
    start = time.time()
    print(f"{'design':<40} {'usable':>7} {'care':>6} {'refused':>8} {'LR<=15%':>8} {'BSZ<=15%':>9} {'LR cov':>7} "
          f"{'BSZ cov':>8} {'LR x med':>9} {'BSZ x med':>10}  reasons (seeds)")
    for name, (design, target) in DESIGNS.items():
        levels, refusing, caring, rows = Counter(), Counter(), Counter(), []
        for seed in range(args.seeds):
            result = analyse(synthetic_sweep("aunet2", design=design, seed=seed), families=["aunet2"],
                             n_boot=args.bootstrap, seed=seed)
            recipe = extrapolate(result, "aunet2", target, estimator=args.estimator)
            levels[recipe.verdict.level] += 1
            refusing.update({reason_kind(r.text) for r in recipe.verdict.reasons if r.level == REFUSED})
            caring.update({reason_kind(r.text) for r in recipe.verdict.reasons if r.level != REFUSED})
            true = {"lr": truth.lr(target), "bsz": truth.bsz(target)}
            rows.append([f(getattr(recipe, q), true[q]) for q in ("lr", "bsz") for f in (
                lambda e, t: abs(e.value / t - 1) <= 0.15, lambda e, t: e.lo <= t <= e.hi,
                lambda e, t: e.hi / e.lo)])
        r = np.array(rows, dtype=float)
        print(f"{name:<40} {levels['usable']:>7} {levels['use with care']:>6} {levels['not usable']:>8} "
              f"{r[:, 0].mean():>8.0%} {r[:, 3].mean():>9.0%} {r[:, 1].mean():>7.0%} {r[:, 4].mean():>8.0%} "
              f"{np.median(r[:, 2]):>9.3g} {np.median(r[:, 5]):>10.3g}  "
              + "; ".join(f"{label}: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
                          for label, kinds in (("refused", refusing), ("care", caring)) if kinds))
    print(f"({args.seeds} seeds, {args.bootstrap} resamples, {args.estimator or 'default'} estimator, "
          f"{time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
