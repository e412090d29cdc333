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
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from aunet import checkpoint, parallel
from aunet.config import COUNTED_IN, ModelConfig
from aunet.data import Corpus, DataConfig, Prefetcher, bits_per_byte, prepare_data
from aunet.eval.suite import EvalConfig, run_downstream
from aunet.flops import executed_flops, flops_breakdown
from aunet.ladder import DataMeasurements, RunPlan, family_of, plan_model
from aunet.ladder.planner import law_path
from aunet.laws import LawCard, Regime
from aunet.models import build_model
from aunet.models.aunet import stage_lengths
from aunet.optim import OptimConfig, build_optimizer, lr_at
from aunet.record import RunRecord, check_convention
from aunet.threads import use_allocated_threads
from aunet.tracking import Tracker, TrackingConfig
from aunet.verdict import Verdict, judge

log = logging.getLogger("aunet.train")

PREEMPT_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


@dataclass
class TrainConfig:
    """Everything one run needs; also the structured config of ``conf/train.yaml`` (``train_schema``).

    Groups are Hydra config groups; the rest is the run itself.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(enabled=False))  # downstream tasks at the end
    budget: float | None = None  # compute C in FLOPs: sets the number of training units
    budget_convention: str = "spent"  # what budget counts: "spent" (head included) or "paper" (the paper's C)
    steps: int | None = None  # or an explicit number of optimizer steps
    bsz: int | None = None  # input units per optimizer step; None: the law's prior at this budget
    micro_batch: int = 0  # sequences per forward pass and process; 0: as many as fit max_micro_batch
    max_micro_batch: int = 8
    law: str = "paper"  # "paper" or the path of a fitted law (JSON from `python -m analysis fit`)
    law_force: bool = False  # train at a fitted law's LR/BSZ even where its verdict is "not usable"
    ratio: float | None = None  # data-to-model ratio the budget was planned with (recorded)
    plan: RunPlan | None = None  # a sweep's trial ships its plan (model, bsz, steps, LR); None: plan here
    seed: int = 0
    threads: int = 0  # intra-op threads; 0: the CPUs allocated to this process (aunet.threads)
    threads_force: bool = False  # keep a `threads` above the allocation (otherwise the allocation wins)
    device: str = "auto"
    compile: str = "auto"  # "auto": torch.compile on CUDA only; "on" / "off"
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on the CPU; "fp32" / "bf16"
    parallel: str = "ddp"  # "ddp" or "fsdp" when launched on several processes
    eval_every: int = 0  # held-out evaluation every N steps (0: only at the end)
    eval_bytes: int | None = None  # cap on held-out bytes per evaluation (None: all of them)
    log_every: int = 10
    checkpoint_every: int = 0  # steps between periodic checkpoints (0: time-based only)
    checkpoint_seconds: float = 600.0
    diverge_factor: float = 2.0  # loss above this multiple of the first loss (or non-finite) = diverged
    output_dir: str = "outputs/run"
    progress: str = "auto"  # "auto": a bar on terminals, log lines otherwise; "bar" / "log" / "off"
    # Labels a sweep fills in, so that the record stands alone.
    family: str = ""  # empty: the model's (aunet2, transformer_bpe, ...)
    study: str = ""
    trial: int = -1
    lr_box: list[float] | None = None
    bsz_box: list[float] | None = None

    def __post_init__(self) -> None:
        if self.plan is not None:  # a planned run trains the model of its plan, in its convention
            self.model = self.plan.model
            self.budget_convention = self.plan.convention
        self.validate()

    def validate(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"train config: '{name}' {message}")

        check_convention(self.budget_convention, "train config: 'budget_convention'")
        if self.budget is None and self.steps is None:
            fail("budget", "is missing; give a compute budget in FLOPs (e.g. budget=1e12) or steps=N")
        if self.budget is not None and not (math.isfinite(self.budget) and self.budget > 0):
            fail("budget", f"is {self.budget}; give a positive number of FLOPs such as 1e12")
        if self.steps is not None and self.steps < 1:
            fail("steps", f"is {self.steps}; give at least 1 step, or null to derive steps from the budget")
        if self.bsz is not None and self.bsz < 1:
            fail("bsz", f"is {self.bsz}; give a positive number of input units per step, or null for the law")
        if self.threads < 0:
            fail("threads", f"is {self.threads}; give a positive number of threads, or 0 to follow the allocation")
        if self.micro_batch < 0 or self.max_micro_batch < 1:
            fail("micro_batch", "must be >= 0 (0: automatic) and max_micro_batch >= 1")
        if self.ratio is not None and self.ratio <= 0:
            fail("ratio", f"is {self.ratio}; a data-to-model ratio must be positive")
        if self.plan is not None:
            for name, value in (("bsz", self.bsz), ("steps", self.steps), ("optim.lr", self.optim.lr)):
                if value is not None:
                    fail(name, f"is {value}, but this run has a plan: its batch size, steps and LR come from it")
        if self.model.units != self.data.units:
            fail("data.units", f"is {self.data.units!r} but the model reads {self.model.units!r}; make them agree")
        if self.data.seq_len != self.model.seq_len:
            fail("data.seq_len", f"is {self.data.seq_len} but model.seq_len is {self.model.seq_len}; make them agree")
        choices = {"compile": ("auto", "on", "off"), "precision": ("auto", "fp32", "bf16"),
                   "parallel": ("ddp", "fsdp"), "progress": ("auto", "bar", "log", "off")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                fail(name, f"is {getattr(self, name)!r}; use one of {allowed}")
        if self.diverge_factor <= 1:
            fail("diverge_factor", f"is {self.diverge_factor}; must be > 1")
        self.check_law()

    def sets_from_law(self) -> bool:
        """Whether a fitted law file (not the paper's prior, not a shipped plan) sets this run's LR or BSZ."""
        return not (self.law == "paper" or self.plan is not None or (self.bsz is not None and self.optim.lr is not None))

    def check_law(self, plan: RunPlan | None = None) -> Verdict | None:
        """A fitted law that sets this run's LR or BSZ must fit the run (units, convention, family, and
        with the ``plan`` its ratio, sequence and vocabulary) and be usable at its budget
        (``aunet.verdict``), or be forced with law_force=true; the paper's law is a prior. Checked twice:
        what the config says before anything runs, then the planned run (measured on the data) before
        training; a refusal raises ``LawRefused``."""
        if not self.sets_from_law():
            return None
        card = LawCard.read(law_path(self.law))
        units = "tokens" if self.model.units == "bpe" else "bytes"
        if card.units != units:
            raise ValueError(f"train config: law {self.law} counts BSZ in {card.units}, but this model reads "
                             f"{units}; use a law fitted on a {units} family")
        if card.convention != self.budget_convention:
            raise ValueError(f"train config: law {self.law} was fitted on budgets in the {card.convention!r} "
                             f"convention, this run's budget_convention is {self.budget_convention!r}; make them agree")
        if self.budget is None:
            raise ValueError(f"train config: law {self.law} needs a budget to be evaluated at (give budget=...)")
        run = plan.regime() if plan is not None else Regime(self.family or family_of(self.model),
                                                             seq_lens=(self.model.seq_len,), origin="configured")
        verdict = judge(card, self.budget, run=run)
        if not verdict.usable and not self.law_force:
            raise LawRefused(f"train config: law {self.law} is {verdict.line()}; set law_force=true to train at it "
                             "anyway, or give optim.lr and bsz")
        if plan is not None and (not verdict.usable or verdict.reasons):
            log.warning("law %s: %s", self.law, verdict.line())
        return verdict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hydra(cls, cfg: Any) -> TrainConfig:
        """From a composed Hydra config (or a plain dict): type-checked by OmegaConf against this schema,
        then validated by the dataclasses themselves."""
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), cfg))


ConfigStore.instance().store(name="train_schema", node=TrainConfig)


class LawRefused(ValueError):
    """A fitted law's verdict refuses this run: a configuration error, raised before training (no record)."""


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


class PreemptionGuard:
    """Turns SIGUSR2/SIGTERM into a flag checked between steps, then hands the signal on.

    The previous handlers (submitit's requeue logic) run after our checkpoint is safe.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> PreemptionGuard:
        for sig in PREEMPT_SIGNALS:
            with contextlib.suppress(ValueError):  # not in the main thread
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("received signal %d: checkpointing at the next step boundary", signum)
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def hand_on(self) -> None:
        """Call the handler that was there before ours (submitit requeues the job there)."""
        previous = self._previous.get(self.signum)
        if callable(previous):
            previous(self.signum, None)


def autocast(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], pad_id: int) -> torch.Tensor:
    """Mean next-unit cross-entropy (nats per unit) over non-padding targets."""
    ids = batch["ids"]
    levels = batch.get("levels")
    logits = model(ids[:, :-1], None if levels is None else levels[:, :-1])
    return F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(), ignore_index=pad_id)


def evaluate(model: torch.nn.Module, corpus: Corpus, cfg: TrainConfig, env: parallel.DistEnv) -> dict[str, float]:
    """Held-out loss per unit and bits per byte, over the same bytes for every architecture."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # nats, units, bytes
    batches = corpus.heldout_batches(cfg.model, cfg.max_micro_batch, env.rank, env.world_size, cfg.eval_bytes)
    with torch.no_grad():  # a context, not a decorator: mutation testing skips decorated functions
        for batch in batches:
            batch = {k: v.to(env.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with autocast(env.device, cfg.precision):
                ids = batch["ids"]
                levels = batch.get("levels")
                logits = model(ids[:, :-1], None if levels is None else levels[:, :-1])
            mask = batch["target_mask"]
            nats = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
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
    record = RunRecord(status="running", family=cfg.family or family_of(cfg.model), budget=float(cfg.budget or "nan"),
                       lr=float(cfg.optim.lr or "nan"), bsz=float(cfg.bsz or "nan"),
                       units=COUNTED_IN[cfg.model.units], study=cfg.study, trial=cfg.trial,
                       model=cfg.model.name, ratio=float(cfg.ratio or "nan"), seed=cfg.seed,
                       convention=cfg.budget_convention,
                       lr_box=tuple(cfg.lr_box) if cfg.lr_box else None,
                       bsz_box=tuple(cfg.bsz_box) if cfg.bsz_box else None, config=cfg.to_dict(),
                       threads=torch.get_num_threads(), threads_source=threads.source)
    tracker: Tracker | None = None
    hand_on = None
    try:
        corpus = prepare_data(cfg.data)
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
        if env.is_main:
            tracker = Tracker(cfg.tracking, out, {"config": cfg.to_dict(), "plan": plan.to_dict(),
                                                  "family": record.family})
        state = TrainState(cfg, plan, corpus, env, out, micro_batch, accumulation)
        hand_on = run(state, record, tracker, started)
    except LawRefused:  # a configuration error: nothing ran, so no record
        parallel.shutdown()
        raise
    except Exception as err:  # the record says what went wrong; a sweep goes on
        log.error("run failed: %s", err)
        record.status, record.error = "failed", f"{type(err).__name__}: {err}"
        record.metrics["traceback"] = traceback.format_exc()[-4000:]
    record.metrics["wall_time"] = time.time() - started
    record.metrics["world_size"] = env.world_size
    if "train_seconds" in record.metrics:  # what the run spent neither training nor getting ready
        record.metrics["teardown_seconds"] = (record.metrics["wall_time"] - record.metrics["train_seconds"]
                                              - record.metrics["setup_seconds"])
    if env.is_main:
        record.write(out / "record.json")
        if tracker is not None:
            tracker.artifact(out / "record.json")
            tracker.close(record.status)
    parallel.shutdown()
    if hand_on is not None:  # preempted: our checkpoint and record are safe, let submitit requeue
        hand_on()
    return record


class TrainState:
    """The model, optimizer, loader and counters of a run: what a checkpoint holds, and one step of training."""

    def __init__(self, cfg: TrainConfig, plan: RunPlan, corpus: Corpus, env: parallel.DistEnv, out: Path,
                 micro_batch: int, accumulation: int):
        self.cfg, self.plan, self.corpus, self.env = cfg, plan, corpus, env
        self.accumulation = accumulation
        torch.manual_seed(cfg.seed)
        self.model = parallel.wrap(build_model(cfg.model).to(env.device), env, cfg.parallel)
        self.optimizer = build_optimizer(self.model, cfg.optim, plan.lr)
        use_compile = cfg.compile == "on" or (cfg.compile == "auto" and env.device.type == "cuda")
        self.forward_model = torch.compile(self.model) if use_compile else self.model
        self.loader = Prefetcher(corpus.train_loader(cfg.model, micro_batch, env.rank, env.world_size, seed=cfg.seed),
                                 pin_memory=env.device.type == "cuda")  # the next batches are made while one trains
        self.fingerprint = checkpoint.fingerprint({
            "model": cfg.model.to_dict(), "data": cfg.data.to_dict(), "plan": plan.to_dict(),
            "geometry": [micro_batch, accumulation], "optim": asdict(cfg.optim), "seed": cfg.seed,
            "world": env.world_size})
        self.path = out / "checkpoint.pt"
        self.step, self.first_loss, self.units_seen = 0, None, 0.0
        pooled = plan.contraction if plan.model.arch == "aunet" else None
        self.breakdown = flops_breakdown(plan.model, pooled)
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
            loss.backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.units_seen += self.plan.bsz
        loss_value = float(parallel.all_reduce_sum(loss_sum.clone()) / self.env.world_size)
        self.first_loss = self.first_loss if self.first_loss is not None else loss_value
        return loss_value, lr, float(grad_norm)

    def count_executed(self, batch: dict[str, torch.Tensor]) -> None:
        """Add the FLOPs the model runs on ``batch``: AU-Net pads each pooled stage to its longest row."""
        ids = batch["ids"][:, :-1]
        model = self.plan.model
        lengths = stage_lengths(batch["levels"][:, :-1], model) if model.arch == "aunet" else [ids.shape[1]]
        self.executed_flops += ids.shape[0] * executed_flops(self.breakdown, lengths)

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
    progress = _Progress(cfg.progress, plan.steps, state.step, env.is_main)
    tick = loop_start = time.time()
    record.status = "finished"
    record.metrics["setup_seconds"] = loop_start - started  # run start to the first step
    with PreemptionGuard() as guard:
        while state.step < plan.steps:
            loss, lr, grad_norm = state.train_step()
            step = state.step
            if not math.isfinite(loss) or loss > cfg.diverge_factor * state.first_loss:
                record.status = "diverged"
                record.error = f"training loss {loss:.4g} at step {step} (first loss {state.first_loss:.4g})"
                break
            if step % cfg.log_every == 0 or step == plan.steps:
                now = time.time()
                rate = plan.bsz * cfg.log_every / max(now - tick, 1e-9) if step % cfg.log_every == 0 else 0.0
                tick = now
                entry = {"loss": loss, "lr": lr, "grad_norm": grad_norm, "units_per_s": rate}
                state.history.append({"step": step, **entry})
                if tracker is not None:
                    tracker.metrics({"train_loss": loss, **{k: v for k, v in entry.items() if k != "loss"}}, step)
            progress.update(step, loss, plan.bsz * state.corpus.bytes_per_unit)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < plan.steps:
                metrics = evaluate(state.model, state.corpus, cfg, env)
                state.history.append({"step": step, "eval_loss": metrics["loss"], "eval_bpb": metrics["bpb"]})
                if tracker is not None:
                    tracker.metrics({"eval_loss": metrics["loss"], "eval_bpb": metrics["bpb"]}, step)
            state.maybe_checkpoint()
            if guard.signum is not None:
                break
        progress.close()
        state.loader.close()
        record.metrics["train_seconds"] = time.time() - loop_start
        record.steps, record.train_units = state.step, state.units_seen
        record.flops = plan.flops_per_unit * state.units_seen
        record.paper_compute = plan.flops_per_unit_ratio * state.units_seen
        record.executed_flops = state.executed()
        record.metrics.update(_throughput(state.history, env, state.corpus.bytes_per_unit))
        record.metrics["history"] = state.history
        if guard.signum is not None and state.step < plan.steps:
            state.maybe_checkpoint(force=True)
            record.status = "preempted"
            record.error = f"signal {guard.signum} at step {state.step}; rerun with the same config to resume"
            return guard.hand_on
    if record.status == "finished":
        finish(state, record, tracker)
    return None


def finish(state: TrainState, record: RunRecord, tracker: Tracker | None) -> None:
    """Final held-out evaluation, the final weights (the checkpoint goes), downstream tasks."""
    cfg, env, step = state.cfg, state.env, state.step
    metrics = evaluate(state.model, state.corpus, cfg, env)
    record.loss, record.bpb = metrics["loss"], metrics["bpb"]
    record.metrics.update({k: metrics[k] for k in ("heldout_units", "heldout_bytes")})
    if tracker is not None:
        tracker.metrics({"eval_loss": metrics["loss"], "eval_bpb": metrics["bpb"]}, step)
    weights = parallel.full_state_dict(state.model)
    if env.is_main:
        out = state.path.parent
        checkpoint.save(out / "model.pt", {"fingerprint": state.fingerprint, "model": weights,
                                           "config": cfg.model.to_dict()})
        state.path.unlink(missing_ok=True)
        tokenizer = state.corpus.tokenizer
        if tokenizer is not None and tokenizer.path:  # the checkpoint's codec travels with it
            shutil.copyfile(tokenizer.path, out / "tokenizer.json")
        _downstream(cfg, parallel.unwrap(state.model), state.corpus, record, tracker, step)


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


class _Progress:
    """tqdm bar on a terminal, periodic log lines otherwise."""

    def __init__(self, mode: str, total: int, start: int, active: bool):
        self.bar = None
        self.active = active and mode != "off"
        self.log_lines = mode == "log" or (mode == "auto" and not sys.stderr.isatty())
        self.total = total
        self.start_time = time.time()
        self.start_step = start
        self.bytes = 0.0
        if self.active and not self.log_lines:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int, loss: float, step_bytes: float) -> None:
        if not self.active:
            return
        self.bytes += step_bytes
        elapsed = max(time.time() - self.start_time, 1e-9)
        rate = self.bytes / elapsed
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", bytes_s=f"{rate:,.0f}")
        elif step % max(1, self.total // 20) == 0 or step == self.total:
            eta = elapsed / max(step - self.start_step, 1) * (self.total - step)
            log.info("step %d/%d loss %.4f %.0f bytes/s eta %.0fs", step, self.total, loss, rate, eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
