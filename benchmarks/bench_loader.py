"""Does the training step wait for data? The same AU-Net 2 training step fed three ways, at
bench_train.py's configuration (trunk d=512, 8 layers, 2 sequences of 2,048 bytes of the default
corpus): batches made in advance (the floor), the real loader called in the step (ids packed and
pooling levels computed synchronously, as the trainer did before), and the real loader with the
next batches made in a background worker (``aunet.data.Prefetcher``, what the trainer uses now).

Prints seconds per step and each one's ratio to the floor (target for the prefetching loader:
<= 1.03), and what one batch costs the loader alone. The variants alternate in short rounds, so
that a machine busy with other work slows them alike; run it twice if the ratios disagree.

    python benchmarks/bench_loader.py [--rounds 6] [--steps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from bench_train import matched_configs

from aunet.data import DataConfig, Prefetcher, prepare_data
from aunet.models import build_model
from aunet.threads import use_allocated_threads
from aunet.train import lm_loss


def step_seconds(feeds: dict[str, Callable[[int], Iterator]], cfg, rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds per training step of each feed, ``steps`` steps per round, the feeds taking turns."""
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times: dict[str, list[float]] = {name: [] for name in feeds}
    for round_no in range(rounds + 1):  # round 0 warms up (allocation, first block read)
        for name, feed in feeds.items():
            batches = feed(steps)
            start = time.perf_counter()
            for _ in range(steps):
                batch = next(batches)
                loss = lm_loss(model, batch, pad_id=-100)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if round_no:
                times[name].append((time.perf_counter() - start) / steps)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and feed")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the CPUs allocated)")
    args = parser.parse_args()
    use_allocated_threads(args.threads)
    cfg = matched_configs(args.dim, args.layers, args.seq)["AU-Net 2"]
    corpus = prepare_data(DataConfig(seq_len=args.seq))

    def loader():
        return corpus.train_loader(cfg, args.batch)

    advance_source, synchronous, prefetching = loader(), loader(), Prefetcher(loader())

    def in_advance(n: int) -> Iterator:
        return iter([next(advance_source) for _ in range(n)])  # made before the clock starts

    feeds = {"made in advance": in_advance, "loader in the step": lambda n: synchronous,
             "prefetching loader": lambda n: prefetching}
    times = step_seconds(feeds, cfg, args.rounds, args.steps)

    probe = loader()
    start = time.perf_counter()
    for _ in range(10):
        next(probe)
    batch_seconds = (time.perf_counter() - start) / 10
    prefetching.close()

    floor_rounds = times["made in advance"]
    floor = statistics.median(floor_rounds)
    print(f"threads={torch.get_num_threads()}  AU-Net 2 trunk d={args.dim} L={args.layers}, batch {args.batch} x "
          f"{args.seq} bytes; {args.rounds} rounds of {args.steps} steps per feed")
    print(f"one batch from the loader alone: {batch_seconds * 1e3:.1f} ms ({batch_seconds / floor:.1%} of a step)")
    print(f"{'feed':<20} {'s/step':>7} {'vs advance (median of rounds)':>30}")
    for name, values in times.items():
        ratio = statistics.median(v / f for v, f in zip(values, floor_rounds))
        print(f"{name:<20} {statistics.median(values):>7.3f} {ratio:>30.3f}")


if __name__ == "__main__":
    main()
