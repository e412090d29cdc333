"""``python -m aunet.ladder``: print plans (a table, JSON or Hydra overrides) or the presets."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from aunet.flops import count_params, flops_breakdown
from aunet.ladder.families import DEFAULT_RATIO, FAMILIES, LLAMA3_BYTES_PER_TOKEN, get_family
from aunet.ladder.planner import LAW_AT, RunPlan, _fmt_list, data_contraction, plan
from aunet.ladder.presets import list_presets, load_preset
from aunet.record import BUDGET_CONVENTIONS


def _fmt_count(n: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"


def plans_table(plans: Sequence[RunPlan]) -> str:
    """Several plans, one row each."""
    head = ("budget", "ratio", "dims", "layers", "params", "F/unit", "F_nohead", "units", "train", "bsz", "steps", "lr")
    rows = [head]
    for p in plans:
        rows.append((f"{p.budget:.3g}", f"{p.achieved_ratio:.3g}", _fmt_list(p.model.dims), _fmt_list(p.model.layers),
                     _fmt_count(p.params), f"{p.flops_per_unit:.3g}", f"{p.flops_per_unit_ratio:.3g}", p.units,
                     f"{p.train_units:.3g}", f"{p.bsz:,}", f"{p.steps:,}", f"{p.lr:.3g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)



def _parse_contraction(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--contraction {text!r}: give comma-separated numbers, e.g. 4.9,10.5") from None


def _contraction_for(args: argparse.Namespace, budget: float | str, given: list[float] | None) -> list[float] | None:
    """The contraction given, else, for a family with its own splitting rule, the one measured on the
    default corpus (said on stderr); else None (the paper's rules' factors)."""
    if given is not None or get_family(args.family).splits is None:
        return given
    measured = data_contraction(args.family, budget, args.seq_len)
    print(f"{args.family}: contraction {_fmt_list([round(c, 3) for c in measured[1:]])} bytes per vector, "
          "measured on the default corpus", file=sys.stderr)
    return measured


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aunet.ladder",
        description="Plan runs for compute budgets: model, data, batch size, steps and prior learning rate.",
    )
    parser.add_argument("--family", help=f"family: {', '.join(FAMILIES)}, or an AU-Net family with its stage-2 "
                                         "splitting rule (aunet2_stride4, aunet2_spacelike, aunet3_word1)")
    parser.add_argument("--budget", nargs="+", help="compute budget(s) C in FLOPs, e.g. 1e20")
    parser.add_argument("--ratio", default=str(DEFAULT_RATIO),
                        help=f"data-to-model ratio in LLaMA-3-token units (default {DEFAULT_RATIO:g})")
    parser.add_argument("--law", help="a fitted hyperparameter law (JSON, aunet.laws.HyperLaws); default: the paper's")
    parser.add_argument("--seq-len", type=int, help="input units per sequence (default: by regime)")
    parser.add_argument("--window", type=int, help="AU-Net byte-stage window (default: by regime)")
    parser.add_argument("--vocab-size", type=int, help="BPE vocabulary (default: by regime)")
    parser.add_argument("--contraction", help="AU-Net bytes per vector at stages 2..K, e.g. 5.1,10.8 (default: the "
                                              "paper's rules' factors; another rule's measured on the default corpus)")
    parser.add_argument("--bytes-per-token", type=float, default=LLAMA3_BYTES_PER_TOKEN,
                        help="bytes per LLaMA-3 token on the data (default 4.56)")
    parser.add_argument("--bpe-bytes-per-token", type=float, help="bytes per token of the BPE model's tokenizer")
    parser.add_argument("--convention", choices=sorted(BUDGET_CONVENTIONS), default="spent",
                        help="what the budget counts: 'spent' compute, head included (default) or the paper's C "
                             "(no head)")
    parser.add_argument("--law-at", choices=LAW_AT, default="auto",
                        help="evaluate the law at the paper's C or at the budget (auto: paper laws at C)")
    parser.add_argument("--json", action="store_true", help="print the plan(s) as JSON")
    parser.add_argument("--overrides", action="store_true", help="print Hydra overrides")
    parser.add_argument("--presets", action="store_true", help="list the model presets with params and FLOPs/unit")
    args = parser.parse_args(argv)
    try:
        if args.presets:
            print(presets_table())
            return 0
        if not args.family or not args.budget:
            parser.error("--family and --budget are required (or --presets)")
        contraction = _parse_contraction(args.contraction)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plans, failed = [], False
    for budget in args.budget:
        try:
            plans.append(plan(args.family, budget, args.ratio, laws=args.law, seq_len=args.seq_len,
                              contraction=_contraction_for(args, budget, contraction), window=args.window,
                              bytes_per_token=args.bytes_per_token, bpe_bytes_per_token=args.bpe_bytes_per_token,
                              vocab_size=args.vocab_size, convention=args.convention, law_at=args.law_at))
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
    if not plans:
        return 2
    if args.json:
        print(json.dumps([p.to_dict() for p in plans] if len(plans) > 1 else plans[0].to_dict(), indent=2))
    elif args.overrides:
        for p in plans:
            print(" ".join(p.to_overrides()))
    elif len(plans) == 1:
        print(plans[0].table())
    else:
        print(plans_table(plans))
    return 2 if failed else 0


def presets_table() -> str:
    rows = [("preset", "arch", "units", "params", "FLOPs/unit", "no head")]
    for name in list_presets():
        cfg = load_preset(name)
        b = flops_breakdown(cfg)
        rows.append((name, cfg.arch, cfg.units, _fmt_count(count_params(cfg)), f"{b.total:.3g}",
                     f"{b.without_head:.3g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)

