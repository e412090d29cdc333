"""Which columns of a results table are compared across budgets: each family's loss, and the downstream
scores. One place, because the loss curve, the iso-FLOP curves and the seed averaging must agree."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.columns import FAMILY, NOT_TASKS


def loss_metric(runs: pd.DataFrame) -> tuple[str, str]:
    """The loss column a family is compared in, and its label: bits per byte when every usable run knows
    its bytes per unit, else the loss itself, in nats per input unit (never relabelled as per byte)."""
    usable = runs[runs["usable"]]
    if len(usable) and np.isfinite(usable["bpb"]).all():
        return "bpb", "bits per byte"
    return "loss", f"nats per {str(runs['units'].iloc[0]).removesuffix('s')}"


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The loss (:func:`loss_metric` of each family) and every downstream score present in the table."""
    evals = [c for c in df.columns
             if c.startswith("eval_") and c not in NOT_TASKS and np.isfinite(df[c]).any()]
    losses = dict.fromkeys(loss_metric(runs)[0] for _, runs in df.groupby(FAMILY))
    return [*losses, *sorted(evals)]


def is_score(metric: str) -> bool:
    """Whether an iso-FLOP metric is a downstream score (an accuracy in [0, 1]) rather than a loss."""
    return metric.startswith("eval_") and not metric.endswith("_bpb")
