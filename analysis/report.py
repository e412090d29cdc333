"""One report per study: the fitted laws, both estimators side by side, the extrapolation table, the figures.

The report is a list of blocks (heading, paragraph, table, image, list) rendered to
Markdown or HTML by two small renderers, so both formats always say the same thing.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from analysis.bootstrap import LawFit
from analysis.cards import law_card, write_laws
from analysis.columns import FAMILY
from analysis.estimators import Band, Bowl
from analysis.extrapolate import Extrapolation, extrapolate
from analysis.fits import Analysis, analyse
from analysis.hyper_laws import paper_law, search_shortfall, search_table
from analysis.isoflop import ranking
from analysis.load import compute_label
from analysis.optimal import N_BOOT, OptimalStudy, optimal_study, write_optimal
from analysis.plots import all_figures
from aunet.laws import coef_identified, exponent_identified, why_not_identified
from aunet.verdict import Limits, judge

Block = tuple[Any, ...]


def _g(x: float, digits: int = 3) -> str:
    """A number, "-" when there is none, "inf" when an interval knows no bound (a 3-budget law)."""
    if x is None or np.isnan(x):
        return "-"
    return f"{x:.{digits}g}" if np.isfinite(x) else ("inf" if x > 0 else "-inf")


def _ci(value: float, ci: tuple[float, float], digits: int = 3) -> str:
    return f"{_g(value, digits)} [{_g(ci[0], digits)}, {_g(ci[1], digits)}]"


def _factor_ci(value: float, ci: tuple[float, float], digits: int = 3) -> str:
    """A positive quantity with its interval and the interval's factor width, or "not identified"
    (``aunet.laws``'s rule)."""
    lo, hi = ci
    if not coef_identified(ci):
        return f"not identified ([{_g(lo, 2)}, {_g(hi, 2)}], {why_not_identified(ci, exponent=False)})"
    return f"{_ci(value, ci, digits)} (x{hi / lo:.3g})"


def _exponent_ci(value: float, ci: tuple[float, float]) -> str:
    if not exponent_identified(ci):
        return f"not identified ([{_g(ci[0], 2)}, {_g(ci[1], 2)}], {why_not_identified(ci, exponent=True)})"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _law_cells(law: LawFit) -> list[str]:
    return [_factor_ci(law.coef, law.coef_ci), _exponent_ci(law.exponent, law.exponent_ci), _g(law.dispersion, 2)]


def _floor_cell(fit) -> str:
    """L(C)'s floor E, or why it is none (``LossFit.why_floor_not_identified``)."""
    why = fit.why_floor_not_identified()
    if why:
        return why if not fit.floor else f"not identified ({why})"
    return _factor_ci(fit.e, fit.e_ci, 4)


def default_targets(analysis: Analysis) -> list[float]:
    """10x and 100x the largest swept budget: the extrapolations a sweep exists for."""
    top = float(analysis.results["budget"].max())
    return [10 * top, 100 * top]


def build(analysis: Analysis, out: Path, *, targets: list[float], source: str, laws: dict[tuple[str, str], Path],
          figures: dict[str, list[Path]], limits: Limits | None = None, optimal: OptimalStudy | None = None,
          optimal_files: dict[str, list[Path]] | None = None) -> list[Block]:
    """The report's blocks, one function per section; ``laws``, ``figures`` and ``optimal_files``: the files
    written for it under ``out`` (:func:`write_report` writes every file)."""
    limits = limits or Limits()
    recipes = {family: _recipes(analysis, family, targets, limits, source) for family in analysis.laws}
    no_search = _no_search(analysis)
    sizes_only = optimal is not None and bool(optimal.families)
    sections = [_header(analysis, source), _supports(analysis, recipes, limits, source, no_search, sizes_only),
                _runs(analysis), _laws(analysis, {key: path.relative_to(out) for key, path in laws.items()}, no_search),
                _band_against_bowl(analysis), _per_budget(analysis), _loss(analysis), _equal_compute(analysis),
                _seed_noise(analysis), _allocation(optimal, optimal_files or {}, out), _extrapolation(recipes),
                _figures(figures, out), _warnings(analysis)]
    return [block for section in sections for block in section]


def _header(analysis: Analysis, source: str) -> list[Block]:
    return [("h", 1, "Scaling analysis"),
            ("p", f"Source: `{source}`. Generated {_dt.datetime.now():%Y-%m-%d %H:%M}. "
                  f"{len(analysis.results)} runs; near-optimal band: within {analysis.tolerance:.2%} of each "
                  "budget's best loss; intervals are 95% bootstrap intervals (band: runs resampled "
                  "within each budget, or loss noise redrawn on a full grid; bowl: residuals of its "
                  "quadratic flipped at the runs' own points), widened, never narrowed, by the "
                  "budgets' scatter around the law. Finished runs with a loss above the divergence rule's multiple of their "
                  "budget's best are set aside as diverged and never fitted.")]


def _runs(analysis: Analysis) -> list[Block]:
    df = analysis.results
    counts = df.groupby([FAMILY, "status"]).size().unstack(fill_value=0)
    counts["set aside as diverged"] = df.groupby(FAMILY)["set_aside"].sum().reindex(counts.index).astype(int)
    return [("h", 2, "Runs"),
            ("table", [FAMILY, *counts.columns], [[a, *map(str, r)] for a, r in zip(counts.index, counts.values)])]


def _no_search(analysis: Analysis) -> dict[str, str]:
    """Families without a law because too few of their budgets searched LR x BSZ (an isoFLOP study run at its
    law's prior LR and BSZ), with the shortfall."""
    df = analysis.results
    found = {family: search_shortfall(search_table(df[df[FAMILY] == family]))
             for family in sorted(set(df[FAMILY]) - set(analysis.laws))}
    return {family: why for family, why in found.items() if why}


def _laws(analysis: Analysis, laws: dict[tuple[str, str], Path], no_search: dict[str, str]) -> list[Block]:
    """Every fitted law with its law file (``laws``: relative paths), the paper's where it applies, and the
    families that searched no LR x BSZ (``no_search``) said to have none."""
    blocks: list[Block] = [("h", 2, "Hyperparameter laws")]
    blocks.append(("p", f"BSZ = A·C^α and LR = B·C^β, C: {compute_label(analysis.results)}. *band*: the paper's protocol (fit through the "
                        "runs near the best loss of each budget); *bowl*: the minimum of a robust quadratic in "
                        "log LR × log BSZ, with a cubic term in log LR (the loss rises faster above the best LR than "
                        "below it), fitted to every finished run of a budget. *dispersion*: scatter of the "
                        "budgets around the law in units of their bootstrap spread (≈1 or below: consistent)."))
    header = [FAMILY, "estimator", "units", "A", "α", "disp. BSZ", "B", "β", "disp. LR", "budgets", "law file"]
    rows = []
    for family, fits in analysis.laws.items():
        for estimator, fit in fits.items():
            rows.append([family, estimator, fit.units, *_law_cells(fit.bsz), *_law_cells(fit.lr),
                         str(len(fit.lr.budgets)), f"`{laws[family, estimator]}`"])
        reference = paper_law(family, next(iter(fits.values())).units)
        if reference is not None:
            rows.append([family, "paper (App. D)", reference.units, _g(reference.bsz.coef), _g(reference.bsz.exponent),
                         "", _g(reference.lr.coef), _g(reference.lr.exponent), "", "", ""])
    if rows or not no_search:
        blocks.append(("table", header, rows) if rows else
                      ("p", "**No law could be fitted**: the warnings at the end say which budgets and how many "
                            "runs are missing."))
    return blocks + [("p", f"**{family}**: {why}.") for family, why in no_search.items()]


def _band_against_bowl(analysis: Analysis) -> list[Block]:
    """How much narrower the bowl's exponent intervals are than the band's, where a family has both."""
    band, bowl = Band.name, Bowl.name
    comparison = []
    for family, fits in analysis.laws.items():
        if {band, bowl} <= fits.keys():
            for target, name in (("bsz", "α"), ("lr", "β")):
                laws = {e: getattr(fits[e], target) for e in (band, bowl)}
                widths = {e: np.diff(law.exponent_ci)[0] for e, law in laws.items()}
                ratio = _g(widths[band] / widths[bowl], 2) if all(exponent_identified(law.exponent_ci) for law in laws.values()) else \
                    "not comparable (an exponent is not identified)"
                comparison.append([family, name, _g(widths[band]), _g(widths[bowl]), ratio])
    if not comparison:
        return []
    return [("h", 3, "Band against bowl"),
            ("p", "Width of the 95% interval of each exponent; the ratio is how many times more "
                  "precise the bowl is on this sweep (its square: how many times fewer trials it "
                  "needs for the band's precision)."),
            ("table", [FAMILY, "exponent", f"{band} width", f"{bowl} width", f"{band} / {bowl}"], comparison)]


def _per_budget(analysis: Analysis) -> list[Block]:
    """Per family, each budget's runs and every estimator's optimum, residuals and flags side by side."""
    blocks: list[Block] = []
    for family, fits in analysis.laws.items():
        blocks.append(("h", 3, f"{family}: per budget"))
        merged = None
        for fit in fits.values():
            t = fit.budgets.set_index(["budget", "group"])
            if merged is None:
                merged = {b: [_g(b[0]), b[1] or "-", str(r.runs), str(r.finished), str(r.set_aside),
                              str(r.near_optimal), _g(r.best_loss, 4)] for b, r in t.iterrows()}
            for b in merged:
                if b in t.index:
                    r = t.loc[b]
                    merged[b] += [_ci(r.lr_opt, (r.lr_lo, r.lr_hi)), _ci(r.bsz_opt, (r.bsz_lo, r.bsz_hi)),
                                  f"{_g(r.get('lr_resid', math.nan), 2)} / {_g(r.get('bsz_resid', math.nan), 2)}",
                                  r.edge or ""]
                else:
                    merged[b] += ["-", "-", "-", "not fitted"]
        header = ["budget", "group", "runs", "finished", "set aside", "near-opt."]
        header += ["best loss"] + [f"{e} {q}" for e in fits for q in ("LR*", "BSZ*", "resid. LR/BSZ", "edge")]
        blocks.append(("table", header, list(merged.values())))
    return blocks


def _loss(analysis: Analysis) -> list[Block]:
    if not analysis.loss:
        return []
    return [("h", 2, "Loss against compute"),
            ("p", "Best loss of each budget fitted as L(C) = E + A·C^-α (Huber loss on log residuals, "
                  "several starts; intervals: parametric bootstrap at the residual scale, Student-t with "
                  "B-3 degrees of freedom). In bits per byte where runs record their bytes per unit, "
                  "else in nats per unit (token losses are never relabelled as per byte). A family with three budgets "
                  "only gets L(C) = A·C^-α (E = 0, least squares in log-log, Student-t with one degree of "
                  "freedom): the local slope, not the floor."),
            ("table", [FAMILY, "loss in", "E", "A", "α", "budgets", "max |log resid.|"],
             [[family, f.label, _floor_cell(f), _factor_ci(f.a, f.a_ci), _exponent_ci(f.alpha, f.alpha_ci),
               str(len(f.budgets)), _g(float(np.abs(f.residuals).max()), 2)]
              for family, f in analysis.loss.items()])]


def _seed_noise(analysis: Analysis) -> list[Block]:
    if not len(analysis.seed_noise):
        return []
    return [("h", 2, "Seed noise"),
            ("p", f"Configurations run with several seeds: the spread of their loss (max/min - 1) "
                  f"against the {analysis.tolerance:.2%} band. A spread at or above the band means the "
                  "band cannot tell runs apart from seed noise."),
            ("table", [FAMILY, "budget", "group", "LR", "BSZ", "seeds", "mean loss", "spread", "sd",
                       "spread / band"],
             [[r[FAMILY], _g(r["budget"]), r["group"] or "-", _g(r["lr"]), _g(r["bsz"], 4), str(r["seeds"]),
               _g(r["mean_loss"], 4), f"{r['spread']:.2%}", f"{r['sd']:.2%}", _g(r["vs_band"], 2)]
              for _, r in analysis.seed_noise.iterrows()])]


def _extrapolation(recipes: dict[str, dict[float, Extrapolation | str]]) -> list[Block]:
    """The recipe at each target where its verdict allows one, and the notes of those that could not be planned."""
    rows, notes = [], []
    for family, found in recipes.items():
        for target, e in found.items():
            if isinstance(e, str):  # e.g. a target beyond the ladder's models
                notes.append(f"{family} at {target:.3g}: {e}")
                continue
            if not e.verdict.usable:  # no numbers a user could take for a recipe: --force writes them
                rows.append([family, _g(target), e.estimator, e.verdict.level, *["-"] * 6])
                continue
            rows.append([family, _g(target), e.estimator, e.verdict.level, str(e.lr), f"{e.bsz} {e.units}",
                         str(e.steps) if e.steps else "-", str(e.plan.name) if e.plan is not None else "-",
                         str(e.loss) if e.loss else "-", str(e.bpb) if e.bpb else "-"])
            if e.note:
                notes.append(e.note)
    blocks: list[Block] = []
    if rows or notes:
        blocks.append(("h", 2, "Extrapolation"))
        blocks.append(("p", "The recipe at each target where its verdict allows one (intervals with their factor "
                            "width); a law that is not usable there gets no numbers (the first section says why; "
                            "`python -m analysis extrapolate --force` writes them anyway)."))
    if rows:
        blocks.append(("table", [FAMILY, "budget", "law", "verdict", "LR", "BSZ", "steps", "model",
                                 "loss (nats/unit)", "bpb"], rows))
    return blocks + [("p", f"Note: {note}.") for note in dict.fromkeys(notes)]


def _allocation(optimal: OptimalStudy | None, files: dict[str, list[Path]], out: Path) -> list[Block]:
    """Per family with an isoFLOP design, the compute-optimal model size by approaches 2 and 3 (the numbers
    of ``python -m analysis optimal``), with its figures; nothing when no family has such a design."""
    if optimal is None or not optimal.families:
        return []
    blocks: list[Block] = [
        ("h", 2, "Compute-optimal model size"),
        ("p", "Per family whose runs form an isoFLOP design (3 or more model sizes at 2 or more budgets; at each "
              "size its best configuration, every seed kept). *Approach 2*: per budget, the vertex of a robust "
              "parabola of loss in ln N, a bound where fewer than 2 sizes lie on one side of it; then "
              "N_opt = G·C^a through the vertices that are values. *Approach 3*: L(N, D) = E + A/N^α + B/D^β fitted "
              "to every run by a Huber loss (δ = 1e-3) summed over log-loss residuals, E bounded by the smallest "
              "loss; a = β/(α+β). Intervals: 95% bootstrap, runs resampled within budgets. *Misallocated*: the "
              "share of the target's compute that approach 2's N_opt buys nothing with under approach 3's L "
              "(flagged above 2%). The numbers are in `optimal/optimal.json`.")]
    for family, o in optimal.families.items():
        blocks += [("h", 3, f"{family}: compute-optimal model size"), ("p", o.description() + "."),
                   ("table", *o.vertex_table()), ("table", *o.parameter_table()), ("p", o.convergence() + "."),
                   ("table", *o.target_table()), ("list", o.comparison_lines())]
        blocks += [("img", files[name][0].relative_to(out), f"{family}: {what} (PDF: {files[name][1].relative_to(out)})")
                   for name, what in ((f"isoflops_{family}", "loss against model size per budget"),
                                      (f"n_opt_{family}", "compute-optimal model size against compute"))]
    if optimal.skipped:
        blocks.append(("list", [f"{family} not fitted: {why}" for family, why in optimal.skipped.items()]))
    if optimal.warnings:
        blocks.append(("list", optimal.warnings))
    return blocks


def _figures(figures: dict[str, list[Path]], out: Path) -> list[Block]:
    return [("h", 2, "Figures")] + [("img", paths[0].relative_to(out), f"{name} (PDF: {paths[1].relative_to(out)})")
                                    for name, paths in figures.items()]


def _warnings(analysis: Analysis) -> list[Block]:
    return [("h", 2, "Warnings"), ("list", analysis.warnings)] if analysis.warnings else []


def _recipes(analysis: Analysis, family: str, targets: list[float], limits: Limits,
             source: str) -> dict[float, Extrapolation | str]:
    found: dict[float, Extrapolation | str] = {}
    for target in targets:
        try:
            found[target] = extrapolate(analysis, family, target, limits=limits, source=source)
        except ValueError as err:
            found[target] = str(err)
    return found


def usable_range(card, limits: Limits, points: int = 61) -> tuple[float, float] | None:
    """The budgets, from the smallest fitted to ``max_extrapolation`` past the largest, at which the
    verdict (on the card's own intervals) is not "not usable"; None if there are none."""
    lo, hi = card.fitted_range
    grid = np.geomspace(lo, hi * limits.max_extrapolation, points)
    ok = [float(c) for c in grid if judge(card, float(c), limits).usable]
    return (min(ok), max(ok)) if ok else None


def _supports(analysis: Analysis, recipes: dict[str, dict], limits: Limits, source: str, no_search: dict[str, str],
              sizes_only: bool) -> list[Block]:
    """The report's first section: per family, the verdict of its default law at each target, with
    every reason; the range where it is usable; and the recipe where it is. Families without an LR x BSZ
    search (``no_search``) have no law to judge; ``sizes_only``: the allocation fits still give a model size."""
    blocks: list[Block] = [("h", 2, "What this study supports")]
    blocks += [("p", f"**{family}**: {why}.") for family, why in no_search.items()]
    if not analysis.laws:
        return blocks + [("p", "**No hyperparameter law**: the model size alone (*Compute-optimal model size*)."
                          if sizes_only else "**Nothing**: no law could be fitted (the warnings at the end say why).")]
    blocks.append(("p", "The verdict of `aunet.verdict.judge` on each family's default law (the bowl where it "
                        "could be fitted, else the band) at each target: *usable*, *use with care* or *not usable*, "
                        "with every reason (README: When a law is usable). `python -m analysis extrapolate` "
                        "refuses a recipe that is not usable."))
    for family, found in recipes.items():
        card = law_card(analysis, family, source=source)
        lo, hi = card.fitted_range
        verdicts = {t: e.verdict for t, e in found.items() if not isinstance(e, str)}
        summary = ", ".join(f"{v.level} at {t / hi:.3g}x" for t, v in verdicts.items()) or "no target could be planned"
        blocks.append(("h", 3, f"{family} ({card.estimator} law): {summary}"))
        span = usable_range(card, limits)
        facts = [f"Fitted on {len(card.budgets)} budgets from {_g(lo)} to {_g(hi)} FLOPs "
                 f"({math.log10(hi / lo):.2g} decades).",
                 "Usable range: " + (f"{_g(span[0])} to {_g(span[1])} FLOPs." if span else
                                     "none: at every budget from the smallest fitted one to "
                                     f"{limits.max_extrapolation:g}x the largest, some reason refuses the law.")]
        blocks.append(("p", " ".join(facts)))
        for target, verdict in verdicts.items():
            items = [f"**{r.level}**: {r.text}" for r in verdict.reasons] + [f"note: {n}" for n in verdict.notes]
            blocks.append(("p", f"At {_g(target)} FLOPs ({target / hi:.3g}x the largest budget): **{verdict.level}**."))
            if items:
                blocks.append(("list", items))
            e = found[target]
            if verdict.usable:
                blocks.append(("table", ["quantity", "value [95% interval] (factor width)", "unit"],
                               [list(row) for row in e.rows()]))
    return blocks


def _isoflop_cell(row) -> str:
    """An iso-FLOP value with its interval; one that sits on its own bound says why: resampled runs can only
    lose the best run, so with few runs in the band the interval of their mean is one-sided."""
    cell = f"{_g(row['value'], 4)} [{_g(row['lo'], 4)}, {_g(row['hi'], 4)}]"
    if np.isfinite(row["lo"]) and not row["lo"] < row["value"] < row["hi"]:
        cell += f" (one-sided: {int(row['runs'])} run(s) in the band)"
    return cell


def _equal_compute(analysis: Analysis) -> list[Block]:
    """Families side by side at each budget they share: bits per byte of their near-optimal runs (the
    iso-FLOP value, with its interval), which one is ahead, and whether the intervals separate them.
    Whether each family's intervals include seed noise is said, since a bootstrap over runs cannot see it."""
    curves = analysis.isoflop
    bpb = curves[curves["metric"] == "bpb"] if len(curves) else curves
    families = list(dict.fromkeys(bpb[FAMILY])) if len(bpb) else []
    if len(families) < 2:
        return []
    rows = []
    for budget, at in bpb.groupby("budget"):
        if at[FAMILY].nunique() < 2:
            continue
        at = at.sort_values("value")
        first, second = at.iloc[0], at.iloc[1]
        separated = first["hi"] < second["lo"]
        values = {r[FAMILY]: _isoflop_cell(r) for _, r in at.iterrows()}
        rows.append([_g(budget), *(values.get(f, "-") for f in families), first[FAMILY],
                     f"{second['value'] / first['value'] - 1:.2%}", "yes" if separated else "no (overlap)"])
    if not rows:
        return []
    seed_sd = bpb.groupby(FAMILY, sort=False)["seed_sd"].first()
    measured = [f"{sd:.1%} ({family})" for family, sd in seed_sd.items() if np.isfinite(sd)]
    unmeasured = [family for family, sd in seed_sd.items() if not np.isfinite(sd)]
    notes = []
    if measured:
        notes.append(f"Intervals include seed spread sd = {', '.join(measured)}: how far a run's bits per byte "
                     "moves between seeds, pooled over the family's configurations run with several seeds, scaled "
                     "to the runs each value averages and added to the bootstrap's half-widths in quadrature "
                     "(log terms).")
    if unmeasured:
        notes.append(f"The intervals of {', '.join(unmeasured)} do not include seed noise: no configuration was "
                     "run with several seeds, and the bootstrap says which runs are near-optimal, not how far "
                     "another seed would move them.")
    return [("h", 2, "At equal compute"),
            ("p", "Bits per byte on the same held-out bytes at each budget (mean of the near-optimal runs, "
                  f"{analysis.tolerance:.0%} band; bootstrap intervals over the runs). 'Gap': how much worse the "
                  "second family is; 'separated': the intervals do not overlap."),
            ("table", ["budget", *families, "ahead", "gap", "separated"], rows),
            ("p", " ".join(notes)), *_ranking(bpb)]


def _ranking(bpb) -> list[Block]:
    """Three or more families (a splitting-rule study): ``analysis.isoflop.ranking`` as a list and a table."""
    orders, places = ranking(bpb)
    if not orders:
        return []
    budgets = [budget for budget, _ in orders]

    def cell(place: tuple[int, float, bool] | None) -> str:
        if place is None:
            return "-"
        rank, gap, called = place
        return str(rank) if rank == 1 else f"{rank}, +{gap:.1%}{' (called)' if called else ''}"

    rows = [[family, *(cell(at.get(b)) for b in budgets), f"{np.mean([r for r, _, _ in at.values()]):.1f}"]
            for family, at in places.items()]
    return [("h", 3, "Ranking"),
            ("p", "Each budget's families from best to worst bits per byte: '<' where the intervals of two neighbours "
                  "do not overlap (the data calls the step), '≈' where they do (seed noise and the choice of "
                  "near-optimal runs could reverse it)."),
            ("list", [f"{_g(budget)}: {' '.join(chain)}" for budget, chain in orders]),
            ("p", "Rank at each budget, and how much worse than that budget's leader; 'called': the interval lies "
                  "wholly above the leader's. Families by mean rank."),
            ("table", ["family", *(f"rank at {_g(b)}" for b in budgets), "mean rank"], rows)]


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, *rest in blocks:
        if kind == "h":
            out.append("#" * rest[0] + " " + rest[1])
        elif kind == "p":
            out.append(rest[0])
        elif kind == "table":
            header, rows = rest

            def line(cells: list[str]) -> str:
                return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

            out.append("\n".join([line(header), line(["---"] * len(header)), *map(line, rows)]))
        elif kind == "img":
            out.append(f"![{rest[1]}]({rest[0]})\n\n*{rest[1]}*")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in rest[0]))
    return "\n\n".join(out) + "\n"


def render_html(blocks: list[Block]) -> str:
    esc = html.escape
    body = []
    for kind, *rest in blocks:
        if kind == "h":
            body.append(f"<h{rest[0]}>{esc(rest[1])}</h{rest[0]}>")
        elif kind == "p":
            body.append(f"<p>{esc(rest[0]).replace('`', '')}</p>")
        elif kind == "table":
            header, rows = rest
            cells = "".join(f"<th>{esc(str(c))}</th>" for c in header)
            lines = "".join("<tr>" + "".join(f"<td>{esc(str(c)).replace('`', '')}</td>" for c in r) + "</tr>"
                            for r in rows)
            body.append(f"<table><thead><tr>{cells}</tr></thead><tbody>{lines}</tbody></table>")
        elif kind == "img":
            body.append(f'<figure><img src="{esc(str(rest[0]))}" style="max-width:100%">'
                        f"<figcaption>{esc(rest[1])}</figcaption></figure>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in rest[0]) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Scaling analysis</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(results, out, *, fmt: str = "md", targets: list[float] | None = None, source: str | None = None,
                 limits: Limits | None = None, optimal: OptimalStudy | None = None, **fit_options: Any) -> Path:
    """Write ``out``/report.md (or .html) for an :class:`Analysis`, or for anything ``analyse`` reads.

    ``fit_options`` go to :func:`analysis.fits.analyse` (tolerance, n_boot, seed, bsz_in). ``optimal``: the
    allocation fits (:func:`analysis.optimal.optimal_study`, at ``targets``); by default they are fitted to
    the analysis's table, where seeds are averaged (the command line fits them to every seed's run).
    """
    if fmt not in ("md", "html"):
        raise ValueError(f"report format {fmt!r} must be 'md' or 'html'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    analysis = results if isinstance(results, Analysis) else analyse(results, **fit_options)
    label = source or (str(results) if isinstance(results, (str, Path)) else "a results table")
    laws = write_laws(analysis, out / "laws", label)
    figures = all_figures(analysis, out / "figures")
    targets = targets or default_targets(analysis)
    if optimal is None:
        optimal = optimal_study(analysis.results, targets=targets, n_boot=fit_options.get("n_boot", N_BOOT),
                                seed=fit_options.get("seed", 0))
    optimal_files = write_optimal(optimal, out / "optimal", label)[1] if optimal.families else {}
    blocks = build(analysis, out, targets=targets, source=label, laws=laws, figures=figures, limits=limits,
                   optimal=optimal, optimal_files=optimal_files)
    path = out / f"report.{fmt}"
    path.write_text(render_markdown(blocks) if fmt == "md" else render_html(blocks))
    return path
