"""``python -m sweeps plan [options] [overrides]``: what a study will cost, before anything is submitted.

The overrides are those of ``python sweep.py -m`` (``sweep=reference``, ``hydra/launcher=submitit_slurm``,
``hydra.launcher.timeout_min=...``): the same config is composed, every (family, budget) cell is planned
as the sweeper plans it, and nothing is trained or submitted. Per cell: the model, its parameters, the
data, the steps at the box's smallest and largest batch, the FLOPs of one trial and the trials of each
phase (at most: box moves and adaptive trials happen only where the data ask for them). Totals: FLOPs,
and device-hours at a device's peak bf16 FLOP/s times an assumed MFU (both printed, both overridable;
``cpu``: the matmul FLOP/s measured here). Then the largest trial's peak memory per device
(``aunet.memory``) against the device's, and, for SLURM, each trial's time against ``timeout_min``
(and whether checkpoint-and-requeue, ``max_num_timeout``, covers it) and the first round's array
against ``array_parallelism``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aunet import ladder
from aunet.memory import training_memory
from sweeps.job import Cell, plan_cell
from sweeps.study import StudyConfig, box

#: Peak dense bf16 FLOP/s and memory per device (vendor data sheets); MFU: what a tuned LLM run reaches.
DEVICES = {"h100": (989e12, 80e9, 0.4), "h200": (989e12, 141e9, 0.4), "a100": (312e12, 80e9, 0.4),
           "cpu": (None, None, 0.5)}
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CellCost:
    cell: Cell
    steps: tuple[int, int]  # at the box's smallest and largest batch
    trials: dict[str, int]  # phase -> trials, at most
    flops_per_trial: float
    memory: float  # bytes per device, the cell's largest trial

    @property
    def n_trials(self) -> int:
        return sum(self.trials.values())


def measured_cpu_flops(seconds: float = 0.3) -> float:
    """This machine's fp32 matmul FLOP/s on all the threads torch uses."""
    import torch

    a, b = torch.randn(512, 512), torch.randn(512, 512)
    a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return done * 2 * 512**3 / (time.perf_counter() - start)


def trials_per_phase(study: StudyConfig) -> dict[str, int]:
    phases = {"qmc": study.trials, "move": study.max_moves * study.move_trials}
    if "adaptive" in study.phases:
        phases["adaptive"] = study.adaptive_trials
    if study.seeds > 1:
        phases["seed"] = study.seeds - 1
    return phases


def cost_of(cell: Cell, study: StudyConfig, bf16: bool, shards: int, max_micro_batch: int) -> CellCost:
    prior = cell.prior
    units = prior.budget / prior.budget_per_unit
    lo, hi = (ladder.whole_sequences(b, prior.seq_len) for b in box(prior.law_bsz, study.bsz_factor))
    trials = trials_per_phase(study)
    if study.holdout is not None and prior.budget == study.holdout:
        trials["predicted"] = 1
    per_device = max(1, hi // prior.seq_len // shards)  # the trainer's automatic micro-batch at the largest batch
    micro = max(m for m in range(1, min(per_device, max_micro_batch) + 1) if per_device % m == 0)
    memory = training_memory(prior.model, micro, bf16=bf16, contraction=prior.contraction or None, shards=shards)
    return CellCost(cell, (round(units / lo), round(units / hi)), trials, prior.total_flops, memory.total)


def compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return hydra_compose("sweep", overrides=overrides, return_hydra_config=True)


def plan_study(overrides: list[str], device: str, mfu: float | None, peak: float | None,
               devices_per_trial: int) -> str:
    if device not in DEVICES:
        raise ValueError(f"--device {device!r} is not one of {sorted(DEVICES)}")
    if mfu is not None and not 0 < mfu <= 1:
        raise ValueError(f"--mfu {mfu} must be in (0, 1]")
    if devices_per_trial < 1:
        raise ValueError(f"--devices-per-trial {devices_per_trial} must be at least 1")
    config = compose(overrides)
    study: StudyConfig = OmegaConf.to_object(config.sweep)
    known_peak, device_memory, default_mfu = DEVICES[device]
    if device == "cpu":
        known_peak, device_memory = measured_cpu_flops(), float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    peak, mfu = peak or known_peak, mfu or default_mfu
    bf16 = device != "cpu"
    costs = [cost_of(plan_cell(study, f, b, config.data), study, bf16, devices_per_trial, config.max_micro_batch)
             for f in study.families for b in study.budgets]
    lines = [f"study {study.name!r}: {len(costs)} cells, {study.budget_convention} budgets, ratio {study.ratio:g}",
             f"{'family':<16} {'budget':>8} {'model':<28} {'params':>10} {'data':>12} {'steps lo-hi BSZ':>17} "
             f"{'FLOPs/trial':>11} {'trials (phase: at most)':<34} {'mem/dev':>8}"]
    for c in costs:
        p = c.cell.prior
        phases = ", ".join(f"{k} {v}" for k, v in c.trials.items() if v)
        lines.append(f"{p.family:<16} {p.budget:>8.3g} {p.name:<28.28} {p.params:>10,} "
                     f"{p.train_units:>8.3g} {p.units[:3]:<3} {c.steps[0]:>8,}-{c.steps[1]:<8,} "
                     f"{c.flops_per_trial:>11.3g} {phases:<34} {c.memory / 1e9:>6.2f}GB")
    total = sum(c.flops_per_trial * c.n_trials for c in costs)
    first = sum(c.trials["qmc"] * c.flops_per_trial for c in costs)
    rate = peak * mfu * devices_per_trial
    lines += ["",
              f"total: {total:.3g} FLOPs at most ({first:.3g} in phase 1, which always runs)",
              f"device {device}: peak {peak:.3g} FLOP/s{' (fp32 matmul, measured here)' if device == 'cpu' else ' bf16'}"
              f" x MFU {mfu:g} x {devices_per_trial} per trial = {rate:.3g} FLOP/s per trial",
              f"device-hours: {total / (peak * mfu) / 3600:.3g} at most ({first / (peak * mfu) / 3600:.3g} in phase 1)"]
    largest = max(costs, key=lambda c: c.memory)
    verdict = "fits" if largest.memory <= device_memory else "DOES NOT FIT"
    lines.append(f"peak memory per device, largest trial ({largest.cell.prior.name}): {largest.memory / 1e9:.3g} GB "
                 f"of {device_memory / 1e9:.3g} GB: {verdict} (aunet.memory: weights, gradients, AdamW state"
                 f"{f' over {devices_per_trial} FSDP shards' if devices_per_trial > 1 else ''}, activations, logits)")
    lines += launcher_checks(config.hydra.launcher, costs, rate)
    return "\n".join(lines)


def launcher_checks(launcher: DictConfig, costs: list[CellCost], rate: float) -> list[str]:
    target = str(launcher.get("_target_", ""))
    if "Slurm" not in target:
        return [f"launcher: {target.rsplit('.', 1)[-1] or 'in-process'} (no SLURM limits to check)"]
    lines = []
    timeout = launcher.get("timeout_min")
    requeues = int(launcher.get("max_num_timeout") or 0)
    longest = max(c.flops_per_trial for c in costs) / rate / 60
    if timeout is not None and longest > timeout:
        needed = math.ceil(longest / timeout) - 1
        covered = "covered" if requeues >= needed else "NOT covered"
        lines.append(f"SLURM: the longest trial takes {longest:.3g} min at this rate, over timeout_min={timeout}: "
                     f"it needs {needed} requeue(s) from its checkpoint; max_num_timeout={requeues}: {covered}")
    else:
        lines.append(f"SLURM: the longest trial takes {longest:.3g} min at this rate, within timeout_min={timeout}")
    parallel = launcher.get("array_parallelism")
    first_round = sum(c.trials["qmc"] for c in costs)
    lines.append(f"SLURM: the first round is an array of {first_round} jobs; array_parallelism={parallel} runs "
                 f"{min(first_round, int(parallel or first_round))} at once")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sweeps plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="the overrides of python sweep.py -m, e.g. sweep=reference")
    parser.add_argument("--device", default="h100", help=f"one of {sorted(DEVICES)} (default h100)")
    parser.add_argument("--mfu", type=float, help="model FLOP utilisation assumed (default 0.4 on GPUs, 0.5 on cpu)")
    parser.add_argument("--peak-flops", type=float, help="the device's peak FLOP/s (default: its data sheet's)")
    parser.add_argument("--devices-per-trial", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        print(plan_study(args.overrides, args.device, args.mfu, args.peak_flops, args.devices_per_trial))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
