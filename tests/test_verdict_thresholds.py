"""The verdict's thresholds at their boundaries and the exact words of its reasons (``aunet.verdict``): a law
exactly at a limit passes it, a hair beyond does not, and every number a reason prints is the one it judged."""

from __future__ import annotations

import dataclasses
import math

import pytest

from aunet.laws import BudgetFacts, FittedLaw, LawCard, Regime
from aunet.verdict import CARE, REFUSED, USABLE, Limits, Reason, Verdict, judge, regime_reasons

#: A flat, certain law: predictions have no spread, so only the reason under test speaks.
EXACT = FittedLaw(1e-3, -0.1, (5e-4, 2e-3), (-0.15, -0.05), (0.0, 0.0, 0.0), 1.0, 3)
BUDGETS = (1e18, 1e19, 1e20)
FITTED = Regime("aunet2", (10.0,), (40.0, 50.0), (8192,), (259,), (1.0, 1.0))


def card(**changes) -> LawCard:
    base = LawCard(family="aunet2", estimator="bowl", units="bytes", convention="spent", tolerance=0.01, level=0.95,
                   lr=EXACT, bsz=dataclasses.replace(EXACT, coef=1e3, exponent=0.3, exponent_ci=(0.25, 0.35)),
                   budgets=tuple(BudgetFacts(b, 16, 1e-3, 1e6) for b in BUDGETS), seed_spread=0.001, loss=None,
                   warnings=(), source="", source_sha256="0" * 64, toolkit="t", regime=FITTED)
    return dataclasses.replace(base, **changes)


def texts(verdict: Verdict) -> list[str]:
    return [r.text for r in verdict.reasons]


def test_the_exact_law_is_usable_and_notes_nothing():
    verdict = judge(card(), 1e21)
    assert verdict.level == USABLE and verdict.reasons == () and verdict.notes == ()


def test_three_budgets_over_exactly_one_decade_are_enough_and_fewer_are_not():
    one_decade = card(budgets=tuple(BudgetFacts(b, 16, 1e-3, 1e6) for b in (1e18, 3e18, 1e19)))
    assert judge(one_decade, 1e20).usable
    two = card(budgets=tuple(BudgetFacts(b, 16, 1e-3, 1e6) for b in (1e18, 1e20)))
    assert texts(judge(two, 1e20)) == ["fitted on 2 budgets over 2 decade(s) (1e+18 to 1e+20); a law needs 3 over 1 "
                                       "or more"]
    # budgets repeated (one per estimator row) count once
    repeated = card(budgets=(*card().budgets, BudgetFacts(1e20, 4, 1e-3, 1e6)))
    assert judge(repeated, 1e21).usable
    narrow = card(budgets=tuple(BudgetFacts(b, 16, 1e-3, 1e6) for b in (1e18, 2e18, 4e18, 9e18)))
    assert texts(judge(narrow, 1e19))[0].startswith("fitted on 4 budgets over 0.95 decade(s)")
    assert judge(narrow, 1e19, Limits(min_decades=0.9)).usable
    assert not judge(card(), 1e21, Limits(min_budgets=4)).usable


def test_a_target_up_to_the_extrapolation_limit_and_down_to_the_smallest_budget_is_within_reach():
    assert judge(card(), 1e22).usable and judge(card(), 1e18).usable
    far = judge(card(), 2e22)
    assert texts(far) == ["2e+22 is 2.3 decades past the largest fitted budget 1e+20 (at most 100x)"]
    assert far.reasons[0].kind == "extrapolation"
    below = judge(card(), 9e17)
    assert texts(below) == ["9e+17 is below the smallest fitted budget 1e+18"]
    assert judge(card(), 1e23, Limits(max_extrapolation=1000)).usable


def interval(width: float) -> dict[str, tuple[float, float, float]]:
    """LR and BSZ intervals of factor width ``width`` (hi / lo, exact in floating point)."""
    return {"lr": (2.0, 1.0, width), "bsz": (2e6, 1e6, 1e6 * width)}


def test_an_interval_up_to_twice_is_quiet_up_to_four_times_asks_for_care_and_wider_refuses():
    assert judge(card(), 1e21, intervals=interval(2.0)).reasons == ()
    care = judge(card(), 1e21, intervals=interval(4.0))
    assert care.level == CARE and [r.kind for r in care.reasons] == ["interval", "interval"]
    assert care.reasons[0].text == ("the 95% interval of LR at the target, [1, 4], spans a factor of 4 "
                                    "(above 2)")
    wide = judge(card(), 1e21, intervals=interval(4.2))
    assert wide.level == REFUSED and wide.reasons[1].text.startswith("the 95% interval of BSZ at the target")
    assert wide.reasons[1].text.endswith("spans a factor of 4.2 (at most 4)")
    # an interval that reaches zero or is not a number is no interval
    for bad in ((1.0, 0.0, 2.0), (1.0, -1.0, 2.0), (1.0, 0.5, math.inf), (1.0, 0.5, math.nan)):
        verdict = judge(card(), 1e21, intervals={"lr": bad, "bsz": (1e6, 1e6, 1e6)})
        assert verdict.level == REFUSED and verdict.reasons[0].kind == "interval"
    assert judge(card(), 1e21, Limits(width_care=3.0), intervals=interval(2.9)).reasons == ()


def test_the_cards_own_interval_is_used_without_one_given():
    spread = dataclasses.replace(EXACT, cov=(0.5, 0.0, 0.0))  # sd 0.71 in log: a factor of 16 at 95%
    verdict = judge(card(lr=spread), 1e21)
    assert verdict.level == REFUSED and "interval of LR" in verdict.reasons[0].text
    assert judge(card(level=0.5, lr=dataclasses.replace(EXACT, cov=(0.1, 0.0, 0.0))), 1e21).reasons == ()


def test_limits_are_checked_when_made():
    assert Limits(max_extrapolation=1.01).max_extrapolation == 1.01
    assert Limits(width_care=2.0, width_refuse=2.0).width_refuse == 2.0
    for bad in (dict(width_care=1.0), dict(width_care=5.0), dict(width_care=3.0, width_refuse=2.5)):
        with pytest.raises(ValueError, match=r"interval widths must satisfy 1 < width_care"):
            Limits(**bad)
    with pytest.raises(ValueError, match=r"^max_extrapolation 'x' must be a number above 1"):
        Limits(max_extrapolation="x")


@pytest.mark.parametrize("target", ["1e21", None, math.inf, -1.0])
def test_a_target_that_is_not_a_positive_number_is_refused_before_judging(target):
    with pytest.raises(ValueError, match="must be a positive number of FLOPs"):
        judge(card(), target)


def with_flags(*flags: str) -> LawCard:
    budgets = card().budgets
    return card(budgets=(dataclasses.replace(budgets[0], flags=flags), budgets[1],
                         dataclasses.replace(budgets[2], flags=flags)))


def test_a_flag_names_every_budget_it_was_raised_at():
    verdict = judge(with_flags("lr_ceiling"), 1e21)
    assert verdict.level == REFUSED and verdict.reasons[0].kind == "flag"
    assert verdict.reasons[0].text.endswith("at budget(s) 1e+18, 1e+20: the optimum is bounded from one side only")
    flat = judge(with_flags("band_fills_box"), 1e21)
    assert flat.level == CARE and flat.reasons[0].text.endswith("at budget(s) 1e+18, 1e+20")


def test_dispersion_at_a_limit_passes_it_and_an_unfitted_scatter_is_not_judged():
    def lr(dispersion, dof=3):
        return card(lr=dataclasses.replace(EXACT, dispersion=dispersion, dof=dof))

    assert judge(lr(2.0), 1e21).reasons == ()
    assert judge(lr(3.0), 1e21).level == CARE
    assert texts(judge(lr(3.01), 1e21)) == ["the budgets scatter around the LR law 3.01x their own noise (at most 3)"]
    assert texts(judge(lr(2.5), 1e21)) == ["the budgets scatter around the LR law 2.5x their own noise (above 2)"]
    assert judge(lr(9.0, dof=0), 1e21).reasons == ()  # two budgets: no scatter to measure
    assert judge(lr(9.0, dof=1), 1e21).level == REFUSED
    assert judge(lr(None), 1e21).notes == ("the LR law's dispersion was not recorded",)


def test_seeds_differing_by_the_band_refuse_and_below_it_do_not():
    assert judge(card(seed_spread=0.0099), 1e21).reasons == ()
    at = judge(card(seed_spread=0.01), 1e21)
    assert texts(at) == ["seeds of one configuration differ by up to 1.0% in loss, at least the 1.0% band: the band "
                         "selects noise"] and at.reasons[0].kind == "seed"


def test_an_exponent_the_data_do_not_identify_is_a_note_with_its_interval_and_why():
    loose = card(bsz=dataclasses.replace(card().bsz, exponent_ci=(-0.05, 0.62)))
    assert judge(loose, 1e21).notes == ("the BSZ exponent is not identified ([-0.05, 0.62]: crosses zero); the "
                                        "interval at the target carries it",)


def run(**changes) -> Regime:
    return dataclasses.replace(Regime("aunet2", (10.0,), (45.0, 45.0), (8192,), (259,), (1.0, 1.0), "planned"),
                               **changes)


def test_a_batch_of_exactly_one_sequence_can_run_and_less_cannot():
    exact = {"lr": (1e-3, 1e-3, 1e-3), "bsz": (8192.0, 8192.0, 8192.0)}
    assert judge(card(), 1e21, intervals=exact, run=run()).reasons == ()
    less = {"lr": (1e-3, 1e-3, 1e-3), "bsz": (8000.0, 8000.0, 8000.0)}
    assert texts(judge(card(), 1e21, intervals=less, run=run())) == [
        "the law's BSZ at the target, 8e+03 bytes, is below one sequence (8192 bytes)"]
    assert judge(card(), 1e21, intervals=less, run=run(seq_lens=())).reasons == ()  # sequence unknown: not judged


def test_regime_reasons_come_only_from_what_both_sides_record():
    assert regime_reasons(card(), run(family=""), Limits()) == []
    assert regime_reasons(card(), Regime(), Limits()) == []
    assert regime_reasons(card(regime=Regime("aunet2")), run(), Limits()) == []
    # a byte law says nothing of vocabularies and tokens
    assert regime_reasons(card(), run(vocab_sizes=(50000,), bytes_per_unit=(4.0, 4.0)), Limits()) == []
    verdict = judge(card(), 1e21, run=run(family="transformer_bpe"))
    assert verdict.reasons == (Reason(REFUSED, "the law was fitted on aunet2, the run is transformer_bpe", "regime"),)


def bpe_card() -> LawCard:
    return card(units="tokens", family="transformer_bpe",
                regime=Regime("transformer_bpe", (10.0,), (40.0, 50.0), (2048,), (1024, 4096), (2.5, 3.0)))


def bpe_run(**changes) -> Regime:
    return run(**{"family": "transformer_bpe", "seq_lens": (2048,), "vocab_sizes": (4096,),
                  "bytes_per_unit": (2.8, 2.8), **changes})


def test_a_token_law_holds_to_its_vocabularies_and_bytes_per_token_within_a_tenth():
    assert regime_reasons(bpe_card(), bpe_run(), Limits()) == []
    assert regime_reasons(bpe_card(), bpe_run(bytes_per_unit=(3.3, 3.3)), Limits()) == []  # x1.1: on the limit
    assert regime_reasons(bpe_card(), bpe_run(bytes_per_unit=(2.5 / 1.1, 1.0)), Limits()) == []
    (level, text), = regime_reasons(bpe_card(), bpe_run(bytes_per_unit=(3.4, 3.4)), Limits())
    assert level == REFUSED and text == ("the run's tokens hold 3.4 bytes, the fitted runs' 2.5-3 (x1.13): another "
                                         "tokenizer or text")
    (level, text), = regime_reasons(bpe_card(), bpe_run(bytes_per_unit=(2.2, 2.2)), Limits())
    assert level == REFUSED and "(x1.14)" in text
    (level, text), = regime_reasons(bpe_card(), bpe_run(vocab_sizes=(2048,)), Limits())
    assert text == ("the run's vocabulary of 2,048 is not the fitted runs' (1,024, 4,096): the law's tokens are "
                    "another tokenizer's")
    assert regime_reasons(bpe_card(), bpe_run(vocab_sizes=(), bytes_per_unit=None), Limits()) == []
    assert regime_reasons(bpe_card(), bpe_run(bytes_per_unit=(3.4, 3.4)), Limits(units_tolerance=0.2)) == []


def test_sequence_and_ratio_a_quarter_beyond_the_fitted_runs_are_still_theirs():
    assert regime_reasons(card(), run(seq_lens=(10240,), ratios=(12.5,)), Limits()) == []  # x1.25 each
    assert regime_reasons(card(), run(seq_lens=(6554,), ratios=(8.0,)), Limits()) == []
    (level, text), = regime_reasons(card(), run(seq_lens=(10300,)), Limits())
    assert level == CARE and text == "the run's sequences of 10,300 bytes are x1.26 the fitted runs' (8,192)"
    (level, text), = regime_reasons(card(), run(ratios=(5.0,)), Limits())
    assert level == CARE and text == ("the run trains at ratio 5: 45 LLaMA-3 tokens per parameter, x2 beyond the "
                                      "fitted runs' (ratio 10, 40-50 tokens per parameter): the optimum moves with "
                                      "model size and data apart")
    # where the run's ratio is not known, its tokens per parameter are weighed against the fitted runs' span
    assert regime_reasons(card(), run(ratios=(), tokens_per_param=(62.5, 62.5)), Limits()) == []
    (_, text), = regime_reasons(card(), run(ratios=(), tokens_per_param=(30.0, 30.0)), Limits())
    assert text.startswith("the run trains 30 LLaMA-3 tokens per parameter, x1.33 beyond")
    (_, text), = regime_reasons(card(), run(ratios=(2.0,), tokens_per_param=None), Limits())
    assert text.startswith("the run trains at ratio 2") and "x5 beyond the fitted runs' (ratio 10, 40-50 " in text
    assert regime_reasons(card(), run(ratios=(2.0,)), Limits(regime_factor=6.0)) == []


def test_a_regime_the_table_did_not_record_is_noted():
    derived = card(regime=dataclasses.replace(FITTED, origin="derived from the ladder"))
    assert judge(derived, 1e21, run=run()).notes == ("the fitted runs' regime: derived from the ladder",)
    assert judge(derived, 1e21).notes == ()  # no run to compare: nothing to say about it


def test_the_one_line_lists_refusals_before_care_each_joined_by_semicolons():
    verdict = Verdict(1e21, (Reason(CARE, "c1"), Reason(REFUSED, "r1"), Reason(CARE, "c2"), Reason(REFUSED, "r2")))
    assert verdict.line() == "not usable at C = 1e+21: [not usable] r1; r2 [use with care] c1; c2"
    assert Verdict(2e20, (Reason(CARE, "c"),)).line() == "use with care at C = 2e+20: [use with care] c"
    assert Verdict(2e20, (Reason(CARE, "c"),)).usable and not Verdict(1.0, (Reason(REFUSED, "r"),)).usable
    assert Verdict(1.0, (Reason(CARE, "c", "seed"),)).has("seed") and not Verdict(1.0, ()).has("seed")
