"""Benchmark of the analysis: fit time, band-vs-bowl precision, interval coverage.

    python benchmarks/bench_analysis.py [--seeds 50] [--runs 500] [--bootstrap 1000]

1. Time of every fit of one family (both estimators, L(C), iso-FLOP curves)
   with ``--bootstrap`` resamples over ``--runs`` runs (target: under 10 s).
2. Spread of the fitted exponents across seeds for the band and the bowl on a
   study's design (6 budgets, 24 Sobol trials each, 0.2% loss noise, prior off by
   1.5x), and the band with 4x and 10x the trials, to see how many trials the band
   needs for the bowl's precision.
3. Coverage of the 95% intervals of both exponents over the same seeds.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from analysis.fits import analyse, fit_hyper_laws
from analysis.load import AnalysisWarning, load_results
from analysis.synthetic import SweepDesign, default_truth, synthetic_sweep


def timing(runs: int, n_boot: int) -> None:
    budgets = 6
    design = SweepDesign(trials=round(runs / budgets))
    df = load_results(synthetic_sweep("aunet2", design=design, seed=0))
    print(f"[timing] {len(df)} runs ({int(df['usable'].sum())} finished), {budgets} budgets, {n_boot} resamples")
    for estimator in ("band", "bowl"):
        start = time.perf_counter()
        fit_hyper_laws(df, "aunet2", estimator=estimator, n_boot=n_boot)
        print(f"  {estimator} law (LR and BSZ):                   {time.perf_counter() - start:6.2f} s")
    start = time.perf_counter()
    analyse(df, n_boot=n_boot)
    print(f"  everything (band, bowl, L(C), iso-FLOP curves): {time.perf_counter() - start:6.2f} s")


def precision(seeds: int, n_boot: int) -> None:
    truth = default_truth("aunet2").laws
    true = {"lr": truth.lr.exponent, "bsz": truth.bsz.exponent}
    print(f"[precision and coverage] {seeds} seeds; truth: beta = {true['lr']}, alpha = {true['bsz']}")
    print(f"  {'estimator':<9} {'trials':>6} {'sd(beta)':>9} {'sd(alpha)':>10} {'bias(beta)':>10} "
          f"{'cover beta':>10} {'cover alpha':>11} {'width beta':>10} {'seconds':>8}")
    for estimator, trials in (("band", 24), ("bowl", 24), ("band", 96), ("band", 240)):
        design = SweepDesign(trials=trials)
        fitted = {"lr": [], "bsz": []}
        covered = {"lr": [], "bsz": []}
        width = []
        start = time.perf_counter()
        for seed in range(seeds):
            fit = fit_hyper_laws(synthetic_sweep("aunet2", design=design, seed=seed), "aunet2",
                                 estimator=estimator, n_boot=n_boot, seed=seed)
            for name in fitted:
                law = getattr(fit, name)
                fitted[name].append(law.exponent)
                covered[name].append(law.exponent_ci[0] <= true[name] <= law.exponent_ci[1])
            width.append(np.diff(fit.lr.exponent_ci)[0])
        print(f"  {estimator:<9} {trials:>6} {np.std(fitted['lr']):>9.4f} {np.std(fitted['bsz']):>10.4f} "
              f"{np.mean(fitted['lr']) - true['lr']:>10.4f} {np.mean(covered['lr']):>10.2f} "
              f"{np.mean(covered['bsz']):>11.2f} {np.median(width):>10.4f} {time.perf_counter() - start:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--precision-bootstrap", type=int, default=200,
                        help="resamples per fit in the seed study (intervals barely change above 200)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", AnalysisWarning)
    timing(args.runs, args.bootstrap)
    precision(args.seeds, args.precision_bootstrap)


if __name__ == "__main__":
    main()
