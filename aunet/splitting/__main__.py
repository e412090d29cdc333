"""``python -m aunet.splitting RULES...``: bytes per vector of splitting rules, measured on text.

Each argument is one AU-Net's rules after its byte stage, comma-separated (``word1,words2``: stage
2, then stage 3). Measured with ``aunet.flops.measure_contraction`` on the default corpus's
documents, each split from a fresh state, or on the files ``--files`` names.

    python -m aunet.splitting word word1 stride:4 spacelike word,words2,words4 word1,words2,words4
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aunet.splitting import parse_rule


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aunet.splitting", description=__doc__.split("\n")[0])
    parser.add_argument("rules", nargs="+", help="one AU-Net's rules after the byte stage, comma-separated")
    parser.add_argument("--files", nargs="+", type=Path, help="text files to measure on (default: the default corpus)")
    args = parser.parse_args(argv)
    rule_sets = [[spec.strip() for spec in text.split(",")] for text in args.rules]
    try:
        for rules in rule_sets:
            for spec in rules:
                parse_rule(spec)
        missing = [str(path) for path in args.files or [] if not path.is_file()]
        if missing:
            raise ValueError(f"--files: not a file: {', '.join(missing)}")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
