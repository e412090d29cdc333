"""Hyperparameter laws: BSZ = A·C^alpha and LR = B·C^beta through each budget's optimum, and the paper's."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bootstrap import LEVEL, LawFit, law_from_estimates, percentile_ci
from analysis.box import TARGETED_PHASES, box_checks, edge_label, search_box
from analysis.estimators import SEARCH_CONFIGURATIONS, Band, Estimator, get_estimator
from analysis.load import canonical, describe_budget, family_runs
from analysis.notices import FitWarning, warn
from aunet.ladder import FAMILIES
from aunet.laws import MIN_BUDGETS, PAPER_LAWS, HyperLaws

BSZ_IN = ("units", "bytes")  # what a law's batch size may count: the runs' own units, or bytes
#: What a family whose runs did not search LR x BSZ at enough budgets gets instead of a law (an isoFLOP study
#: run at its law's prior LR and BSZ).
NO_SEARCH = "no LR x BSZ search at these budgets: no hyperparameter law"


@dataclass
class HyperFit:
    """One family's hyperparameter laws from one estimator."""

    family: str
    estimator: str
    units: str  # what BSZ counts in the law: bytes or tokens
    tolerance: float
    lr: LawFit
    bsz: LawFit
    #: One row per budget: counts, best run, optimum with interval, residuals, its ``BoxFlag``s (``flags``)
    #: and their labels (``edge``).
    budgets: pd.DataFrame
    #: Every run of the family (all statuses) with a near_optimal flag, but those of groups that searched no
    #: LR x BSZ: the runs the law speaks for (its regime, its landscape).
    runs: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    def hyper_laws(self) -> HyperLaws:
        return HyperLaws(self.bsz.power_law(), self.lr.power_law(), self.units,
                         f"analysis {self.estimator} fit of {self.family}")


def fit_hyper_laws(results, family: str, *, estimator: str = Band.name, tolerance: float = 0.01, n_boot: int = 1000,
                   seed: int = 0, level: float = LEVEL, bsz_in: str = "units") -> HyperFit:
    """Fit BSZ = A·C^alpha and LR = B·C^beta for one family (Sec. 2.3).

    ``estimator``: a name of ``analysis.estimators.ESTIMATORS``; the band (the paper's) takes, per
    budget, the runs within ``tolerance`` of the best loss (0.01 as in the paper, 0.0025 as in
    DeepSeek LLM), the bowl the minimum of a robust quadratic fitted to all finished runs of the
    budget. ``bsz_in`` is "units" (bytes or tokens, as the paper) or "bytes". Only usable runs enter
    (finished, finite loss, not set aside as diverged); the rest stay in ``runs`` for the plots.
    Several groups at one budget (model sizes, ratios: ``analysis.columns.RUN_DEFINING``) are
    separate points of the law, never merged.
    """
    method = get_estimator(estimator)
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance {tolerance} must be a fraction of the best loss in (0, 1), e.g. 0.01 for 1%")
    if bsz_in not in BSZ_IN:
        raise ValueError(f"bsz_in {bsz_in!r} must be 'units' or 'bytes'")
    runs = family_runs(results, family)
    if bsz_in == "bytes" and not np.isfinite(runs["bytes_per_unit"]).all():
        raise ValueError(f"{family}: batch size in bytes needs every run's bytes_per_unit; the table lacks it "
                         "(add the column, or fit in units)")
    units = "bytes" if bsz_in == "bytes" else runs["units"].iloc[0]
    points, messages, unsearched = _budgets_to_fit(family, estimator, method, runs)
    runs = runs[~pd.MultiIndex.from_frame(runs[["budget", "group"]]).isin(unsearched)].copy()
    rng = np.random.default_rng(seed)
    budgets = np.array([b for b, _ in points], dtype=float)
    est = np.full((n_boot + 1, len(points), 2), np.nan)
    weight = np.ones(len(points))  # each budget's weight in the law (the band's: its near-optimal count)
    runs["near_optimal"] = False
    rows = []
    for j, (budget, label) in enumerate(points):
        est[:, j], weight[j], row, found = _fit_budget(family, budget, label, runs, method, tolerance, bsz_in,
                                                       n_boot, level, rng)
        rows.append(row)
        messages += found
    table = pd.DataFrame(rows)
    fitted = np.isfinite(est[0]).all(axis=1)
    if len(np.unique(budgets[fitted])) < MIN_BUDGETS:
        raise ValueError(f"{family}: only {len(np.unique(budgets[fitted]))} budget(s) have a {estimator} optimum; the "
                         f"law needs {MIN_BUDGETS} (use another estimator, or more trials per budget)")
    near_counts = list(zip(table["budget"], table["near_optimal"]))
    messages += [warn(m, FitWarning) for m in method.family_notes(family, near_counts, tolerance)]
    laws = [law_from_estimates(t, budgets[fitted], est[:, fitted, k], weight[fitted], rng, level)
            for k, t in enumerate(("lr", "bsz"))]
    for law in laws:
        table.loc[fitted, f"{law.target}_resid"] = law.residuals
    return HyperFit(family, estimator, units, tolerance, laws[0], laws[1], table, runs, messages)


def search_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (budget, group) of one family's runs: its usable runs, their distinct (LR, BSZ) configurations, and
    whether those search LR x BSZ (``SEARCH_CONFIGURATIONS`` or more).

    A table of reported optima (one configuration at each budget, one group per budget: a paper's table of
    best LR and BSZ) counts as searched: each row is the optimum of a search made elsewhere. Several groups
    of one configuration at a budget (model sizes at their prior, an isoFLOP study) are no such table."""
    keys = ["budget", "group"]
    usable = runs[runs["usable"]]
    table = pd.DataFrame({"runs": usable.groupby(keys).size(),
                          "configurations": usable.drop_duplicates([*keys, "lr", "bsz"]).groupby(keys).size()})
    table = table.reindex(pd.MultiIndex.from_frame(runs[keys].drop_duplicates().sort_values(keys)), fill_value=0)
    ran = table[table["runs"] > 0]
    optima = (ran["configurations"] == 1).all() and ran.index.get_level_values("budget").is_unique
    return table.assign(searched=(table["configurations"] >= SEARCH_CONFIGURATIONS) | (optima & (table["runs"] > 0)))


def search_shortfall(table: pd.DataFrame) -> str:
    """Why there is no law for lack of an LR x BSZ search (fewer than ``MIN_BUDGETS`` budgets searched in
    ``table``, a ``search_table``, and some ran without one), with how many (budget, group) points ran none;
    "" when enough searched, or when what is missing is runs, not a search."""
    searched = table.index[table["searched"]].get_level_values("budget").nunique()
    ran = table[table["runs"] > 0]
    if searched >= MIN_BUDGETS or ran["searched"].all():
        return ""
    return (f"{NO_SEARCH} ({int((~ran['searched']).sum())} of {len(ran)} (budget, group) points ran fewer than "
            f"{SEARCH_CONFIGURATIONS} distinct (LR, BSZ) configurations; {searched} budget(s) searched, a law needs "
            f"{MIN_BUDGETS})")


def _budgets_to_fit(family: str, estimator: str, method: Estimator,
                    runs: pd.DataFrame) -> tuple[list[tuple[float, str]], list[str], pd.Index]:
    """The (budget, group) points whose finished runs search LR x BSZ (``search_table``) and number what the
    estimator needs, warnings counting the others, and the points that searched none; refused unless enough
    budgets remain for a law."""
    table = search_table(runs)
    why = search_shortfall(table)
    if why:
        raise ValueError(f"{family}: {why}")
    unsearched = table[(table["runs"] > 0) & ~table["searched"]]
    counts = table.loc[~table.index.isin(unsearched.index), "runs"]
    need = method.min_runs
    messages: list[str] = []
    if len(unsearched):
        listing = ", ".join(f"{b:.3g}{f' ({g})' if g else ''} ({int(r.configurations)} configuration(s))"
                            for (b, g), r in unsearched.iterrows())
        messages.append(warn(f"{family}: {len(unsearched)} (budget, group) point(s) ran no LR x BSZ search (fewer "
                             f"than {SEARCH_CONFIGURATIONS} distinct configurations): {listing}; they enter no "
                             f"{estimator} law", FitWarning))
    short = counts[counts < need]
    if len(short):
        listing = ", ".join(f"{b:.3g}{f' ({g})' if g else ''} ({n} runs)" for (b, g), n in short.items())
        messages.append(warn(f"{family}: the {estimator} needs {need} finished runs per budget; budgets {listing} "
                             "are left out (add trials there, or use an estimator that needs fewer)", FitWarning))
    kept = counts[counts >= need]
    if kept.index.get_level_values("budget").nunique() < MIN_BUDGETS:
        listing = ", ".join(f"{b:.3g}{f' ({g})' if g else ''}: {n}" for (b, g), n in counts.items())
        raise ValueError(
            f"{family}: the {estimator} fit needs at least {MIN_BUDGETS} budgets with {need} or more finished runs "
            f"each; finished runs per budget are {{{listing}}}; run more budgets or trials"
        )
    return list(kept.index), messages, unsearched.index


def _fit_budget(family: str, budget: float, label: str, runs: pd.DataFrame, method: Estimator, tolerance: float,
                bsz_in: str, n_boot: int, level: float,
                rng: np.random.Generator) -> tuple[np.ndarray, float, dict, list[str]]:
    """One budget's optimum: its replicates (NaN where there is none), its weight in the law, its row
    of the per-budget table and its warnings; marks its near-optimal runs in ``runs``."""
    where = describe_budget(family, budget, label)
    usable = runs[runs["usable"]]
    group = canonical(usable[(usable["budget"] == budget) & (usable["group"] == label)])
    loss = group["loss"].to_numpy()
    values = group[["lr", "bsz_bytes" if bsz_in == "bytes" else "bsz"]].to_numpy()
    logv = np.log(values)
    replicate_loss, w = method.replicates(loss, logv, n_boot, rng)
    best = int(np.argmin(loss))
    near = loss <= loss[best] * (1 + tolerance)
    runs.loc[group.index[near], "near_optimal"] = True
    everything = runs[(runs["budget"] == budget) & (runs["group"] == label)]
    to_bsz = float(everything["bytes_per_unit"].iloc[0]) if bsz_in == "bytes" else 1.0
    box = [search_box(everything, "lr"), tuple(v * to_bsz for v in search_box(everything, "bsz"))]
    optimum, weight = method.optimum(replicate_loss, logv, w, np.log(np.array(box)), tolerance)
    est = np.asarray(optimum, dtype=float)
    spread_out = ~group["phase"].isin(TARGETED_PHASES).to_numpy() if "phase" in group else np.ones(len(group), bool)
    flags, messages = box_checks(where, box, est[0], values, near, method, tolerance, spread_out)
    if not np.isfinite(est[0]).all():
        messages.append(warn(method.missing(where), FitWarning))
    lr_ci, bsz_ci = percentile_ci(est[1:, 0], level), percentile_ci(est[1:, 1], level)
    row = {
        "budget": budget, "group": label, "runs": len(everything), "finished": len(group),
        "set_aside": int(everything["set_aside"].sum()),
        "near_optimal": int(near.sum()), "best_loss": float(loss[best]),
        "best_lr": float(values[best, 0]), "best_bsz": float(values[best, 1]),
        "lr_opt": est[0, 0], "lr_lo": lr_ci[0], "lr_hi": lr_ci[1],
        "bsz_opt": est[0, 1], "bsz_lo": bsz_ci[0], "bsz_hi": bsz_ci[1],
        "failed_replicates": float(np.mean(~np.isfinite(est[1:, 0]))) if n_boot else 0.0,
        "lr_min": box[0][0], "lr_max": box[0][1], "bsz_min": box[1][0], "bsz_max": box[1][1],
        "edge": edge_label(tuple(flags)), "flags": tuple(flags),
    }
    return est, weight, row, messages


def paper_law(family: str, units: str) -> HyperLaws | None:
    """The law the paper fitted for this family, where it fitted one (AU-Net in bytes, the BPE Transformer
    in tokens) and the study counts batch sizes in the same units."""
    key = FAMILIES[family].paper_law if family in FAMILIES else None
    return PAPER_LAWS[key] if key is not None and PAPER_LAWS[key].units == units else None
