"""The study as Optuna sees it: one Optuna study per cell in a SQLite storage, for ``optuna-dashboard``.

The ledger stays the source of truth: after every round the sweeper adds the trials settled since
(each once, found by its ledger key), so the mirror can be deleted and rebuilt from the ledger at
any time. A finished trial is a complete Optuna trial whose value is its loss; a diverged or
failed one is a failed trial. Each carries its ledger key, phase, status and bits per byte.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from sweeps.study import budget_tag, key_ratio, ratio_tag


def mirror_to_optuna(settled: list[Any], path: str | Path, study_name: str) -> None:
    """Add every settled ledger row (``sweeps.ledger.Row``) not yet in the storage at ``path``."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(path).resolve()}")
    cells: dict[tuple[str, float, float | None], list[Any]] = defaultdict(list)
    for row in settled:  # an isoFLOP study's sizes are cells of their own
        cells[(row.family, row.budget, key_ratio(row.key))].append(row)
    for (family, budget, ratio), rows in cells.items():
        study = optuna.create_study(storage=storage, study_name=cell_study_name(study_name, family, budget, ratio),
                                    direction="minimize", load_if_exists=True)
        mirrored = {trial.user_attrs.get("key") for trial in study.get_trials(deepcopy=False)}
        for row in rows:
            if row.key in mirrored:
                continue
            lr_lo, lr_hi, bsz_lo, bsz_hi = row.box or (row.lr, row.lr, row.bsz, row.bsz)
            space = {"lr": FloatDistribution(min(lr_lo, row.lr), max(lr_hi, row.lr), log=True),
                     "bsz": FloatDistribution(min(bsz_lo, row.bsz), max(bsz_hi, row.bsz), log=True)}
            complete = row.status == "finished" and row.loss is not None
            study.add_trial(create_trial(
                params={"lr": row.lr, "bsz": float(row.bsz)}, distributions=space,
                value=row.loss if complete else None, state=TrialState.COMPLETE if complete else TrialState.FAIL,
                user_attrs={"key": row.key, "phase": row.phase, "status": row.status, "bpb": row.bpb,
                            "error": row.error[:200]}))
    storage.engine.dispose()


def cell_study_name(study: str, family: str, budget: float, ratio: float | None = None) -> str:
    """The Optuna study of one cell: ``demo/aunet2/C1e11``, ``iso/aunet2/C1e11_r0.2`` in an isoFLOP study."""
    return f"{study}/{family}/C{budget_tag(budget)}" + ("" if ratio is None else f"_r{ratio_tag(ratio)}")
