"""Coverage of the hyperparameter laws' 95% intervals on synthetic sweeps with known exponents.

    python benchmarks/bench_coverage.py [--seeds 200] [--bootstrap 200] [--designs grid] [--budgets 3 5]

Designs: a quasi-random (scrambled Sobol, 24 trials) and a full grid (12 LR x 10 BSZ)
per budget; 3, 4 and 5 budgets over two decades of compute; each clean and with 15% of
runs replaced by divergences stored as finished (loss 2-3x the best), which the
analysis must set aside. For every design, budget count and estimator it prints the
share of seeds whose 95% interval covers the true alpha (BSZ) and beta (LR), the median
interval widths, and the ratio of the median width with divergences to the clean one.
Targets: coverage in [0.90, 0.98] everywhere (a 95% interval that means what it says),
width ratio at most 1.25 (divergences set aside cost little precision). The last column,
the median width over the width a normal 95% interval would have at the exponent's real
spread over seeds (robust sd), says why a row misses: above 1 the intervals are wider
than the noise asks and over-cover. What it measured: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from analysis.fits import fit_hyper_laws
from analysis.load import AnalysisWarning, validate_results
from analysis.synthetic import SweepDesign, default_truth, synthetic_sweep

DESIGNS = {"sobol": {"trials": 24}, "grid": {"grid": (12, 10)}}
BUDGET_COUNTS = (3, 4, 5)
DIVERGED = 0.15
COVERAGE = (0.90, 0.98)
WIDTH_RATIO = 1.25


def run(design_name: str, budgets: int, diverged: float, seeds: int, n_boot: int) -> dict:
    """Coverage and widths of both estimators' exponents over ``seeds`` sweeps of one design."""
    truth = default_truth("aunet2").laws
    true = {"lr": truth.lr.exponent, "bsz": truth.bsz.exponent}
    design = SweepDesign(budgets=tuple(np.geomspace(1e18, 1e20, budgets)), diverged_as_finished=diverged,
                         **DESIGNS[design_name])
    out = {e: {key: {"lr": [], "bsz": []} for key in ("cover", "width", "estimate")} for e in ("band", "bowl")}
    for seed in range(seeds):
        df = validate_results(synthetic_sweep("aunet2", design=design, seed=seed))
        for estimator, acc in out.items():
            fit = fit_hyper_laws(df, "aunet2", estimator=estimator, n_boot=n_boot, seed=seed)
            for name in ("lr", "bsz"):
                lo, hi = getattr(fit, name).exponent_ci
                acc["cover"][name].append(lo <= true[name] <= hi)
                acc["width"][name].append(hi - lo)
                acc["estimate"][name].append(getattr(fit, name).exponent)
    return {e: {"cover": {k: float(np.mean(v)) for k, v in acc["cover"].items()},
                "width": {k: float(np.median(v)) for k, v in acc["width"].items()},
                "calibration": {k: calibration(acc["width"][k], acc["estimate"][k]) for k in ("lr", "bsz")}}
            for e, acc in out.items()}


def calibration(widths: list[float], estimates: list[float]) -> float:
    """Median interval width over the width a 95% normal interval would have at the exponent's real
    spread over seeds (robust sd: IQR / 1.349): 1 when the intervals are as wide as the noise asks,
    above 1 when they over-cover because they are wider than it."""
    q1, q3 = np.quantile(estimates, [0.25, 0.75])
    return float(np.median(widths) / (2 * 1.96 * (q3 - q1) / 1.349))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples per fit")
    parser.add_argument("--designs", nargs="+", choices=list(DESIGNS), default=list(DESIGNS), help="a subset of rows")
    parser.add_argument("--budgets", nargs="+", type=int, choices=BUDGET_COUNTS, default=list(BUDGET_COUNTS))
    args = parser.parse_args()
    warnings.simplefilter("ignore", AnalysisWarning)
    print(f"{args.seeds} seeds, {args.bootstrap} resamples per fit; truth: alpha = "
          f"{default_truth('aunet2').laws.bsz.exponent}, beta = {default_truth('aunet2').laws.lr.exponent}")
    print(f"{'design':<7} {'budgets':>7} {'estimator':<9} {'divergences':>11} {'cover alpha':>11} {'cover beta':>10} "
          f"{'width alpha':>11} {'width beta':>10} {'width ratio a/b':>15} {'width/spread a/b':>16}  target")
    misses = []
    for design_name in args.designs:
        for budgets in args.budgets:
            start = time.perf_counter()
            clean = run(design_name, budgets, 0.0, args.seeds, args.bootstrap)
            dirty = run(design_name, budgets, DIVERGED, args.seeds, args.bootstrap)
            for estimator in ("band", "bowl"):
                for label, result in (("none", clean), (f"{DIVERGED:.0%}", dirty)):
                    r = result[estimator]
                    ratio = {k: dirty[estimator]["width"][k] / clean[estimator]["width"][k] for k in ("bsz", "lr")}
                    ok = all(COVERAGE[0] <= c <= COVERAGE[1] for c in r["cover"].values())
                    if result is dirty:
                        ok = ok and max(ratio.values()) <= WIDTH_RATIO
                    ratio_text = f"{ratio['bsz']:.2f}/{ratio['lr']:.2f}" if result is dirty else "-"
                    print(f"{design_name:<7} {budgets:>7} {estimator:<9} {label:>11} {r['cover']['bsz']:>11.3f} "
                          f"{r['cover']['lr']:>10.3f} {r['width']['bsz']:>11.4f} {r['width']['lr']:>10.4f} "
                          f"{ratio_text:>15} {r['calibration']['bsz']:>8.2f}/{r['calibration']['lr']:.2f}"
                          f"  {'met' if ok else 'MISSED'}")
                    if not ok:
                        misses.append(f"{design_name}/{budgets}/{estimator}/{label}")
            print(f"  ({design_name}, {budgets} budgets: {time.perf_counter() - start:.0f} s)", flush=True)
    print("all designs within target" if not misses else f"missed: {', '.join(misses)}")


if __name__ == "__main__":
    main()
