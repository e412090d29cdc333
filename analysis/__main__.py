"""Command line: ``python -m analysis {fit,report,extrapolate,validate,import,optimal}``.

Results come from a path (a study's output directory or ledger, a results
CSV/Parquet/JSONL, a folder of record.json files), ``mlflow:<experiment>`` with
``--tracking-uri``, or a study name: ``outputs/sweeps/<study>`` (where
``python sweep.py -m`` writes), else that study's rows in the default results
(``$AUNET_RESULTS``, else ``outputs/sweeps``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

import pandas as pd

from analysis.bootstrap import LEVEL
from analysis.cards import write_law, write_laws
from analysis.columns import FLOPS_PER_PARAM_TOKEN, UNITS
from analysis.estimators import ESTIMATORS
from analysis.external import BSZ_UNITS, import_table
from analysis.extrapolate import extrapolate
from analysis.fits import Analysis, analyse
from analysis.holdout import validate_holdout
from analysis.hyper_laws import BSZ_IN
from analysis.load import (
    ALLOCATION_ONLY,
    BUDGET_TOLERANCE,
    DIVERGED_ABOVE,
    FAMILY,
    AnalysisWarning,
    allocation_only,
    budget_groups,
    load_results,
    validate_results,
)
from analysis.optimal import N_BOOT, optimal_study, write_optimal
from analysis.readers import LEDGER, TABLE_SUFFIXES
from analysis.report import default_targets, write_report
from analysis.status import not_ended
from aunet.laws import why_not_identified
from aunet.record import BUDGET_CONVENTIONS
from aunet.verdict import Limits

SWEEPS = Path("outputs/sweeps")  # where `python sweep.py -m` writes one folder per study


def default_results(study: str | None = None) -> str:
    """``$AUNET_RESULTS``, else ``outputs/sweeps``; ``study``: the word that named no path, for the error."""
    given = os.environ.get("AUNET_RESULTS")
    if given and not given.startswith("mlflow:") and not Path(given).exists():
        raise ValueError(f"results path {given} (AUNET_RESULTS) does not exist")
    for candidate in (given, str(SWEEPS)):
        if candidate and (candidate.startswith("mlflow:") or Path(candidate).exists()):
            return candidate
    if study is not None:
        raise ValueError(f"results path {study} does not exist, nor is it a study: there is no {SWEEPS / study} and "
                         "no default results to find its runs in (set AUNET_RESULTS)")
    raise ValueError(f"no results given: pass a results path (or --results), set AUNET_RESULTS, or run from "
                     f"the directory holding {SWEEPS} (python sweep.py -m)")


def _names_a_path(source: str) -> bool:
    """A source spelled as a path (a folder or a results file), never a study's name."""
    return "/" in source or os.sep in source or Path(source).suffix.lower() in (*TABLE_SUFFIXES, Path(LEDGER).suffix)


def resolve(source: str | None, study: str | None, tracking_uri: str | None,
            diverged_above: float | None = DIVERGED_ABOVE, budget_convention: str | None = None,
            budget_tolerance: float = BUDGET_TOLERANCE) -> pd.DataFrame:
    """A path or mlflow:<experiment> is the results; any other word is a study (its folder, or its rows)."""
    if source is not None and not source.startswith("mlflow:") and not Path(source).exists():
        if study is not None or _names_a_path(source):
            raise ValueError(f"results path {source} does not exist")
        if (SWEEPS / source).is_dir():
            source, study = str(SWEEPS / source), None
        else:
            source, study = default_results(study=source), source
    return load_results(source or default_results(), tracking_uri=tracking_uri, study=study,
                        diverged_above=diverged_above, budget_convention=budget_convention,
                        budget_tolerance=budget_tolerance)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="near-optimal band, fraction of the best loss (0.01 as the paper, 0.0025 as DeepSeek)")
    parser.add_argument("--bootstrap", type=int, default=N_BOOT, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bsz-in", choices=BSZ_IN, default="units",
                        help="fit batch size in input units (bytes or tokens, as the paper) or in bytes")
    _loading(parser)


def _loading(parser: argparse.ArgumentParser) -> None:
    """How the results are read: which study's runs, which are set aside, which compute is a budget."""
    parser.add_argument("--study", help="keep only this study's runs")
    parser.add_argument("--tracking-uri", help="MLflow store for mlflow:<experiment> sources")
    parser.add_argument("--diverged-above", type=_diverged_rule, default=DIVERGED_ABOVE,
                        help=f"set aside finished runs whose loss exceeds this multiple of their budget's best "
                             f"(default {DIVERGED_ABOVE}; 'none' keeps every finished run)")
    parser.add_argument("--budget-convention", choices=sorted(BUDGET_CONVENTIONS),
                        help="fit every run against its compute in this convention (needed when a family mixes them)")
    parser.add_argument("--budget-tolerance", type=_fraction, default=BUDGET_TOLERANCE,
                        help="runs whose compute agrees within this fraction are one budget (default %(default)g)")



def _diverged_rule(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _load(args: argparse.Namespace, source: str | None = None) -> pd.DataFrame:
    return resolve(source if source is not None else args.source, args.study, args.tracking_uri, args.diverged_above,
                   args.budget_convention, args.budget_tolerance)


def _options(args: argparse.Namespace) -> dict:
    return {"tolerance": args.tolerance, "n_boot": args.bootstrap, "seed": args.seed, "bsz_in": args.bsz_in,
            "diverged_above": args.diverged_above, "budget_tolerance": args.budget_tolerance}


def cmd_fit(args: argparse.Namespace) -> Analysis:
    result = analyse(_load(args), families=args.family, **_options(args))
    if not result.laws:
        raise ValueError("no law could be fitted:\n" + "\n".join(result.warnings))
    source = args.source or default_results()
    if args.law_out:
        if len(result.laws) != 1:
            raise ValueError(f"--law-out writes one law; choose one family with --family "
                             f"(fitted: {sorted(result.laws)})")
        family = next(iter(result.laws))
        card = write_law(result, family, args.estimator, source, args.law_out)
        print(f"{family} {card.estimator} law -> {args.law_out} (use it as law={args.law_out})")
    paths = write_laws(result, Path(args.out) if args.out else study_folder(source) / "laws", source)
    for family, fits in result.laws.items():
        for estimator, fit in fits.items():
            path = paths[family, estimator]
            how = ESTIMATORS[estimator].describe(fit.tolerance)
            print(f"{family} [{estimator}, {how}, BSZ in {fit.units}] -> {path}")
            for name, law in (("BSZ", fit.bsz), ("LR", fit.lr)):
                print(f"  {name:<3} = {_estimate(law.coef, law.coef_ci, False)}·C^"
                      f"{_estimate(law.exponent, law.exponent_ci, True)}   exponent {_interval(law.exponent_ci, True)}"
                      f"   coef {_interval(law.coef_ci, False)}   dispersion {law.dispersion:.2f}")
            columns = ["budget", "group", "finished", "set_aside", "near_optimal", "best_loss", "lr_opt",
                       "bsz_opt", "lr_resid", "bsz_resid", "edge"]
            shown = [c for c in columns if c != "group" or fit.budgets["group"].ne("").any()]
            print(fit.budgets[shown].to_string(index=False, float_format="%.4g"))
    for family, loss in result.loss.items():
        floor = loss.why_floor_not_identified()
        print(f"{family}: loss ({loss.label}) = {'?' if floor else f'{loss.e:.4g}'} + "
              f"{_estimate(loss.a, loss.a_ci, False)}·C^-{_estimate(loss.alpha, loss.alpha_ci, True)}  (alpha "
              f"{_interval(loss.alpha_ci, True)}; A {_interval(loss.a_ci, False)}"
              + (f"; E not identified: {floor})" if floor else ")"))
    return result


def _estimate(value: float, ci: tuple[float, float], exponent: bool) -> str:
    """A fitted exponent or coefficient, or "?" where its interval does not identify it (aunet.laws' rule,
    the report's and the law file's): such a value is no estimate."""
    if why_not_identified(ci, exponent):
        return "?"
    return f"{value:.4f}" if exponent else f"{value:.4g}"


def _interval(ci: tuple[float, float], exponent: bool) -> str:
    """An exponent's or coefficient's interval, as "not identified (why: ...)" where it does not identify it."""
    spec = ".4f" if exponent else ".3g"
    text = f"{LEVEL:.0%} CI [{ci[0]:{spec}}, {ci[1]:{spec}}]"
    why = why_not_identified(ci, exponent)
    return f"not identified ({why}: {text})" if why else text


def cmd_report(args: argparse.Namespace) -> Analysis:
    table = _load(args)
    result = analyse(table, **_options(args))
    source = args.source or default_results()
    targets = args.budgets or default_targets(result)
    optimal = optimal_study(table, targets=targets, n_boot=args.bootstrap, seed=args.seed)
    path = write_report(result, args.out or study_folder(source) / "report", fmt=args.format, targets=targets,
                        source=source, limits=Limits(max_extrapolation=args.max_extrapolation), optimal=optimal)
    print(f"report written to {path}")
    return result


class Refused(Exception):
    """A recipe the verdict does not support: exit 3 with one line naming the reasons."""


def cmd_extrapolate(args: argparse.Namespace) -> Analysis:
    if args.source and args.results:
        raise ValueError(f"give the results once: {args.source!r} or --results {args.results!r}")
    source = args.source or args.results
    result = analyse(_load(args, source), families=[args.family], **_options(args))
    recipe = extrapolate(result, args.family, args.budget, estimator=args.estimator, ratio=args.ratio,
                         limits=Limits(max_extrapolation=args.max_extrapolation), source=source or default_results(),
                         n_boot=args.bootstrap, seed=args.seed)
    if not recipe.verdict.usable and not args.force:
        hints = ["--max-extrapolation takes a law farther, at your risk"] if recipe.verdict.has("extrapolation") else []
        hints.append("--force writes the recipe anyway, with this verdict at its top")
        raise Refused(f"{args.family}: {recipe.verdict.line()} ({'; '.join(hints)})")
    if args.format == "yaml":
        text = recipe.yaml()
        if args.out:  # the verdict on the terminal, not only in the file's comments
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text)
            print(f"{args.family}: {recipe.verdict.line()}")
            print(f"overrides written to {args.out}" + ("" if recipe.verdict.usable else
                                                        " (--force: this verdict heads the file)"))
        else:
            print(text, end="")
    else:
        print(recipe.text())
    return result


def study_folder(source: str) -> Path:
    """Where a study's analysis outputs go: its folder (or the folder of its results file); a source
    without one (mlflow:, a study's rows in a shared table) needs --out."""
    path = Path(source)
    if source.startswith("mlflow:") or not path.exists():
        if (SWEEPS / source).is_dir():
            return SWEEPS / source
        raise ValueError(f"{source!r} has no study folder to write into; give --out")
    return path if path.is_dir() else path.parent


def _number(accept, what: str):
    """An argparse type: a float for which ``accept`` holds, else one line saying what is expected."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"{text!r} must be {what}")
        return value
    return parse


_factor_above_one = _number(lambda v: v > 1, "a number above 1 (a factor past the largest fitted budget, e.g. 100)")
_target_budget = _number(lambda v: v > 0, "a positive number of FLOPs, e.g. 1e22")
_fraction = _number(lambda v: 0 <= v < 1, "a fraction in [0, 1), e.g. 0.01 for 1%")
_positive = _number(lambda v: v > 0, "a positive number, e.g. 2048")


def _replicates(text: str) -> int:
    """An argparse type: a count of bootstrap replicates, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number of bootstrap replicates, 0 or more")
    return int(text)


def cmd_optimal(args: argparse.Namespace) -> list[str]:
    table = _load(args)
    source = args.source or default_results()
    out = Path(args.out) if args.out else study_folder(source) / "optimal"  # refused before the fits, not after
    study = optimal_study(table, families=args.family, targets=args.target, n_boot=args.n_boot, seed=args.seed)
    if not study.families:
        raise ValueError("no family has an isoFLOP design to fit: "
                         + "; ".join(f"{family}: {why}" for family, why in study.skipped.items()))
    path, figures = write_optimal(study, out, source)
    print(study.text())
    print(f"\nwritten: {path}, and figures " + ", ".join(str(pngs[0].name) for pngs in figures.values())
          + " (with PDFs)")
    return study.warnings


def cmd_validate(args: argparse.Namespace) -> list[str]:
    checks = validate_holdout(_load(args), args.holdout, families=args.family, estimator=args.estimator,
                              **_options(args))
    print("\n\n".join(check.text() for check in checks))
    return []


def cmd_import(args: argparse.Namespace) -> list[str]:
    columns = dict(_pair(text) for text in args.column or [])
    statuses = dict(_pair(text, "--status", "crashed=failed") for text in args.status or [])
    path = import_table(args.table, args.out, columns=columns, units=args.units, bytes_per_unit=args.bytes_per_unit,
                        family=args.family, study=args.study, flops_per_param_token=args.flops_per_param_token,
                        status_map=statuses, budget_tolerance=args.budget_tolerance, bsz_unit=args.bsz_unit,
                        seq_len=args.seq_len)
    written = pd.read_csv(path)
    table = validate_results(written, origin=str(path), budget_tolerance=args.budget_tolerance)
    waiting = not_ended(written)
    left_out = f" (and {waiting}; left out of every budget until they end)" if waiting else ""
    print(f"{path}: {len(table)} runs{left_out}; budgets (runs whose compute agrees within "
          f"{args.budget_tolerance:.2%} are one):")
    for family, groups in budget_groups(table).groupby(FAMILY):
        print(f"  {family}: {len(groups)} budgets from {groups['budget'].min():.3g} to {groups['budget'].max():.3g}, "
              f"{groups['runs'].min()}-{groups['runs'].max()} runs each, compute spread absorbed up to "
              f"{groups['spread'].max():.3%}")
    print("statuses: " + ", ".join(f"{status} {n}" for status, n in table["status"].value_counts().items()))
    if args.bsz_unit == "sequences":
        lengths = ", ".join(f"{n:g}" for n in sorted(written["seq_len"].unique()))
        print(f"batch sizes counted in sequences, written in input units: x sequence length {lengths}")
    if allocation_only(table):
        print(f"{ALLOCATION_ONLY} (the runs have params and data, no LR or BSZ): fit the model size with "
              f"python -m analysis optimal {args.out}")
    else:
        print(f"analyse with: python -m analysis report {args.out}")
    return []


def _pair(text: str, flag: str = "--column", example: str = "loss=final_loss") -> tuple[str, str]:
    left, sep, right = text.partition("=")
    if not sep or not left or not right:
        raise ValueError(f"{flag} {text!r}: write {'OURS=THEIRS' if flag == '--column' else 'THEIRS=OURS'}, "
                         f"e.g. {flag} {example}")
    return (left.strip().lower(), right.strip()) if flag == "--status" else (left, right)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)  # the analysis keeps them; printed once below
        try:
            result = args.run(args)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except Refused as refused:
            print(f"refused: {refused}", file=sys.stderr)
            return 3
    for message in result if isinstance(result, list) else result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_fit, _add_report, _add_extrapolate, _add_validate, _add_import, _add_optimal):
        add(commands)
    return parser


def _source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", help="results path, mlflow:<experiment>, or a study name")


def _max_extrapolation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-extrapolation", type=_factor_above_one, default=Limits.max_extrapolation,
                        help="how far past the largest fitted budget a law may be taken (default %(default)gx)")


def _add_fit(commands: argparse._SubParsersAction) -> None:
    fit = commands.add_parser("fit", help="fit the hyperparameter laws and write them as law JSON files")
    _source(fit)
    fit.add_argument("--family", nargs="+", help="families to fit (default: all)")
    fit.add_argument("--out", help="directory for <family>_<estimator>.json law files (default: <study>/laws)")
    fit.add_argument("--law-out", help="also write the law of the one --family here (the training config's law=)")
    fit.add_argument("--estimator", choices=tuple(ESTIMATORS), help="for --law-out; default: bowl where it fits")
    _common(fit)
    fit.set_defaults(run=cmd_fit)


def _add_report(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser("report", help="write the Markdown/HTML report with figures")
    _source(report)
    report.add_argument("--out", help="output directory (default: <study>/report)")
    report.add_argument("--format", choices=("md", "html"), default="md")
    report.add_argument("--budgets", type=_target_budget, nargs="+",
                        help="extrapolation targets (default: 10x, 100x)")
    _max_extrapolation(report)
    _common(report)
    report.set_defaults(run=cmd_report)


def _add_extrapolate(commands: argparse._SubParsersAction) -> None:
    ex = commands.add_parser("extrapolate", help="LR, BSZ, model, data, steps and loss at a target budget")
    _source(ex)
    ex.add_argument("--results", help="the same as the positional source")
    ex.add_argument("--family", required=True)
    ex.add_argument("--budget", type=_target_budget, required=True, help="target compute in FLOPs, e.g. 1e22")
    ex.add_argument("--estimator", choices=tuple(ESTIMATORS), help="default: bowl where it fits, else band")
    ex.add_argument("--ratio", type=float,
                    help="data-to-model ratio of the big run, chosen by hand (default: the compute-optimal model where "
                         "the study swept model size at fixed compute, else the study's own ratio, which the law was "
                         "fitted at; another is weighed by the verdict)")
    _max_extrapolation(ex)
    ex.add_argument("--force", action="store_true",
                    help="write a recipe the verdict calls not usable (the verdict and its reasons head it)")
    ex.add_argument("--format", choices=("text", "yaml"), default="text")
    ex.add_argument("--out", help="with --format yaml: write the override file here")
    _common(ex)
    ex.set_defaults(run=cmd_extrapolate)


def _add_validate(commands: argparse._SubParsersAction) -> None:
    val = commands.add_parser("validate", help="fit below a held-out budget, predict it, compare with its trials")
    _source(val)
    val.add_argument("--holdout", type=float, required=True, help="the held-out budget in FLOPs (one of the study's)")
    val.add_argument("--family", nargs="+", help=f"{FAMILY} values to check (default: all with runs at the hold-out)")
    val.add_argument("--estimator", choices=tuple(ESTIMATORS), help="default: bowl where it fits, else band")
    _common(val)
    val.set_defaults(run=cmd_validate)


def _add_import(commands: argparse._SubParsersAction) -> None:
    imp = commands.add_parser("import", help="turn an external CSV/Parquet table of runs into a study folder")
    imp.add_argument("table", help="one row per run: family, compute (or params and tokens), lr, bsz, loss, units "
                                    "(without lr and bsz, with params: for the allocation fits alone)")
    imp.add_argument("--out", required=True, help="the study folder to write (results.csv)")
    imp.add_argument("--column", action="append", metavar="OURS=THEIRS",
                     help="map a column of the table to ours, e.g. --column loss=final_loss (repeatable)")
    imp.add_argument("--units", choices=UNITS, help="what lr/bsz/loss count, if no 'units' column")
    imp.add_argument("--bytes-per-unit", type=float, help="bytes per token, if no column (losses then also in bpb)")
    imp.add_argument("--family", help="the model family of every run, if no 'family' column")
    imp.add_argument("--study", help="the study name (default: the folder's name)")
    imp.add_argument("--flops-per-param-token", type=float, default=FLOPS_PER_PARAM_TOKEN,
                     help="compute from params N and tokens D as this x N x D (default 6)")
    imp.add_argument("--status", action="append", metavar="THEIRS=OURS",
                     help="read a status of the table as one of ours, e.g. --status crashed=failed (repeatable; "
                          "common names are mapped already: analysis.status.DEFAULT_STATUS_MAP)")
    imp.add_argument("--budget-tolerance", type=_fraction, default=BUDGET_TOLERANCE,
                     help="runs whose compute agrees within this fraction are one budget (default %(default)g)")
    imp.add_argument("--bsz-unit", choices=BSZ_UNITS, default="units",
                     help="what the table's bsz counts: input units (bytes or tokens, default) or sequences "
                          "(converted with --seq-len or a seq_len column)")
    imp.add_argument("--seq-len", type=_positive, help="input units per sequence, for --bsz-unit sequences")
    imp.set_defaults(run=cmd_import)


def _add_optimal(commands: argparse._SubParsersAction) -> None:
    opt = commands.add_parser("optimal", help="the compute-optimal model size from an isoFLOP study "
                                              "(Chinchilla's approaches 2 and 3), as optimal.json and figures")
    _source(opt)
    opt.add_argument("--family", nargs="+", help="families to fit (default: every family with an isoFLOP design; "
                                                 "a family named here that has none is an error)")
    opt.add_argument("--target", type=_target_budget, nargs="+",
                     help="compute in FLOPs to compare the fits at (default: 10x the largest budget)")
    opt.add_argument("--n-boot", type=_replicates, default=N_BOOT, help="bootstrap replicates (default %(default)s)")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--out", help="output directory (default: <study>/optimal)")
    _loading(opt)
    opt.set_defaults(run=cmd_optimal)


if __name__ == "__main__":
    sys.exit(main())
