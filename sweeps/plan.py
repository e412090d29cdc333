"""``python -m sweeps plan [options] [overrides]``: what a study will cost, before anything is submitted.

The overrides are those of ``python sweep.py -m`` (``sweep=reference``, ``hydra/launcher=submitit_slurm``,
``hydra.launcher.timeout_min=...``): the same config is composed, every (family, budget) cell (in an isoFLOP
study, every (family, budget, ratio)) is planned as the sweeper plans it, and nothing is trained or submitted. Per cell: the model, its parameters, the
data each trial reads and the epochs that makes of the corpus's training split, the vocabulary and bytes
per unit (beside the family's own vocabulary at that budget), the steps at the box's smallest and largest
batch, the FLOPs of one trial (training, and the evaluation the trial config asks for) and the trials of
each phase (at most: box moves and adaptive trials happen only where the data ask for them). An isoFLOP
study adds a line per cell: the ratio asked for, the model size the ladder snapped it to, the ratio and
LLaMA-3 tokens per parameter that model really trains, its trials and their cost. Totals: FLOPs,
and device-hours at a device's peak bf16 FLOP/s times an assumed MFU (both printed, both overridable).
On ``cpu`` small trials are paced by per-step overhead, not FLOPs: without ``--peak-flops`` or ``--mfu``
the plan times a few real steps of each cell's model with the study's threads (``sweeps.step_timing``),
and a cell too large to time falls back to the fp32 matmul FLOP/s measured here times the MFU. Then the largest trial's peak memory per device
(``aunet.memory``) against the device's, and, for SLURM, each trial's time against ``timeout_min``
(and whether checkpoint-and-requeue, ``max_num_timeout``, covers it) and the first round's array
against ``array_parallelism``. Every FLOP, time and memory figure is an estimate, and says so.

A cell that cannot run (more epochs than the data config or ``--max-epochs`` allows, a trial that does
not fit in the device's memory, a trial longer than its SLURM time limit and requeues) makes the dry run
exit non-zero, one line per reason, after printing the plan.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

from aunet import ladder
from aunet.data import DataConfig, prepare_data
from aunet.data.corpus import heldout_docs
from aunet.eval.cute import DEFAULT_ITEMS
from aunet.eval.registry import expand_tasks, get_task
from aunet.memory import training_memory
from aunet.threads import cpu_allocation
from sweeps.backends import backend_for
from sweeps.cell import Cell, batch_range, plan_cells
from sweeps.step_timing import seconds_per_step
from sweeps.study import StudyConfig

#: Peak dense bf16 FLOP/s and memory per device (vendor data sheets); MFU: what a tuned LLM run reaches.
DEVICES = {"h100": (989e12, 80e9, 0.4), "h200": (989e12, 141e9, 0.4), "a100": (312e12, 80e9, 0.4),
           "cpu": (None, None, 0.5)}
REPO = Path(__file__).resolve().parents[1]
#: Passes over the training split a scaling study may take even where the data config repeats data:
#: up to about 4 epochs repeated text is worth nearly as much as new text, past that its value decays
#: fast (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"), so the laws fitted would
#: describe repetition, not scale. Above one epoch the plan notes the change of regime.
MAX_EPOCHS = 4.0
#: The most options of any multiple-choice task of ``aunet.eval`` (ARC-Challenge has 3 to 5): a bound on
#: the rows one downstream item is scored with.
MAX_OPTIONS = 5
#: What the user changes to train on their own text (conf/data/files.yaml).
OWN_DATA = "data=files data.sources='[/path/to/your/corpus/*.jsonl.zst]'"


@dataclass(frozen=True)
class CellCost:
    cell: Cell
    steps: tuple[int, int]  # at the box's smallest and largest batch
    trials: dict[str, int]  # phase -> trials, at most
    flops_per_trial: float  # training
    eval_flops: float  # per trial: held-out passes (padding included) and downstream tasks, forward only
    memory: float  # bytes per device, the cell's largest trial
    epochs: float  # passes over the corpus's training split that one trial reads
    seconds: float  # one trial, training and evaluation: timed steps where ``timed``, else FLOPs at the rate
    timed: bool = False

    @property
    def n_trials(self) -> int:
        return sum(self.trials.values())

    @property
    def trial_flops(self) -> float:
        return self.flops_per_trial + self.eval_flops


@dataclass(frozen=True)
class Evaluation:
    """What every trial evaluates, from the trial config: held-out bytes per pass, passes every
    ``every`` steps (0: only the final one), and downstream items x rows per item."""

    heldout_bytes: int
    every: int
    downstream_rows: int  # rows of at most seq_len units, each a forward pass
    downstream: str  # what the rows are, for the printout

    def flops(self, cell: Cell, max_steps: int) -> float:
        """Forward FLOPs (a third of F's forward + backward) over whole padded sequences."""
        prior = cell.prior
        passes = 1 + ((max_steps - 1) // self.every if self.every else 0)
        targets = self.heldout_bytes / prior.bytes_per_unit
        units = passes * math.ceil(targets / prior.seq_len) * prior.seq_len + self.downstream_rows * prior.seq_len
        return units * prior.flops_per_unit / 3


@dataclass(frozen=True)
class Plan:
    text: str
    refusals: list[str]  # one line per reason the study cannot run as configured
    costs: list[CellCost]


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


def trials_per_phase(study: StudyConfig, budget: float | None = None) -> dict[str, int]:
    """A cell's trials per phase, at most (at ``budget``: its seeds, when only some budgets get them)."""
    seeds = study.seeds if budget is None else study.seeds_at(budget)
    if study.at_prior:
        phases = {"prior": 1}
    else:
        phases = {"qmc": study.trials, "move": study.max_moves * study.move_trials}
        if "adaptive" in study.phases:
            phases["adaptive"] = study.adaptive_trials
    if seeds > 1:
        phases["seed"] = seeds - 1
    return phases


def first_round(cost: CellCost) -> int:
    """The trials a cell runs whatever their outcomes: phase 1, or every trial of a cell at its prior."""
    return cost.trials.get("qmc", cost.n_trials)


def cost_of(cell: Cell, study: StudyConfig, bf16: bool, shards: int, max_micro_batch: int,
            evaluation: Evaluation, train_bytes: int, rate: float, step_seconds: float | None = None) -> CellCost:
    """A cell's cost. ``rate``: FLOP/s per trial; ``step_seconds``: a timed step at the prior's batch, which
    then paces training (its steps at the prior's batch) and evaluation (at the step's own FLOP/s)."""
    prior = cell.prior
    units = prior.budget / prior.budget_per_unit
    lo, hi = batch_range(study, prior)
    trials = trials_per_phase(study, prior.budget)
    if study.holdout is not None and prior.budget == study.holdout:
        trials["predicted"] = 1
    per_device = max(1, hi // prior.seq_len // shards)  # the trainer's automatic micro-batch at the largest batch
    micro = max(m for m in range(1, min(per_device, max_micro_batch) + 1) if per_device % m == 0)
    memory = training_memory(prior.model, micro, bf16=bf16, contraction=prior.contraction or None, shards=shards)
    steps = (round(units / lo), round(units / hi))
    epochs = prior.train_units * prior.bytes_per_unit / train_bytes if train_bytes else math.inf
    eval_flops = evaluation.flops(cell, steps[0])
    if step_seconds is None:
        seconds = (prior.total_flops + eval_flops) / rate
    else:
        seconds = prior.steps * step_seconds * (1 + eval_flops / prior.total_flops)
    return CellCost(cell, steps, trials, prior.total_flops, eval_flops, memory.total, epochs, seconds,
                    step_seconds is not None)


def check_options(device: str, mfu: float | None, peak: float | None, devices_per_trial: int,
                  max_epochs: float) -> None:
    """One line for a bad option, before anything is composed or measured."""
    if device not in DEVICES:
        raise ValueError(f"--device {device!r} is not one of {sorted(DEVICES)}")
    if mfu is not None and not 0 < mfu <= 1:
        raise ValueError(f"--mfu {mfu:g} must be in (0, 1]: the fraction of the peak a run reaches")
    if peak is not None and not (math.isfinite(peak) and peak > 0):
        raise ValueError(f"--peak-flops {peak:g} must be a positive, finite FLOP/s (or left out: the data sheet's)")
    if devices_per_trial < 1:
        raise ValueError(f"--devices-per-trial {devices_per_trial} must be at least 1")
    if not (math.isfinite(max_epochs) and max_epochs >= 1):
        raise ValueError(f"--max-epochs {max_epochs:g} must be a finite number of passes, at least 1")


def compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
            return hydra_compose("sweep", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as err:  # a config group's option that does not exist: one line
        group, _, name = (err.missing_cfg_file or "").rpartition("/")
        if not group:
            raise ValueError(str(err).splitlines()[0]) from None
        what, known = ("study", "the studies") if group == "sweep" else (group, "the options")
        raise ValueError(f"unknown {what} {name!r} ({group}={name}); {known} are conf/{group}/*.yaml: "
                         f"{', '.join(err.options or [])}") from None


def evaluation_of(config: DictConfig, heldout: int) -> Evaluation:
    """The evaluation each trial runs: the held-out passes (``eval_bytes`` of the ``heldout`` bytes,
    ``eval_every``) and the downstream tasks (``eval``), bounded where the items are not known yet."""
    per_pass = min(heldout, config.eval_bytes) if config.eval_bytes else heldout
    rows, tasks = 0, []
    if config.eval.enabled:
        for name in expand_tasks(list(config.eval.tasks)):
            spec = get_task(name)
            items = min(config.eval.limit or math.inf, spec.expected or DEFAULT_ITEMS)
            rows += items * (MAX_OPTIONS if spec.kind == "mc" else 1)
            tasks.append(f"{name} {items:,}")
    downstream = (f"downstream ({', '.join(tasks)} items; at most {MAX_OPTIONS} options each, rows of at most "
                  f"one sequence)") if tasks else "no downstream tasks (eval.enabled=false)"
    return Evaluation(per_pass, int(config.eval_every or 0), int(rows), downstream)


def data_checks(costs: list[CellCost], data: DataConfig, train_bytes: int,
                max_epochs: float) -> tuple[list[str], list[str]]:
    """(notes, refusals) of the data each trial reads and the vocabulary it reads it in."""
    notes, refusals = [], []
    reads = sorted(costs, key=lambda c: c.epochs)
    least, most = reads[0], reads[-1]
    limit = max_epochs if data.epochs_allowed else 1.0
    over = [c for c in costs if c.epochs > limit]
    if over:
        why = (f"past --max-epochs {max_epochs:g}, repeated data changes what the study measures"
               if data.epochs_allowed else "the trainer refuses a second pass (data.epochs_allowed=false), so "
                                           "every such trial would stop at its start")
        refusals.append(
            f"data: {len(over)} of {len(costs)} cells read more than {limit:g} epoch(s) of the {train_bytes / 1e6:.3g} "
            f"MB training split: a trial reads {gigabytes(least)} ({least.cell.prior.name}, {least.epochs:,.0f} "
            f"epochs) to {gigabytes(most)} ({most.cell.prior.name}, {most.epochs:,.0f} epochs); {why}. Point the "
            f"study at a corpus of at least {gigabytes(most)} with {OWN_DATA}, or lower the budgets")
    elif most.epochs > 1:
        notes.append(f"note: up to {most.epochs:.2f} epochs ({most.cell.prior.name}): repeated data, a change of "
                     f"regime from the single pass a scaling law assumes")
    mismatched: dict[tuple[str, int, int], list[CellCost]] = {}
    for c in costs:
        regime = ladder.get_family(c.cell.prior.family).regime(c.cell.prior.budget)[2]
        vocab = c.cell.measured.vocab_size
        if regime and vocab and vocab != regime:
            mismatched.setdefault((c.cell.prior.family, vocab, regime), []).append(c)
    for (family, vocab, regime), cells in mismatched.items():
        budgets = sorted(c.cell.prior.budget for c in cells)
        notes.append(f"note: {family} reads a {vocab:,}-entry BPE ({cells[0].cell.prior.bytes_per_unit:.2f} bytes "
                     f"per token on the held-out split) where the family uses {regime:,} entries at "
                     f"{budgets[0]:.3g}-{budgets[-1]:.3g} FLOPs: its tokens are another unit than the ladder's; "
                     f"data.bpe_vocab={regime} trains that vocabulary")
    return notes, refusals


def cell_table(costs: list[CellCost]) -> list[str]:
    lines = [f"{'family':<16} {'budget':>8} {'model':<28} {'params':>10} {'data/trial':>12} {'epochs':>8} "
             f"{'vocab':>7} {'B/unit':>6} {'steps lo-hi BSZ':>17} {'train FLOPs':>11} {'eval FLOPs':>10} "
             f"{'trials (phase: at most)':<34} {'mem/dev est.':>12}"]
    for c in costs:
        p = c.cell.prior
        phases = ", ".join(f"{k} {v}" for k, v in c.trials.items() if v)
        lines.append(f"{p.family:<16} {p.budget:>8.3g} {p.name:<28.28} {p.params:>10,} "
                     f"{p.train_units:>8.3g} {p.units[:3]:<3} {c.epochs:>8.3g} {p.model.vocab_size:>7,} "
                     f"{p.bytes_per_unit:>6.2f} {c.steps[0]:>8,}-{c.steps[1]:<8,} "
                     f"{c.flops_per_trial:>11.3g} {c.eval_flops:>10.3g} {phases:<34} {c.memory / 1e9:>10.2f}GB")
    return lines


def ratios_said(study: StudyConfig) -> str:
    """The study's ratio, or its isoFLOP ratios and how their cells pick LR and BSZ."""
    if study.ratios is None:
        return f"ratio {study.planned_ratios[0]:g}"
    how = "at the prior's LR and BSZ" if study.at_prior else "each with its own LR x BSZ search"
    return f"isoFLOP ratios {', '.join(f'{r:g}' for r in study.ratios)} ({how})"


def isoflop_table(costs: list[CellCost]) -> list[str]:
    """One line per isoFLOP cell: the ratio asked for, the ladder's model for it and the ratio and tokens
    per parameter that model really trains, then its trials and their cost (every trial, evaluation
    included)."""
    lines = ["isoFLOP cells: the ratio asked for, the ladder's model for it, the ratio and LLaMA-3 tokens per "
             "parameter that model trains (estimates: FLOPs of every trial, evaluation included)",
             f"{'family':<16} {'budget':>8} {'ratio':>8} {'params':>10} {'achieved':>8} {'tok/param':>9} "
             f"{'trials':>6} {'FLOPs':>9} {'dev-hours':>9}"]
    for c in costs:
        p = c.cell.prior
        flops = c.n_trials * c.trial_flops
        lines.append(f"{p.family:<16} {p.budget:>8.3g} {p.ratio:>8.4g} {p.params:>10,} {p.achieved_ratio:>8.3g} "
                     f"{p.tokens_per_param:>9.3g} {c.n_trials:>6} {flops:>9.3g} {c.n_trials * c.seconds / 3600:>9.3g}")
    return lines


def gigabytes(cost: CellCost) -> str:
    """The training text one trial of the cell reads."""
    return f"{cost.cell.prior.train_units * cost.cell.prior.bytes_per_unit / 1e9:.3g} GB"


def plan_study(overrides: list[str], device: str, mfu: float | None, peak: float | None,
               devices_per_trial: int, max_epochs: float = MAX_EPOCHS) -> Plan:
    """The whole dry run in one pass, in the order a user reads it (cells, totals, memory, launcher,
    data), with the refusals gathered, not raised: a plan that cannot run still prints what it would cost."""
    check_options(device, mfu, peak, devices_per_trial, max_epochs)
    config = compose(overrides)
    study: StudyConfig = OmegaConf.to_object(config.sweep)
    known_peak, device_memory, default_mfu = DEVICES[device]
    if device == "cpu":
        known_peak, device_memory = measured_cpu_flops(), float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    source = "given" if peak else "fp32 matmul, measured here" if device == "cpu" else "bf16, data sheet"
    given_peak, given_mfu = peak is not None, mfu is not None
    peak, mfu = peak or known_peak, mfu or default_mfu
    bf16 = device != "cpu"
    data = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), config.data,
                                               {"units": "bytes", "seq_len": 1}))
    split = prepare_data(data).info  # the sizes of the training and held-out splits, whatever the units
    train_bytes, evaluation = split.train_bytes, evaluation_of(config, split.heldout_bytes)
    cells, merged = plan_cells(study, config.data)
    rate = peak * mfu * devices_per_trial
    timing = device == "cpu" and not (given_peak or given_mfu)
    text = b"".join(heldout_docs(data))[:1 << 16] if timing else b""
    threads = int(config.get("threads") or 0) or cpu_allocation().cpus  # what each trial takes (aunet.threads)
    costs = [cost_of(cell, study, bf16, devices_per_trial, config.max_micro_batch, evaluation, train_bytes, rate,
                     seconds_per_step(cell.prior, text, threads) if timing else None)
             for cell in cells.values()]
    per_cell = trials_per_phase(study)
    corpus = "the default corpus (data=default)" if data.uses_default_corpus else f"data.sources={data.sources}"
    lines = [f"study {study.name!r}: {len(costs)} cells, {study.budget_convention} budgets, {ratios_said(study)}, "
             f"at most {sum(per_cell.values())} trials per cell "
             f"({', '.join(f'{k} {v}' for k, v in per_cell.items() if v)})",
             f"data: {corpus}, {train_bytes:,} training bytes, data.epochs_allowed={str(data.epochs_allowed).lower()}"
             f"; per trial: {evaluation.heldout_bytes:,} held-out bytes evaluated "
             f"{f'every {evaluation.every} steps and ' if evaluation.every else ''}at the end, {evaluation.downstream}",
             *cell_table(costs)]
    if study.ratios is not None:
        lines += ["", *isoflop_table(costs), *merged]
    train = sum(c.flops_per_trial * c.n_trials for c in costs)
    evaluated = sum(c.eval_flops * c.n_trials for c in costs)
    total = train + evaluated
    first = sum(first_round(c) * c.trial_flops for c in costs)
    timed = sum(c.timed for c in costs)
    pace = (f"; {timed} of {len(costs)} cells paced by steps timed here with {threads} thread(s) per trial, the "
            "rest at this rate" if timed else "")
    lines += ["",
              f"FLOPs (estimate, every phase in full): {total:.3g} = {train:.3g} training + {evaluated:.3g} "
              f"evaluation (forward passes, padding included); phase 1, which always runs: {first:.3g}",
              f"device {device}: peak {peak:.3g} FLOP/s ({source}) x MFU {mfu:g} (assumed) x {devices_per_trial} "
              f"per trial = {rate:.3g} FLOP/s per trial",
              f"device-hours (estimate, every phase in full): "
              f"{sum(c.n_trials * c.seconds for c in costs) * devices_per_trial / 3600:.3g} "
              f"({sum(first_round(c) * c.seconds for c in costs) * devices_per_trial / 3600:.3g} in phase 1){pace}"]
    largest = max(costs, key=lambda c: c.memory)
    fits = largest.memory <= device_memory
    lines.append(f"peak memory per device (estimate), largest trial ({largest.cell.prior.name}): "
                 f"{largest.memory / 1e9:.3g} GB of {device_memory / 1e9:.3g} GB: {'fits' if fits else 'DOES NOT FIT'} "
                 f"(aunet.memory: weights, gradients, AdamW state"
                 f"{f' over {devices_per_trial} FSDP shards' if devices_per_trial > 1 else ''}, activations, logits)")
    refusals = [] if fits else [
        f"memory: {largest.cell.prior.name}'s trials need an estimated {largest.memory / 1e9:.3g} GB per device, over "
        f"the {device_memory / 1e9:.3g} GB of a {device}; spread them with --devices-per-trial (FSDP) or lower "
        f"max_micro_batch"]
    slurm, late = launcher_checks(config.hydra.launcher, costs)
    notes, short = data_checks(costs, data, train_bytes, max_epochs)
    return Plan("\n".join(lines + slurm + notes), short + refusals + late, costs)


def launcher_checks(launcher: DictConfig, costs: list[CellCost]) -> tuple[list[str], list[str]]:
    """(lines, refusals) of the SLURM limits: a trial longer than its time limit and requeues cannot finish."""
    if not backend_for(launcher).time_limits:
        target = str(launcher.get("_target_", ""))
        return [f"launcher: {target.rsplit('.', 1)[-1] or 'in-process'} (no SLURM limits to check)"], []
    lines, refusals = [], []
    timeout = launcher.get("timeout_min")
    requeues = int(launcher.get("max_num_timeout") or 0)
    longest = max(c.seconds for c in costs) / 60
    said = f"SLURM: the longest trial takes {longest:.3g} min (estimate: training and evaluation)"
    if timeout is not None and longest > timeout:
        needed = math.ceil(longest / timeout) - 1
        covered = requeues >= needed
        lines.append(f"{said}, over timeout_min={timeout}: it needs {needed} requeue(s) from its checkpoint; "
                     f"max_num_timeout={requeues}: {'covered' if covered else 'NOT covered'}")
        if not covered:
            refusals.append(f"time: the longest trial (an estimated {longest:.3g} min) needs {needed} requeue(s) "
                            f"past timeout_min={timeout}, and max_num_timeout={requeues}; set "
                            f"hydra.launcher.max_num_timeout={needed} or raise hydra.launcher.timeout_min")
    else:
        lines.append(f"{said}, within timeout_min={timeout}")
    parallel = launcher.get("array_parallelism")
    jobs = sum(first_round(c) for c in costs)
    lines.append(f"SLURM: the first round is an array of {jobs} jobs; array_parallelism={parallel} runs "
                 f"{min(jobs, int(parallel or jobs))} at once")
    return lines, refusals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sweeps plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="the overrides of python sweep.py -m, e.g. sweep=reference")
    parser.add_argument("--device", default="h100", help=f"one of {sorted(DEVICES)} (default h100)")
    parser.add_argument("--mfu", type=float, help="model FLOP utilisation assumed (default 0.4 on GPUs, 0.5 on cpu)")
    parser.add_argument("--peak-flops", type=float, help="the device's peak FLOP/s (default: its data sheet's)")
    parser.add_argument("--devices-per-trial", type=int, default=1)
    parser.add_argument("--max-epochs", type=float, default=MAX_EPOCHS,
                        help=f"passes over the training split a cell may read with data.epochs_allowed=true "
                             f"(default {MAX_EPOCHS:g})")
    args = parser.parse_args(argv)
    try:
        plan = plan_study(args.overrides, args.device, args.mfu, args.peak_flops, args.devices_per_trial,
                          args.max_epochs)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(plan.text)
    if plan.refusals:
        raise SystemExit("\n".join(f"cannot run: {reason}" for reason in plan.refusals))
