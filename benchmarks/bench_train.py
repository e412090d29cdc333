"""Training throughput of the four architectures at a matched trunk, and model FLOP/s as a
fraction of a plain large fp32 matmul's FLOP/s measured in the same process.

Model FLOP/s = units/s × FLOPs per unit (``aunet.flops``, contraction measured on the
text). Target: >= 40% of the matmul for trunk-dominated configs (width >= 512).

    python benchmarks/bench_train.py [--dim 512] [--layers 8] [--seq 2048] [--text FILE]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_model import prose, train_throughput

from aunet.config import ModelConfig
from aunet.flops import flops_per_unit, measure_contraction


def matmul_flops_per_s(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu") -> float:
    """FLOP/s of an n x n x n matmul, the roofline model FLOP/s are compared with."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def matched_configs(d: int, L: int, T: int) -> dict[str, ModelConfig]:
    """The four architectures with the same trunk (width d, L layers) on sequences of T bytes."""
    ffn = (8 * d // 3 + 63) // 64 * 64
    trunk = dict(head_dims=[64], ffn_dims=[ffn], dims=[d], layers=[L])
    return {
        "AU-Net 2": ModelConfig(arch="aunet", dims=[d // 4, d], layers=[3, L], head_dims=[64, 64],
                                ffn_dims=[3 * d // 4, ffn], seq_len=T, window=512),
        "AU-Net 3": ModelConfig(arch="aunet", dims=[d // 4, d, 3 * d // 2], layers=[3, 3, L - 3],
                                head_dims=[64, 64, 64], ffn_dims=[3 * d // 4, ffn, 4 * d], seq_len=T, window=512),
        "Transformer bytes": ModelConfig(arch="transformer", seq_len=T, window=None, **trunk),
        # A BPE model with a 4k vocabulary reading about 4 bytes per token: T/4 tokens per sequence.
        "Transformer BPE": ModelConfig(arch="transformer", units="bpe", vocab_size=4096, seq_len=T // 4,
                                       window=None, **trunk),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048, help="bytes per sequence (BPE: seq / 4 tokens)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--text", default=None)
    args = parser.parse_args()
    d, L, T = args.dim, args.layers, args.seq
    data = prose(args.text, args.batch * (T + 1) * 4)
    configs = matched_configs(d, L, T)
    peak = matmul_flops_per_s()
    print(f"threads={torch.get_num_threads()}  fp32 matmul 2048^3: {peak / 1e9:.1f} GFLOP/s  "
          f"trunk d={d} L={L}, {T} bytes per sequence, batch {args.batch}")
    print(f"{'model':<18} {'bytes/s':>10} {'GFLOP/s':>9} {'of matmul':>9}")
    for name, cfg in configs.items():
        if cfg.units == "bpe":
            torch.manual_seed(0)
            ids = torch.randint(0, cfg.vocab_size, (len(data) // 4,)).tolist()
            units_per_s = train_throughput(cfg, bytes(i % 256 for i in ids), args.batch, args.steps, ids=ids)
            bytes_per_unit = 4.0
            fpu = flops_per_unit(cfg)
        else:
            units_per_s = train_throughput(cfg, data, args.batch, args.steps)
            bytes_per_unit = 1.0
            contraction = measure_contraction([data], cfg.n_stages, cfg.splits) if cfg.spec.pools else None
            fpu = flops_per_unit(cfg, contraction)
        flops = units_per_s * fpu
        print(f"{name:<18} {units_per_s * bytes_per_unit:>10.0f} {flops / 1e9:>9.1f} {flops / peak:>9.0%}")


if __name__ == "__main__":
    main()
