"""Trials per hour of packed training (``aunet.packing``) against one trial at a time, on the demo's and the
reference study's trial shapes (the ladder's plans at each study budget, their prior batch).

One trial at a time is what a sweep runs today: one model, torch AdamW, global clipping, one step per
batch (``TrainState.train_step``). A pack of K trains K trials of one shape in one step on K x batch rows.
Both are timed on the same text in the same process, at every thread count asked for; trials per hour are
3600 x steps/s x K / the plan's steps. Target: >= 3x on the demo's shapes on a 2-core machine.

    python benchmarks/bench_pack.py [--packs 1 2 4 8 16] [--threads 1 2] [--studies demo reference]

``--end-to-end STEPS``: whole trials instead of steps: K trials of each shape (``STEPS`` steps each, with
the corpus, loaders, held-out evaluation and records) trained by ``train_pack`` against one ``train()``
after another, in one process on one thread; the ratio of their wall times is trials per hour packed
over one at a time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from bench_model import prose

from aunet.config import PAD_ID, ModelConfig
from aunet.ladder import RunPlan
from aunet.ladder.planner import plan
from aunet.models import build_model
from aunet.optim import OptimConfig, build_optimizer, lr_at
from aunet.packing import PackedAdamW, member_losses, member_lrs, pack_models
from aunet.train import lm_loss

REPO = Path(__file__).resolve().parents[1]
LAWS = {"aunet2": "conf/laws/cpu_aunet.json", "transformer_bpe": "conf/laws/cpu_bpe.json"}
OPTIM = OptimConfig()


def study_plans(studies: list[str]) -> dict[str, RunPlan]:
    """The distinct trial shapes (model and batch) of each study's families and budgets, labelled."""
    shapes: dict[str, RunPlan] = {}
    seen: set[str] = set()
    for study in studies:
        sweep = yaml.safe_load((REPO / f"conf/sweep/{study}.yaml").read_text())["sweep"]
        for family in sweep["families"]:
            for budget in map(float, sweep["budgets"]):
                p = plan(family, budget, float(sweep["ratio"]), laws=str(REPO / LAWS[family]))
                key = repr(({k: v for k, v in p.model.to_dict().items() if k != "name"}, p.sequences_per_step))
                if key not in seen:
                    seen.add(key)
                    shapes[f"{study} {family} {budget:.2g}"] = p
    return shapes


def batch_of(cfg: ModelConfig, rows: int, text: bytes) -> dict[str, torch.Tensor]:
    """``rows`` training sequences: bytes of prose (with their pooling levels), or random BPE ids."""
    length = cfg.seq_len + 1
    if cfg.units == "bpe":
        return {"ids": torch.randint(0, cfg.vocab_size, (rows, length), generator=torch.Generator().manual_seed(0))}
    ids = torch.tensor(list(text[:rows * length])).view(rows, length)
    batch = {"ids": ids}
    if cfg.spec.pools:
        batch["levels"] = build_model(cfg).levels(ids)
    return batch


def median_step_seconds(steppers: dict[str, Callable[[int], None]], steps: int) -> dict[str, float]:
    """Median seconds per step of each stepper, their steps interleaved so that a busy machine's slow
    moments fall on all of them alike."""
    for step in steppers.values():
        step(0)  # the first step pays for allocation
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for i in range(1, steps + 1):
        for name, step in steppers.items():
            start = time.perf_counter()
            step(i)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def single_step(p: RunPlan, text: bytes) -> Callable[[int], None]:
    """One trial's step as the trainer takes it."""
    torch.manual_seed(0)
    model = build_model(p.model)
    optimizer = build_optimizer(model, OPTIM, p.lr)
    batch = batch_of(p.model, p.sequences_per_step, text)

    def step(i: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(i, p.steps, p.lr, OPTIM)
        lm_loss(model, batch, PAD_ID).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def packed_step(p: RunPlan, members: int, text: bytes) -> Callable[[int], None]:
    """One step of a pack of ``members`` trials of the plan's shape, LRs spread around the plan's."""
    models = []
    for seed in range(members):
        torch.manual_seed(seed)
        models.append(build_model(p.model))
    packed = pack_models(models)
    optimizer = PackedAdamW(packed, OPTIM)
    batch = batch_of(p.model, members * p.sequences_per_step, text)
    peaks = [p.lr * 2 ** (k / max(1, members - 1) - 0.5) for k in range(members)]

    def step(i: int) -> None:
        losses = member_losses(packed, batch, PAD_ID)
        losses.sum().backward()
        optimizer.step(member_lrs(i, [p.steps] * members, peaks, OPTIM), losses.detach())
        optimizer.zero_grad()

    return step


def end_to_end(p: RunPlan, members: int, steps: int, root: Path) -> tuple[float, float]:
    """Wall seconds of ``members`` trials of the plan's shape, ``steps`` steps each: one ``train()`` after
    another, then one ``train_pack``; their LRs spread around the plan's, seeds 0..K-1."""
    from aunet.data import DataConfig
    from aunet.packing import train_pack
    from aunet.tracking import TrackingConfig
    from aunet.train import TrainConfig, train

    bpe = p.model.units == "bpe"
    data = DataConfig(units=p.model.units, seq_len=p.model.seq_len, **({"bpe_vocab": p.model.vocab_size} if bpe else {}))

    def configs(kind: str) -> list[TrainConfig]:
        return [TrainConfig(model=p.model, data=data, optim=OptimConfig(lr=p.lr * 2 ** (k / max(1, members - 1) - 0.5)),
                            bsz=p.bsz, steps=steps, seed=k, threads=1, progress="off", eval_bytes=16384,
                            tracking=TrackingConfig(enabled=False), output_dir=str(root / kind / str(k)))
                for k in range(members)]

    start = time.perf_counter()
    for cfg in configs("one"):
        train(cfg)
    one = time.perf_counter() - start
    start = time.perf_counter()
    train_pack(configs("pack"))
    return one, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="members per pack (K)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--studies", nargs="+", default=["demo", "reference"], help="conf/sweep/<name>.yaml")
    parser.add_argument("--steps", type=int, default=7, help="timed steps per measurement (median)")
    parser.add_argument("--end-to-end", type=int, default=0, metavar="STEPS",
                        help="time whole trials of STEPS steps: train_pack against one train() after another")
    args = parser.parse_args()
    if min(args.packs) < 1 or min(args.threads) < 1 or args.end_to_end < 0:
        parser.error("--packs and --threads take numbers >= 1, --end-to-end a number of steps >= 0")
    shapes = study_plans(args.studies)
    if args.end_to_end:
        import tempfile

        torch.set_num_threads(1)
        print(f"whole trials of {args.end_to_end} steps, one thread: K trials one after another vs one pack")
        print(f"{'shape':<28} {'K':>3} {'one by one s':>12} {'packed s':>9} {'x one':>6}")
        for label, p in shapes.items():
            for k in args.packs:
                with tempfile.TemporaryDirectory() as root:
                    one, packed = end_to_end(p, k, args.end_to_end, Path(root))
                print(f"{label:<28} {k:>3} {one:>12.1f} {packed:>9.1f} {one / packed:>6.2f}", flush=True)
        return
    text = prose(None, max(args.packs) * max(p.sequences_per_step for p in shapes.values()) * 300)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available; median of {args.steps} steps")
    print(f"{'shape':<28} {'model':<26} {'thr':>3} {'K':>3} {'steps/s':>8} {'trials/h':>9} {'x one':>6}")
    for label, p in shapes.items():
        model = f"{p.model.dims} x {p.model.layers}, {p.sequences_per_step}x{p.seq_len}"
        for threads in args.threads:
            torch.set_num_threads(threads)
            steppers = {"one": single_step(p, text)} | {str(k): packed_step(p, k, text) for k in args.packs}
            seconds = median_step_seconds(steppers, args.steps)
            for name, second in seconds.items():
                members = 1 if name == "one" else int(name)
                rate = 1 / second
                print(f"{label:<28} {model:<26} {threads:>3} {name:>3} {rate:>8.1f} "
                      f"{3600 * rate * members / p.steps:>9.1f} {seconds['one'] * members / second:>6.2f}", flush=True)

if __name__ == "__main__":
    main()
