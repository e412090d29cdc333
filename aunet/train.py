"""One training run: budget in, one result record out.

The run turns its compute budget C into a number of training units with the exact
FLOPs per unit of its model (contraction measured on the held-out bytes), takes its
batch size and peak LR from a hyperparameter law unless they are given (a sweep
gives them), trains with AdamW and the paper's schedule, and ends with a record
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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from aunet import checkpoint, parallel
from aunet.config import ModelConfig
from aunet.data import DataConfig, Dataset, Prefetcher, open_dataset
from aunet.eval.suite import EvalConfig, run_downstream
from aunet.flops import count_params, flops_per_unit
from aunet.ladder import law_compute
from aunet.laws import PAPER_LAWS, HyperLaws
from aunet.models import build_model
from aunet.optim import OptimConfig, build_optimizer, lr_at
from aunet.record import RunRecord
from aunet.threads import use_allocated_threads
from aunet.tracking import Tracker, TrackingConfig

log = logging.getLogger("aunet.train")

PREEMPT_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


@dataclass
class TrainConfig:
    """Everything one run needs. Groups are Hydra config groups; the rest is the run itself."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(enabled=False))  # downstream tasks at the end
    budget: float | None = None  # compute C in FLOPs: sets the number of training units
    steps: int | None = None  # or an explicit number of optimizer steps
    bsz: int | None = None  # input units per optimizer step; None: the law's prior at this budget
    micro_batch: int = 0  # sequences per forward pass and process; 0: as many as fit max_micro_batch
    max_micro_batch: int = 8
    law: str = "paper"  # "paper" or the path of a fitted law (JSON from `python -m analysis fit`)
    ratio: float | None = None  # data-to-model ratio the budget was planned with (recorded)
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
    arch: str = ""
    study: str = ""
    trial: int = -1
    lr_box: list[float] | None = None
    bsz_box: list[float] | None = None

    def __post_init__(self) -> None:
        for name, kind in (("model", ModelConfig), ("data", DataConfig), ("optim", OptimConfig),
                           ("tracking", TrackingConfig), ("eval", EvalConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, kind(**value))
        self.validate()

    def validate(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"train config: '{name}' {message}")

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hydra(cls, cfg: Any) -> TrainConfig:
        """From a composed Hydra config (or a plain dict), with unknown keys named."""
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"train config: unknown key(s) {unknown}; known keys are {sorted(known)}")
        for name, kind in (("model", ModelConfig), ("data", DataConfig)):
            if isinstance(data.get(name), dict):
                data[name] = kind.from_dict(data[name])
        return cls(**data)

    @property
    def arch_label(self) -> str:
        if self.arch:
            return self.arch
        m = self.model
        if m.arch == "aunet":
            return f"aunet{m.n_stages}"
        return f"{m.arch}_{'bpe' if m.units == 'bpe' else 'bytes'}"


def resolve_laws(spec: str, units: str) -> HyperLaws:
    """The paper's law for the model's units, or a fitted law from a file."""
    if spec == "paper":
        return PAPER_LAWS["bpe" if units == "bpe" else "aunet"]
    laws = HyperLaws.from_file(spec)
    wanted = "tokens" if units == "bpe" else "bytes"
    if laws.units != wanted:
        raise ValueError(f"law {spec} counts batch size in {laws.units}, but this model's units are {wanted}")
    return laws


@dataclass
class Plan:
    """What the budget buys: FLOPs per unit, units, batch geometry, steps, peak LR."""

    flops_per_unit: float
    contraction: list[float]
    bsz: int  # input units per optimizer step
    micro_batch: int  # sequences per forward, per process
    accumulation: int
    steps: int
    lr: float
    units: float  # training units the run consumes

    @property
    def flops(self) -> float:
        return self.flops_per_unit * self.units


def make_plan(cfg: TrainConfig, dataset: Dataset, world_size: int) -> Plan:
    model_cfg = cfg.model
    contraction = dataset.contraction(model_cfg) if model_cfg.arch == "aunet" else []
    fpu = flops_per_unit(model_cfg, contraction or None)
    laws = resolve_laws(cfg.law, model_cfg.units)
    # The paper's laws were fitted on compute without the output head (see aunet.ladder).
    law_budget = law_compute(model_cfg, cfg.budget, laws, contraction or None) if cfg.budget else None
    seq = model_cfg.seq_len
    if cfg.bsz is not None:
        wanted_bsz = cfg.bsz
    elif law_budget is not None:
        wanted_bsz = laws.bsz(law_budget)
    else:
        raise ValueError("train config: 'bsz' is needed when no budget is given (the law needs a budget)")
    # Whole sequences, the same number on every process.
    seqs_per_step = max(world_size, round(wanted_bsz / seq / world_size) * world_size)
    per_rank = seqs_per_step // world_size
    # Automatic: the largest micro-batch within max_micro_batch that divides the per-process batch.
    micro = cfg.micro_batch or max(m for m in range(1, min(per_rank, cfg.max_micro_batch) + 1) if per_rank % m == 0)
    if per_rank % micro:
        raise ValueError(
            f"train config: batch of {per_rank} sequences per process is not a multiple of micro_batch={micro}; "
            f"choose a micro_batch that divides it, or 0 for automatic"
        )
    bsz = seqs_per_step * seq
    if cfg.steps is not None:
        steps = cfg.steps
    else:
        steps = max(1, round(cfg.budget / fpu / bsz))
    lr = cfg.optim.lr if cfg.optim.lr is not None else laws.lr(law_budget if law_budget else fpu * bsz * steps)
    return Plan(fpu, contraction, bsz, micro, per_rank // micro, steps, lr, float(bsz * steps))


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


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: Dataset, cfg: TrainConfig, env: parallel.DistEnv) -> dict[str, float]:
    """Held-out loss per unit and bits per byte, over the same bytes for every architecture."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # nats, units, bytes
    for batch in dataset.heldout_batches(cfg.model, cfg.max_micro_batch, env.rank, env.world_size, cfg.eval_bytes):
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
    return {"loss": nats / units, "bpb": nats / n_bytes / math.log(2), "heldout_units": units, "heldout_bytes": n_bytes}


def train(cfg: TrainConfig) -> RunRecord:
    """Run to completion (or divergence, failure, preemption); always returns and writes the record."""
    out = Path(cfg.output_dir)
    threads = use_allocated_threads(cfg.threads, cfg.threads_force)
    env = parallel.init_distributed(cfg.device)
    started = time.time()
    record = RunRecord(status="running", arch=cfg.arch_label, budget=float(cfg.budget or "nan"),
                       lr=float(cfg.optim.lr or "nan"), bsz=float(cfg.bsz or "nan"),
                       units="tokens" if cfg.model.units == "bpe" else "bytes", study=cfg.study, trial=cfg.trial,
                       model=cfg.model.name, ratio=float(cfg.ratio or "nan"), seed=cfg.seed,
                       lr_box=tuple(cfg.lr_box) if cfg.lr_box else None,
                       bsz_box=tuple(cfg.bsz_box) if cfg.bsz_box else None, config=cfg.to_dict(),
                       threads=torch.get_num_threads(), threads_source=threads.source)
    tracker: Tracker | None = None
    hand_on = None
    try:
        dataset = open_dataset(cfg.data, world_size=env.world_size)
        cfg.model = dataset.fit_model_config(cfg.model)
        plan = make_plan(cfg, dataset, env.world_size)
        dataset.check_size(plan.units)
        record.lr, record.bsz, record.steps = plan.lr, float(plan.bsz), plan.steps
        record.flops_per_unit, record.contraction = plan.flops_per_unit, plan.contraction
        record.bytes_per_unit = dataset.bytes_per_unit
        record.params = float(count_params(cfg.model))
        if not math.isfinite(record.budget):  # steps were given instead of a budget
            record.budget = plan.flops
        if env.is_main:
            tracker = Tracker(cfg.tracking, out,
                              {"config": cfg.to_dict(), "plan": asdict(plan), "arch": record.arch})
        hand_on = _train_loop(cfg, plan, dataset, env, record, tracker, out, started)
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


def _train_loop(cfg: TrainConfig, plan: Plan, dataset: Dataset, env: parallel.DistEnv, record: RunRecord,
                tracker: Tracker | None, out: Path, started: float):
    """Train, filling ``record``. Returns the signal hand-on callback when preempted, else None."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(env.device)
    model = parallel.wrap(model, env, cfg.parallel)
    optimizer = build_optimizer(model, cfg.optim, plan.lr)
    use_compile = cfg.compile == "on" or (cfg.compile == "auto" and env.device.type == "cuda")
    forward_model = torch.compile(model) if use_compile else model
    loader = Prefetcher(dataset.train_loader(cfg.model, plan.micro_batch, env.rank, env.world_size, seed=cfg.seed),
                        pin_memory=env.device.type == "cuda")  # the next batches are made while this one trains
    fp = checkpoint.fingerprint({"model": cfg.model.to_dict(), "data": cfg.data.to_dict(), "plan": asdict(plan),
                                 "optim": asdict(cfg.optim), "seed": cfg.seed, "world": env.world_size})
    ckpt_path = out / "checkpoint.pt"
    history: list[dict[str, float]] = []
    step, first_loss, units_seen = 0, None, 0.0
    state = checkpoint.load(ckpt_path, fp)
    if state is not None:
        parallel.load_full_state_dict(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"])
        step, first_loss, units_seen = state["step"], state["first_loss"], state["units_seen"]
        history = state["history"]
        log.info("resumed from %s at step %d", ckpt_path, step)

    def save_checkpoint() -> None:
        model_state = parallel.full_state_dict(model)
        if env.is_main:
            checkpoint.save(ckpt_path, {
                "fingerprint": fp, "model": model_state, "optimizer": optimizer.state_dict(),
                "loader": loader.state_dict(), "rng": torch.get_rng_state(), "step": step,
                "first_loss": first_loss, "units_seen": units_seen, "history": history})
        parallel.barrier()

    progress = _Progress(cfg.progress, plan.steps, step, env.is_main)
    pad_id = dataset.pad_id
    last_ckpt = time.time()
    tick = time.time()
    units_per_step = plan.bsz
    record.status = "finished"
    loop_start = time.time()
    record.metrics["setup_seconds"] = loop_start - started  # run start to the first step
    with PreemptionGuard() as guard:
        while step < plan.steps:
            lr = lr_at(step, plan.steps, plan.lr, cfg.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=env.device)
            for micro in range(plan.accumulation):
                batch = {k: v.to(env.device, non_blocking=True) for k, v in next(loader).items()}
                sync = contextlib.nullcontext()
                if env.distributed and micro < plan.accumulation - 1 and hasattr(model, "no_sync"):
                    sync = model.no_sync()
                with sync, autocast(env.device, cfg.precision):
                    loss = lm_loss(forward_model, batch, pad_id) / plan.accumulation
                loss.backward()
                loss_sum += loss.detach()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            units_seen += units_per_step
            loss_value = float(parallel.all_reduce_sum(loss_sum.clone()) / env.world_size)
            first_loss = first_loss if first_loss is not None else loss_value
            if not math.isfinite(loss_value) or loss_value > cfg.diverge_factor * first_loss:
                record.status = "diverged"
                record.error = f"training loss {loss_value:.4g} at step {step} (first loss {first_loss:.4g})"
                break
            now = time.time()
            if step % cfg.log_every == 0 or step == plan.steps:
                rate = units_per_step * cfg.log_every / max(now - tick, 1e-9) if step % cfg.log_every == 0 else 0.0
                tick = now
                entry = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                         "units_per_s": rate}
                history.append(entry)
                if tracker is not None:
                    tracker.metrics({"train_loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                                     "units_per_s": rate}, step)
            progress.update(step, loss_value, units_per_step * dataset.bytes_per_unit)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < plan.steps:
                metrics = evaluate(model, dataset, cfg, env)
                history.append({"step": step, "eval_loss": metrics["loss"], "eval_bpb": metrics["bpb"]})
                if tracker is not None:
                    tracker.metrics({"eval_loss": metrics["loss"], "eval_bpb": metrics["bpb"]}, step)
            periodic = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
            if periodic or now - last_ckpt > cfg.checkpoint_seconds:
                save_checkpoint()
                last_ckpt = now
            if guard.signum is not None:
                break
        progress.close()
        loader.close()
        record.metrics["train_seconds"] = time.time() - loop_start
        record.steps = step
        record.train_units = units_seen
        record.flops = plan.flops_per_unit * units_seen
        record.metrics.update(_throughput(history, env, dataset.bytes_per_unit))
        record.metrics["history"] = history
        if guard.signum is not None and step < plan.steps:
            save_checkpoint()
            record.status = "preempted"
            record.error = f"signal {guard.signum} at step {step}; rerun with the same config to resume"
            return guard.hand_on
    if record.status == "finished":
        metrics = evaluate(model, dataset, cfg, env)
        record.loss, record.bpb = metrics["loss"], metrics["bpb"]
        record.metrics.update({k: metrics[k] for k in ("heldout_units", "heldout_bytes")})
        if tracker is not None:
            tracker.metrics({"eval_loss": metrics["loss"], "eval_bpb": metrics["bpb"]}, step)
        weights = parallel.full_state_dict(model)
        if env.is_main:
            checkpoint.save(out / "model.pt", {"fingerprint": fp, "model": weights, "config": cfg.model.to_dict()})
            ckpt_path.unlink(missing_ok=True)
            if dataset.tokenizer is not None and dataset.tokenizer.path:  # the checkpoint's codec travels with it
                shutil.copyfile(dataset.tokenizer.path, out / "tokenizer.json")
            _downstream(cfg, parallel.unwrap(model), dataset, record, tracker, step)
    return None


def _downstream(cfg: TrainConfig, model: torch.nn.Module, dataset: Dataset, record: RunRecord,
                tracker: Tracker | None, step: int) -> None:
    """Downstream scores into the record; a failure here is noted, never fatal to the record."""
    if not cfg.eval.enabled:
        return
    started = time.time()
    scores, errors = run_downstream(model, cfg.eval, codec=dataset.tokenizer)
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
