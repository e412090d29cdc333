"""Seeds: how far the loss moves between seeds of one configuration, and one row per configuration."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.columns import FAMILY, GROUP_KEYS
from analysis.load import canonical, describe_budget, results_table
from analysis.metrics import metric_columns
from analysis.notices import SeedWarning, warn


def seed_noise(results, *, tolerance: float = 0.01) -> pd.DataFrame:
    """The spread of the loss over seeds of one configuration (family, budget, group, LR, BSZ), where a
    table has several: a band of ``tolerance`` means nothing if seeds alone differ by as much.

    ``spread`` is max/min - 1 over the seeds, ``sd`` the relative standard deviation;
    ``vs_band`` is spread / tolerance (1 or more: the band is within seed noise).
    """
    df = results_table(results)
    columns = [FAMILY, "budget", "group", "lr", "bsz", "seeds", "mean_loss", "spread", "sd", "vs_band"]
    if "seed" not in df.columns:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, runs in df[df["usable"]].groupby([*GROUP_KEYS, "lr", "bsz"]):
        loss = runs["loss"].to_numpy(float)
        if runs["seed"].nunique() < 2:
            continue
        spread = float(loss.max() / loss.min() - 1)
        rows.append([*key, runs["seed"].nunique(), float(loss.mean()), spread,
                     float(loss.std(ddof=1) / loss.mean()), spread / tolerance])
    return pd.DataFrame(rows, columns=columns)


def average_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: the usable runs of one (family, budget, group, LR, BSZ) with several
    seeds count once, at their mean (every float column), because keeping each seed's run would let
    the best-of-several-seeds (noise) decide the optimum and the best loss.

    The averaging hides how far seeds move a run, which intervals must still include: each row keeps
    ``seeds`` (how many runs it averages) and ``seed_sd_<metric>`` (their standard deviation, NaN for
    one run) for every metric of :func:`metric_columns`.
    """
    if "seed" not in df.columns or df.empty:
        return df
    key = [*GROUP_KEYS, "lr", "bsz"]
    usable = canonical(df[df["usable"]])
    repeated = usable[usable.duplicated(key, keep=False)]
    if repeated.empty:
        return df
    floats = [c for c in df.columns if c not in key and pd.api.types.is_float_dtype(df[c])]
    metrics = [m for m in metric_columns(df) if m in floats]
    seeds = repeated.groupby(key, dropna=False)
    out = df.copy()
    out.loc[repeated.index, floats] = seeds[floats].transform("mean")
    out["seeds"] = 1
    out.loc[repeated.index, "seeds"] = seeds[key[0]].transform("size")
    spread = [f"seed_sd_{m}" for m in metrics]
    out[spread] = np.nan
    out.loc[repeated.index, spread] = seeds[metrics].transform("std").to_numpy()
    return out.drop(index=repeated.index[repeated.duplicated(key, keep="first")])


def seed_noise_warnings(noise: pd.DataFrame, tolerance: float) -> list[str]:
    """A warning per configuration whose seeds differ by the band or more: the band cannot tell its runs apart."""
    return [warn(f"{describe_budget(r[FAMILY], r['budget'], r['group'])}: {r['seeds']} seeds of LR {r['lr']:.3g}, BSZ "
                 f"{r['bsz']:.4g} differ by {r['spread']:.2%} in loss, at least the {tolerance:.2%} band: the band "
                 "is within seed noise (widen the tolerance, or average seeds)", SeedWarning)
            for _, r in noise[noise["vs_band"] >= 1].iterrows()]
