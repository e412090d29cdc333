"""The compute-optimal model size of each family of a study (``python -m analysis optimal``, and the
report's allocation section): Chinchilla's approaches 2 and 3 (``analysis.allocation``) fitted to every
family whose runs form an isoFLOP design, set side by side at target budgets, and written as
``optimal.json`` with two figures per family.

A family has an isoFLOP design when at least two of its budgets hold ``MIN_SIZES`` model sizes or more;
the fits read those budgets. Found by looking, a family without one (a ladder training one size per
budget) is skipped with the reason, and its budgets with fewer sizes (ladder budgets beside the
isoFLOP ones, or a size whose run failed) are left out and named. A family the user names is held to
the design at every budget: a thin one is an error naming it, so that a missing size is not fitted around.
This is the one design rule and the one path to the fits: ``analysis.extrapolate`` reads its
compute-optimal model from ``optimal_study`` too, judging its family as one found by looking.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.allocation import ALLOCATION_FITS, MISALLOCATION_FLAG, Comparison, compare, validate_table
from analysis.allocation.approach2 import Approach2Result
from analysis.allocation.approach3 import DELTA, Approach3Result
from analysis.allocation.base import MIN_SIZES, json_number
from analysis.allocation.table import allocation_table
from analysis.bootstrap import LEVEL
from analysis.columns import FAMILY
from analysis.load import compute_label, results_table
from analysis.notices import BoxWarning, FitWarning, warn
from analysis.plots import plot_allocation_isoflops, plot_n_opt, save

DESIGN_BUDGETS = 2  # budgets with MIN_SIZES sizes or more that make an isoFLOP design
DEFAULT_REACH = 10.0  # the default target: this many times the table's largest budget
N_BOOT = 1000


def _g(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "-"


def _ci(value: float, ci: tuple[float, float], spec: str = ".3g") -> str:
    cells = [f"{v:{spec}}" if math.isfinite(v) else "-" for v in (value, *ci)]
    return f"{cells[0]} [{cells[1]}, {cells[2]}]"


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float as None: JSON has no NaN."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return json_number(obj) if isinstance(obj, float) else obj


@dataclass
class FamilyOptimum:
    """One family's allocation fits, their optimum at each target, and what to look at."""

    family: str
    table: pd.DataFrame  # what was fitted: ``analysis.allocation.table.allocation_table``
    units: str  # what D counts
    convention: str  # what C counts
    fits: dict[str, Any]  # fit name -> its result
    not_fitted: dict[str, str]  # fit name -> why not
    targets: list[float]  # compute budgets the fits are set side by side at
    comparisons: list[Comparison]  # one per target, when both fits were made
    left_out: dict[float, int]  # budgets with fewer than MIN_SIZES sizes, not fitted -> their sizes
    warnings: list[str]

    @property
    def fit2(self) -> Approach2Result | None:
        return self.fits.get("approach2")

    @property
    def fit3(self) -> Approach3Result | None:
        return self.fits.get("approach3")

    @property
    def budgets(self) -> np.ndarray:
        return np.unique(self.table["budget"].to_numpy(float))

    def optimum(self, name: str, target: float) -> dict[str, Any]:
        """N_opt and D_opt = C / (k·N_opt) at ``target`` by one fit, each with its interval."""
        fit = self.fits[name]
        n, (lo, hi) = float(fit.n_opt(target)), (float(v[0]) for v in fit.n_opt_ci(target))
        return {"n_opt": n, "n_opt_ci": (lo, hi), "d_opt": target / (fit.k * n),
                "d_opt_ci": (target / (fit.k * hi), target / (fit.k * lo))}

    @property
    def points(self) -> int:
        """(budget, size) pairs: each is one configuration, run with one seed or several."""
        return len(self.table.drop_duplicates(["budget", "params"]))

    def description(self) -> str:
        b, k = self.budgets, next(iter(self.fits.values())).k
        left = f"; {self.left_out_text()}" if self.left_out else ""
        return (f"{self.family}: {len(b)} budgets from {_g(b[0])} to {_g(b[-1])}, {self.points} (budget, size) "
                f"points, {len(self.table)} runs; C: {self.convention}; D in {self.units}; k = C/(N·D) = {k:.3g}"
                + left)

    def left_out_text(self) -> str:
        budgets = ", ".join(f"{b:.3g} ({n} size{'s' * (n != 1)})" for b, n in self.left_out.items())
        return f"left out: budget(s) {budgets}, fewer than {MIN_SIZES} sizes each"

    def vertex_table(self) -> tuple[list[str], list[list[str]]]:
        """Approach 2's vertex per budget: N_opt [interval] or the bound, sizes below / above, why a bound."""
        rows = []
        for v in self.fit2.vertices if self.fit2 else []:
            value = _ci(v.n_opt, v.ci) if v.kind == "value" else f"bound: N_opt {'<' if v.kind == 'upper' else '>'} " \
                                                                 f"{_g(v.n_opt)}"
            rows.append([_g(v.budget), value, f"{v.below} / {v.above}", v.reason])
        return ["budget", "approach 2 N_opt", "sizes below / above", "why a bound"], rows

    def parameter_table(self) -> tuple[list[str], list[list[str]]]:
        """Each fit's parameters with their intervals: approach 2's G and a, approach 3's E, A, B, α, β and a."""
        rows = []
        if self.fit2:
            no_law = f"no law: {self.fit2.reason}" if not self.fit2.law else ""
            rows.append(["approach 2", *["-"] * 5, _ci(self.fit2.a, self.fit2.a_ci, ".4f"),
                         _ci(self.fit2.G, self.fit2.G_ci) if not no_law else no_law])
        if self.fit3:
            f = self.fit3
            rows.append(["approach 3", *(_ci(getattr(f, p), f.ci[p], spec) for p, spec in (
                ("E", ".4g"), ("A", ".3g"), ("B", ".3g"), ("alpha", ".4f"), ("beta", ".4f"), ("a", ".4f"))),
                f"{f.G:.3g}"])
        return ["fit", "E", "A", "B", "α", "β", "a", "G"], rows

    def target_table(self) -> tuple[list[str], list[list[str]]]:
        """Per target and fit: N_opt and D_opt with intervals."""
        rows = []
        for target in self.targets:
            for name in self.fits:
                o = self.optimum(name, target)
                rows.append([_g(target), name.replace("approach", "approach "), _ci(o["n_opt"], o["n_opt_ci"]),
                             _ci(o["d_opt"], o["d_opt_ci"])])
        return ["target", "fit", "N_opt", f"D_opt ({self.units})"], rows

    def convergence(self) -> str:
        """Approach 3's optimiser: the projected gradient, and how many starts reached the best objective."""
        f = self.fit3
        if f is None:
            return f"approach 3 not fitted: {self.not_fitted.get('approach3', '')}"
        state = "converged" if f.converged else "NOT converged (fewer than 2 starts agree)"
        return (f"approach 3 optimiser {state}: {f.starts_at_best} of {f.starts} starts reached the best summed "
                f"Huber objective ({f.objective:.3g}, δ = {DELTA:g}); projected gradient {f.grad_norm:.2g}; "
                f"{f.failed_replicates} bootstrap replicate(s) failed")

    def comparison_lines(self) -> list[str]:
        """|a2 - a3| and the compute approach 2's N_opt misallocates, per target; or why they cannot be had."""
        if not self.comparisons:
            return [f"no comparison: {name} not fitted ({why})" for name, why in self.not_fitted.items()]
        lines = []
        for c in self.comparisons:
            if not math.isfinite(c.share):
                lines.append(f"at {_g(c.target)} FLOPs: no comparison: approach 2 has no law ({self.fit2.reason})")
                continue
            flag = f"FLAGGED: above {MISALLOCATION_FLAG:.0%}" if c.flagged else f"flag above {MISALLOCATION_FLAG:.0%}"
            lines.append(f"at {_g(c.target)} FLOPs: |a2 - a3| = {_g(c.a_difference)}; approach 2's N_opt "
                         f"{_g(c.n_opt2)} against approach 3's {_g(c.n_opt3)} misallocates {c.share:.2%} of the "
                         f"compute under approach 3's L ({flag})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"units": self.units, "convention": self.convention,
                               "budgets": [float(b) for b in self.budgets], "points": self.points,
                               "runs": len(self.table),
                               "left_out": [{"budget": b, "sizes": n} for b, n in self.left_out.items()]}
        for name in ALLOCATION_FITS:
            out[name] = (self.fits[name].to_dict(units=self.units, convention=self.convention) if name in self.fits
                         else {"fitted": False, "reason": self.not_fitted[name]})
        compared = {c.target: c.to_dict() for c in self.comparisons}
        out["targets"] = [compared.get(t, {"target": t}) | {f"{key}_{name}": value for name in self.fits
                                                           for key, value in self.optimum(name, t).items()}
                          for t in self.targets]
        return out | {"warnings": self.warnings}


@dataclass
class OptimalStudy:
    """Every family with an isoFLOP design, fitted; the others, with why they were skipped."""

    families: dict[str, FamilyOptimum]
    skipped: dict[str, str]
    targets: list[float]
    n_boot: int
    seed: int
    level: float = LEVEL

    @property
    def warnings(self) -> list[str]:
        return [w for f in self.families.values() for w in f.warnings]

    def to_dict(self, source: str) -> dict[str, Any]:
        return _finite({"source": source, "targets": self.targets, "n_boot": self.n_boot, "seed": self.seed,
                        "level": self.level, "families": {f: o.to_dict() for f, o in self.families.items()},
                        "skipped": self.skipped})

    def text(self) -> str:
        lines = [f"skipped {family}: {why}" for family, why in self.skipped.items()]
        for fam in self.families.values():
            lines += ["", fam.description(), f"approach 2: the vertex of a robust parabola of loss in ln N per "
                                             f"budget ({self.level:.0%} bootstrap intervals)"]
            lines += _aligned(*fam.vertex_table(), empty=f"not fitted: {fam.not_fitted.get('approach2', '')}")
            lines += ["parameters (N_opt = G·C^a; approach 3: L(N, D) = E + A/N^α + B/D^β)"]
            lines += _aligned(*fam.parameter_table()) + [fam.convergence(), "at the target"]
            lines += _aligned(*fam.target_table())
            lines += fam.comparison_lines()
        return "\n".join(lines).strip("\n")


def _aligned(header: list[str], rows: list[list[str]], empty: str = "(none)") -> list[str]:
    """Rows as left-aligned columns, indented under their heading."""
    if not rows:
        return [f"  {empty}"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def design_reason(table: pd.DataFrame) -> str:
    """Why a family's allocation table is no isoFLOP design ("" when it is one)."""
    sizes = table.groupby("budget")["params"].nunique()
    enough = int((sizes >= MIN_SIZES).sum())
    if enough >= DESIGN_BUDGETS:
        return ""
    return (f"no isoFLOP design: {enough} of {len(sizes)} budget(s) hold {MIN_SIZES} or more model sizes (at most "
            f"{int(sizes.max())}), an allocation fit needs {DESIGN_BUDGETS}")


def _named(family: str, message: str) -> str:
    return message if family in message else f"{family}: {message}"


def design_tables(results: Any, families: list[str] | None = None, *,
                  strict: bool = True) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Each family's allocation table where it is an isoFLOP design, and why the others are not. A family in
    ``families`` that is none, or has a budget with fewer than ``MIN_SIZES`` sizes, is one ValueError line;
    without ``strict`` it is judged as one found by looking (skipped, or its thin budgets left out)."""
    df = results_table(results, allocation=True)
    held = bool(families) and strict
    tables, skipped = {}, {}
    for family in families or sorted(df[FAMILY].unique()):
        try:
            table = allocation_table(df, family)
            why = design_reason(table)
            if why:
                raise ValueError(why)
            if held:
                validate_table(table, DESIGN_BUDGETS)
            tables[family] = table
        except ValueError as err:
            if held:
                raise ValueError(_named(family, str(err))) from None
            skipped[family] = str(err).removeprefix(f"{family}: ")
    return tables, skipped


def optimal_study(results: Any, *, families: list[str] | None = None, targets: list[float] | None = None,
                  n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL, strict: bool = True) -> OptimalStudy:
    """Approaches 2 and 3 for every family with an isoFLOP design (only ``families``, if given; ``strict``:
    as ``design_tables``), compared at ``targets`` (default: ``DEFAULT_REACH`` times the table's largest
    budget)."""
    df = results_table(results, allocation=True)
    targets = [float(t) for t in targets] if targets else [DEFAULT_REACH * float(df["budget"].max())]
    bad = [t for t in targets if not (math.isfinite(t) and t > 0)]
    if bad:
        raise ValueError(f"target compute must be positive and finite; got {bad[0]!r}")
    if not (isinstance(n_boot, int) and n_boot >= 0):
        raise ValueError(f"n_boot must be a whole number of bootstrap replicates, 0 or more; got {n_boot!r}")
    tables, skipped = design_tables(df, families, strict=strict)
    fitted = {family: _fit_family(family, table, df, targets, n_boot, seed, level) for family, table in tables.items()}
    return OptimalStudy(fitted, skipped, targets, n_boot, seed, level)


def _fit_family(family: str, table: pd.DataFrame, df: pd.DataFrame, targets: list[float], n_boot: int, seed: int,
                level: float) -> FamilyOptimum:
    """Both fits on the family's budgets with ``MIN_SIZES`` sizes or more (``table``: all its budgets)."""
    runs = df[df[FAMILY] == family]
    sizes = table.groupby("budget")["params"].nunique()
    table = table[table["budget"].isin(sizes.index[sizes >= MIN_SIZES])].reset_index(drop=True)
    fits, not_fitted = {}, {}
    for name, fit in ALLOCATION_FITS.items():
        try:
            fits[name] = fit.fit(table, n_boot=n_boot, seed=seed, level=level)
        except ValueError as err:
            not_fitted[name] = str(err)
    comparisons = [compare(fits["approach2"], fits["approach3"], t) for t in targets] \
        if {"approach2", "approach3"} <= fits.keys() else []
    optimum = FamilyOptimum(family, table, str(runs["units"].iloc[0]), compute_label(runs), fits, not_fitted, targets,
                            comparisons, {float(b): int(n) for b, n in sizes[sizes < MIN_SIZES].items()}, [])
    optimum.warnings += _family_warnings(optimum)
    return optimum


def _family_warnings(o: FamilyOptimum) -> list[str]:
    """What to look at before trusting the family's numbers, as typed warnings."""
    out = [warn(f"{o.family}: no {name}: {why}", FitWarning) for name, why in o.not_fitted.items()]
    if o.left_out:
        out.append(warn(f"{o.family}: {o.left_out_text()}: not part of the allocation fits", FitWarning))
    if o.fit2 is not None:
        out += [warn(f"{o.family} budget {v.budget:.3g}: approach 2's vertex is a bound, not a value: {v.reason}",
                     BoxWarning) for v in o.fit2.vertices if v.kind != "value"]
        if o.fit2.law is None:
            out.append(warn(f"{o.family}: approach 2 has no law: {o.fit2.reason}", FitWarning))
    if o.fit3 is not None and not o.fit3.converged:
        out.append(warn(f"{o.family}: {o.convergence()}", FitWarning))
    out += [warn(f"{o.family}: approaches 2 and 3 disagree: approach 2's N_opt misallocates {c.share:.1%} of the "
                 f"compute at {c.target:.3g} FLOPs (above {MISALLOCATION_FLAG:.0%})", FitWarning)
            for c in o.comparisons if c.flagged]
    return out


def write_optimal(study: OptimalStudy, out: str | Path, source: str) -> tuple[Path, dict[str, list[Path]]]:
    """``out``/optimal.json and each family's two figures (PNG and PDF); returns the JSON's path and the
    figures by name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "optimal.json"
    path.write_text(json.dumps(study.to_dict(source), indent=2, allow_nan=False) + "\n")
    figures: dict[str, list[Path]] = {}
    for family, o in study.families.items():
        figures[f"isoflops_{family}"] = save(plot_allocation_isoflops(o.table, o.fit2, o.fit3, family, o.units),
                                             out / f"isoflops_{family}")
        figures[f"n_opt_{family}"] = save(plot_n_opt(o.fit2, o.fit3, family, o.budgets, study.targets, o.convention),
                                          out / f"n_opt_{family}")
    return path, figures
