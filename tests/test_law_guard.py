"""``train.py law=<file>``'s guard (``TrainConfig.sets_from_law``, ``check_law`` and the law lines of ``train``):
which runs a fitted law sets, what the config is checked against before anything runs, and what the planned run
says of its batch, with the training itself stubbed out (nothing here needs a step taken)."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import numpy as np
import pytest

import aunet.train as train_module
from aunet.config import ModelConfig
from aunet.data import DataConfig
from aunet.laws import BudgetFacts, FittedLaw, LawCard, Regime
from aunet.optim import OptimConfig
from aunet.tracking import TrackingConfig
from aunet.train import LawRefused, TrainConfig, train
from aunet.verdict import CARE, USABLE

MODEL = ModelConfig(arch="aunet", name="aunet2_test", dims=[32, 64], layers=[1, 1], head_dims=[16, 16],
                    ffn_dims=[64, 128], seq_len=128, window=32)
BUDGET = 2e9
BSZ_EXPONENT = 0.3


def law_file(tmp_path: Path, bsz_at_budget: float = 1000.0, seq_len: int = 128, convention: str = "spent",
             units: str = "bytes", family: str = "aunet2",
             tokens_per_param: tuple[float, float] | None = None) -> Path:
    """A certain law fitted over 1e8-1e10 on ``seq_len``-byte sequences whose BSZ at 2e9 FLOPs is ``bsz_at_budget``."""
    budgets = tuple(float(b) for b in np.geomspace(1e8, 1e10, 5))

    def law(coef: float, exponent: float) -> FittedLaw:
        return FittedLaw(coef, exponent, (coef / 2, coef * 2), (exponent - 0.01, exponent + 0.01), (0.0, 0.0, 0.0),
                         1.0, 3)

    card = LawCard(family=family, estimator="bowl", units=units, convention=convention, tolerance=0.01, level=0.95,
                   lr=law(0.0435, -0.176), bsz=law(bsz_at_budget / BUDGET**BSZ_EXPONENT, BSZ_EXPONENT),
                   budgets=tuple(BudgetFacts(b, 16, 1e-3, 64.0) for b in budgets), seed_spread=0.003, loss=None,
                   warnings=(), source="test", source_sha256="0" * 64, toolkit="test",
                   regime=Regime(family, (), tokens_per_param, (seq_len,), (259,), (1.0, 1.0)))
    path = tmp_path / f"law_{bsz_at_budget:g}_{seq_len}_{convention}_{units}_{family}_{tokens_per_param}.json"
    card.write(path)
    return path


def config(tmp_path: Path, law: str | Path, **changes) -> TrainConfig:
    base = dict(model=MODEL, data=DataConfig(seq_len=128, valid_bytes=65536), tracking=TrackingConfig(enabled=False),
                budget=BUDGET, law=str(law), eval_bytes=8192, output_dir=str(tmp_path / "run"), progress="off")
    return TrainConfig(**{**base, **changes})


def test_only_a_fitted_law_that_sets_the_lr_or_the_bsz_is_checked(tmp_path):
    law = law_file(tmp_path)
    assert config(tmp_path, law).sets_from_law()
    assert config(tmp_path, law, bsz=512).sets_from_law()  # the law still sets the LR
    assert config(tmp_path, law, optim=OptimConfig(lr=1e-3)).sets_from_law()  # ... or the BSZ
    assert not config(tmp_path, law, bsz=512, optim=OptimConfig(lr=1e-3)).sets_from_law()
    assert not config(tmp_path, "paper").sets_from_law() and config(tmp_path, "paper").check_law() is None
    # a file that does not exist is never read when the law sets nothing
    assert config(tmp_path, tmp_path / "none.json", bsz=512, optim=OptimConfig(lr=1e-3)).check_law() is None


def test_a_usable_law_gives_its_verdict_and_a_sequence_unlike_the_fitted_runs_asks_for_care(tmp_path):
    verdict = config(tmp_path, law_file(tmp_path)).check_law()
    assert verdict.level == USABLE and verdict.reasons == ()
    longer = config(tmp_path, law_file(tmp_path, seq_len=8192)).check_law()  # the config's 128-byte sequences
    assert longer.level == CARE and longer.reasons[0].text.startswith("the run's sequences of 128 bytes are x64")


def test_the_runs_family_is_the_configs_label_before_the_models(tmp_path):
    with pytest.raises(LawRefused, match="the law was fitted on aunet2, the run is hourglass"):
        config(tmp_path, law_file(tmp_path), family="hourglass")
    assert config(tmp_path, law_file(tmp_path, family="hourglass"), family="hourglass").check_law().usable


def test_a_law_in_tokens_fits_a_bpe_model_and_not_a_byte_model(tmp_path):
    tokens = law_file(tmp_path, units="tokens", family="transformer_bpe")
    bpe = ModelConfig(arch="transformer", name="transformer_bpe_t", units="bpe", vocab_size=259, dims=[32], layers=[1],
                      head_dims=[16], ffn_dims=[64], seq_len=128, window=None)
    assert config(tmp_path, tokens, model=bpe, data=DataConfig(seq_len=128, units="bpe")).check_law().usable
    with pytest.raises(ValueError, match=r"^train config: law .* counts BSZ in tokens, but this model reads bytes; "
                                         r"use a law fitted on a bytes family"):
        config(tmp_path, tokens)


def test_the_budget_convention_must_agree_and_a_budget_must_be_given(tmp_path):
    with pytest.raises(ValueError, match=r"fitted on budgets in the 'paper' convention, this run's budget_convention "
                                         r"is 'spent'; make them agree"):
        config(tmp_path, law_file(tmp_path, convention="paper"))
    assert config(tmp_path, law_file(tmp_path, convention="paper"), budget_convention="paper").check_law().usable
    with pytest.raises(ValueError, match=r"needs a budget to be evaluated at \(give budget=...\)"):
        config(tmp_path, law_file(tmp_path), budget=None, steps=10)


def planned(regime: Regime) -> types.SimpleNamespace:
    return types.SimpleNamespace(regime=lambda: regime)


def test_the_planned_run_is_judged_and_anything_said_of_it_is_logged(tmp_path, caplog):
    cfg = config(tmp_path, law_file(tmp_path))
    same = Regime("aunet2", seq_lens=(128,), vocab_sizes=(259,), origin="planned")
    with caplog.at_level(logging.WARNING, logger="aunet.train"):
        assert cfg.check_law(planned(same)).reasons == ()
        assert caplog.messages == []
        verdict = cfg.check_law(planned(Regime("aunet2", seq_lens=(256,), origin="planned")))
    assert verdict.level == CARE
    assert caplog.messages == [f"law {cfg.law}: {verdict.line()}"]
    with pytest.raises(LawRefused, match=r"is not usable at C = 2e\+09: \[not usable\] the law's BSZ at the target, "
                                         r"1e\+03 bytes, is below one sequence \(4096 bytes\) \[use with care\] the run's sequences of 4,096 bytes .*; "
                                         r"set law_force=true to train at it anyway, or give optim.lr and bsz$"):
        cfg.check_law(planned(Regime("aunet2", seq_lens=(4096,), origin="planned")))
    forced = config(tmp_path, law_file(tmp_path), law_force=True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aunet.train"):
        refused = forced.check_law(planned(Regime("aunet2", seq_lens=(4096,), origin="planned")))
    assert not refused.usable and caplog.messages == [f"law {forced.law}: {refused.line()}"]


@pytest.fixture
def no_training(monkeypatch):
    """``train`` up to its first step: the plan, the law's verdict and the record, without a model or a step."""
    monkeypatch.setattr(train_module, "TrainState", lambda *args, **kwargs: None)
    monkeypatch.setattr(train_module, "run", lambda *args, **kwargs: None)


USABLE_LINE = "usable at C = 2e+09"


@pytest.mark.parametrize("law_bsz, bsz, said, verdict", [
    (1000.0, None, None, USABLE_LINE),  # 8 sequences (1,024 bytes): within a tenth of the law, nothing to say
    (200.0, None, "its BSZ at this budget, 200 bytes, is rounded to 256 (2 whole sequences of 128)",  # x1.28
     USABLE_LINE),
    (60.0, None, "its BSZ at this budget, 60 bytes, is rounded to 128 (1 whole sequences of 128)",  # x2.1, forced
     "not usable at C = 2e+09: [not usable] the law's BSZ at the target, 60 bytes, is below one sequence (128 bytes)"),
    (200.0, 1024, None, USABLE_LINE),  # a BSZ given by hand is the user's, not a rounding of the law's
], ids=["within-a-tenth", "rounded-up-a-quarter", "rounded-up-twice", "given-by-hand"])
def test_the_run_says_when_the_laws_batch_was_rounded_and_records_the_verdict(tmp_path, caplog, no_training, law_bsz,
                                                                             bsz, said, verdict):
    cfg = config(tmp_path, law_file(tmp_path, bsz_at_budget=law_bsz), bsz=bsz, law_force=True)
    with caplog.at_level(logging.WARNING, logger="aunet.train"):
        record = train(cfg)
    rounded = [m for m in caplog.messages if "rounded" in m]
    assert rounded == ([f"law {cfg.law}: {said}"] if said else [])
    assert record.law_verdict == verdict  # the planned run's verdict, which the config alone could not give


def test_a_run_not_set_by_a_law_records_no_verdict_and_a_refused_one_no_record(tmp_path, no_training):
    record = train(config(tmp_path, "paper", budget=BUDGET))
    assert record.law_verdict in (None, "")
    with pytest.raises(LawRefused):
        train(config(tmp_path / "refused", law_file(tmp_path, bsz_at_budget=60.0)))  # below one sequence, not forced
    assert not (tmp_path / "refused" / "run" / "record.json").exists()


def test_the_run_is_judged_on_its_plan_which_knows_its_tokens_per_parameter(tmp_path, no_training):
    # fitted at a millionth of a token per parameter: the config alone cannot tell, the planned run can
    cfg = config(tmp_path, law_file(tmp_path, tokens_per_param=(1e-6, 1e-6)))
    assert cfg.check_law().reasons == ()
    record = train(cfg)
    assert record.law_verdict.startswith("use with care at C = 2e+09: [use with care] the run trains ")
    assert "LLaMA-3 tokens per parameter" in record.law_verdict
