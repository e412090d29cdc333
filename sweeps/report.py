"""What a user reads about a study: trials per state and the best loss, per cell."""

from __future__ import annotations

from collections import Counter, defaultdict

from sweeps.ledger import Ledger
from sweeps.study import budget_tag

STATES = ("pending", "running", "finished", "diverged", "failed", "preempted")


def status_table(ledger: Ledger) -> str:
    cells: dict[tuple[str, float], list] = defaultdict(list)
    for row in ledger.rows():
        cells[(row.family, row.budget)].append(row)
    header = f"{'family':<18} {'budget':>8} " + " ".join(f"{s:>9}" for s in STATES) + f" {'best loss':>10} {'best bpb':>9}"
    lines = [header, "-" * len(header)]
    for (family, budget), rows in sorted(cells.items()):
        counts = Counter(r.status for r in rows)
        done = [r for r in rows if r.status == "finished" and r.loss is not None]
        best = min(done, key=lambda r: r.loss) if done else None
        loss = f"{best.loss:10.4f}" if best else f"{'-':>10}"
        bpb = f"{best.bpb:9.4f}" if best and best.bpb is not None else f"{'-':>9}"
        lines.append(f"{family:<18} {budget_tag(budget):>8} " + " ".join(f"{counts.get(s, 0):>9}" for s in STATES)
                     + f" {loss} {bpb}")
    return "\n".join(lines)
