"""A recipe configures the run its study measured: the study's own ratio, sequence and vocabulary by
default, the verdict weighing any other, and ``train.py law=`` holding a run to the same."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import analyse
from analysis.extrapolate import extrapolate
from analysis.synthetic import SweepDesign, synthetic_sweep
from aunet import ladder
from aunet.laws import BudgetFacts, FittedLaw, LawCard, Regime
from aunet.verdict import CARE, REFUSED, judge

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference" / "results.csv"


@pytest.fixture(scope="module")
def reference():
    return analyse(REFERENCE, n_boot=100, families=["aunet2"])


def test_the_recipe_takes_the_studys_own_ratio_and_says_what_another_one_changes(reference):
    own = extrapolate(reference, "aunet2", 7.2e12)
    study = pd.read_csv(REFERENCE)
    assert own.ratio == 0.2 and own.ratio_source == "the study's own" and own.plan.ratio == 0.2
    assert own.plan.params > study.loc[study["family"] == "aunet2", "params"].max()  # 10x bigger, a bigger model
    assert own.plan.model.seq_len == 256 and not own.verdict.has("regime")
    text = own.text()
    assert "LLaMA-3 tokens per parameter" in text and "sha256 of its fitted runs, not of a file" in text
    assert "fitted runs: ratio 0.2, " in text and "sequences of 256" in text
    guessed = extrapolate(reference, "aunet2", 7.2e12, ratio=10)
    assert guessed.plan.params < own.plan.params and guessed.ratio_source == "given by hand (--ratio)"
    regime = [r for r in guessed.verdict.reasons if r.kind == "regime"]
    assert len(regime) == 1 and regime[0].level == CARE
    assert f"at ratio 10: {guessed.plan.tokens_per_param:.3g} LLaMA-3 tokens per parameter, x50 " in regime[0].text
    # At the study's own largest budget the ladder has a model at the study's ratio (ratio 10 had none).
    assert extrapolate(reference, "aunet2", 7.2e11).plan is not None


def test_a_bpe_law_is_planned_in_its_own_tokenizer_and_refused_in_another():
    runs = synthetic_sweep("transformer_bpe", design=SweepDesign(budgets=tuple(np.geomspace(1e14, 9.9e15, 5)),
                                                                 trials=24))
    runs = runs.assign(seq_len=64, vocab_size=1024, bytes_per_unit=2.6, bsz_bytes=runs["bsz"] * 2.6, ratio=0.2)
    for budget in runs["budget"].unique():  # the models and data the ladder gives these budgets at ratio 0.2
        plan = ladder.plan("transformer_bpe", budget, 0.2, seq_len=64, vocab_size=1024, bpe_bytes_per_token=2.6)
        runs.loc[runs["budget"] == budget, ["params", "train_units"]] = plan.params, plan.train_units
    analysis = analyse(runs, n_boot=100)
    recipe = extrapolate(analysis, "transformer_bpe", 9.9e16)
    assert recipe.plan.model.seq_len == 64 and recipe.plan.model.vocab_size == 1024
    assert recipe.plan.bytes_per_unit == pytest.approx(2.6) and not recipe.verdict.has("regime")
    # The ladder's own regime at 9.9e16 (2,048 tokens of a 128,256 vocabulary) is another run.
    paper = ladder.plan("transformer_bpe", 9.9e16, 0.2, laws=recipe.card.hyper_laws())
    verdict = judge(recipe.card, 9.9e16, run=paper.regime())
    assert verdict.level == REFUSED
    texts = " | ".join(r.text for r in verdict.reasons if r.kind == "regime")
    assert "vocabulary of 128,256 is not the fitted runs' (1,024)" in texts
    assert "sequences of 2,048 tokens are x32 the fitted runs' (64)" in texts
    # A table that records no ratio does not get one guessed.
    with pytest.raises(ValueError, match="record no data-to-model ratio: give the big run's with --ratio"):
        extrapolate(analyse(runs.drop(columns="ratio"), n_boot=50), "transformer_bpe", 9.9e16)


def small_law(tmp_path: Path, family: str = "aunet2", seq_len: int = 128) -> Path:
    """A usable-looking law over 1e8-1e10 whose BSZ at 2e9 is about 50 bytes (under one sequence)."""
    budgets = tuple(np.geomspace(1e8, 1e10, 5))
    mean = float(np.mean(np.log(budgets)))

    def law(coef, exponent):
        cov = (0.02**2 + mean**2 * 0.005**2, -mean * 0.005**2, 0.005**2)
        return FittedLaw(coef, exponent, (coef / 2, coef * 2), (exponent - 0.01, exponent + 0.01), cov, 1.0, 3)

    card = LawCard(family=family, estimator="bowl", units="bytes", convention="spent", tolerance=0.01, level=0.95,
                   lr=law(0.0435, -0.176), bsz=law(0.08, 0.3),
                   budgets=tuple(BudgetFacts(float(b), 16, 1e-3, 64.0) for b in budgets), seed_spread=0.003,
                   loss=None, warnings=(), source="test", source_sha256="0" * 64, toolkit="test",
                   regime=Regime(family, (), None, (seq_len,), (259,), (1.0, 1.0)))
    card.write(tmp_path / "law.json")
    return tmp_path / "law.json"


def test_a_forced_law_says_how_its_batch_was_rounded_and_the_record_keeps_its_verdict(tmp_path, caplog):
    from aunet.config import ModelConfig
    from aunet.data import DataConfig
    from aunet.tracking import TrackingConfig
    from aunet.train import LawRefused, TrainConfig, train

    model = ModelConfig(arch="aunet", name="aunet2_test", dims=[32, 64], layers=[1, 1], head_dims=[16, 16],
                        ffn_dims=[64, 128], seq_len=128, window=32)

    def config(**extra):
        return TrainConfig(model=model, data=DataConfig(seq_len=128, valid_bytes=65536),
                           tracking=TrackingConfig(enabled=False), budget=2e9, law=str(small_law(tmp_path)),
                           eval_bytes=8192, output_dir=str(tmp_path / "run"), progress="off", **extra)

    # The config alone passes (nothing is known against it yet); the planned run's batch of ~50 bytes is
    # below one sequence, so training refuses before anything is written.
    with pytest.raises(LawRefused, match=r"below one sequence \(128 bytes\).*law_force=true"):
        train(config())
    assert not (tmp_path / "run" / "record.json").exists()
    with caplog.at_level(logging.WARNING, logger="aunet.train"):
        record = train(config(law_force=True))
    assert record.status == "finished", record.error
    assert record.bsz == 128 and record.seq_len == 128 and record.vocab_size == 259
    assert record.law_verdict.startswith("not usable at C = 2e+09: [not usable] the law's BSZ at the target")
    assert any("rounded to 128 (1 whole sequences of 128)" in m for m in caplog.messages)
    assert json.loads((tmp_path / "run" / "record.json").read_text())["law_verdict"] == record.law_verdict


def test_train_py_refuses_a_law_of_another_family_in_one_line_and_leaves_no_run_folder(tmp_path):
    law = small_law(tmp_path, seq_len=1024)
    out = tmp_path / "runs" / "refused"
    done = subprocess.run([sys.executable, "train.py", "model=mamba_bytes_tiny", "budget=2e9", f"law={law}",
                           "tracking=off", f"hydra.run.dir={out}"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the law was fitted on aunet2, the run is mamba_bytes" in errors[0]
    assert "--max-extrapolation" not in done.stderr and not out.exists()


def test_a_law_file_records_its_runs_regime(reference, tmp_path):
    from analysis.cards import law_card

    card = law_card(reference, "aunet2")
    card.write(tmp_path / "law.json")
    regime = LawCard.read(tmp_path / "law.json").regime
    assert regime == card.regime and regime.ratios == (0.2,) and regime.seq_lens == (256,)
    lo, hi = regime.tokens_per_param
    study = pd.read_csv(REFERENCE).query("family == 'aunet2' and status == 'finished'")
    per_param = study["train_units"] / 4.56 / study["params"]
    assert per_param.min() <= lo <= hi <= per_param.max() and hi > lo
    assert "derived from the ladder's regime" in regime.origin  # the committed table predates the columns
    recorded = dataclasses.replace(card, regime=Regime("aunet2", (0.2,), (lo, hi), (256,), (259,), (1.0, 1.0)))
    assert recorded.regime.origin == "recorded"
