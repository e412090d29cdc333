"""Rewrite a law file of schema 1 (coefficient, exponent, units, and a ``provenance`` block with its
budgets and 95% intervals) or schema 2 (no regime) in the current schema (``aunet.laws.LawCard``).

    python scripts/upgrade_law_file.py OLD.json NEW.json --family aunet2 --source "<what it was fitted on>" \
        --ratio 0.2 --seq-len 256 --vocab 259

The fitted runs' regime (their data-to-model ratio, sequence length and vocabulary) was not kept by
either schema: give it from the study's config, or the new file says it is not recorded and the
verdict cannot check a run against it.

A schema-1 file kept no covariance: the one of (ln coef, exponent) is rebuilt the way a least-squares
fit makes it, with the level at the mean log budget uncorrelated with the slope. Per-budget flags,
the dispersion and the seed noise were not recorded; the new file says so in its warnings, and the
verdict counts none of them against (or for) the law. A file without a provenance block cannot be
upgraded: refit it (``python -m analysis fit ... --law-out``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from aunet.laws import LAW_SCHEMA, BudgetFacts, FittedLaw, LawCard, Regime
from aunet.record import check_convention

Z = 1.959963984540054


def fitted(law: dict, ci: dict, name: str, budgets: list[float]) -> FittedLaw:
    exp_lo, exp_hi = ci[f"{name}_exponent"]
    coef_lo, coef_hi = ci[f"{name}_coef"]
    var_b = ((exp_hi - exp_lo) / (2 * Z)) ** 2
    var_a = ((math.log(coef_hi) - math.log(coef_lo)) / (2 * Z)) ** 2
    mean = sum(math.log(b) for b in budgets) / len(budgets)
    cov = -mean * var_b
    var_a = max(var_a, mean * mean * var_b)
    return FittedLaw(float(law["coef"]), float(law["exponent"]), (coef_lo, coef_hi), (exp_lo, exp_hi),
                     (var_a, cov, var_b), None, len(budgets) - 2)


def regime_of(family: str, ratio: float | None, seq_len: int | None, vocab: int | None) -> Regime:
    given = [n for n, v in (("ratio", ratio), ("sequence", seq_len), ("vocabulary", vocab)) if v is not None]
    missing = [n for n in ("ratio", "sequence", "vocabulary") if n not in given]
    origin = "given when the file was upgraded" + (f" ({', '.join(missing)} not recorded)" if missing else "")
    return Regime(family, (ratio,) if ratio is not None else (), None, (seq_len,) if seq_len else (),
                  (vocab,) if vocab else (), None, origin)


def upgrade(old: dict, family: str, source: str, convention: str, regime: Regime) -> LawCard:
    if old.get("schema") == "aunet.law/2":  # everything but the regime
        return LawCard.from_dict({**old, "schema": LAW_SCHEMA, "regime": regime.__dict__})
    provenance = old.get("provenance")
    if not provenance or "intervals_95" not in provenance or "budgets" not in provenance:
        raise ValueError("this law file has no provenance block with budgets and intervals: refit it with "
                         "python -m analysis fit <results> --family <family> --law-out <file>")
    budgets = [float(b["budget"]) for b in provenance["budgets"]]
    facts = tuple(BudgetFacts(float(b["budget"]), int(b["finished"]), float(b["best_lr"]), float(b["best_bsz"]))
                  for b in provenance["budgets"])
    ci = provenance["intervals_95"]
    note = (f"upgraded from schema 1 (fitted at commit {provenance.get('commit', '?')}, "
            f"{provenance.get('date', 'date not recorded')}): per-budget flags, dispersion and seed noise were not "
            "recorded")
    return LawCard(family=family, estimator=provenance.get("estimator", "band"), units=old["units"],
                   convention=check_convention(convention), tolerance=0.01, level=0.95,
                   lr=fitted(old["lr"], ci, "lr", budgets), bsz=fitted(old["bsz"], ci, "bsz", budgets),
                   budgets=facts, seed_spread=None, loss=None, warnings=(note,), source=source,
                   source_sha256="not recorded", toolkit="schema 1", regime=regime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--family", required=True)
    parser.add_argument("--source", required=True, help="what the law was fitted on (a study, a table)")
    parser.add_argument("--convention", default="spent")
    parser.add_argument("--ratio", type=float, help="the fitted runs' data-to-model ratio (LLaMA-3-token units)")
    parser.add_argument("--seq-len", type=int, help="the fitted runs' sequence length, in input units")
    parser.add_argument("--vocab", type=int, help="the fitted runs' vocabulary (259 for byte models)")
    args = parser.parse_args(argv)
    try:
        card = upgrade(json.loads(Path(args.old).read_text()), args.family, args.source, args.convention,
                       regime_of(args.family, args.ratio, args.seq_len, args.vocab))
    except (ValueError, KeyError) as err:
        print(f"error: {args.old}: {err}", file=sys.stderr)
        return 2
    card.write(args.new)
    print(f"{args.old} -> {args.new} ({LawCard.read(args.new).schema})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
