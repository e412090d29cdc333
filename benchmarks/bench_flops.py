"""Analytic FLOPs per unit vs torch's FlopCounterMode, and vs the paper's Table 10.

    python benchmarks/bench_flops.py [--presets aunet2_tiny,...] [--batch 2] [--seq-len 512] [--table10 [--table10-on FILE...]]
                                     [--executed] [--micro-batch 8] [--batches 16]

For each small model: FlopCounterMode over one forward + backward pass, per input
unit, next to the analytic F of ``aunet.flops`` (the paper's convention, with the
contraction factors this batch actually ran at), term by term, with the reason for
every term where the two differ. The weight terms (every linear layer, AU-Net's
pooling and upsampling projections, the head) agree exactly; attention, Mamba's
depthwise convolution and its scan are counted differently:

* attention: FlopCounterMode counts QK^T and AV, the whole T x S score block (causal
  masking skips half of it), and a backward that recomputes QK^T: 14·d·T·S per layer
  against the paper's 6·d·T·S (QK^T only, x3). For the byte stage's blocked sliding
  window it sees T x 2W scores: 28·d·T·W against 6·d·T·W.
* on the CPU, FlopCounterMode (torch 2.13) has no formula for the CPU flash-attention
  kernel and would count attention as 0; ``aunet.flops.count_flops`` gives it the
  GPU kernels' formulas.
* Mamba-1's depthwise convolution: counted on the padded output (T + k - 1) and, in the
  grad-weight formula, as if it were dense across channels (x E·d); the selective scan
  is elementwise work (not counted) except y = C·h, a batched matmul.
* Mamba-2 (``mamba_bytes_tiny``): its convolution runs as shifted multiply-adds (not
  counted); its chunked SSD scan is counted as the matmuls it runs (quadratic within a
  chunk of 256 positions), where F counts the recurrence (5·E·d·N per position, x3).
* embedding lookups, norms, activations, residual adds: counted by neither.

``--executed``: for AU-Net 2/3/4 on the default corpus at the CPU sequence length and at
8,192 bytes, the FLOPs the model executes (each pooled stage padded to the longest row of
a micro-batch, as the trainer records them in ``executed_flops``) over the FLOPs counted
with the mean contraction (``flops``), on the trainer's batches.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from aunet.config import ModelConfig
from aunet.data import DataConfig, prepare_data
from aunet.flops import (
    PAPER_CONTRACTION,
    count_flops,
    executed_flops,
    flops_breakdown,
    flops_per_unit,
    measure_contraction,
    predict_flop_counter,
    stage_lengths,
)
from aunet.ladder import get_family, load_preset, plan
from aunet.models import build_model
from aunet.models.aunet import stage_lengths as pooled_lengths

PRESETS = ["transformer_bytes_tiny", "transformer_bpe_tiny", "mamba_bytes_tiny", "aunet2_tiny", "aunet3_tiny",
           "aunet4_tiny"]

TEXT = (b"It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        b"foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of "
        b"Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair, "
        b"we had everything before us, we had nothing before us, we were all going direct to Heaven, we "
        b"were all going direct the other way.\n")


def batch_for(cfg: ModelConfig, batch: int) -> torch.Tensor:
    if cfg.units == "bpe":
        return torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), generator=torch.Generator().manual_seed(0))
    data = TEXT * (2 + batch * cfg.seq_len // len(TEXT))
    return torch.tensor([list(data[i * 101: i * 101 + cfg.seq_len]) for i in range(batch)])


def compare(cfg: ModelConfig, batch: int) -> None:
    torch.manual_seed(0)
    model = build_model(cfg)
    ids = batch_for(cfg, batch)
    start = time.perf_counter()
    counted = count_flops(model, ids)
    seconds = time.perf_counter() - start
    lengths = stage_lengths(model, ids)
    prediction = predict_flop_counter(cfg, batch, lengths)
    units = prediction.units
    analytic = flops_per_unit(cfg, prediction.contraction)
    print(f"\n== {cfg.name} ({cfg.arch}, {cfg.units}), batch {batch} x {cfg.seq_len}, "
          f"contraction as run {[round(c, 2) for c in prediction.contraction]}")
    print(f"   FlopCounterMode fwd+bwd: {counted['total'] / units:,.0f} FLOPs/unit "
          f"(predicted {prediction.counted / units:,.0f}); analytic F: {analytic:,.0f} "
          f"-> ratio {counted['total'] / units / analytic:.3f}   [{seconds:.1f} s]")
    width = max(len(t.name) for t in prediction.terms)
    print(f"   {'term':<{width}}  {'counter/unit':>14}  {'F/unit':>14}  why they differ")
    for t in prediction.terms:
        why = "" if t.counted == t.analytic else t.why
        print(f"   {t.name:<{width}}  {t.counted / units:>14,.0f}  {t.analytic / units:>14,.0f}  {why}")
    ops = {k: v for k, v in counted.items() if k != "total"}
    print("   by aten op: " + ", ".join(f"{k.removeprefix('aten.')} {v / units:,.0f}" for k, v in sorted(ops.items())))


def table10(files: list[str] | None = None) -> None:
    """Table 10's FLOPs/token next to ours, for the rows with a listed value; with ``files``, each AU-Net row
    both ways: App. B's rule and the reference code's ``word1`` at stage 2 (deeper stages ``words2``,
    ``words4``), with contractions measured on those files."""
    rows = {"scaling_baseline_1e19": 1.9e9, "scaling_baseline_1e20": 5.1e9, "scaling_baseline_1e21": 1.2e10,
            "scaling_baseline_1e22": 3.6e10, "transformer_bpe_1b": 1.1e10, "transformer_bpe_7b": 4.5e10,
            "scaling_aunet2_1e19": 2.4e8, "scaling_aunet2_1e22": 7.3e9, "scaling_aunet3_1e19": 2.5e8,
            "scaling_aunet3_1e22": 7.6e9, "aunet2_1b": 1.8e9, "aunet3_1b": 2.3e9, "aunet4_1b": 2.8e9}
    print("\n== Table 10 FLOPs per unit: listed, ours (measured contraction, projections counted), "
          "paper convention (contraction 4.91/7.15/10.56, no projections)")
    for name, listed in rows.items():
        cfg = load_preset(name)
        ours = flops_per_unit(cfg)
        if cfg.spec.pools:
            b = flops_breakdown(cfg, PAPER_CONTRACTION[: cfg.n_stages])
            paper = b.total - b.resampling
        else:
            paper = ours
        print(f"   {name:<24} listed {listed:9.3g}  ours {ours:9.3g} ({ours / listed:5.2f})  "
              f"paper convention {paper:9.3g} ({paper / listed:5.2f})")
    if files:
        both_ways(rows, files)


def both_ways(rows: dict[str, float], files: list[str]) -> None:
    """Each AU-Net row of ``rows`` with App. B's and word1's stage 2, contractions measured on ``files`` in a
    model of the row's depth (a stage keeps the bytes of the deeper stages' marks too)."""
    docs = [Path(f).read_bytes() for f in files]
    rules = {"App. B": ["word", "words2", "words4"], "word1": ["word1", "words2", "words4"]}
    factors = {(way, k): measure_contraction(docs, k, r[: k - 1]) for way, r in rules.items() for k in (2, 3, 4)}
    print(f"\n== Table 10's AU-Net rows both ways, contractions measured on {len(docs)} files "
          f"({sum(map(len, docs)) / 1e6:.2f} MB), stages 2-4 of AU-Net 4: " + "; ".join(
              f"{way} {'/'.join(f'{c:.2f}' for c in factors[way, 4][1:])}" for way in rules))
    for name, listed in rows.items():
        cfg = load_preset(name)
        if not cfg.spec.pools:
            continue
        cells = []
        for way, r in rules.items():
            twin = ModelConfig.from_dict({**cfg.to_dict(), "splits": r[: cfg.n_stages - 1]})
            total = flops_breakdown(twin, factors[way, cfg.n_stages]).total
            cells.append(f"{way} {total:9.3g} ({total / listed:5.2f})")
        print(f"   {name:<24} listed {listed:9.3g}  " + "  ".join(cells))


def executed_over_counted(micro_batch: int, batches: int) -> None:
    """Executed (padded) over counted (mean contraction) FLOPs of AU-Net 2/3/4 on the trainer's batches."""
    print(f"\n== executed / counted FLOPs, default corpus, micro-batch {micro_batch}, {batches} batches")
    cpu = (get_family("aunet2").regime(1e12)[0], 1e12, 0.005)  # the ladder's CPU sizes
    for seq_len, budget, ratio in (cpu, (8192, 1e19, 10.0)):
        corpus = prepare_data(DataConfig(seq_len=seq_len))
        for family in ("aunet2", "aunet3", "aunet4"):
            cfg = plan(family, budget, ratio, seq_len=seq_len).model
            breakdown = flops_breakdown(cfg, corpus.contraction(cfg))
            loader = corpus.train_loader(cfg, micro_batch)
            executed = counted = 0.0
            for _ in range(batches):
                levels = next(loader)["levels"][:, :-1]
                executed += levels.shape[0] * executed_flops(breakdown, pooled_lengths(levels, cfg))
                counted += levels.numel() * breakdown.total
            print(f"   {family} seq_len {seq_len:5d} (dims {cfg.dims}): contraction "
                  f"{[round(c, 2) for c in breakdown.contraction]}, executed / counted {executed / counted:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=512, help="override the presets' seq_len (0: keep)")
    parser.add_argument("--table10", action="store_true", help="also compare with Table 10")
    parser.add_argument("--table10-on", nargs="+", metavar="FILE",
                        help="with --table10: each AU-Net row both ways (App. B's and word1's stage 2), "
                             "contractions measured on these text files")
    parser.add_argument("--executed", action="store_true", help="only the executed / counted FLOPs of AU-Net 2/3/4")
    parser.add_argument("--micro-batch", type=int, default=8, help="sequences per forward pass (--executed)")
    parser.add_argument("--batches", type=int, default=16, help="batches measured (--executed)")
    args = parser.parse_args()
    if args.executed:
        executed_over_counted(args.micro_batch, args.batches)
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name in args.presets.split(","):
        cfg = load_preset(name)
        if args.seq_len:
            cfg = ModelConfig.from_dict({**cfg.to_dict(), "seq_len": args.seq_len})
        compare(cfg, args.batch)
    if args.table10:
        table10(args.table10_on)


if __name__ == "__main__":
    main()
