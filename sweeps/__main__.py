"""``python -m sweeps status <study or folder>``, ``python -m sweeps export <study> [--out F]``,
``python -m sweeps rebuild <study>`` (a new ledger from the trials' record files) and
``python -m sweeps plan [--device h100] [overrides]`` (a dry run: the study's cost and whether it can run,
nothing submitted)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweeps.ledger import Ledger
from sweeps.lock import StudyLocked, current_holder
from sweeps.report import status_report

DEFAULT_ROOT = Path("outputs/sweeps")


def find_ledger(study: str) -> Ledger:
    path = study_folder(study) / "ledger.sqlite"
    if not path.is_file():
        raise ValueError(f"{path} is missing; rebuild it from the trials' record files: "
                         f"python -m sweeps rebuild {path.parent}")
    return Ledger(path)


def study_folder(study: str) -> Path:
    """A study's folder, from its name or its path."""
    for candidate in (Path(study), DEFAULT_ROOT / study):
        folder = candidate.parent if candidate.suffix == ".sqlite" else candidate
        if (folder / "ledger.sqlite").is_file() or (folder / "multirun.yaml").is_file():
            return folder
    known = sorted(p.parent.name for p in DEFAULT_ROOT.glob("*/ledger.sqlite"))
    raise SystemExit(f"error: no ledger for study {study!r} (looked in {study} and {DEFAULT_ROOT / study}); "
                     f"known studies: {known or 'none yet (run python sweep.py -m)'}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plan"]:  # its own options, then sweep.py's overrides
        from sweeps.plan import main as plan

        return plan(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="trials per state and the best loss, per family and budget")
    status.add_argument("study", help="a study name (outputs/sweeps/<name>) or its folder or ledger file")
    export = sub.add_parser("export", help="the results table (CSV or Parquet) the analysis reads")
    export.add_argument("study")
    export.add_argument("--out", default=None, help="output file (.csv or .parquet); default: stdout as CSV")
    rebuild = sub.add_parser("rebuild", help="a new ledger from the trials' record files (a damaged one is kept)")
    rebuild.add_argument("study")
    sub.add_parser("plan", help="a dry run: per cell the model, data and its epochs of the corpus, vocabulary, "
                                "steps, FLOPs (training and evaluation) and trials; estimated totals, device-hours, "
                                "memory and SLURM limits; exits non-zero when a cell cannot run "
                                "(python -m sweeps plan --help)")
    args = parser.parse_args(argv)
    try:
        run(args)
    except (ValueError, StudyLocked) as err:  # a refusal: one line
        raise SystemExit(f"error: {err}") from None


def run(args: argparse.Namespace) -> None:
    if args.command == "rebuild":
        from sweeps.rebuild import rebuild

        print(rebuild(study_folder(args.study).resolve()))
        return
    ledger = find_ledger(args.study)
    if args.command == "status":
        print(status_report(ledger))
        holder = current_holder(ledger.path.parent)
        if holder:
            print(f"running now: {holder}")
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
