"""GPU proof: the CUDA paths run and compute what the CPU computes, and how fast they are.

    python benchmarks/gpu_check.py           # one GPU: under 5 minutes
    python benchmarks/gpu_check.py --cpu     # the same checks at tiny sizes on the CPU, in seconds

Checks (each printed PASS / FAIL with its figure; exit status 1 if one fails):

1. bf16 autocast: a tiny AU-Net 2 (byte stage with a sliding window) trains a step.
2. torch.compile: the compiled model's loss equals the eager one's (inductor on CUDA; on
   the CPU the ``aot_eager`` backend: forward and backward graph capture without code
   generation, which keeps ``--cpu`` within seconds).
3. The sliding window: which exact kernel runs (flex_attention with a sliding-window
   block mask on CUDA), its output and gradients against the blocked-SDPA reference, and
   its speed relative to it (the CPU has no flex_attention backward: forward only).
4. FSDP2 on one process: ``fully_shard`` per block, then the model; the loss equals the
   unsharded model's.
5. Precision: the tiny AU-Net 2's losses over a few AdamW steps in the run's precision
   (bf16 autocast) against CPU fp32 from the same init and batches, within
   ``LOSS_TOLERANCE`` relative (a few times bf16's 2^-8 rounding, accumulated over the steps).

Then throughput (compiled, bf16 autocast on CUDA; eager fp32 with ``--cpu``): bytes/s and
model FLOP/s (``aunet.flops`` with the contraction measured on the batch) of AU-Net 2,
AU-Net 3 and the BPE Transformer at a 1B-like trunk in paper proportions (Table 9's
widths around d = 2048 through ``aunet.ladder.family_config``; the trunk depth is
``--trunk-layers``, 8 by default, to stay within the time), against a large bf16 matmul.
BPE bytes/s use 4.56 bytes per token (LLaMA-3 on DCLM, Sec. 2.3).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from bench_train import matmul_flops_per_s

from aunet.config import ModelConfig
from aunet.flops import flops_per_unit, measure_contraction
from aunet.ladder import LLAMA3_BYTES_PER_TOKEN, family_config
from aunet.models import build_model
from aunet.models.layers import sliding_window_attention, sliding_window_block_mask, window_kernel

#: Largest relative difference allowed between the run's bf16 losses and CPU fp32 losses.
LOSS_TOLERANCE = 0.02
#: Largest difference allowed between flex_attention and the blocked SDPA (fp32 inputs of
#: unit scale; CUDA kernels may use TF32, 2^-11 rounding, summed over up to 512 keys).
WINDOW_TOLERANCE = 2e-2

TEXT = (b"It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
        b"of foolishness; it was the epoch of belief (1775), it was the epoch of incredulity...\n"
        b"def f(x):\n    return [x * 2 for x in range(10)]  # code, digits and punctuation too\n")


class Report:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: str) -> None:
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        if not ok:
            self.failed.append(name)


def tiny_aunet(seq_len: int) -> ModelConfig:
    return ModelConfig(arch="aunet", name="tiny_aunet2", dims=[64, 128], layers=[1, 2], head_dims=[32, 32],
                       ffn_dims=[192, 384], seq_len=seq_len, window=64)


def byte_batch(batch: int, seq_len: int, offset: int = 0) -> torch.Tensor:
    data = TEXT * (2 + (offset + batch) * (seq_len + 1) // len(TEXT))
    return torch.tensor([list(data[offset + i * 97: offset + i * 97 + seq_len + 1]) for i in range(batch)])


def precision_context(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def step_loss(model, ids: torch.Tensor, levels: torch.Tensor | None, device: torch.device, bf16: bool) -> torch.Tensor:
    with precision_context(device, bf16):
        logits = model(ids[:, :-1], None if levels is None else levels[:, :-1])
    return F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())


def train_losses(cfg: ModelConfig, state: dict, batches: list[torch.Tensor], device: torch.device, bf16: bool,
                 wrap=None) -> list[float]:
    """Losses of AdamW steps over ``batches`` from the weights ``state``; ``wrap`` shards or compiles."""
    model = build_model(cfg)
    model.load_state_dict(state)
    model.to(device)
    runner = wrap(model) if wrap else model
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for ids in batches:
        levels = model.levels(ids).to(device)
        loss = step_loss(runner, ids.to(device), levels, device, bf16)
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def close(a: list[float], b: list[float], rel: float) -> tuple[bool, float]:
    worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
    return worst <= rel, worst


def check_window(report: Report, device: torch.device, length: int, window: int, heads: int) -> None:
    from torch.nn.attention.flex_attention import flex_attention

    kernel = window_kernel(device)
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    q, k, v = (torch.randn(1, heads, length, 64, device=device, requires_grad=cuda) for _ in range(3))
    mask = sliding_window_block_mask(length, window, str(device))
    if not cuda:
        with warnings.catch_warnings():  # uncompiled flex_attention warns that it is the dense reference
            warnings.simplefilter("ignore")
            flex = flex_attention(q, k, v, block_mask=mask)
        diff = (flex - sliding_window_attention(q, k, v, window)).abs().max()
        report.check("sliding window", diff.item() <= WINDOW_TOLERANCE,
                     f"kernel here: {kernel}; flex_attention forward (no CPU backward) vs blocked SDPA: "
                     f"max |diff| {diff.item():.1e} (tolerance {WINDOW_TOLERANCE:g}), T={length}, W={window}")
        return
    from aunet.models.layers import flex_window_attention

    def run(fn):
        out = fn()
        grads = torch.autograd.grad(out.square().sum(), (q, k, v))
        return out, grads

    def timed(fn) -> float:
        times = []
        for _ in range(5):
            torch.cuda.synchronize()
            start = time.perf_counter()
            run(fn)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    flex = lambda: flex_window_attention(q, k, v, mask)  # noqa: E731
    blocked = lambda: sliding_window_attention(q, k, v, window)  # noqa: E731
    (out_f, grads_f), (out_b, grads_b) = run(flex), run(blocked)
    diff = max([(out_f - out_b).abs().max().item()]
               + [(a - b).abs().max().item() / max(1.0, b.abs().max().item()) for a, b in zip(grads_f, grads_b)])
    speed = timed(blocked) / timed(flex)
    report.check("sliding window", diff <= WINDOW_TOLERANCE,
                 f"kernel here: {kernel}; vs blocked SDPA, output and gradients: max diff {diff:.1e} "
                 f"(tolerance {WINDOW_TOLERANCE:g}); forward+backward {speed:.2f}x the blocked SDPA's speed "
                 f"(T={length}, W={window}, {heads} heads of 64)")


@contextlib.contextmanager
def one_process_group(device: torch.device):
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def fsdp2(model):
    """As ``aunet.parallel.wrap(..., "fsdp")`` shards: each block, then the whole model."""
    from torch.distributed.fsdp import fully_shard

    layers = model.cfg.spec.sharded_layers()
    for module in model.modules():
        if isinstance(module, layers):
            fully_shard(module)
    return fully_shard(model)


def throughput(cfg: ModelConfig, device: torch.device, batch: int, steps: int, compile_model: bool,
               bf16: bool) -> tuple[float, float]:
    """(units/s, FLOPs per unit) of forward + backward + AdamW steps, median after warm-up."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    runner = torch.compile(model) if compile_model else model
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    if cfg.units == "bpe":
        ids = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len + 1))
        levels, fpu = None, flops_per_unit(cfg)
    else:
        ids = byte_batch(batch, cfg.seq_len)
        levels = model.levels(ids) if cfg.spec.pools else None
        docs = [bytes(row) for row in ids.tolist()]
        fpu = flops_per_unit(cfg, measure_contraction(docs, cfg.n_stages, cfg.splits) if cfg.spec.pools else None)
    ids = ids.to(device)
    levels = None if levels is None else levels.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for step in range(steps + 2):  # two warm-up steps: compilation, allocation
        sync()
        start = time.perf_counter()
        step_loss(runner, ids, levels, device, bf16).backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        sync()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return batch * cfg.seq_len / statistics.median(times), fpu


def run_checks(report: Report, device: torch.device, cpu: bool) -> None:
    """Checks 1-5 of the module docstring on a tiny AU-Net 2, each against the same weights and batches."""
    cfg = tiny_aunet(256 if cpu else 1024)
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    batches = [byte_batch(2, cfg.seq_len, offset=13 * i) for i in range(4)]

    # 1. bf16 autocast
    bf16 = train_losses(cfg, state, batches[:1], device, bf16=True)
    report.check("bf16 autocast", all(torch.isfinite(torch.tensor(bf16))), f"AU-Net 2 step loss {bf16[0]:.4f}")

    # 2. torch.compile
    backend = "aot_eager" if cpu else "inductor"
    eager = train_losses(cfg, state, batches[:2], device, bf16=False)
    compiled = train_losses(cfg, state, batches[:2], device, bf16=False,
                            wrap=lambda m: torch.compile(m, backend=backend))
    ok, worst = close(compiled, eager, 1e-3)
    report.check("torch.compile", ok, f"backend {backend}: losses {[round(x, 4) for x in compiled]} vs eager "
                                      f"{[round(x, 4) for x in eager]} (max rel diff {worst:.1e}, tolerance 1e-3)")

    # 3. the sliding window's kernel
    if cpu:
        check_window(report, device, length=300, window=64, heads=2)
    else:
        check_window(report, device, length=8192, window=512, heads=8)

    # 4. FSDP2 on one process
    with one_process_group(device):
        sharded = train_losses(cfg, state, batches[:2], device, bf16=False, wrap=fsdp2)
    ok, worst = close(sharded, eager, 1e-4)
    report.check("FSDP2 (one process)", ok, f"losses {[round(x, 4) for x in sharded]} vs unsharded "
                                            f"(max rel diff {worst:.1e}, tolerance 1e-4)")

    # 5. the run's precision against CPU fp32
    reference = train_losses(cfg, state, batches, torch.device("cpu"), bf16=False)
    run = train_losses(cfg, state, batches, device, bf16=True)
    ok, worst = close(run, reference, LOSS_TOLERANCE)
    report.check("bf16 vs CPU fp32", ok, f"{len(batches)} steps: {[round(x, 4) for x in run]} vs "
                                         f"{[round(x, 4) for x in reference]} (max rel diff {worst:.2%}, "
                                         f"tolerance {LOSS_TOLERANCE:.0%})")


def print_throughput(device: torch.device, cpu: bool, trunk_layers: int | None, steps: int | None) -> None:
    """Throughput at a 1B-like trunk (tiny with ``cpu``) against a large matmul on the same device."""
    main_width, seq_bytes = (128, 512) if cpu else (2048, 8192)
    layers = trunk_layers or (2 if cpu else 8)
    steps = steps or (1 if cpu else 5)
    batch = 2 if cpu else 4
    bpe_tokens = round(seq_bytes / LLAMA3_BYTES_PER_TOKEN)
    models = {
        "AU-Net 2": (family_config("aunet2", main_width, layers, seq_bytes, 64 if cpu else 512), 1.0),
        "AU-Net 3": (family_config("aunet3", main_width, layers, seq_bytes, 64 if cpu else 512), 1.0),
        "BPE Transformer": (family_config("transformer_bpe", main_width, layers, bpe_tokens,
                                          vocab_size=4096 if cpu else None), LLAMA3_BYTES_PER_TOKEN),
    }
    dtype = torch.float32 if cpu else torch.bfloat16
    peak = matmul_flops_per_s(1024 if cpu else 8192, 5 if cpu else 20, dtype, device)
    mode = "eager fp32" if cpu else "compiled, bf16 autocast"
    print(f"\nthroughput ({mode}; batch {batch} x {seq_bytes} bytes; {layers} trunk layers); "
          f"{str(dtype).removeprefix('torch.')} matmul: {peak / 1e12:.2f} TFLOP/s")
    print(f"{'model':<16} {'dims':<20} {'bytes/s':>12} {'TFLOP/s':>9} {'of matmul':>9}")
    for label, (model_cfg, bytes_per_unit) in models.items():
        units_per_s, fpu = throughput(model_cfg, device, batch, steps, compile_model=not cpu, bf16=not cpu)
        flops = units_per_s * fpu
        print(f"{label:<16} {str(model_cfg.dims):<20} {units_per_s * bytes_per_unit:>12,.0f} {flops / 1e12:>9.3f} "
              f"{flops / peak:>9.0%}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run every check on the CPU at tiny sizes")
    parser.add_argument("--trunk-layers", type=int, default=None, help="trunk depth of the throughput models")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per throughput model")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU, or with --cpu for the tiny CPU version", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    started = time.perf_counter()
    name = "CPU" if args.cpu else torch.cuda.get_device_name(device)
    print(f"device: {name}; torch {torch.__version__}; sliding window kernel: {window_kernel(device)}")
    report = Report()
    run_checks(report, device, args.cpu)
    print_throughput(device, args.cpu, args.trunk_layers, args.steps)
    print(f"\n{len(report.failed)} check(s) failed{': ' + ', '.join(report.failed) if report.failed else ''}; "
          f"{time.perf_counter() - started:.0f} s in all")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
