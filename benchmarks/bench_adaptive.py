"""Sweeps that correct themselves, on the synthetic landscape: QMC alone vs QMC + box moves + adaptive.

Each seed runs a whole study (6 budgets, 1e18 to 1e20) through the sweeper's own proposal logic
(``sweeps.adaptive.next_trials``) against ``analysis.synthetic``'s landscape (0.2% loss noise, LR above
4x the optimum diverges, 2% of runs fail), then fits the bowl laws with ``analysis.fits`` and reads
the widths of the 95% intervals of alpha (BSZ exponent) and beta (LR exponent), whether they cover
the truth, and whether the analysis warns that a budget's optimum sits on the edge of its box.

    python benchmarks/bench_adaptive.py                     # 100 seeds, the default sampler (minutes)
    python benchmarks/bench_adaptive.py --seeds 20 --sampler tpe --scenarios centred
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")  # GPSampler's torch: one thread beats two busy ones here

import numpy as np
import pandas as pd

from analysis.fits import fit_hyper_laws
from analysis.synthetic import SweepDesign, default_truth, synthetic_runs
from sweeps.adaptive import CellPrior, Outcome, next_trials
from sweeps.study import StudyConfig

FAMILY = "aunet2"
PER_CELL = 16  # trials per cell for the comparison at equal cost


def simulate(study: StudyConfig, lr_off: float, bsz_off: float, seed: int) -> pd.DataFrame:
    """One study, every cell proposing rounds of trials until it is done; the landscape answers each round."""
    design, truth = SweepDesign(), default_truth(FAMILY)
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for budget in design.budgets:
        cell = CellPrior(FAMILY, float(budget), truth.laws.lr(budget) * lr_off, truth.laws.bsz(budget) * bsz_off, 1)
        history: list[Outcome] = []
        while proposals := next_trials(study, cell, history):
            runs = synthetic_runs(FAMILY, budget, np.array([t.lr for t in proposals], float),
                                  np.array([t.bsz for t in proposals], float), [t.box for t in proposals],
                                  design=design, truth=truth, rng=rng, seed=seed, first_trial=len(history))
            for trial, run in zip(proposals, runs):
                run["phase"] = trial.phase
                history.append(Outcome(trial, run["status"], run["loss"] if run["status"] == "finished" else None))
            rows += runs
    return pd.DataFrame(rows)


def measure(study: StudyConfig, lr_off: float, bsz_off: float, seeds: range) -> dict:
    truth = default_truth(FAMILY).laws
    found = []
    for seed in seeds:
        table = simulate(study, lr_off, bsz_off, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fit = fit_hyper_laws(table, FAMILY, estimator="bowl", seed=seed)
            except ValueError:
                found.append({"fitted": False, "trials": len(table) / table["budget"].nunique()})
                continue
        a_lo, a_hi = fit.bsz.exponent_ci
        b_lo, b_hi = fit.lr.exponent_ci
        found.append({"fitted": True, "trials": len(table) / table["budget"].nunique(),
                      "alpha_width": a_hi - a_lo, "beta_width": b_hi - b_lo,
                      "alpha_covered": a_lo <= truth.bsz.exponent <= a_hi,
                      "beta_covered": b_lo <= truth.lr.exponent <= b_hi,
                      "no_edge": not (fit.budgets["edge"].fillna("") != "").any()})
    frame = pd.DataFrame(found)
    ok = frame[frame["fitted"]].reindex(columns=["alpha_width", "beta_width", "alpha_covered", "beta_covered",
                                                 "no_edge"])
    return {"seeds": len(frame), "fitted": len(ok), "trials/cell": frame["trials"].mean(),
            "alpha width": ok["alpha_width"].median(), "beta width": ok["beta_width"].median(),
            "alpha cover": ok["alpha_covered"].mean(), "beta cover": ok["beta_covered"].mean(),
            "no edge": ok["no_edge"].sum() / len(frame)}


def studies(sampler: str, move_trials: int) -> dict[str, StudyConfig]:
    common = dict(name="bench", families=[FAMILY], budgets=[1e18], lr_factor=4.0, bsz_factor=4.0, move_trials=move_trials)
    return {
        "QMC 16": StudyConfig(**common, phases=["qmc"], trials=PER_CELL, max_moves=0),
        f"QMC 8 + {sampler} 8": StudyConfig(**common, trials=PER_CELL // 2, adaptive_trials=PER_CELL // 2,
                                           sampler=sampler, max_moves=0),
        f"QMC 8 + moves + {sampler} 8": StudyConfig(**common, trials=PER_CELL // 2, adaptive_trials=PER_CELL // 2,
                                                   sampler=sampler),
    }


#: prior = truth x (LR factor, BSZ factor); "centred" is the synthetic sweep's usual 1.5x offset.
PRIORS = {"centred": (1.5, 1.5), "LR x10 BSZ x4": (10, 4), "LR /10 BSZ /4": (0.1, 0.25),
          "LR x10 BSZ /4": (10, 0.25), "LR /10 BSZ x4": (0.1, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--sampler", default=StudyConfig.sampler, choices=["gp", "tpe"])
    parser.add_argument("--scenarios", nargs="*", default=list(PRIORS), choices=list(PRIORS))
    parser.add_argument("--move-trials", type=int, default=StudyConfig.move_trials)
    parser.add_argument("--sweeps", nargs="*", type=int, default=[0, 1, 2], help="which sweeps (0 QMC, 1 adaptive, "
                        "2 moves + adaptive) to run on the centred prior")
    args = parser.parse_args()
    plans = studies(args.sampler, args.move_trials)
    names = list(plans)
    rows = []
    for prior in args.scenarios:
        # Off-centre priors: box-following (moves + adaptive) beside pure QMC on the same prior.
        chosen = [names[k] for k in args.sweeps] if prior == "centred" else [names[0], names[2]]
        for name in chosen:
            tic = time.time()
            result = measure(plans[name], *PRIORS[prior], range(args.seeds))
            rows.append({"prior": prior, "sweep": name, **result, "s/seed": (time.time() - tic) / args.seeds})
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1, float_format="%.3f"),
                  flush=True)
    table = pd.DataFrame(rows)
    print("\n" + table.to_markdown(index=False, floatfmt=".3f") if _has_tabulate() else table.to_string(index=False))
    centred = table[table["prior"] == "centred"].set_index("sweep")
    if len(centred) == 3:
        qmc, adaptive, follow = (centred.loc[n] for n in names)
        print(f"\nQMC 16 / QMC 8 + {args.sampler} 8 interval width: alpha {qmc['alpha width'] / adaptive['alpha width']:.2f}x,"
              f" beta {qmc['beta width'] / adaptive['beta width']:.2f}x narrower (target >= 1.5x)")
        for _, row in table[(table["prior"] != "centred") & (table["sweep"] == names[2])].iterrows():
            print(f"{row['prior']}: box-following widths / well-centred: alpha "
                  f"{row['alpha width'] / follow['alpha width']:.2f}x, beta {row['beta width'] / follow['beta width']:.2f}x"
                  f" (target <= 1.25x); no edge warning in {row['no edge']:.0%} of seeds (target >= 95%)")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
