"""The law file's pieces (``aunet.laws``): power laws, the identification rule, the search box's edge, the
regime a law was fitted in, the interval a law carries to a target, and the file's round trip and refusals."""

from __future__ import annotations

import dataclasses
import math

import pytest

from aunet.laws import (
    LAW_SCHEMA,
    PAPER_LAWS,
    BudgetFacts,
    FittedLaw,
    HyperLaws,
    LawCard,
    PowerLaw,
    Regime,
    box_edge,
    coef_identified,
    exponent_identified,
    tokens_per_param,
    why_not_identified,
)

LAW = FittedLaw(2.0, 0.5, (1.0, 4.0), (0.4, 0.6), (0.04, -0.001, 0.0001), 1.2, 3)


def card(**changes) -> LawCard:
    budgets = tuple(BudgetFacts(b, 8, 1e-3, 512.0) for b in (1e12, 1e13, 1e14))
    base = LawCard(family="aunet2", estimator="bowl", units="bytes", convention="spent", tolerance=0.01, level=0.95,
                   lr=FittedLaw(6.6, -0.176, (3.0, 12.0), (-0.2, -0.15), (0.01, 0.0, 1e-5), 1.0, 1),
                   bsz=LAW, budgets=budgets, seed_spread=None, loss={"metric": "bpb", "alpha": 0.1},
                   warnings=("w",), source="pilot", source_sha256="ab" * 32, toolkit="0.1",
                   regime=Regime("aunet2", (0.2,), (1.0, 1.6), (256,), (259,), (1.0, 1.0)))
    return dataclasses.replace(base, **changes)


def test_a_power_law_is_its_coefficient_times_compute_to_its_exponent():
    assert PowerLaw(3.0, 0.5)(1e4) == pytest.approx(300.0)
    assert PowerLaw(2.0, -1.0)(4.0) == pytest.approx(0.5)


def test_the_papers_laws_are_app_d_in_bytes_for_aunet_and_tokens_for_bpe():
    aunet, bpe = PAPER_LAWS["aunet"], PAPER_LAWS["bpe"]
    assert (aunet.bsz, aunet.lr, aunet.units) == (PowerLaw(0.66, 0.321), PowerLaw(6.6, -0.176), "bytes")
    assert (bpe.bsz, bpe.lr, bpe.units) == (PowerLaw(29.9, 0.231), PowerLaw(19.3, -0.177), "tokens")


def test_hyper_laws_round_trip_through_a_dict_and_default_to_bytes():
    laws = HyperLaws(PowerLaw(1.5, 0.3), PowerLaw(7.0, -0.2), "tokens", "a fit")
    assert laws.to_dict() == {"bsz": {"coef": 1.5, "exponent": 0.3}, "lr": {"coef": 7.0, "exponent": -0.2},
                              "units": "tokens", "source": "a fit"}
    assert HyperLaws.from_dict(laws.to_dict()) == laws
    bare = HyperLaws.from_dict({"bsz": {"coef": "1", "exponent": 0.3}, "lr": {"coef": 7, "exponent": "-0.2"}})
    assert bare == HyperLaws(PowerLaw(1.0, 0.3), PowerLaw(7.0, -0.2), "bytes", "")
    for bad in ({"lr": {"coef": 1, "exponent": 0}}, {"bsz": None, "lr": None}, {"bsz": {"coef": "x", "exponent": 1},
                                                                               "lr": {"coef": 1, "exponent": 1}}):
        with pytest.raises(ValueError, match=r"^a hyperparameter law needs \{bsz: \{coef, exponent\}, lr: \{coef, "
                                             r"exponent\}, units\}; got "):
            HyperLaws.from_dict(bad)


@pytest.mark.parametrize("value, said", [(1.5, "lower"), (0.5, "lower"), (100.0, ""), (9000.0, "upper"),
                                         (2e4, "upper"), (1.0, "lower"), (1e4, "upper")])
def test_the_outer_tenth_of_a_log_box_is_its_edge(value, said):
    # The box [1, 1e4] spans 4 decades: its outer tenths are below 10^0.4 = 2.5 and above 10^3.6 = 3,981.
    assert box_edge(value, 1.0, 1e4) == said


def test_a_box_with_no_width_has_no_edge():
    assert box_edge(5.0, 10.0, 10.0) == "" and box_edge(5.0, 10.0, 1.0) == ""
    assert box_edge(2.4, 1.0, 1e4) == "lower" and box_edge(2.6, 1.0, 1e4) == ""
    assert box_edge(3900.0, 1.0, 1e4) == "" and box_edge(4100.0, 1.0, 1e4) == "upper"


def test_a_coefficient_is_identified_within_a_factor_of_a_thousand():
    assert coef_identified((1.0, 1000.0)) and coef_identified((0.5, 2.0))
    assert not coef_identified((1.0, 1001.0)) and not coef_identified((0.0, 2.0))
    assert not coef_identified((-1.0, 2.0)) and not coef_identified((1.0, math.inf))
    assert why_not_identified((1.0, 5000.0), exponent=False) == "a factor over 1e+03"
    assert why_not_identified((1.0, 5.0), exponent=False) == ""


def test_an_exponent_is_identified_when_its_interval_excludes_zero_and_is_at_most_one_wide():
    assert exponent_identified((0.5, 1.5)) and exponent_identified((-1.5, -0.5))  # exactly 1 wide
    assert not exponent_identified((0.5, 1.51)) and not exponent_identified((-1.51, -0.5))
    assert not exponent_identified((0.0, 0.5)) and not exponent_identified((-0.5, 0.0))  # touching zero
    assert not exponent_identified((-math.inf, -0.1)) and not exponent_identified((0.1, math.nan))
    assert why_not_identified((0.2, 0.3), exponent=True) == ""
    assert why_not_identified((-math.inf, -0.1), exponent=True) == "unbounded"
    assert why_not_identified((0.1, math.inf), exponent=True) == "unbounded"
    assert why_not_identified((0.1, 1.2), exponent=True) == "wider than 1"
    assert why_not_identified((-0.8, 0.3), True) == "wider than 1"  # both: the width is said
    assert why_not_identified((-0.2, 0.3), True) == "crosses zero"


def test_tokens_per_parameter_count_llama3_tokens_of_the_training_text():
    # 4.56e6 bytes of text are 1e6 LLaMA-3 tokens; over 1e4 parameters, 100 per parameter.
    assert tokens_per_param(4.56e6, 1.0, 1e4) == pytest.approx(100.0)
    assert tokens_per_param(1e6, 4.56, 1e4) == pytest.approx(100.0)  # a million BPE tokens of 4.56 bytes


def test_a_regime_reads_back_from_its_dict_and_describes_its_spans():
    regime = Regime("aunet2", (0.2, 10.0), (1.0, 43.0), (256, 8192), (259,), (1.0, 1.0))
    assert Regime.from_dict(dataclasses.asdict(regime)) == regime
    unrecorded = Regime.from_dict({"family": "x", "ratios": [], "tokens_per_param": None, "seq_lens": [],
                                   "vocab_sizes": [], "bytes_per_unit": None, "origin": "derived"})
    assert unrecorded == Regime("x", origin="derived")
    assert regime.describe_span("ratios") == "0.2-10" and regime.describe_span("seq_lens") == "256-8,192"
    assert regime.describe_span("vocab_sizes") == "259" and regime.describe_span("tokens_per_param") == "1-43"
    assert unrecorded.describe_span("ratios") == "-" and unrecorded.describe() == "not recorded"
    assert Regime(vocab_sizes=(128256,)).describe_span("vocab_sizes") == "128,256"
    assert Regime(ratios=(12345.0,)).describe_span("ratios") == "1.23e+04"
    assert Regime(seq_lens=(1024, 256, 512)).describe_span("seq_lens") == "256-1,024"  # the span's ends, sorted
    # Bytes (1 byte per unit) go unsaid; a BPE's compression is said.
    assert regime.describe() == ("ratio 0.2-10, 1-43 LLaMA-3 tokens per parameter, sequences of 256-8,192, "
                                 "vocabulary 259")
    bpe = Regime("transformer_bpe", (0.2,), None, (64,), (1024,), (2.6, 2.7))
    assert bpe.describe() == "ratio 0.2, sequences of 64, vocabulary 1,024, 2.6-2.7 bytes per unit"


def test_a_law_carries_its_interval_to_any_budget_through_its_covariance():
    law = FittedLaw(2.0, 0.5, (1.0, 4.0), (0.4, 0.6), (0.04, -0.001, 0.0001), None, 3)
    c = 1e6
    x = math.log(c)
    sd = math.sqrt(0.04 - 2 * x * 0.001 + x * x * 0.0001)
    value, lo, hi = law.predict(c)
    assert value == pytest.approx(2.0 * 1e3)
    assert lo == pytest.approx(value * math.exp(-1.959964 * sd)) and hi == pytest.approx(value * math.exp(1.959964 * sd))
    _, lo68, hi68 = law.predict(c, level=0.68)  # a narrower level, a narrower interval (z = 0.994)
    assert hi68 / value == pytest.approx(math.exp(0.994458 * sd), rel=1e-5) and lo68 > lo
    assert law.power_law() == PowerLaw(2.0, 0.5)
    # A covariance whose variance would come out negative (rounding) gives a point, not an error.
    exact = dataclasses.replace(law, cov=(-1.0, 0.0, 0.0))
    assert exact.predict(c) == (value, value, value)


def test_a_card_knows_its_range_and_its_laws():
    law = card()
    assert law.fitted_range == (1e12, 1e14)
    assert law.hyper_laws() == HyperLaws(PowerLaw(2.0, 0.5), PowerLaw(6.6, -0.176), "bytes", "bowl fit of aunet2 (pilot)")
    assert card(source="").hyper_laws().source == "bowl fit of aunet2"
    assert list(law.to_dict())[0] == "schema" and law.to_dict()["schema"] == LAW_SCHEMA
    assert BudgetFacts(1.0, 2, 3.0, 4.0).flags == ()


def test_a_card_round_trips_through_its_file_with_every_field(tmp_path):
    law = card(seed_spread=0.004, budgets=(BudgetFacts(1e12, 8, 1e-3, 512.0, ("lr_edge", "band_fills_box")),
                                           *card().budgets[1:]))
    law.write(tmp_path / "law.json")
    back = LawCard.read(tmp_path / "law.json")
    assert back == law and back.budgets[0].flags == ("lr_edge", "band_fills_box") and back.warnings == ("w",)
    assert back.lr.exponent_ci == (-0.2, -0.15) and back.regime.tokens_per_param == (1.0, 1.6)


def test_bad_law_files_are_refused_naming_the_file_and_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match=f"hyperparameter law file {tmp_path / 'none.json'} does not exist"):
        LawCard.read(tmp_path / "none.json")
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(ValueError, match=f"law file {tmp_path / 'text.json'} is not JSON"):
        LawCard.read(tmp_path / "text.json")
    with pytest.raises(ValueError, match=r"^law is in schema None, not 'aunet.law/3': .*upgrade_law_file.py"):
        LawCard.from_dict(["not", "a", "dict"])
    data = card().to_dict()
    data["budgets"][0]["surprise"] = 1  # a field BudgetFacts does not have
    with pytest.raises(ValueError, match=r"^where: malformed law file \("):
        LawCard.from_dict(data, "where")
    data = card().to_dict()
    del data["regime"]["origin"]
    with pytest.raises(ValueError, match="^law: malformed law file"):
        LawCard.from_dict(data)
    data = card().to_dict()
    del data["regime"], data["bsz"]["dof"], data["lr"]["cov"]
    with pytest.raises(ValueError, match=r"^law lacks regime, lr.cov, bsz.dof \(schema aunet.law/3\); refit it"):
        LawCard.from_dict(data)

