"""Why a recipe's interval misses: coverage of the bowl law's LR and BSZ predictions at 1x, 10x and 100x
past the largest fitted budget, split into the causes that could make it miss.

    python benchmarks/bench_lr_coverage.py [--seeds 100] [--bootstrap 400]

Per seed, the clean sweep of ``benchmarks/bench_verdict.py`` (``analysis.synthetic``: 6 budgets
over 2 decades, 24 scrambled Sobol trials each, a skewed bowl) fitted with the bowl. Per law and
distance it prints:

* ``cover``: the share of seeds whose 95% prediction interval (``LawFit.predict``, the recipe's)
  covers the true optimum;
* ``bias/sd``: the mean signed error of the point prediction in log space over its spread across
  seeds. A bias that stays the same at every distance sits in each budget's optimum (the ``budget
  bias`` column: the same quantity at the fitted budgets); one that grows with distance sits in the
  exponent;
* ``sd ratio``: the prediction's own standard deviation (from the law's draws, root mean square
  over seeds) over the real spread of its error: above 1 the interval is wider than the noise asks;
* ``normal``: coverage of the normal interval that a law file carries (``FittedLaw.predict`` from
  the draws' covariance): equal to ``cover`` when carrying the interval to the target loses nothing;
* ``unbiased``: coverage with the mean error removed: what the interval would cover without bias;
* ``no widening``: coverage with the dispersion's widening of the draws (``max(1, dispersion)``)
  undone: what that widening adds;
* ``exponent``: coverage of the exponent's interval.

Measured before and after the bowl took a cubic term in log LR: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from statistics import NormalDist

import numpy as np

from analysis.fits import average_seeds, fit_hyper_laws
from analysis.load import AnalysisWarning, load_results
from analysis.synthetic import SweepDesign, default_truth, synthetic_sweep

DISTANCES = (1.0, 10.0, 100.0)  # target over the largest fitted budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="synthetic sweeps (binomial sd of a 95%% coverage "
                                                               "over 100 seeds: 2%%)")
    parser.add_argument("--bootstrap", type=int, default=400, help="resamples per fit")
    args = parser.parse_args()
    if args.seeds < 2 or args.bootstrap < 20:
        parser.error("--seeds must be at least 2 and --bootstrap at least 20")
    warnings.simplefilter("ignore", AnalysisWarning)
    truth = default_truth("aunet2").laws
    design = SweepDesign()
    z = NormalDist().inv_cdf(0.975)
    log_targets = np.log(max(design.budgets) * np.array(DISTANCES))
    start = time.time()
    # per law: errors (seeds x distances), prediction sd, interval bounds as fitted / without widening,
    # the per-budget errors of the optimum, exponent covered
    acc = {name: {key: [] for key in ("err", "sd", "lo", "hi", "lo_flat", "hi_flat", "budget", "exponent")}
           for name in ("lr", "bsz")}
    for seed in range(args.seeds):
        runs = average_seeds(load_results(synthetic_sweep("aunet2", design=design, seed=seed)))
        fit = fit_hyper_laws(runs, "aunet2", estimator="bowl", n_boot=args.bootstrap, seed=seed)
        for name in ("lr", "bsz"):
            law, true, a = getattr(fit, name), getattr(truth, name), acc[name]
            centre = np.array([math.log(law.coef), law.exponent])
            flat = centre + (law.samples - centre) / max(1.0, law.dispersion)
            for key, samples in (("", law.samples), ("_flat", flat)):
                draws = samples[:, :1] + samples[:, 1:] * log_targets
                lo, hi = np.nanquantile(draws, [0.025, 0.975], axis=0)
                a["lo" + key].append(lo)
                a["hi" + key].append(hi)
            a["err"].append(centre[0] + centre[1] * log_targets - np.log(true(np.exp(log_targets))))
            cov = np.cov(law.samples.T)
            a["sd"].append(np.sqrt(cov[0, 0] + 2 * log_targets * cov[0, 1] + log_targets**2 * cov[1, 1]))
            a["budget"].extend(np.log(law.values / true(law.budgets)))
            lo, hi = law.exponent_ci
            a["exponent"].append(lo <= true.exponent <= hi)
    print(f"{args.seeds} seeds, {args.bootstrap} resamples; bowl law on 6 budgets from {min(design.budgets):.0e} to "
          f"{max(design.budgets):.0e}; 95% intervals")
    print(f"{'law':<4} {'target':>7} {'cover':>6} {'bias/sd':>8} {'bias':>7} {'sd ratio':>9} {'normal':>7} "
          f"{'unbiased':>9} {'no widening':>12} {'budget bias':>12} {'exponent':>9}")
    for name, a in acc.items():
        r = {k: np.array(v, dtype=float) for k, v in a.items()}
        truth_log = np.log(getattr(truth, name)(np.exp(log_targets)))
        err, sd = r["err"], r["sd"]
        bias, spread = err.mean(axis=0), err.std(axis=0)
        lo, hi = r["lo"] - truth_log, r["hi"] - truth_log  # the truth's place relative to each interval
        cover = (lo <= 0) & (hi >= 0)
        unbiased = (lo - bias <= 0) & (hi - bias >= 0)
        flat = (r["lo_flat"] <= truth_log) & (r["hi_flat"] >= truth_log)
        normal = np.abs(err) <= z * sd
        budget_bias = r["budget"].mean()
        for k, distance in enumerate(DISTANCES):
            print(f"{name.upper():<4} {f'{distance:g}x':>7} {cover[:, k].mean():>6.1%} {bias[k] / spread[k]:>+8.2f} "
                  f"{bias[k]:>+7.3f} {math.sqrt(np.mean(sd[:, k] ** 2)) / spread[k]:>9.2f} {normal[:, k].mean():>7.1%} "
                  f"{unbiased[:, k].mean():>9.1%} {flat[:, k].mean():>12.1%} {budget_bias:>+12.3f} "
                  f"{r['exponent'].mean():>9.1%}")
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
