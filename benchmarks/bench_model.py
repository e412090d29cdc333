"""Training throughput of AU-Net 2 against a byte Transformer with the same trunk, and
cached generation against recomputing the whole prefix. Prints ratios measured in one run.

Paper proportions: byte stage at width d/4 with 3 + 3 layers and a 512-byte window,
trunk width d with L layers, sequences of 8,192 bytes of English prose.

    python benchmarks/bench_model.py [--dim 512] [--layers 8] [--seq 8192] [--text FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from aunet.config import ModelConfig
from aunet.generate import step_threads
from aunet.models import build_model


def prose(path: str | None, n_bytes: int) -> bytes:
    if path:
        data = Path(path).read_bytes()
    else:
        from aunet.data import DataConfig, prepare_data

        data = b"\n".join(prepare_data(DataConfig()).heldout_docs())
    return (data * (n_bytes // max(1, len(data)) + 1))[:n_bytes]


def train_throughput(cfg: ModelConfig, data: bytes, batch: int, steps: int, ids: list[int] | None = None) -> float:
    """Input units per second of forward + backward + AdamW step (median over ``steps``).

    ``ids``: the unit stream for non-byte models (default: the bytes of ``data``).
    """
    torch.manual_seed(0)
    model = build_model(cfg)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    T = cfg.seq_len
    stream = list(data) if ids is None else ids
    seqs = torch.tensor([stream[i * T : i * T + T + 1] for i in range(batch)])
    levels = model.levels(seqs) if cfg.spec.pools else None
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        logits = model(seqs[:, :-1], None if levels is None else levels[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), seqs[:, 1:].flatten())
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        if step:  # the first step pays for allocation
            times.append(time.perf_counter() - start)
    return batch * T / statistics.median(times)


@torch.no_grad()
def generation_cost(cfg: ModelConfig, data: bytes, context: int, new: int) -> tuple[float, float]:
    """Seconds per new byte: cached step vs a full forward over the whole prefix."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    state = model.init_state()
    with step_threads(model, None):  # as generate() steps: one thread for small CPU models
        for byte in data[:context]:
            model.step(byte, state)
        start = time.perf_counter()
        for byte in data[context : context + new]:
            model.step(byte, state)
        cached = (time.perf_counter() - start) / new
    full_times = []
    for i in range(3):
        ids = torch.tensor([list(data[: context + i])])
        start = time.perf_counter()
        model(ids)
        full_times.append(time.perf_counter() - start)
    return cached, statistics.median(full_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=512, help="trunk width d (byte stage: d/4)")
    parser.add_argument("--layers", type=int, default=8, help="trunk layers")
    parser.add_argument("--seq", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--text", default=None, help="a prose file (default: the embedded default corpus)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    d, L = args.dim, args.layers
    data = prose(args.text, args.batch * (args.seq + 1) + 8192)
    aunet = ModelConfig(arch="aunet", dims=[d // 4, d], layers=[3, L], head_dims=[64, 64 if d < 1024 else 128],
                        ffn_dims=[3 * d // 4, 8 * d // 3 // 64 * 64], seq_len=args.seq, window=512)
    byte_tf = ModelConfig(arch="transformer", dims=[d], layers=[L], head_dims=[aunet.head_dims[1]],
                          ffn_dims=[aunet.ffn_dims[1]], seq_len=args.seq, window=None)
    print(f"threads={torch.get_num_threads()} trunk d={d} L={L}; byte stage d={d // 4} 3+3 layers, window 512; "
          f"seq={args.seq} batch={args.batch}")
    bps_aunet = train_throughput(aunet, data, args.batch, args.steps)
    bps_tf = train_throughput(byte_tf, data, args.batch, args.steps)
    print(f"training  AU-Net 2: {bps_aunet:10.0f} bytes/s   byte Transformer: {bps_tf:10.0f} bytes/s   "
          f"ratio {bps_aunet / bps_tf:.2f}x  (target >= 4x)")
    per_byte = {}
    for context in (1024, 4096):
        cached, full = generation_cost(aunet, data, context, 256)
        per_byte[context] = cached
        print(f"generation at {context:5d} B context: cached {cached * 1e3:7.2f} ms/byte, "
              f"recompute {full * 1e3:8.1f} ms/byte, speed-up {full / cached:6.1f}x  (target >= 20x at 4 KB)")
    print(f"cached cost per byte, 4 KB / 1 KB context: {per_byte[4096] / per_byte[1024]:.2f} (flat is 1.0)")


if __name__ == "__main__":
    main()
