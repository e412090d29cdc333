"""Hold a finished study against its dry run: FLOPs and CPU time planned against those recorded.

    python benchmarks/check_dry_run.py results/reference/results.csv sweep=reference --device cpu

For every recorded trial, its cell's planned training FLOPs and planned seconds (on ``cpu``: steps
timed here, ``sweeps.step_timing``; elsewhere FLOPs at the device's peak x MFU) are set against the
trial's recorded FLOPs and wall time; the dry run's "at most" counts every phase in full, so the trials actually run are
the ones compared. Prints the sums and their ratios, per family and in total.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps.plan import plan_study  # noqa: E402


def compare(results: pd.DataFrame, overrides: list[str], device: str, mfu: float | None,
            peak: float | None) -> pd.DataFrame:
    """One row per recorded trial: planned and recorded training FLOPs and seconds."""
    plan = plan_study(overrides, device, mfu, peak, devices_per_trial=1)
    print(next(line for line in plan.text.splitlines() if line.startswith("device-hours")))
    by_model = {c.cell.prior.name: c for c in plan.costs}
    runs = results[results["status"] == "finished"]
    unknown = sorted(set(runs["model"]) - set(by_model))
    if unknown:
        raise SystemExit(f"error: the results hold models the plan of {' '.join(overrides)} does not: {unknown[:3]}")
    planned = runs["model"].map(by_model)
    return pd.DataFrame({
        "family": runs["family"], "model": runs["model"],
        "planned_flops": [c.flops_per_trial for c in planned], "recorded_flops": runs["flops"],
        "planned_seconds": [c.seconds for c in planned], "recorded_seconds": runs["wall_time"]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the study's results.csv")
    parser.add_argument("overrides", nargs="+", help="the study's overrides, as given to sweep.py -m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mfu", type=float)
    parser.add_argument("--peak-flops", type=float)
    args = parser.parse_args(argv)
    rows = compare(pd.read_csv(args.results), args.overrides, args.device, args.mfu, args.peak_flops)
    sums = rows.groupby("family")[["planned_flops", "recorded_flops", "planned_seconds", "recorded_seconds"]].sum()
    sums.loc["total"] = sums.sum()
    sums["flops_ratio"] = sums["planned_flops"] / sums["recorded_flops"]
    sums["time_ratio"] = sums["planned_seconds"] / sums["recorded_seconds"]
    print(f"{len(rows)} finished trials of {args.results}")
    print(sums.to_string(float_format=lambda x: f"{x:.4g}"))


if __name__ == "__main__":
    main()
