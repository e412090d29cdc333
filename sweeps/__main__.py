"""``python -m sweeps status <study or folder>`` and ``python -m sweeps export <study> [--out F]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweeps.ledger import Ledger
from sweeps.report import status_table

DEFAULT_ROOT = Path("outputs/sweeps")


def find_ledger(study: str) -> Ledger:
    for candidate in (Path(study), DEFAULT_ROOT / study):
        path = candidate if candidate.suffix == ".sqlite" else candidate / "ledger.sqlite"
        if path.is_file():
            return Ledger(path)
    known = sorted(p.parent.name for p in DEFAULT_ROOT.glob("*/ledger.sqlite"))
    raise SystemExit(f"error: no ledger for study {study!r} (looked in {study} and {DEFAULT_ROOT / study}); "
                     f"known studies: {known or 'none yet (run python sweep.py -m)'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="trials per state and the best loss, per family and budget")
    status.add_argument("study", help="a study name (outputs/sweeps/<name>) or its folder or ledger file")
    export = sub.add_parser("export", help="the results table (CSV or Parquet) the analysis reads")
    export.add_argument("study")
    export.add_argument("--out", default=None, help="output file (.csv or .parquet); default: stdout as CSV")
    args = parser.parse_args(argv)
    ledger = find_ledger(args.study)
    if args.command == "status":
        print(status_table(ledger))
        return
    frame = ledger.to_frame()
    if args.out is None:
        frame.to_csv(sys.stdout, index=False)
    elif args.out.endswith(".parquet"):
        frame.to_parquet(args.out, index=False)
    else:
        frame.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
