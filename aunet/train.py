"""One training run: budget in, one result record out.

The run takes its plan (model, batch size in whole sequences, steps, peak LR) from the
sweep that shipped it, or asks the ladder for one (``aunet.ladder.plan_model``, with
contraction and BPE compression measured on the data), adapts it to the number of
processes, trains with AdamW and the paper's schedule, and ends with a record
(finished, diverged, failed or preempted) written atomically.

It survives interruption: SIGUSR2/SIGTERM (what SLURM and submitit send before a
preemption or time-out) make it checkpoint at the next step boundary and stop; run
again with the same config and output directory, it resumes from the checkpoint
and the loader state, so it sees exactly the data it would have seen.

What a run is asked to do (``TrainConfig``, the law guard) is ``aunet.train_config``, which
planning imports without the trainer; both names are importable from here too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from aunet import checkpoint, parallel
from aunet.config import COUNTED_IN
from aunet.data import Corpus, Prefetcher, bits_per_byte, prepare_data
from aunet.eval.suite import run_downstream
from aunet.flops import FlopsBreakdown, executed_flops, flops_breakdown
from aunet.ladder import DataMeasurements, RunPlan, family_of, plan_model
from aunet.models import build_model, stage_lengths
from aunet.optim import build_optimizer, lr_at
from aunet.record import RunRecord
from aunet.run_control import PreemptionGuard, Progress
from aunet.threads import Threads, use_allocated_threads
from aunet.tracking import Tracker
from aunet.train_config import LawRefused, TrainConfig

log = logging.getLogger("aunet.train")



def make_plan(cfg: TrainConfig, corpus: Corpus) -> RunPlan:
    """The shipped plan, or the ladder's plan of ``cfg.model`` at ``cfg.budget`` measured on ``corpus``."""
    if cfg.plan is not None:
        return cfg.plan
    return plan_model(cfg.model, cfg.budget, laws=cfg.law, ratio=cfg.ratio or math.nan, family=cfg.family or None,
                      measured=DataMeasurements.of(corpus, cfg.model), convention=cfg.budget_convention, bsz=cfg.bsz,
                      lr=cfg.optim.lr, steps=cfg.steps)


def batch_geometry(plan: RunPlan, world_size: int, micro_batch: int, max_micro_batch: int) -> tuple[int, int]:
    """(sequences per forward pass and process, micro-batches per step) of a plan on ``world_size`` processes."""
    per_rank = plan.sequences_per_step // world_size
    # Automatic: the largest micro-batch within max_micro_batch that divides the per-process batch.
    micro = micro_batch or max(m for m in range(1, min(per_rank, max_micro_batch) + 1) if per_rank % m == 0)
    if per_rank % micro:
        raise ValueError(
            f"train config: batch of {per_rank} sequences per process is not a multiple of micro_batch={micro}; "
            f"choose a micro_batch that divides it, or 0 for automatic"
        )
    return micro, per_rank // micro


def autocast(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def next_unit_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 logits at every position but the last, the next units they predict), both flattened:
    the one forward pass that training and evaluation share."""
    ids = batch["ids"]
    levels = batch.get("levels")
    logits = model(ids[:, :-1], None if levels is None else levels[:, :-1])
    return logits.float().flatten(0, 1), ids[:, 1:].flatten()


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], pad_id: int) -> torch.Tensor:
    """Mean next-unit cross-entropy (nats per unit) over non-padding targets."""
    return F.cross_entropy(*next_unit_logits(model, batch), ignore_index=pad_id)


def router_loss(model: torch.nn.Module) -> torch.Tensor | float:
    """The ratio loss of the last forward pass's learned stages (``AUNet.ratio_loss``); 0 for other models."""
    inner = parallel.unwrap(model)
    return inner.ratio_loss() if hasattr(inner, "ratio_loss") else 0.0


def routing_entry(model: torch.nn.Module, band: float) -> dict[str, float]:
    """Realised contraction of each learned stage in the last forward pass, and its relative gap to the
    target (``contraction<k>``, ``contraction<k>_gap``); warns when the gap leaves ``band``."""
    inner = parallel.unwrap(model)
    entry: dict[str, float] = {}
    for stage, (realised, target) in getattr(inner, "realised_contraction", dict)().items():
        gap = realised / target - 1
        entry[f"contraction{stage}"], entry[f"contraction{stage}_gap"] = realised, gap
        if abs(gap) > band:
            log.warning("stage %d: realised contraction %.3g is %+.0f%% from its target %.3g (band %.0f%%)",
                        stage, realised, 100 * gap, target, 100 * band)
    return entry


def evaluate(model: torch.nn.Module, corpus: Corpus, cfg: TrainConfig, env: parallel.DistEnv) -> dict[str, float]:
    """Held-out loss per unit and bits per byte, over the same bytes for every architecture."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # nats, units, bytes
    batches = corpus.heldout_batches(cfg.model, cfg.max_micro_batch, env.rank, env.world_size, cfg.eval_bytes)
    with torch.no_grad():  # a context, not a decorator: mutation testing skips decorated functions
        for batch in batches:
            batch = {k: v.to(env.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with autocast(env.device, cfg.precision):
                logits, targets = next_unit_logits(model, batch)
            mask = batch["target_mask"]
            nats = F.cross_entropy(logits, targets, reduction="none")
            totals[0] += float((nats * mask.flatten()).sum())
            totals[1] += float(mask.sum())
            totals[2] += float(batch["n_bytes"])
    parallel.all_reduce_sum(totals)
    model.train()
    nats, units, n_bytes = totals.tolist()
    if units == 0:
        raise ValueError("the held-out split produced no evaluation targets; give a larger data.valid_bytes")
    return {"loss": nats / units, "bpb": bits_per_byte(nats, n_bytes), "heldout_units": units, "heldout_bytes": n_bytes}


def train(cfg: TrainConfig) -> RunRecord:
    """Run to completion (or divergence, failure, preemption); always returns and writes the record."""
    out = Path(cfg.output_dir)
    threads = use_allocated_threads(cfg.threads, cfg.threads_force)
    env = parallel.init_distributed(cfg.device)
    started = time.time()
    record = new_record(cfg, threads)
    tracker: Tracker | None = None
    hand_on = None
    try:
        corpus = prepare_data(cfg.data)
        plan, micro_batch, accumulation = plan_run(cfg, corpus, env, record)
        if env.is_main:
            tracker = open_tracker(cfg, plan, record)
        state = TrainState(cfg, plan, corpus, env, out, micro_batch, accumulation)
        hand_on = run(state, record, tracker, started)
    except LawRefused:  # a configuration error: nothing ran, so no record
        parallel.shutdown()
        raise
    except Exception as err:  # the record says what went wrong; a sweep goes on
        record_failure(record, err)
    close_record(record, out, tracker, env, started)
    parallel.shutdown()
    if hand_on is not None:  # preempted: our checkpoint and record are safe, let submitit requeue
        hand_on()
    return record


def new_record(cfg: TrainConfig, threads: Threads) -> RunRecord:
    """The record of a run about to start: what it was asked to do, status running."""
    return RunRecord(status="running", family=cfg.family or family_of(cfg.model), budget=float(cfg.budget or "nan"),
                     lr=float(cfg.optim.lr or "nan"), bsz=float(cfg.bsz or "nan"),
                     units=COUNTED_IN[cfg.model.units], study=cfg.study, trial=cfg.trial,
                     model=cfg.model.name, ratio=float(cfg.ratio or "nan"), seed=cfg.seed,
                     convention=cfg.budget_convention,
                     lr_box=tuple(cfg.lr_box) if cfg.lr_box else None,
                     bsz_box=tuple(cfg.bsz_box) if cfg.bsz_box else None, config=cfg.to_dict(),
                     threads=torch.get_num_threads(), threads_source=threads.source)


def plan_run(cfg: TrainConfig, corpus: Corpus, env: parallel.DistEnv, record: RunRecord) -> tuple[RunPlan, int, int]:
    """(plan, micro-batch, accumulation) of ``cfg`` on ``corpus``, after the law guard and the corpus size
    check; fits ``cfg.model`` to the corpus and writes the plan's fields into ``record``."""
    cfg.model = corpus.fit_model_config(cfg.model)
    plan = make_plan(cfg, corpus).for_world(env.world_size)
    verdict = cfg.check_law(plan)
    if verdict is not None:
        record.law_verdict = verdict.line()
        if cfg.bsz is None and not 0.9 <= plan.bsz / plan.law_bsz <= 1.1:
            log.warning("law %s: its BSZ at this budget, %.4g %s, is rounded to %s (%d whole sequences of %d)",
                        cfg.law, plan.law_bsz, plan.units, f"{plan.bsz:,}", plan.sequences_per_step, plan.seq_len)
    micro_batch, accumulation = batch_geometry(plan, env.world_size, cfg.micro_batch, cfg.max_micro_batch)
    corpus.check(plan.train_units)
    for name, value in plan.record_fields().items():
        setattr(record, name, value)
    return plan, micro_batch, accumulation


def open_tracker(cfg: TrainConfig, plan: RunPlan, record: RunRecord) -> Tracker:
    """The run's MLflow run (artifacts under its output directory)."""
    return Tracker(cfg.tracking, Path(cfg.output_dir), {"config": cfg.to_dict(), "plan": plan.to_dict(),
                                                        "family": record.family})


def record_failure(record: RunRecord, err: Exception) -> None:
    """Mark ``record`` failed with ``err`` (call within its ``except``: the traceback is kept)."""
    log.error("run failed: %s", err)
    record.status, record.error = "failed", f"{type(err).__name__}: {err}"
    record.metrics["traceback"] = traceback.format_exc()[-4000:]


def close_record(record: RunRecord, out: Path, tracker: Tracker | None, env: parallel.DistEnv,
                 started: float) -> None:
    """Times into ``record``, then ``out``/record.json, and the MLflow run ended."""
    record.metrics["wall_time"] = time.time() - started
    record.metrics["world_size"] = env.world_size
    if "train_seconds" in record.metrics:  # what the run spent neither training nor getting ready
        record.metrics["teardown_seconds"] = (record.metrics["wall_time"] - record.metrics["train_seconds"]
                                              - record.metrics["setup_seconds"])
    if env.is_main:
        path = out / "record.json"
        record.write(path)
        if tracker is not None:
            tracker.artifact(path)
            tracker.close(record.status)


def run_fingerprint(cfg: TrainConfig, plan: RunPlan, micro_batch: int, accumulation: int, world_size: int) -> str:
    """What a run's checkpoint and final weights are stamped with: what must not change across a resume."""
    return checkpoint.fingerprint({
        "model": cfg.model.to_dict(), "data": cfg.data.to_dict(), "plan": plan.to_dict(),
        "geometry": [micro_batch, accumulation], "optim": asdict(cfg.optim), "seed": cfg.seed, "world": world_size})


def flops_breakdown_of(plan: RunPlan) -> FlopsBreakdown:
    """The per-stage FLOP breakdown that ``batch_flops`` prices a batch with."""
    return flops_breakdown(plan.model, plan.contraction if plan.model.spec.pools else None)


def batch_flops(plan: RunPlan, breakdown: FlopsBreakdown, batch: dict[str, torch.Tensor]) -> float:
    """FLOPs the model runs on one micro-batch: AU-Net pads each pooled stage to its longest row."""
    ids = batch["ids"][:, :-1]
    levels = batch.get("levels")
    return ids.shape[0] * executed_flops(breakdown, stage_lengths(plan.model, ids, None if levels is None
                                                                  else levels[:, :-1]))


def divergence(loss: float, first_loss: float, factor: float, step: int) -> str | None:
    """Why a run whose training loss at ``step`` is ``loss`` has diverged (not finite, or above ``factor``
    times its first loss), or None while it has not."""
    if math.isfinite(loss) and loss <= factor * first_loss:
        return None
    return f"training loss {loss:.4g} at step {step} (first loss {first_loss:.4g})"


def log_entry(history: list[dict[str, float]], tracker: Tracker | None, step: int, entry: dict[str, float]) -> None:
    """Append a training entry (loss, lr, ...) to ``history`` and log it, its loss as train_loss."""
    history.append({"step": step, **entry})
    if tracker is not None:
        tracker.metrics({"train_loss": entry["loss"], **{k: v for k, v in entry.items() if k != "loss"}}, step)


def evaluate_into(model: torch.nn.Module, corpus: Corpus, cfg: TrainConfig, env: parallel.DistEnv,
                  history: list[dict[str, float]], tracker: Tracker | None, step: int) -> None:
    """A held-out evaluation during training, into ``history`` and the tracker."""
    metrics = evaluate(model, corpus, cfg, env)
    history.append({"step": step, "eval_loss": metrics["loss"], "eval_bpb": metrics["bpb"]})
    if tracker is not None:
        tracker.metrics({"eval_loss": metrics["loss"], "eval_bpb": metrics["bpb"]}, step)


def record_compute(record: RunRecord, plan: RunPlan, steps: int, units_seen: float, executed: float,
                   history: list[dict[str, float]], env: parallel.DistEnv, bytes_per_unit: float) -> None:
    """Steps, units, FLOPs (planned, the paper's, executed) and throughput of a run into its record."""
    record.steps, record.train_units = steps, units_seen
    record.flops = plan.flops_per_unit * units_seen
    record.paper_compute = plan.flops_per_unit_ratio * units_seen
    record.executed_flops = executed
    record.metrics.update(_throughput(history, env, bytes_per_unit))
    record.metrics["history"] = history


def seeded_model(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The run's initial model: drawn from its own seed, so that runs of one seed start alike."""
    torch.manual_seed(cfg.seed)
    return build_model(cfg.model).to(device)


def train_batches(cfg: TrainConfig, corpus: Corpus, env: parallel.DistEnv, micro_batch: int) -> Prefetcher:
    """The run's micro-batches in its own seed's data order, made ahead while one trains."""
    return Prefetcher(corpus.train_loader(cfg.model, micro_batch, env.rank, env.world_size, seed=cfg.seed),
                      pin_memory=env.device.type == "cuda")


class TrainState:
    """The model, optimizer, loader and counters of a run: what a checkpoint holds, and one step of training."""

    def __init__(self, cfg: TrainConfig, plan: RunPlan, corpus: Corpus, env: parallel.DistEnv, out: Path,
                 micro_batch: int, accumulation: int):
        self.cfg, self.plan, self.corpus, self.env = cfg, plan, corpus, env
        self.accumulation = accumulation
        self.model = parallel.wrap(seeded_model(cfg, env.device), env, cfg.parallel)
        self.optimizer = build_optimizer(self.model, cfg.optim, plan.lr)
        use_compile = cfg.compile == "on" or (cfg.compile == "auto" and env.device.type == "cuda")
        self.forward_model = torch.compile(self.model) if use_compile else self.model
        self.loader = train_batches(cfg, corpus, env, micro_batch)
        self.fingerprint = run_fingerprint(cfg, plan, micro_batch, accumulation, env.world_size)
        self.path = out / "checkpoint.pt"
        self.step, self.first_loss, self.units_seen = 0, None, 0.0
        self.breakdown = flops_breakdown_of(plan)
        self.executed_flops = 0.0  # this process's; see executed()
        self.history: list[dict[str, float]] = []
        self.last_checkpoint = time.time()

    def resume(self) -> None:
        """Continue from this run's checkpoint, if there is one (refused if another config wrote it)."""
        state = checkpoint.load(self.path, self.fingerprint)
        if state is None:
            return
        parallel.load_full_state_dict(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"])
        self.step, self.first_loss, self.units_seen = state["step"], state["first_loss"], state["units_seen"]
        self.executed_flops = state["executed_flops"] / self.env.world_size  # all processes' total, shared out
        self.history = state["history"]
        log.info("resumed from %s at step %d", self.path, self.step)

    def train_step(self) -> tuple[float, float, float]:
        """One optimizer step over ``accumulation`` micro-batches; returns (mean loss, LR, grad norm)."""
        lr = lr_at(self.step, self.plan.steps, self.plan.lr, self.cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.env.device)
        for micro in range(self.accumulation):
            host_batch = next(self.loader)
            self.count_executed(host_batch)  # on the host: no device sync
            batch = {k: v.to(self.env.device, non_blocking=True) for k, v in host_batch.items()}
            sync = contextlib.nullcontext()
            if self.env.distributed and micro < self.accumulation - 1 and hasattr(self.model, "no_sync"):
                sync = self.model.no_sync()
            with sync, autocast(self.env.device, self.cfg.precision):
                loss = lm_loss(self.forward_model, batch, self.corpus.pad_id) / self.accumulation
                ratio = self.cfg.ratio_loss_weight * router_loss(self.model) / self.accumulation
            (loss + ratio).backward()
            loss_sum += loss.detach()  # the LM loss alone: comparable across splitting rules
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.units_seen += self.plan.bsz
        loss_value = float(parallel.all_reduce_sum(loss_sum.clone()) / self.env.world_size)
        self.first_loss = self.first_loss if self.first_loss is not None else loss_value
        return loss_value, lr, float(grad_norm)

    def count_executed(self, batch: dict[str, torch.Tensor]) -> None:
        """Add the FLOPs the model runs on ``batch`` (``batch_flops``)."""
        self.executed_flops += batch_flops(self.plan, self.breakdown, batch)

    def executed(self) -> float:
        """FLOPs executed so far by all processes."""
        local = torch.tensor(self.executed_flops, dtype=torch.float64, device=self.env.device)
        return float(parallel.all_reduce_sum(local))

    def maybe_checkpoint(self, force: bool = False) -> None:
        """Checkpoint when forced, every ``checkpoint_every`` steps, or ``checkpoint_seconds`` after the last one."""
        now = time.time()
        periodic = self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0
        if not (force or periodic or now - self.last_checkpoint > self.cfg.checkpoint_seconds):
            return
        model_state = parallel.full_state_dict(self.model)
        executed = self.executed()
        if self.env.is_main:
            checkpoint.save(self.path, {
                "fingerprint": self.fingerprint, "model": model_state, "optimizer": self.optimizer.state_dict(),
                "loader": self.loader.state_dict(), "rng": torch.get_rng_state(), "step": self.step,
                "first_loss": self.first_loss, "units_seen": self.units_seen, "history": self.history,
                "executed_flops": executed})
        parallel.barrier()
        self.last_checkpoint = now


def run(state: TrainState, record: RunRecord, tracker: Tracker | None, started: float):
    """Train ``state`` to the end of its plan, filling ``record``. Returns the signal hand-on when preempted."""
    cfg, plan, env = state.cfg, state.plan, state.env
    state.resume()
    progress = Progress(cfg.progress, plan.steps, state.step, env.is_main)
    tick = loop_start = time.time()
    record.status = "finished"
    record.metrics["setup_seconds"] = loop_start - started  # run start to the first step
    with PreemptionGuard() as guard:
        while state.step < plan.steps:
            loss, lr, grad_norm = state.train_step()
            step = state.step
            diverged = divergence(loss, state.first_loss, cfg.diverge_factor, step)
            if diverged is not None:
                record.status, record.error = "diverged", diverged
                break
            if step % cfg.log_every == 0 or step == plan.steps:
                now = time.time()
                rate = plan.bsz * cfg.log_every / max(now - tick, 1e-9) if step % cfg.log_every == 0 else 0.0
                tick = now
                log_entry(state.history, tracker, step, {"loss": loss, "lr": lr, "grad_norm": grad_norm,
                                                         "units_per_s": rate,
                                                         **routing_entry(state.model, cfg.contraction_band)})
            progress.update(step, loss, plan.bsz * state.corpus.bytes_per_unit)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < plan.steps:
                evaluate_into(state.model, state.corpus, cfg, env, state.history, tracker, step)
            state.maybe_checkpoint()
            if guard.signum is not None:
                break
        progress.close()
        state.loader.close()
        record.metrics["train_seconds"] = time.time() - loop_start
        record_compute(record, plan, state.step, state.units_seen, state.executed(), state.history, env,
                       state.corpus.bytes_per_unit)
        if guard.signum is not None and state.step < plan.steps:
            state.maybe_checkpoint(force=True)
            record.status = "preempted"
            record.error = f"signal {guard.signum} at step {state.step}; rerun with the same config to resume"
            return guard.hand_on
    if record.status == "finished":
        finish(state.model, state.corpus, cfg, env, state.fingerprint, step=state.step, record=record,
               tracker=tracker)
    return None


def finish(model: torch.nn.Module, corpus: Corpus, cfg: TrainConfig, env: parallel.DistEnv, fingerprint: str, *,
           step: int, record: RunRecord, tracker: Tracker | None) -> None:
    """Final held-out evaluation, the final weights in ``cfg.output_dir`` (its checkpoint goes), downstream tasks."""
    metrics = evaluate(model, corpus, cfg, env)
    record.loss, record.bpb = metrics["loss"], metrics["bpb"]
    record.metrics.update({k: metrics[k] for k in ("heldout_units", "heldout_bytes")})
    if tracker is not None:
        tracker.metrics({"eval_loss": metrics["loss"], "eval_bpb": metrics["bpb"]}, step)
    weights = parallel.full_state_dict(model)
    if env.is_main:
        out = Path(cfg.output_dir)
        checkpoint.save(out / "model.pt", {"fingerprint": fingerprint, "model": weights,
                                           "config": cfg.model.to_dict()})
        (out / "checkpoint.pt").unlink(missing_ok=True)
        tokenizer = corpus.tokenizer
        if tokenizer is not None and tokenizer.path:  # the checkpoint's codec travels with it
            shutil.copyfile(tokenizer.path, out / "tokenizer.json")
        _downstream(cfg, parallel.unwrap(model), corpus, record, tracker, step)


def _downstream(cfg: TrainConfig, model: torch.nn.Module, corpus: Corpus, record: RunRecord,
                tracker: Tracker | None, step: int) -> None:
    """Downstream scores into the record; a failure here is noted, never fatal to the record."""
    if not cfg.eval.enabled:
        return
    started = time.time()
    scores, errors = run_downstream(model, cfg.eval, codec=corpus.tokenizer)
    record.downstream.update(scores)
    record.metrics["downstream_seconds"] = time.time() - started
    if errors:
        record.metrics["downstream_errors"] = errors
    if tracker is not None and scores:
        tracker.metrics({f"eval_{k}": v for k, v in scores.items()}, step)


def _throughput(history: list[dict[str, float]], env: parallel.DistEnv, bytes_per_unit: float) -> dict[str, float]:
    rates = [h["units_per_s"] for h in history if h.get("units_per_s")]
    metrics = {"units_per_s": sorted(rates)[len(rates) // 2] if rates else 0.0}
    metrics["bytes_per_s"] = metrics["units_per_s"] * bytes_per_unit
    if env.device.type == "cuda":
        metrics["peak_memory_bytes"] = float(torch.cuda.max_memory_allocated(env.device))
    else:
        import resource

        metrics["peak_memory_bytes"] = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return metrics
