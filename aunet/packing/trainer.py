"""Packed training: K trial configs of one model shape trained as one packed model in one process.

``train_pack(cfgs)`` does for K trials what ``aunet.train.train`` does for one, and each member trains as
its unpacked twin (``train`` on the same config) would: its own plan, its own seed's initial weights,
its own seed's data order (its own loader, drawing the twin's micro-batches), its own LR schedule and
number of steps, its own AdamW moments and clipping. At the end each member is unpacked, evaluated, and
its weights and record written into its own output directory by the unpacked trainer's own functions.

Batch sizes. Members keep their own batch: every step runs ``B_max`` rows per member (the largest batch
in the pack), and a member with a smaller batch fills its extra rows with padding whose targets are all
PAD; ``member_losses`` averages over counted rows only, so each member's loss and gradient are those of
its own batch. The alternative, drawing batch sizes from a set that packs evenly, would bend a sweep's
space-filling design to suit the packer; padding leaves the design untouched and costs the padded rows,
which each record reports as ``pack_padded_fraction``.

A member stops for good when it reaches its own steps (finished) or its loss is not finite or exceeds
``diverge_factor`` times its first loss (diverged): the optimizer freezes it, its rows turn to padding,
and its record (and, finished, its weights) are written at once; the others train on untouched.

The pack checkpoints as one file, ``pack_checkpoint.pt`` in the first member's output directory (packed
weights and moments, every member's loader position and counters), stamped with every member's own
fingerprint: ``train_pack`` on the same configs, in the same order, resumes from it.

Not packed (refused before any work): learned splitting rules, whose routing statistics would mix the
members, and several processes (a pack is one process; its members are its parallelism).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from aunet import checkpoint, parallel
from aunet.data import Corpus, Prefetcher, prepare_data
from aunet.flops import FlopsBreakdown
from aunet.ladder import RunPlan
from aunet.packing.loss import member_losses
from aunet.packing.modules import PackedModel, pack_models, unpack
from aunet.packing.optim import PackedAdamW, member_lrs
from aunet.record import RunRecord
from aunet.run_control import PreemptionGuard, Progress
from aunet.splitting.learned import is_learned
from aunet.threads import use_allocated_threads
from aunet.tracking import Tracker
from aunet.train import (
    autocast,
    batch_flops,
    close_record,
    divergence,
    evaluate_into,
    finish,
    flops_breakdown_of,
    log_entry,
    new_record,
    open_tracker,
    plan_run,
    record_compute,
    record_failure,
    run_fingerprint,
    seeded_model,
    train_batches,
)
from aunet.train_config import LawRefused, TrainConfig

log = logging.getLogger("aunet.packing")

CHECKPOINT_NAME = "pack_checkpoint.pt"
#: Process-wide settings every member must share (the rest of a member's run config is its own).
PROCESS_FIELDS = ("device", "precision", "threads", "threads_force")


def check_pack(cfgs: Sequence[TrainConfig]) -> None:
    """One clear line for configs that cannot train as one pack, before anything runs."""
    if not cfgs:
        raise ValueError("pack: no trial configs given; a pack needs at least 1 member")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        raise ValueError(f"pack: WORLD_SIZE is {world}, but a pack trains in one process; launch it as one "
                         "process (no torchrun): its members are its parallelism")
    learned = [s for s in cfgs[0].model.splits or () if is_learned(s)]
    if learned:
        raise ValueError(f"pack: packing does not support learned splitting rules (`learned:`) yet (model.splits "
                         f"has {learned[0]!r}): a router's statistics would mix the members")
    reference = _shared(cfgs[0])
    for k, cfg in enumerate(cfgs[1:], start=1):
        theirs = _shared(cfg)
        differing = next((key for key in reference if theirs.get(key) != reference[key]), None)
        if differing is not None:
            raise ValueError(f"pack: member {k} differs from member 0 in {differing} ({theirs[differing]!r} vs "
                             f"{reference[differing]!r}); a pack trains one model shape on one corpus in one process")
    dirs = [Path(cfg.output_dir).resolve() for cfg in cfgs]
    for k, out in enumerate(dirs):
        if out in dirs[:k]:
            raise ValueError(f"pack: members {dirs.index(out)} and {k} share output_dir {out}; each member "
                             "writes its own record and weights")


def _shared(cfg: TrainConfig) -> dict[str, Any]:
    """What the members of one pack must share: the model (but its name), the data, the optimizer (but its
    LR, each member's own), and the process settings."""
    model = {f"model.{k}": v for k, v in cfg.model.to_dict().items() if k != "name"}
    data = {f"data.{k}": v for k, v in cfg.data.to_dict().items()}
    optim = {f"optim.{k}": v for k, v in asdict(cfg.optim).items() if k != "lr"}
    return {**model, **data, **optim, **{name: getattr(cfg, name) for name in PROCESS_FIELDS}}


@dataclass
class Member:
    """One trial of a pack: its plan, loader, record and the counters its unpacked twin's TrainState keeps."""

    cfg: TrainConfig
    record: RunRecord
    plan: RunPlan
    micro_batch: int
    accumulation: int
    fingerprint: str
    breakdown: FlopsBreakdown
    loader: Prefetcher
    tracker: Tracker | None = None
    status: str = "running"  # then finished or diverged (for good), or preempted / failed (this process only)
    step: int = 0
    first_loss: float | None = None
    units_seen: float = 0.0
    executed_flops: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    tick: float = 0.0  # when its last log entry was made

    @property
    def rows(self) -> int:
        """Sequences per optimizer step."""
        return self.micro_batch * self.accumulation

    def progress(self) -> dict[str, Any]:
        """What a pack checkpoint keeps of this member besides its weights and moments."""
        return {"status": self.status, "error": self.record.error, "step": self.step, "first_loss": self.first_loss,
                "units_seen": self.units_seen, "executed_flops": self.executed_flops, "history": self.history,
                "loader": self.loader.state_dict()}

    def restore(self, state: dict[str, Any]) -> None:
        """Back to what ``progress`` kept."""
        self.status, self.record.error, self.step = state["status"], state["error"], state["step"]
        self.first_loss, self.units_seen = state["first_loss"], state["units_seen"]
        self.executed_flops, self.history = state["executed_flops"], state["history"]
        self.loader.load_state_dict(state["loader"])


def train_pack(cfgs: Sequence[TrainConfig]) -> list[RunRecord]:
    """Train ``cfgs`` as one pack; every member's record (also written to its output directory), in order.

    Like ``train``, it always returns and writes the records (finished, diverged, failed or preempted),
    and a fitted law that refuses a member's run raises ``LawRefused`` before training."""
    check_pack(cfgs)
    threads = use_allocated_threads(cfgs[0].threads, cfgs[0].threads_force)
    env = parallel.init_distributed(cfgs[0].device)
    started = time.time()
    records = [new_record(cfg, threads) for cfg in cfgs]
    pack: Pack | None = None
    hand_on = None
    try:
        corpus = prepare_data(cfgs[0].data)
        members = []
        for cfg, record in zip(cfgs, records, strict=True):
            plan, micro_batch, accumulation = plan_run(cfg, corpus, env, record)
            members.append(Member(cfg, record, plan, micro_batch, accumulation,
                                  run_fingerprint(cfg, plan, micro_batch, accumulation, env.world_size),
                                  flops_breakdown_of(plan), train_batches(cfg, corpus, env, micro_batch)))
        pack = Pack(members, corpus, env, started)
        hand_on = pack.run()
    except LawRefused:  # a configuration error: nothing ran, so no record
        raise
    except Exception as err:  # every member still training says what went wrong; a sweep goes on
        for k, (cfg, record) in enumerate(zip(cfgs, records, strict=True)):
            member = pack.members[k] if pack is not None else None
            if member is None or member.status == "running":
                record_failure(record, err)
                close_record(record, Path(cfg.output_dir), member.tracker if member else None, env, started)
    if pack is not None:
        records = [m.record for m in pack.members]
    if hand_on is not None:  # preempted: the checkpoint and records are safe, let submitit requeue
        hand_on()
    return records


class Pack:
    """The packed model, its optimizer and its members: what the pack checkpoint holds, and one packed step."""

    def __init__(self, members: list[Member], corpus: Corpus, env: parallel.DistEnv, started: float):
        self.members, self.corpus, self.env, self.started = members, corpus, env, started
        self.cfg = members[0].cfg  # the shared settings (optimizer but its LR, precision)
        self.model: PackedModel = pack_models([seeded_model(m.cfg, env.device) for m in members])
        self.optimizer = PackedAdamW(self.model, self.cfg.optim)
        self.rows = max(m.rows for m in members)  # B_max: rows per member in every packed step
        self.path = Path(self.cfg.output_dir) / CHECKPOINT_NAME
        self.fingerprint = checkpoint.fingerprint({"pack": [m.fingerprint for m in members]})
        self.step = 0
        self.rows_run, self.rows_padded = 0, 0
        self.last_checkpoint = self.loop_start = time.time()

    # ------------------------------------------------------------------ state
    def resume(self) -> None:
        """Continue from the pack's checkpoint, if there is one (refused if another set of configs wrote it)."""
        state = checkpoint.load(self.path, self.fingerprint)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.step, self.rows_run, self.rows_padded = state["step"], state["rows_run"], state["rows_padded"]
        for member, progress in zip(self.members, state["members"], strict=True):
            member.restore(progress)
            if member.status != "running":  # stopped in an earlier process, which wrote its record
                member.record = RunRecord.read(Path(member.cfg.output_dir) / "record.json")
        log.info("resumed pack of %d from %s at step %d", len(self.members), self.path, self.step)

    def maybe_checkpoint(self, force: bool = False) -> None:
        """Checkpoint when forced, at any member's ``checkpoint_every``, or ``checkpoint_seconds`` after the last."""
        now = time.time()
        periodic = any(m.cfg.checkpoint_every and self.step % m.cfg.checkpoint_every == 0 for m in self.members)
        timed = now - self.last_checkpoint > min(m.cfg.checkpoint_seconds for m in self.members)
        if not (force or periodic or timed):
            return
        checkpoint.save(self.path, {
            "fingerprint": self.fingerprint, "model": parallel.full_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(), "step": self.step,
            "rows_run": self.rows_run, "rows_padded": self.rows_padded,
            "members": [m.progress() for m in self.members]})
        self.last_checkpoint = now

    @property
    def padded_fraction(self) -> float:
        """Share of the rows run so far that trained no member: smaller batches' padding, stopped members' rows."""
        return self.rows_padded / self.rows_run if self.rows_run else 0.0

    # ------------------------------------------------------------------ training
    def run(self) -> Any:
        """Train every member to the end of its plan or its divergence; the signal hand-on when preempted."""
        self.resume()
        running = self.running()
        self.loop_start = time.time()
        for k in running:
            member = self.members[k]
            if self.env.is_main:
                member.tracker = open_tracker(member.cfg, member.plan, member.record)
            member.tick = self.loop_start
            member.record.metrics["setup_seconds"] = self.loop_start - self.started  # start to the first step
        progress = Progress(self.cfg.progress, max(m.plan.steps for m in self.members), self.step, self.env.is_main)
        with PreemptionGuard() as guard:
            while running:
                losses, lrs, norms = self.train_step()
                for k in running:
                    self.advance(k, float(losses[k]), float(lrs[k]), float(norms[k]))
                progress.update(self.step, float(losses[running].mean()),
                                sum(self.members[k].plan.bsz for k in running) * self.corpus.bytes_per_unit)
                running = self.running()
                self.maybe_checkpoint()
                if guard.signum is not None:
                    break
            progress.close()
            if running:  # preempted: checkpoint, and every member still training says so in its record
                self.maybe_checkpoint(force=True)
                for k in running:
                    self.stop(k, "preempted", f"signal {guard.signum} at step {self.members[k].step}; rerun the "
                                              "pack with the same configs to resume")
                return guard.hand_on
        log.info("pack of %d done at step %d; %.1f%% of its rows were padding", len(self.members), self.step,
                 100 * self.padded_fraction)
        self.path.unlink(missing_ok=True)
        return None

    def running(self) -> list[int]:
        """The members still training."""
        return [k for k, member in enumerate(self.members) if member.status == "running"]

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One packed optimizer step; each member's (loss, LR, gradient norm), [K] each."""
        lrs = member_lrs(self.step, [m.plan.steps for m in self.members], [m.plan.lr for m in self.members],
                         self.cfg.optim)
        batch = self.batch()
        with autocast(self.env.device, self.cfg.precision):
            losses = member_losses(self.model, batch, self.corpus.pad_id)
        losses.sum().backward()  # each member's gradients are those of its own mean loss
        norms = self.optimizer.step(lrs, losses.detach())
        self.optimizer.zero_grad()
        self.step += 1
        return losses.detach().cpu(), lrs, norms.cpu()

    def batch(self) -> dict[str, torch.Tensor]:
        """The packed batch of this step: ``rows`` member-major rows per member, padding after each batch."""
        parts, real = [], 0
        for member in self.members:
            own: list[dict[str, torch.Tensor]] = []
            if member.status == "running":
                for _ in range(member.accumulation):  # the twin's micro-batches, priced as the twin prices them
                    own.append(next(member.loader))
                    member.executed_flops += batch_flops(member.plan, member.breakdown, own[-1])
                real += member.rows
            parts.append(self._padded(own))
        self.rows_run += self.rows * len(self.members)
        self.rows_padded += self.rows * len(self.members) - real
        return {key: torch.cat([p[key] for p in parts]).to(self.env.device, non_blocking=True) for key in parts[0]}

    def _padded(self, micro_batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One member's rows: its batch, then all-PAD rows (no counted target, no pooled vector) up to ``rows``."""
        ids = [b["ids"] for b in micro_batches]
        pad = torch.full((self.rows - sum(len(i) for i in ids), self.members[0].plan.seq_len + 1),
                         self.corpus.pad_id, dtype=torch.long)
        out = {"ids": torch.cat([*ids, pad])}
        if self.members[0].plan.model.spec.pools:  # level 0 everywhere, as the held-out batches' padding rows
            out["levels"] = torch.cat([*(b["levels"] for b in micro_batches), torch.zeros_like(pad)])
        return out

    def advance(self, k: int, loss: float, lr: float, grad_norm: float) -> None:
        """Member k's side of a step it trained: counters, divergence, log, evaluation, its end."""
        member = self.members[k]
        cfg = member.cfg
        member.step += 1
        member.units_seen += member.plan.bsz
        member.first_loss = member.first_loss if member.first_loss is not None else loss
        diverged = divergence(loss, member.first_loss, cfg.diverge_factor, member.step)
        if diverged is None and bool(self.optimizer.diverged[k]):  # a finite loss, but gradients that were not
            diverged = f"gradient norm {grad_norm:.4g} at step {member.step}"
        if diverged is not None:
            self.stop(k, "diverged", diverged)
            return
        if member.step % cfg.log_every == 0 or member.step == member.plan.steps:
            now = time.time()
            rate = member.plan.bsz * cfg.log_every / max(now - member.tick, 1e-9) if member.step % cfg.log_every == 0 \
                else 0.0
            member.tick = now
            log_entry(member.history, member.tracker, member.step,
                      {"loss": loss, "lr": lr, "grad_norm": grad_norm, "units_per_s": rate})
        if cfg.eval_every and member.step % cfg.eval_every == 0 and member.step < member.plan.steps:
            evaluate_into(unpack(self.model, k), self.corpus, cfg, self.env, member.history, member.tracker,
                          member.step)
        if member.step == member.plan.steps:
            self.stop(k, "finished")

    def stop(self, k: int, status: str, error: str = "") -> None:
        """Member k stops training (for good when finished or diverged): its record, and finished, its weights."""
        member = self.members[k]
        if status in ("finished", "diverged"):
            self.optimizer.freeze(torch.arange(len(self.members)) == k)
        member.status, member.record.status, member.record.error = status, status, error
        member.loader.close()
        member.record.metrics["train_seconds"] = time.time() - self.loop_start
        record_compute(member.record, member.plan, member.step, member.units_seen, member.executed_flops,
                       member.history, self.env, self.corpus.bytes_per_unit)
        member.record.metrics.update({"pack_members": len(self.members), "pack_member": k,
                                      "pack_padded_fraction": self.padded_fraction})
        if status == "finished":
            finish(unpack(self.model, k), self.corpus, member.cfg, self.env, member.fingerprint, step=member.step,
                   record=member.record, tracker=member.tracker)
        close_record(member.record, Path(member.cfg.output_dir), member.tracker, self.env, self.started)
