"""``python -m aunet.splitting RULES...``: bytes per vector of splitting rules, measured on text.

Each argument is one AU-Net's rules after its byte stage, comma-separated (``word1,words2``: stage
2, then stage 3). Measured with ``aunet.flops.measure_contraction`` on the default corpus's
documents, each split from a fresh state, or on the files ``--files`` names.

    python -m aunet.splitting word word1 stride:4 spacelike word,words2,words4 word1,words2,words4

``--show N`` prints N bytes of a sample of held-out-like text with each rule's stage-2 boundaries
marked, and how often the rules agree with the first one; ``--model RUN`` adds a trained AU-Net's
learned stage 2 (its router's decisions) as one more rule:

    python -m aunet.splitting word spacelike --model outputs/.../aunet2_learned4_.../ --show 200
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aunet.splitting import parse_rule


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aunet.splitting", description=__doc__.split("\n")[0])
    parser.add_argument("rules", nargs="+", help="one AU-Net's rules after the byte stage, comma-separated")
    parser.add_argument("--files", nargs="+", type=Path, help="text files to measure on (default: the default corpus)")
    parser.add_argument("--show", type=int, default=0, metavar="N",
                        help="print N bytes with each rule's stage-2 boundaries marked, and the rules' agreement")
    parser.add_argument("--model", type=Path, help="a finished AU-Net run with a learned stage 2: shown as a rule")
    parser.add_argument("--sample-bytes", type=int, default=200_000,
                        help="bytes the agreement is measured on (pieces spread over the text)")
    args = parser.parse_args(argv)
    rule_sets = [[spec.strip() for spec in text.split(",")] for text in args.rules]
    try:
        for rules in rule_sets:
            for spec in rules:
                parse_rule(spec)
        missing = [str(path) for path in args.files or [] if not path.is_file()]
        if missing:
            raise ValueError(f"--files: not a file: {', '.join(missing)}")
        if args.show < 0 or args.sample_bytes < 1:
            raise ValueError(f"--show {args.show} / --sample-bytes {args.sample_bytes}: give N >= 0 bytes and a sample >= 1")
        if args.model is not None and not args.show:
            raise ValueError("--model shows a learned rule's boundaries: give --show N too")
        learned = _load_learned(args.model) if args.model is not None else None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from aunet.data import DataConfig, prepare_default_corpus
    from aunet.flops import measure_contraction

    if args.files:
        paths, where = args.files, "the files given"
    else:
        paths, where = sorted(prepare_default_corpus(DataConfig().cache_path).rglob("*.txt")), "the default corpus"
    docs = [path.read_bytes() for path in paths]
    depth = max(map(len, rule_sets))
    print(f"bytes per vector on {where} ({sum(map(len, docs)) / 1e6:.2f} MB, {len(docs)} documents)")
    print(" | ".join(["rules", *(f"stage {k + 2}" for k in range(depth))]))
    for rules in rule_sets:
        contraction = measure_contraction(docs, len(rules) + 1, rules)[1:]
        print(" | ".join([",".join(rules), *(f"{c:.2f}" for c in contraction), *[""] * (depth - len(rules))]))
    if args.show:
        _show(docs, [rules[0] for rules in rule_sets], learned, args.show, args.sample_bytes)
    return 0


def _load_learned(path: Path):
    from aunet.eval.loading import load_checkpoint

    model = load_checkpoint(path).model
    if not getattr(model, "targets", None) or model.targets[0] is None:
        raise ValueError(f"--model {path}: its stage 2 is not a learned rule (splits {model.cfg.splits})")
    return model


def _show(docs: list[bytes], rules: list[str], model, n: int, sample_bytes: int) -> None:
    """Stage 2's boundaries of each rule on the first piece of a spread sample, and agreement over the sample."""
    from aunet.data.corpus import spread_sample
    from aunet.splitting.show import agreement, marked, model_boundaries, rule_boundaries

    pieces = spread_sample(docs, sample_bytes)
    names = [*rules, *(["learned (the model's router)"] if model is not None else [])]
    marks = {name: [rule_boundaries(name, piece) for piece in pieces] for name in rules}
    if model is not None:
        marks[names[-1]] = [model_boundaries(model, piece) for piece in pieces]
    joined = {name: np.concatenate(m) for name, m in marks.items()}
    width = max(map(len, names))
    print(f"\nstage-2 boundaries ('|' before each kept byte) on {n} bytes of {sum(map(len, pieces)):,} sampled:")
    for name in names:
        print(f"{name:<{width}}  {marked(pieces[0][:n], marks[name][0][:n])}")
    first = names[0]
    for name in names:
        print(f"{name}: {len(joined[name]) / joined[name].sum():.2f} bytes per vector on the sample", end="")
        if name == first:
            print()
            continue
        print(f"; {agreement(joined[name], joined[first]):.0%} of its boundaries are {first}'s "
              f"({agreement(joined[name], joined[first], slack=1):.0%} within a byte after one), "
              f"{agreement(joined[first], joined[name]):.0%} of {first}'s are its")


if __name__ == "__main__":
    sys.exit(main())
