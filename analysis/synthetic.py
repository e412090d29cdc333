"""Synthetic sweeps drawn from known laws: ground truth for tests, benchmarks and the notebook.

A sweep here mimics the real one: per budget, a scrambled Sobol design (or a full
LR x BSZ grid) over a log-box around a *prior* law (deliberately off the truth),
losses from a tilted, slightly asymmetric bowl around the true optimum with
multiplicative noise, runs far above the optimal LR diverging, a few failing at
random, and optionally a share of runs that diverged but were stored as finished
(as real exports do). Rows have the columns of
``RunRecord.to_row``, so every analysis path sees the same table a sweep writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import qmc

from analysis.load import FAMILY
from aunet.ladder import get_family, resolve_laws
from aunet.ladder import plan as ladder_plan
from aunet.laws import HyperLaws

BPE_BYTES_PER_TOKEN = 4.56  # DCLM compression of the LLaMA 3 tokenizer (Sec. 2.3)
TASKS = {"hellaswag": 0.25, "arc_easy": 0.25, "piqa": 0.5}  # task -> chance accuracy


@dataclass(frozen=True)
class SyntheticTruth:
    """The laws a synthetic sweep is generated from, and the shape of its loss bowl."""

    laws: HyperLaws
    loss_e: float = 0.55  # irreducible loss of L(C) = E + A·C^-alpha (bits per byte)
    loss_a: float = 60.0
    loss_alpha: float = 0.12
    curv_lr: float = 0.03  # relative loss increase per (ln LR offset)^2
    curv_bsz: float = 0.015
    tilt: float = 0.5  # correlation of the bowl: LR and BSZ optima move together (App. A)
    skew: float = 0.25  # too high an LR hurts more than too low

    def best_bpb(self, compute: np.ndarray | float) -> np.ndarray | float:
        return self.loss_e + self.loss_a * np.asarray(compute, dtype=float) ** -self.loss_alpha


_LOSS_E = {"aunet2": 0.55, "aunet3": 0.54, "aunet4": 0.545, "transformer_bpe": 0.56}


def default_truth(family: str) -> SyntheticTruth:
    """The paper's law of the family (BPE for token models); slightly different E per family."""
    laws = resolve_laws("paper", get_family(family).units)
    return SyntheticTruth(laws, loss_e=_LOSS_E.get(family, 0.57))


@dataclass(frozen=True)
class SweepDesign:
    """How the synthetic sweep samples and perturbs runs."""

    budgets: tuple[float, ...] = tuple(np.geomspace(1e18, 1e20, 6))
    trials: int = 24  # Sobol points per budget (ignored with a grid)
    grid: tuple[int, int] | None = None  # (LR points, BSZ points) of a full grid spanning the box, else Sobol
    noise: float = 0.002  # relative loss noise (0.2%)
    prior_offset: float = 1.5  # the box is centred on the truth times this factor
    box: float = 4.0  # the box spans prior/box .. prior*box in LR and in BSZ
    diverge_above: float = 4.0  # runs with LR above this multiple of the optimum diverge
    fail_rate: float = 0.02
    diverged_as_finished: float = 0.0  # share of runs replaced by divergences stored as finished (2-3x the best)
    ratio: float = 2.0  # data-to-model ratio in LLaMA-3 tokens
    tasks: dict[str, float] = field(default_factory=lambda: dict(TASKS))


def synthetic_sweep(family: str = "aunet2", *, design: SweepDesign | None = None, truth: SyntheticTruth | None = None,
                    seed: int = 0, study: str = "synthetic") -> pd.DataFrame:
    """One family's sweep as a results table (one row per run)."""
    design = design or SweepDesign()
    truth = truth or default_truth(family)
    rng = np.random.default_rng(seed)
    m = max(1, math.ceil(math.log2(design.trials)))
    rows = []
    for b, compute in enumerate(design.budgets):
        if design.grid:
            unit = np.stack(np.meshgrid(*(np.linspace(0, 1, k) for k in design.grid), indexing="ij"), -1).reshape(-1, 2)
        else:
            unit = qmc.Sobol(d=2, scramble=True, seed=rng).random_base2(m)[: design.trials]
        log_box = math.log(design.box)
        centre = np.log([truth.laws.lr(compute) * design.prior_offset, truth.laws.bsz(compute) * design.prior_offset])
        lr, bsz = np.exp(centre + (2 * unit - 1) * log_box).T
        box = np.exp([centre[0] - log_box, centre[0] + log_box, centre[1] - log_box, centre[1] + log_box])
        rows += synthetic_runs(family, compute, lr, bsz, box, design=design, truth=truth, rng=rng, seed=seed,
                               study=study, first_trial=b * len(unit))
    return pd.DataFrame(rows)


def synthetic_runs(family: str, compute: float, lr: np.ndarray, bsz: np.ndarray, box, *, design: SweepDesign,
                   truth: SyntheticTruth, rng: np.random.Generator, seed: int = 0, study: str = "synthetic",
                   first_trial: int = 0) -> list[dict]:
    """Runs at the given (LR, BSZ) points of one budget, as result rows: the landscape a sweeper explores.

    ``box`` is each run's search box (lr_min, lr_max, bsz_min, bsz_max), one for all runs or one row per run.
    """
    tokens = truth.laws.units == "tokens"
    bytes_per_unit = BPE_BYTES_PER_TOKEN if tokens else 1.0
    ratio_units = design.ratio * (1.0 if tokens else BPE_BYTES_PER_TOKEN**2)
    n = len(lr)
    boxes = np.broadcast_to(np.asarray(box, dtype=float), (n, 4))
    lr_opt, bsz_opt = truth.laws.lr(compute), truth.laws.bsz(compute)
    u = np.log(np.column_stack([lr, bsz])) - np.log([lr_opt, bsz_opt])  # offsets from the true optimum
    excess = (truth.curv_lr * u[:, 0] ** 2 * (1 + truth.skew * np.tanh(u[:, 0]))
              + truth.curv_bsz * u[:, 1] ** 2
              - 2 * truth.tilt * math.sqrt(truth.curv_lr * truth.curv_bsz) * u[:, 0] * u[:, 1])
    bpb = truth.best_bpb(compute) * (1 + excess) * (1 + design.noise * rng.standard_normal(n))
    status = np.where(u[:, 0] > math.log(design.diverge_above), "diverged", "finished")
    status[rng.random(n) < design.fail_rate] = "failed"
    if design.diverged_as_finished:
        hidden = rng.permutation(n)[: round(design.diverged_as_finished * n)]
        status[hidden] = "finished"
        bpb[hidden] = truth.best_bpb(compute) * rng.uniform(2.0, 3.0, len(hidden))
    flops_per_unit, params, train_units = _model_and_data(family, compute, design.ratio, ratio_units)
    rows = []
    for t in range(n):
        ok = status[t] == "finished"
        run_bpb = bpb[t] if ok else math.nan
        row = {
            "status": status[t], FAMILY: family, "budget": float(compute), "lr": float(lr[t]), "bsz": float(bsz[t]),
            "units": truth.laws.units, "bytes_per_unit": bytes_per_unit, "study": study,
            "trial": first_trial + t, "model": f"{family}-{compute:.0e}", "ratio": design.ratio,
            "flops_per_unit": flops_per_unit, "flops": float(compute), "params": params,
            "steps": int(train_units / bsz[t]), "train_units": train_units,
            "loss": run_bpb * math.log(2) * bytes_per_unit, "bpb": run_bpb,
            "lr_min": boxes[t, 0], "lr_max": boxes[t, 1], "bsz_min": boxes[t, 2], "bsz_max": boxes[t, 3],
            "bsz_bytes": float(bsz[t]) * bytes_per_unit, "seed": seed,
            "error": {"diverged": "loss became NaN", "failed": "node failure"}.get(status[t], ""),
        }
        for task, chance in design.tasks.items():
            score = chance + (1 - chance) / (1 + math.exp(12 * (run_bpb - 0.95))) + 0.005 * rng.standard_normal()
            row[f"eval_{task}"] = score if ok else math.nan
        rows.append(row)
    return rows


def _model_and_data(family: str, compute: float, ratio: float, ratio_units: float) -> tuple[float, float, float]:
    """(FLOPs per unit, parameters, training units) of the ladder's plan at this budget and ratio, as a real
    sweep's runs would record them (so a law's regime and the recipe's plan agree); a family or budget the
    ladder cannot plan gets a transformer-like model, 6·N FLOPs per unit at the ratio."""
    try:
        plan = ladder_plan(family, compute, ratio)
    except ValueError:
        per_unit = math.sqrt(compute / ratio_units)
        return per_unit, per_unit / 6, compute / per_unit
    return plan.flops_per_unit, float(plan.params), compute / plan.flops_per_unit


def synthetic_study(families: tuple[str, ...] = ("aunet2", "aunet3", "transformer_bpe"), *,
                    design: SweepDesign | None = None, seed: int = 0) -> pd.DataFrame:
    """Several families' sweeps in one table (the shape of a full study)."""
    return pd.concat([synthetic_sweep(family, design=design, seed=seed + 1000 * i) for i, family in enumerate(families)],
                     ignore_index=True)
