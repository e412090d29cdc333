"""What a user reads about a study: trials per state and the best loss, per cell."""

from __future__ import annotations

import shlex
from collections import Counter, defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from sweeps.ledger import Ledger
from sweeps.study import key_ratio

#: The study runner, named by its absolute path so that a printed command runs from any directory.
SWEEP_SCRIPT = Path(__file__).resolve().parents[1] / "sweep.py"
STATES = ("pending", "running", "finished", "diverged", "failed", "preempted")


def status_table(ledger: Ledger) -> str:
    """Trials per state and the best loss, per cell: (family, budget), and in an isoFLOP study each ratio
    (the cell its key names: ``2e11_r0.09``)."""
    cells: dict[tuple[str, float, float], list] = defaultdict(list)
    for row in ledger.rows():
        cells[(row.family, row.budget, key_ratio(row.key) or 0.0)].append(row)
    tags = {cell: rows[0].key.split("/")[1].removeprefix("C") for cell, rows in cells.items()}
    width = max([8, *(len(tag) for tag in tags.values())])
    header = (f"{'family':<18} {'budget':>{width}} " + " ".join(f"{s:>9}" for s in STATES)
              + f" {'best loss':>10} {'best bpb':>9}")
    lines = [header, "-" * len(header)]
    for (family, budget, ratio), rows in sorted(cells.items()):
        tag = tags[(family, budget, ratio)]
        counts = Counter(r.status for r in rows)
        done = [r for r in rows if r.status == "finished" and r.loss is not None]
        best = min(done, key=lambda r: r.loss) if done else None
        loss = f"{best.loss:10.4f}" if best else f"{'-':>10}"
        bpb = f"{best.bpb:9.4f}" if best and best.bpb is not None else f"{'-':>9}"
        lines.append(f"{family:<18} {tag:>{width}} " + " ".join(f"{counts.get(s, 0):>9}" for s in STATES)
                     + f" {loss} {bpb}")
    return "\n".join(lines)


def status_report(ledger: Ledger) -> str:
    """The status table, then what to run to retry the failed trials if any: what a study ends with and
    what ``python -m sweeps status`` prints."""
    hint = retry_hint(ledger)
    return status_table(ledger) + (f"\n{hint}" if hint else "")


def retry_hint(ledger: Ledger) -> str:
    """What to run to retry the study's failed trials ("" when none failed).

    A trial is run at most ``sweep.max_attempts`` times, so that one that kills its driver cannot
    loop forever; once spent, a failed trial stays failed until the study is rerun with a higher
    limit. The command is the study's own (from its ``multirun.yaml``) with the limit one past the
    attempts the failed trials used; finished trials are never rerun."""
    failed = [r for r in ledger.rows() if r.status == "failed"]
    if not failed:
        return ""
    limit = max(r.attempts for r in failed) + 1
    last = max(failed, key=lambda r: r.attempts)
    command = ["python", str(SWEEP_SCRIPT), "-m", *study_overrides(ledger.path.parent), f"sweep.max_attempts={limit}"]
    return (f"{len(failed)} trial(s) failed, after up to {limit - 1} attempt(s) each (e.g. {last.key}: "
            f"{last.error or 'no reason recorded'}).\nTo retry them (finished trials are kept): "
            + " ".join(shlex.quote(c) for c in command))


def study_overrides(folder: Path) -> list[str]:
    """The command-line overrides the study was launched with, less the attempt limit; the study's
    folder is named explicitly, and absolutely, so that the retry finds its ledger wherever it is run from."""
    saved = folder / "multirun.yaml"
    task = list(OmegaConf.select(OmegaConf.load(saved), "hydra.overrides.task", default=[]) or []) \
        if saved.is_file() else []
    kept = [o for o in task if not o.split("=", 1)[0].lstrip("+~").startswith(("sweep.max_attempts",
                                                                              "hydra.sweep.dir"))]
    return [*kept, f"hydra.sweep.dir={folder.resolve()}"]
