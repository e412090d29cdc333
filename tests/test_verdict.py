"""The verdict rule (aunet.verdict) and the law file it reads (aunet.laws.LawCard): each reason alone
refuses a law that is otherwise usable; law files round-trip and old ones are refused by name; the
training config applies the same guard."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from aunet.laws import LAW_SCHEMA, BudgetFacts, HyperLaws, LawCard, Regime
from aunet.verdict import CARE, REFUSED, USABLE, Limits, judge
from tests.helpers.cards import fitted, good_card

REPO = Path(__file__).resolve().parents[1]


def run(**changes) -> Regime:
    """A target run of the fitted kind, with ``changes``."""
    return dataclasses.replace(Regime("aunet2", (10.0,), (100.0, 100.0), (8192,), (259,), (1.0, 1.0), "planned"),
                               **changes)


def reasons(verdict) -> str:
    return " | ".join(r.text for r in verdict.reasons)


def test_a_clean_law_is_usable_100x_past_its_data():
    verdict = judge(good_card(), 1e22)
    assert verdict.level == USABLE and verdict.usable and not verdict.reasons, reasons(verdict)
    assert verdict.line() == "usable at C = 1e+22"


def with_flag(flag: str) -> LawCard:
    budgets = good_card().budgets
    return good_card(budgets=(dataclasses.replace(budgets[2], flags=(flag,)), *budgets[:2], *budgets[3:]))


@pytest.mark.parametrize("card, target, said", [
    (good_card(budgets=good_card().budgets[:2]), 1e20, "2 budgets"),
    (good_card(budgets=tuple(BudgetFacts(b, 24, 0.01, 1e4) for b in (1e18, 3e18, 6e18))), 1e20, "over 0.78 decade"),
    (good_card(), 1.01e22, "decades past the largest fitted budget"),
    (good_card(), 5e17, "below the smallest fitted budget"),
    (good_card(lr=fitted(6.6, -0.176, sd_slope=0.06)), 1e22, "interval of LR at the target"),
    (good_card(bsz=fitted(0.66, 0.321, sd_level=0.5)), 1e22, "interval of BSZ at the target"),
    (with_flag("bsz_floor"), 1e22, "low end of the BSZs tried, with nothing tried below it at budget(s) 1e+19"),
    (with_flag("lr_ceiling"), 1e22, "high end of the LRs tried"),
    (with_flag("lr_edge"), 1e22, "edge of the search box"),
    (with_flag("bowl_outside"), 1e22, "outside the search box"),
    (good_card(lr=dataclasses.replace(fitted(6.6, -0.176), dispersion=3.5)), 1e22, "scatter around the LR law"),
    (good_card(seed_spread=0.01), 1e22, "seeds of one configuration differ by up to 1.0%"),
], ids=["two-budgets", "one-decade", "too-far", "below", "lr-width", "bsz-width", "bsz-floor", "lr-ceiling",
        "edge", "bowl-outside", "dispersion", "seed-noise"])
def test_each_reason_alone_refuses_the_law(card, target, said):
    verdict = judge(card, target)
    assert verdict.level == REFUSED and not verdict.usable
    assert len(verdict.reasons) == 1 and said in verdict.reasons[0].text, reasons(verdict)
    assert said in verdict.line()


def test_a_batch_below_one_sequence_of_the_target_run_refuses():
    # the law's BSZ there is 3.4e6 bytes (the sequence's own regime reason asks for care beside it)
    verdict = judge(good_card(), 1e21, run=run(seq_lens=(10_000_000,)))
    assert verdict.level == REFUSED and [r.kind for r in verdict.reasons] == ["recipe", "regime"]
    assert "below one sequence (1e+07 bytes)" in verdict.reasons[0].text
    assert judge(good_card(), 1e21, run=run()).level == USABLE


def test_softer_reasons_ask_for_care():
    assert judge(with_flag("band_fills_box"), 1e22).level == CARE
    moderate = good_card(lr=dataclasses.replace(fitted(6.6, -0.176), dispersion=2.5))
    assert judge(moderate, 1e22).level == CARE
    wider = good_card(lr=fitted(6.6, -0.176, sd_slope=0.04))  # a factor of 3 at the target
    verdict = judge(wider, 1e22)
    assert verdict.level == CARE and "above 2" in reasons(verdict)
    assert judge(good_card(seed_spread=None), 1e22).notes == ("seed noise not measured (no configuration was run "
                                                               "with several seeds)",)


def test_the_limits_are_the_users_to_set_and_checked():
    assert judge(good_card(), 1e23, Limits(max_extrapolation=1000)).usable
    assert not judge(good_card(), 1e23).usable
    for bad in (1, 0.5, math.inf, math.nan):
        with pytest.raises(ValueError, match="max_extrapolation"):
            Limits(max_extrapolation=bad)
    for bad in (0, -1e20, math.nan):
        with pytest.raises(ValueError, match="positive number of FLOPs"):
            judge(good_card(), bad)


def test_law_files_round_trip_and_old_ones_are_refused_by_name(tmp_path):
    card = good_card(warnings=("aunet2 budget 1e+19: something",))
    card.write(tmp_path / "law.json")
    assert LawCard.read(tmp_path / "law.json") == card
    assert HyperLaws.from_file(tmp_path / "law.json") == card.hyper_laws()
    data = json.loads((tmp_path / "law.json").read_text())
    assert data["schema"] == LAW_SCHEMA and data["budgets"][0]["budget"] == 1e18
    old = {"bsz": {"coef": 2.0, "exponent": 0.3}, "lr": {"coef": 5.0, "exponent": -0.18}, "units": "bytes"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=f"schema None, not '{LAW_SCHEMA}'.*--law-out.*scripts/upgrade_law_file.py"):
        HyperLaws.from_file(tmp_path / "old.json")
    del data["seed_spread"], data["lr"]["cov"]
    (tmp_path / "partial.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"lacks seed_spread, lr.cov"):
        LawCard.read(tmp_path / "partial.json")
    (tmp_path / "newer.json").write_text(json.dumps({**data, "schema": "aunet.law/99"}))
    with pytest.raises(ValueError, match="schema 'aunet.law/99'"):
        LawCard.read(tmp_path / "newer.json")


# ---- train.py law=<file>: the same guard before anything trains -------------------------------------


def train_config(tmp_path, law, **overrides):
    from aunet.config import ModelConfig
    from aunet.data import DataConfig
    from aunet.tracking import TrackingConfig
    from aunet.train import TrainConfig

    model = overrides.pop("model", None) or ModelConfig(arch="aunet", name="t", dims=[32, 64], layers=[1, 1],
                                                        head_dims=[16, 16], ffn_dims=[64, 128], seq_len=128, window=32)
    data = overrides.pop("data", None) or DataConfig(seq_len=128, units=model.units)
    return TrainConfig(model=model, data=data, tracking=TrackingConfig(enabled=False),
                       law=str(law), output_dir=str(tmp_path), **overrides)


def test_train_refuses_a_law_that_is_not_usable_at_its_budget(tmp_path):
    good_card().write(tmp_path / "good.json")
    assert train_config(tmp_path, tmp_path / "good.json", budget=1e21).law == str(tmp_path / "good.json")
    with pytest.raises(ValueError, match="not usable at C = 1e\\+23.*law_force=true"):
        train_config(tmp_path, tmp_path / "good.json", budget=1e23)
    forced = train_config(tmp_path, tmp_path / "good.json", budget=1e23, law_force=True)
    assert forced.law_force
    from aunet.optim import OptimConfig

    given = train_config(tmp_path, tmp_path / "good.json", budget=1e23, bsz=1024, optim=OptimConfig(lr=1e-3))
    assert given.bsz == 1024  # the law sets nothing here, so it is not judged
    good_card(units="tokens").write(tmp_path / "tokens.json")
    with pytest.raises(ValueError, match="counts BSZ in tokens, but this model reads bytes"):
        train_config(tmp_path, tmp_path / "tokens.json", budget=1e21)
    good_card(convention="paper").write(tmp_path / "paper.json")
    with pytest.raises(ValueError, match="'paper' convention"):
        train_config(tmp_path, tmp_path / "paper.json", budget=1e21)


def test_a_schema_1_file_with_its_provenance_is_upgraded_and_one_without_is_refused(tmp_path):
    import subprocess
    import sys

    old = {"bsz": {"coef": 2.0, "exponent": 0.3}, "lr": {"coef": 5.0, "exponent": -0.18}, "units": "bytes",
           "provenance": {"estimator": "band", "commit": "abc", "date": "2026-11-26",
                          "intervals_95": {"bsz_exponent": [0.2, 0.4], "bsz_coef": [0.5, 8.0],
                                           "lr_exponent": [-0.3, -0.06], "lr_coef": [1.0, 25.0]},
                          "budgets": [{"budget": b, "finished": 8, "best_lr": 1e-3, "best_bsz": 512}
                                      for b in (1e11, 2e11, 4e11)]}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    script = [sys.executable, "scripts/upgrade_law_file.py", str(tmp_path / "old.json"), str(tmp_path / "new.json"),
              "--family", "aunet2", "--source", "a pilot", "--ratio", "0.2", "--seq-len", "256"]
    done = subprocess.run(script, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    card = LawCard.read(tmp_path / "new.json")
    assert card.hyper_laws().lr.coef == 5.0 and card.lr.exponent_ci == (-0.3, -0.06)
    assert card.fitted_range == (1e11, 4e11) and "schema 1" in card.warnings[0] and card.lr.dispersion is None
    # The rebuilt covariance gives back the old exponent interval, and the verdict reads the file.
    assert 2 * 1.96 * math.sqrt(card.lr.cov[2]) == pytest.approx(0.24, rel=1e-3)
    assert "fitted on 3 budgets over 0.6 decade(s)" in judge(card, 1e12).line()
    assert card.regime.ratios == (0.2,) and card.regime.seq_lens == (256,) and card.regime.vocab_sizes == ()
    assert "vocabulary not recorded" in card.regime.origin
    # A schema-2 file (everything but the regime) is refused by name, then upgraded keeping all it held.
    schema2 = {**card.to_dict(), "schema": "aunet.law/2"}
    del schema2["regime"]
    (tmp_path / "two.json").write_text(json.dumps(schema2))
    with pytest.raises(ValueError, match="schema 'aunet.law/2'.*regime.*scripts/upgrade_law_file.py"):
        LawCard.read(tmp_path / "two.json")
    done = subprocess.run([*script[:2], str(tmp_path / "two.json"), str(tmp_path / "three.json"), *script[4:],
                           "--vocab", "259"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    three = LawCard.read(tmp_path / "three.json")
    assert three.lr == card.lr and three.budgets == card.budgets and three.regime.vocab_sizes == (259,)
    del old["provenance"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    done = subprocess.run(script, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "no provenance block" in done.stderr


# ---- the run the recipe configures: family, vocabulary, tokens, sequence and ratio -------------------


@pytest.mark.parametrize("changes, level, said", [
    (dict(family="mamba_bytes"), REFUSED, "fitted on aunet2, the run is mamba_bytes"),
    (dict(seq_lens=(256,)), CARE, "sequences of 256 bytes are x32 the fitted runs' (8,192)"),
    (dict(tokens_per_param=(2.0, 2.0), ratios=(0.2,)), CARE,
     "at ratio 0.2: 2 LLaMA-3 tokens per parameter, x50 beyond the fitted runs' (ratio 10, 90-120 tokens"),
    (dict(tokens_per_param=(2.0, 2.0), ratios=()), CARE,
     "trains 2 LLaMA-3 tokens per parameter, x45 beyond the fitted runs' (ratio 10, 90-120 tokens"),
    (dict(tokens_per_param=None, ratios=(2.0,)), CARE, "the run trains at ratio 2, x5 beyond the fitted runs'"),
], ids=["family", "sequence", "ratio", "tokens-per-parameter", "ratio-alone"])
def test_a_run_of_another_kind_than_the_fitted_runs_is_a_reason_with_its_numbers(changes, level, said):
    verdict = judge(good_card(), 1e21, run=run(**changes))
    assert verdict.level == level and [r.kind for r in verdict.reasons] == ["regime"], reasons(verdict)
    assert said in verdict.reasons[0].text
    # Within the fitted runs' own (and a quarter beyond), nothing is said; the ratio decides where both know it.
    assert not judge(good_card(), 1e21, run=run(tokens_per_param=(140.0, 140.0), ratios=())).reasons
    assert not judge(good_card(), 1e21, run=run(tokens_per_param=(300.0, 300.0))).reasons


def test_tokens_of_another_tokenizer_refuse_a_token_law():
    card = good_card(units="tokens", family="transformer_bpe",
                     regime=Regime("transformer_bpe", (0.2,), (1.0, 1.5), (64,), (1024,), (2.6, 2.7)))
    same = Regime("transformer_bpe", (0.2,), (1.2, 1.2), (64,), (1024,), (2.65, 2.65), "planned")
    assert not judge(card, 1e21, run=same).reasons
    verdict = judge(card, 1e21, run=dataclasses.replace(same, vocab_sizes=(128256,), bytes_per_unit=(4.56, 4.56)))
    assert verdict.level == REFUSED
    assert "vocabulary of 128,256 is not the fitted runs' (1,024): the law's tokens are another tokenizer's" in \
        reasons(verdict)
    assert "tokens hold 4.56 bytes, the fitted runs' 2.6-2.7 (x1.69)" in reasons(verdict)


def test_one_line_labels_each_reason_with_its_level_and_unrecorded_regimes_are_said():
    card = good_card(seed_spread=0.02, budgets=(dataclasses.replace(good_card().budgets[0], flags=("band_fills_box",)),
                                                *good_card().budgets[1:]))
    line = judge(card, 1e21).line()
    assert line.startswith("not usable at C = 1e+21: [not usable] seeds of one configuration")
    assert line.index("[not usable]") < line.index("[use with care] most of the box")
    unrecorded = good_card(regime=Regime("aunet2", origin="sequence or vocabulary not recorded"))
    assert "the fitted runs' regime: sequence or vocabulary not recorded" in judge(unrecorded, 1e21, run=run()).notes


def test_an_exponent_is_identified_only_when_its_interval_excludes_zero_and_is_narrow():
    from aunet.laws import exponent_identified, why_not_identified

    assert exponent_identified((-0.3, -0.1)) and exponent_identified((0.1, 0.9))
    assert not exponent_identified((-0.171, 0.169)) and why_not_identified((-0.87, 0.015), True) == "crosses zero"
    assert why_not_identified((0.1, 1.2), True) == "wider than 1" and why_not_identified((0.1, math.inf), True)
    flat = good_card(lr=dataclasses.replace(fitted(6.6, -0.176), exponent_ci=(-0.4, 0.05)))
    assert any("LR exponent is not identified" in n for n in judge(flat, 1e21).notes)


def test_train_refuses_a_law_of_another_family_without_naming_options_it_lacks(tmp_path):
    good_card().write(tmp_path / "law.json")
    from aunet.config import ModelConfig

    mamba = ModelConfig(arch="mamba", name="m", dims=[64], layers=[1], head_dims=[32], ffn_dims=[128], seq_len=128,
                        window=None)
    with pytest.raises(ValueError, match="fitted on aunet2, the run is mamba_bytes") as err:
        train_config(tmp_path, tmp_path / "law.json", budget=1e21, model=mamba, data=None)
    with pytest.raises(ValueError) as far:
        train_config(tmp_path, tmp_path / "law.json", budget=1e23)
    assert "--max-extrapolation" not in str(err.value) + str(far.value)
