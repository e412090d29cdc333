"""The ladder: presets, the paper's conventions (Tables 9-11), the family rule, plans, bad input."""

import json
import math
import re
from pathlib import Path

import pytest

from aunet.config import ModelConfig
from aunet.flops import DEFAULT_CONTRACTION, flops_breakdown, flops_per_unit
from aunet.ladder import (
    CPU_BPE_VOCAB,
    CPU_SEQ,
    CPU_WINDOW,
    FAMILIES,
    MIN_STEPS,
    PRESET_DIR,
    check_steps,
    family_config,
    ffn_dim_for,
    list_presets,
    load_preset,
    main,
    plan,
    presets,
    resolve_laws,
    steps_at,
)
from aunet.ladder.presets import project_root
from aunet.laws import LAW_SCHEMA, PAPER_LAWS, HyperLaws, LawCard, PowerLaw
from aunet.record import RunRecord
from aunet.train import TrainConfig
from aunet.verdict import judge
from sweeps.study import StudyConfig, cell_trials
from tests.helpers.cards import good_card

# Table 10 and 11, "Scaling" rows: label -> (Total FLOPs, G/Acc x Batch x NGpus sequences per step, LR).
BASELINE = {
    "1e19": (2.0e19, 15 * 25 * 1, 0.008152), "2e19": (3.3e19, 18 * 24 * 1, 0.007378),
    "4e19": (5.6e19, 22 * 22 * 1, 0.006633), "8e19": (1.1e20, 15 * 19 * 2, 0.005788),
    "1e20": (2.0e20, 13 * 17 * 3, 0.005204), "3e20": (3.3e20, 11 * 14 * 5, 0.004693),
    "5e20": (6.0e20, 12 * 12 * 6, 0.0042), "1e21": (1.1e21, 4 * 8 * 32, 0.003722),
    "2e21": (2.0e21, 4 * 9 * 32, 0.003357), "3e21": (3.6e21, 3 * 7 * 64, 0.003018),
    "6e21": (6.5e21, 4 * 6 * 64, 0.002701), "1e22": (1.2e22, 3 * 5 * 128, 0.002416),
}
BASELINE_STEPS = {"1e19": 14008, "2e19": 16120, "4e19": 19438, "8e19": 24252, "1e20": 28160, "3e20": 32466,
                  "5e20": 39573, "1e21": 46980, "2e21": 55900, "3e21": 64711, "6e21": 77520, "1e22": 84915}
AUNET = {
    "scaling_aunet2_1e19": (1.1e19, 2 * 53 * 1, 0.002923), "scaling_aunet2_2e19": (2.2e19, 3 * 43 * 1, 0.002615),
    "scaling_aunet2_4e19": (3.7e19, 4 * 39 * 1, 0.002377), "scaling_aunet2_8e19": (7.6e19, 6 * 32 * 1, 0.002096),
    "scaling_aunet2_1e20": (1.3e20, 4 * 28 * 2, 0.001906), "scaling_aunet2_3e20": (2.6e20, 4 * 24 * 3, 0.001685),
    "scaling_aunet2_5e20": (5.0e20, 4 * 18 * 5, 0.001507), "scaling_aunet2_9e20": (9.3e20, 1 * 14 * 32, 0.001348),
    "scaling_aunet2_2e21": (1.7e21, 2 * 8 * 32, 0.001214), "scaling_aunet2_3e21": (3.1e21, 2 * 10 * 32, 0.00109),
    "scaling_aunet2_6e21": (5.9e21, 1 * 8 * 96, 0.0009731), "scaling_aunet2_1e22": (1.1e22, 1 * 6 * 160, 0.0008719),
    "scaling_aunet3_1e19": (1.3e19, 2 * 55 * 1, 0.002872), "scaling_aunet3_2e19": (2.4e19, 3 * 45 * 1, 0.002561),
    "scaling_aunet3_5e19": (4.7e19, 4 * 42 * 1, 0.002279), "scaling_aunet3_7e19": (7.3e19, 5 * 38 * 1, 0.00211),
    "scaling_aunet3_2e20": (1.5e20, 4 * 30 * 2, 0.001852), "scaling_aunet3_3e20": (2.7e20, 4 * 24 * 3, 0.001678),
    "scaling_aunet3_5e20": (5.2e20, 2 * 22 * 8, 0.001496), "scaling_aunet3_9e20": (9.2e20, 1 * 14 * 32, 0.001351),
    "scaling_aunet3_2e21": (1.7e21, 1 * 16 * 32, 0.001213), "scaling_aunet3_3e21": (3.3e21, 1 * 10 * 64, 0.001077),
    "scaling_aunet3_6e21": (6.0e21, 1 * 8 * 96, 0.0009707), "scaling_aunet3_1e22": (1.2e22, 1 * 4 * 256, 0.0008612),
}
TABLE9_PRESETS = (
    ["transformer_bytes_1b", "mamba_bytes_1b", "transformer_bpe_1b", "aunet2_1b", "aunet3_1b", "aunet4_1b",
     "transformer_bpe_1b_dm8", "aunet2_1b_dm8", "aunet3_1b_dm8", "aunet4_1b_dm8", "transformer_bpe_7b", "aunet2_7b"]
    + [f"scaling_baseline_{label}" for label in BASELINE] + list(AUNET)
)
TINY = ["aunet2_tiny", "aunet3_tiny", "aunet4_tiny", "transformer_bytes_tiny", "transformer_bpe_tiny",
        "mamba_bytes_tiny"]


# ---- presets -------------------------------------------------------------------------


def test_every_table9_row_and_tiny_model_is_a_preset():
    assert set(TABLE9_PRESETS + TINY) <= set(list_presets())
    assert len(TABLE9_PRESETS) == 12 + 12 + 24


@pytest.mark.parametrize("name", sorted(set(list_presets())))
def test_presets_load_into_model_config(name):
    cfg = load_preset(name)
    assert isinstance(cfg, ModelConfig) and cfg.name == name
    if cfg.units == "bpe":
        assert cfg.arch == "transformer" and cfg.vocab_size in (128256, 4096)
    if name in TABLE9_PRESETS:
        bpe_seq = 4096 if name in ("transformer_bpe_1b", "transformer_bpe_7b") else 2048  # Table 10
        assert cfg.seq_len == (8192 if cfg.units == "bytes" else bpe_seq)
        if cfg.arch == "aunet":
            assert cfg.window == 512
        if name.startswith("scaling_baseline"):
            assert (cfg.vocab_size, cfg.seq_len) == (128256, 2048)
    if name in TINY:
        assert max(cfg.dims) <= 384 and cfg.seq_len <= 1024


def test_unknown_preset_names_the_close_ones():
    with pytest.raises(ValueError, match="aunet2_tiny") as err:
        load_preset("aunet2_tinny")
    assert "aunet2_tinny" in str(err.value)
    with pytest.raises(ValueError, match="known presets"):
        load_preset("zzzzzzzz")


def test_conf_is_read_from_the_checkout_or_aunet_root_and_a_missing_one_is_named(tmp_path, monkeypatch):
    checkout = Path(__file__).resolve().parents[1]
    assert project_root({}) == checkout and PRESET_DIR == checkout / "conf" / "model"
    assert project_root({"AUNET_ROOT": str(tmp_path)}) == tmp_path.resolve()
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path / "conf" / "model")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'conf' / 'model'} does not exist") + ".*AUNET_ROOT"):
        load_preset("aunet2_tiny")


# ---- the paper's conventions ----------------------------------------------------------


@pytest.mark.parametrize("label", sorted(BASELINE))
def test_table10_steps_are_ratio_times_no_head_flops_over_batch(label):
    """Steps x tokens/step = 10 x F_no-head: exact on every scaling baseline row."""
    cfg = load_preset(f"scaling_baseline_{label}")
    f_gamma = flops_per_unit(cfg, include_head=False)
    _, seqs, lr = BASELINE[label]
    assert 10 * f_gamma / (seqs * 2048) == pytest.approx(BASELINE_STEPS[label], abs=1)
    # and the LR is the paper's law at C = 10 x F_no-head² (the row's label, within rounding)
    assert PAPER_LAWS["bpe"].lr(10 * f_gamma**2) == pytest.approx(lr, rel=0.002)


@pytest.mark.parametrize("label", sorted(BASELINE))
def test_plan_at_table10_budgets_gives_table10_and_11_lr_and_batch(label):
    total, seqs, lr = BASELINE[label]
    p = plan("transformer_bpe", total, 10)
    # Exact: the law at the compute it was evaluated at, the batch rounded to whole sequences.
    law = PAPER_LAWS["bpe"]
    assert p.lr == pytest.approx(law.lr(p.law_compute), rel=1e-12)
    assert p.bsz == round(law.bsz(p.law_compute) / 2048) * 2048
    # Against the printed table: LR within 1% (the row's model is the grid point next to the plan's,
    # measured <= 0.9%); batches within 7% (the paper rounds them to round numbers of sequences,
    # measured <= 5.9% at 1e22).
    assert p.lr == pytest.approx(lr, rel=0.01)
    assert p.bsz == pytest.approx(seqs * 2048, rel=0.07)
    # and the model it picks is the row's (or its neighbour on the grid)
    paper = load_preset(f"scaling_baseline_{label}")
    assert p.model.dims[0] == pytest.approx(paper.dims[0], rel=0.1)
    assert p.flops_per_unit == pytest.approx(flops_per_unit(paper), rel=0.1)


@pytest.mark.parametrize("name", sorted(AUNET))
def test_aunet_plan_at_table10_budgets_gives_table10_and_11_lr_and_batch(name):
    total, seqs, lr = AUNET[name]
    p = plan(name.split("_")[1], total, 10)
    law = PAPER_LAWS["aunet"]
    assert p.lr == pytest.approx(law.lr(p.law_compute), rel=1e-12)
    assert p.bsz == round(law.bsz(p.law_compute) / 8192) * 8192
    # Against the printed table (see above): measured LR <= 0.6%, batches <= 3.9% off.
    assert p.lr == pytest.approx(lr, rel=0.01)
    assert p.bsz == pytest.approx(seqs * 8192, rel=0.05)
    assert p.seq_len == 8192 and p.model.window == 512


def test_paper_convention_budget_is_the_head_free_compute():
    cfg = load_preset("scaling_baseline_1e19")
    c_paper = 10 * flops_per_unit(cfg, include_head=False) ** 2  # 1.16e19, the row's label
    p = plan("transformer_bpe", c_paper, 10, convention="paper")
    assert p.model.dims == [1024] and p.model.layers == [12]
    assert p.paper_compute == pytest.approx(c_paper, rel=0.02)
    assert p.total_flops == pytest.approx(2.0e19, rel=0.03)  # Table 10's Total FLOPs
    assert p.lr == pytest.approx(0.008152, rel=0.01)


def test_ratio_uses_k_squared_for_bytes():
    p = plan("aunet2", 1e20, 10)
    gamma_bytes = p.train_units / p.flops_per_unit_ratio
    assert gamma_bytes == pytest.approx(4.56**2 * p.achieved_ratio)
    assert p.achieved_ratio == pytest.approx(10, rel=0.1)
    q = plan("transformer_bpe", 1e20, 10)
    assert q.train_units / q.flops_per_unit_ratio == pytest.approx(q.achieved_ratio)
    # a BPE with its own compression converts with (k / b)²
    r = plan("transformer_bpe", 1e20, 10, bpe_bytes_per_token=3.8)
    assert r.train_units / r.flops_per_unit_ratio == pytest.approx((4.56 / 3.8) ** 2 * r.achieved_ratio)


def test_budget_is_spent_and_recorded():
    p = plan("transformer_bpe", 3e20, 10)
    assert p.total_flops == pytest.approx(3e20, rel=0.01)  # rounding of steps only
    assert p.paper_compute == pytest.approx(p.train_units * p.flops_per_unit_ratio)
    assert p.law_compute == pytest.approx(3e20 * p.flops_per_unit_ratio / p.flops_per_unit, rel=0.01)
    assert p.train_units == p.steps * p.bsz and p.bsz % p.seq_len == 0
    a = plan("aunet3", 1e20, 10)
    assert a.contraction == pytest.approx(list(DEFAULT_CONTRACTION[:3]))
    b = plan("aunet3", 1e20, 10, contraction=[4.9, 7.2])
    assert b.contraction == pytest.approx([1.0, 4.9, 7.2])
    assert b.flops_per_unit == pytest.approx(flops_per_unit(b.model, [4.9, 7.2]))


# ---- the family rule ------------------------------------------------------------------


def test_ffn_rule_reproduces_table9():
    for d, f in ((256, 768), (384, 1024), (512, 1536), (640, 1792), (768, 2048), (896, 2560), (1024, 2816),
                 (1152, 3072), (1280, 3584), (1664, 4608), (1792, 4864), (1920, 5120), (2816, 7680),
                 (3456, 9216), (3840, 10240), (4096, 11008), (4864, 13056)):
        assert ffn_dim_for(d) == f


def test_family_configs_follow_table9_shapes():
    cfg = family_config("aunet3", 2048, 18, 8192, 512)
    assert cfg.dims == [512, 2048, 3072] and cfg.layers == [3, 3, 18]
    assert cfg.head_dims == [64, 128, 128] and cfg.ffn_dims == [1536, 5632, 8192]
    cfg = family_config("aunet4", 2048, 10, 8192, 512)
    assert cfg.dims == [512, 2048, 3072, 4608] and cfg.ffn_dims[-1] == 12288
    assert family_config("aunet2", 1280, 14, 8192, 512).dims == [256, 1280]  # Table 9 rounds 320 down
    tiny = family_config("aunet2", 64, 1, 1024, 128)
    assert tiny.dims == [32, 64] and tiny.layers == [1, 1]


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_bigger_budget_never_gives_a_smaller_model(arch):
    budgets = [10 ** (e / 8) for e in range(8 * 12, 8 * 23)]  # 1e12 .. 1e23, fixed sequence length
    seq = 1024 if FAMILIES[arch].units == "bytes" else 256
    for convention in ("spent", "paper"):
        plans = []
        for c in budgets:
            try:
                plans.append(plan(arch, c, 1.0, seq_len=seq, window=128, vocab_size=4096, convention=convention))
            except ValueError as err:
                assert "too small" in str(err)
        assert len(plans) > 60
        for key in ("flops_per_unit", "flops_per_unit_ratio"):
            values = [getattr(p, key) for p in plans]
            assert all(b >= a for a, b in zip(values, values[1:])), key
            assert all(b > a for a, b in zip(values[::8], values[8::8])), key  # x10 budget: strictly bigger


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_cpu_budgets_give_small_models(arch):
    # 1e13 FLOPs is minutes on 2 cores; the smallest model fits at ratio 0.3.
    p = plan(arch, 1e13, 0.3)
    assert p.params < 5e6 and p.seq_len <= 1024 and p.steps >= 10
    assert p.model.dims[-1] <= 512
    if arch == "transformer_bpe":
        q = plan(arch, 1e11, 0.1)
        assert q.model.vocab_size == CPU_BPE_VOCAB and q.params < 2e6


def test_tiny_widths_give_a_16_wide_byte_stage_with_16_wide_heads():
    cfg = family_config("aunet2", 48, 1, CPU_SEQ["bytes"], CPU_WINDOW)
    assert cfg.dims == [16, 48] and cfg.head_dims == [16, 16] and cfg.layers == [1, 1]
    assert family_config("aunet2", 64, 1, 256, 64).dims == [32, 64]  # the paper's grid is unchanged from 64 up
    smallest = family_config("aunet2", 32, 1, CPU_SEQ["bytes"], CPU_WINDOW)
    assert smallest.dims == [16, 32] and flops_per_unit(smallest, [1.0, 3.874]) < 1.3e5


@pytest.mark.parametrize("family", ["aunet2", "transformer_bpe"])
@pytest.mark.parametrize("ratio", [0.2, 1.0])
def test_cpu_plans_train_at_least_the_ratio_and_more_data_for_twice_the_budget(family, ratio):
    # The nearest tiny rung could train well under the ratio (γ 0.13 for 0.2) and give a budget
    # twice as large less data; the CPU rule takes the largest rung that keeps the ratio.
    budgets = [b for b in (1e11 * 2**k for k in range(7)) if b >= (3e11 if ratio == 1.0 else 1e11)]
    plans = [plan(family, b, ratio) for b in budgets]
    assert all(p.achieved_ratio >= ratio * 0.999 for p in plans)
    assert all(b.train_units > a.train_units for a, b in zip(plans, plans[1:]))
    assert all(b.flops_per_unit >= a.flops_per_unit for a, b in zip(plans, plans[1:]))


def test_cpu_regime_keeps_200_steps_and_8_batch_sizes_where_the_design_says():
    # A box of BSZ x/÷ 3 around 1 KB at 1e11 FLOPs, ratio 0.2 (the pilot's smallest cell): a study's
    # trials there snap to every whole number of 256-byte sequences from 256 to 3,072.
    p = plan("aunet2", 1e11, 0.2, contraction=[3.874])
    trials = cell_trials(StudyConfig(name="pilot", trials=32, bsz_factor=3), "aunet2", 1e11, p.seq_len, p.lr, 1024)
    sizes = sorted({t.bsz for t in trials})
    assert sizes == list(range(256, 3072 + 1, p.seq_len)) and len(sizes) >= 8
    assert check_steps(p, sizes[-1]) >= MIN_STEPS
    assert steps_at(p, 1024) == pytest.approx(p.budget / p.flops_per_unit / 1024)


def test_too_few_steps_are_refused_with_the_budget_that_fixes_them():
    p = plan("aunet2", 1e11, 0.2, contraction=[3.874])
    with pytest.raises(ValueError, match="optimizer steps") as err:
        check_steps(p, 8192)
    steps = steps_at(p, 8192)
    assert steps < MIN_STEPS
    fix = float(str(err.value).split("raise the budget to >= ")[1].split(" FLOPs")[0])
    assert fix == pytest.approx(1e11 * MIN_STEPS / steps, rel=1e-2)
    assert check_steps(p, 8192, force=True) == pytest.approx(steps)  # forced: let through, steps returned


def test_a_prior_takes_one_law_file_per_family_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative to the project root when not found from here
    prior = {"aunet": "conf/laws/cpu_aunet.json", "bpe": "conf/laws/cpu_bpe.json"}
    laws = PRESET_DIR.parent / "laws"
    assert resolve_laws(prior, "bytes") == HyperLaws.from_file(laws / "cpu_aunet.json")
    assert resolve_laws(prior, "bpe") == HyperLaws.from_file(laws / "cpu_bpe.json")
    assert resolve_laws(prior, "bpe").units == "tokens" != resolve_laws(prior, "bytes").units
    with pytest.raises(ValueError, match="nope.json does not exist"):
        resolve_laws({"aunet": "conf/laws/nope.json"}, "bytes")


def test_shipped_cpu_prior_laws_have_provenance_and_are_the_studies_priors():
    import yaml

    conf = PRESET_DIR.parent
    for study in ("demo", "reference"):
        prior = yaml.safe_load((conf / "sweep" / f"{study}.yaml").read_text())["sweep"]["prior"]
        assert prior == {"aunet": "conf/laws/cpu_aunet.json", "bpe": "conf/laws/cpu_bpe.json"}
    for name in ("cpu_aunet", "cpu_bpe"):
        card = LawCard.read(conf / "laws" / f"{name}.json")  # the current schema, upgraded from the pilot's files
        assert "conf/sweep/cpu_prior_pilot.yaml" in card.source and "schema 1" in card.warnings[0]
        assert f"--law-out conf/laws/{name}.json" in (conf / "sweep" / "cpu_prior_pilot.yaml").read_text()
        assert len(card.budgets) == 3 and not judge(card, 1e13).usable  # a prior to centre boxes on, no recipe
        assert (conf / "sweep" / "cpu_prior_pilot.yaml").exists()


# ---- plans: output and laws ------------------------------------------------------------


def test_custom_law_replaces_the_prior():
    law = HyperLaws(PowerLaw(1000.0, 0.0), PowerLaw(1e-3, 0.0), "bytes", "fitted")
    p = plan("aunet2", 1e13, 1, laws=law)
    assert p.lr == pytest.approx(1e-3) and p.bsz == 1024 and p.law_source == "fitted"
    assert p.law_compute == 1e13  # a fitted law is evaluated at the budget
    tokens = HyperLaws(PowerLaw(1000.0, 0.0), PowerLaw(1e-3, 0.0), "tokens", "in tokens")
    assert plan("aunet2", 1e13, 1, laws=tokens).law_bsz == pytest.approx(4560)


def test_law_from_json_file(tmp_path):
    path = tmp_path / "law.json"
    good_card().write(path)
    p = plan("aunet3", 1e14, 1, laws=str(path))
    assert p.lr == pytest.approx(6.6 * 1e14**-0.176)
    path.write_text(json.dumps({"bsz": {"coef": 2.0, "exponent": 0.3}, "lr": {"coef": 5.0, "exponent": -0.18},
                                "units": "bytes", "source": "file"}))
    with pytest.raises(ValueError, match=f"not '{LAW_SCHEMA}'"):
        plan("aunet3", 1e14, 1, laws=str(path))
    with pytest.raises(ValueError, match="does not exist"):
        plan("aunet3", 1e14, 1, laws=tmp_path / "missing.json")


def test_overrides_table_and_record():
    p = plan("aunet2", 1e20, 10)
    overrides = p.to_overrides()
    assert any(o.startswith("++model.dims=[") for o in overrides)
    assert f"++steps={p.steps}" in overrides and "++model.window=512" in overrides
    assert f"++optim.lr={p.lr!r}" in overrides and "++family=aunet2" in overrides
    text = p.table()
    for word in ("dims", "steps", "peak LR", "contraction", "compute spent"):
        assert word in text
    record = RunRecord(status="pending", **p.record_fields())
    assert record.budget == 1e20 and record.units == "bytes" and record.contraction == p.contraction
    assert json.loads(json.dumps(p.to_dict()))["model"]["dims"] == p.model.dims


def test_cli_prints_a_plan(capsys):
    assert main(["--family", "aunet2", "--budget", "1e20", "--ratio", "10"]) == 0
    out = capsys.readouterr().out
    assert "aunet2" in out and "peak LR" in out
    assert main(["--family", "transformer_bpe", "--budget", "1e19", "1e20", "--ratio", "10"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    assert main(["--presets"]) == 0
    assert "scaling_aunet3_1e22" in capsys.readouterr().out


# ---- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0, -1e20, float("nan"), float("inf"), "lots"])
def test_bad_budget(budget):
    with pytest.raises(ValueError, match="budget") as err:
        plan("aunet2", budget, 10)
    assert repr(budget) in str(err.value) or str(budget) in str(err.value)


@pytest.mark.parametrize("ratio", [0, -2, float("nan")])
def test_bad_ratio(ratio):
    with pytest.raises(ValueError, match="ratio"):
        plan("aunet2", 1e20, ratio)


def test_budget_too_small_names_what_would_work():
    with pytest.raises(ValueError, match="too small") as err:
        plan("aunet2", 1e11, 10)
    message = str(err.value)
    assert "1e+11" in message and "at least" in message and "ratio" in message
    need = float(message.split("at least ")[1].split(" ")[0])
    plan("aunet2", need * 1.01, 10)  # what it says works, works


def test_budget_too_large_and_unknown_family():
    with pytest.raises(ValueError, match="largest"):
        plan("transformer_bpe", 1e40, 10)
    with pytest.raises(ValueError, match="aunet2") as err:
        plan("aunet5", 1e20, 10)
    assert "aunet5" in str(err.value)
    with pytest.raises(ValueError, match="convention"):
        plan("aunet2", 1e20, 10, convention="mine")


def test_bad_contraction_and_seq_len():
    with pytest.raises(ValueError, match="contraction"):
        plan("aunet3", 1e20, 10, contraction=[5.0])
    with pytest.raises(ValueError, match="does not pool"):
        plan("transformer_bytes", 1e20, 10, contraction=[5.0])
    with pytest.raises(ValueError, match="seq_len"):
        plan("aunet2", 1e20, 10, seq_len=0)


def test_cli_errors_exit_2(capsys):
    assert main(["--family", "aunet2", "--budget", "1e11", "--ratio", "10"]) == 2
    assert "too small" in capsys.readouterr().err
    assert main(["--family", "aunet2", "--budget", "1e20", "--ratio", "-1"]) == 2
    assert "ratio" in capsys.readouterr().err


def test_breakdown_of_a_plan_is_consistent():
    p = plan("aunet4", 1e21, 10)
    b = flops_breakdown(p.model, p.contraction)
    assert b.total == p.flops_per_unit and b.without_head == p.flops_per_unit_ratio
    assert math.isclose(p.achieved_ratio, p.train_units / b.without_head / 4.56**2)


def test_overrides_compose_into_the_training_config(tmp_path):
    conf = PRESET_DIR.parent
    from hydra import compose, initialize_config_dir

    p = plan("aunet3", 1e13, 0.5)
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose("train", overrides=[*p.to_overrides(), f"output_dir={tmp_path}"])
    run = TrainConfig.from_hydra(cfg)
    assert run.model == p.model and (run.steps, run.bsz, run.budget) == (p.steps, p.bsz, p.budget)
    assert run.optim.lr == pytest.approx(p.lr)


# ---- one planner: plan_model for a given model -------------------------------------------


def test_a_budget_below_one_step_is_refused_with_the_smallest_that_works():
    from aunet.ladder import plan_model

    tiny = load_preset("aunet2_tiny")
    with pytest.raises(ValueError, match="too small for model 'aunet2_tiny'") as err:
        plan_model(tiny, 1e3)
    need = float(str(err.value).split("buys a whole step is ")[1].split(" ")[0])
    assert plan_model(tiny, need).steps == 1  # what it names works
    with pytest.raises(ValueError, match="too small"):
        plan_model(tiny, need / 1.1)  # and is the smallest, to its 3 significant digits
    with pytest.raises(ValueError, match="too small"):
        plan_model(tiny, 1e3, bsz=4096, lr=1e-3)  # a given batch size too


def test_a_law_in_tokens_is_converted_for_a_byte_model_as_in_the_ladder():
    from aunet.ladder import plan_model

    tokens = HyperLaws(PowerLaw(1000.0, 0.0), PowerLaw(1e-3, 0.0), "tokens", "in tokens")
    p = plan_model(load_preset("aunet2_tiny"), 1e12, laws=tokens)
    assert p.law_bsz == pytest.approx(4560) and p.bsz == 4096 and p.lr == pytest.approx(1e-3)


def test_the_family_plan_is_the_model_plan_of_its_model():
    from aunet.ladder import DataMeasurements, plan_model

    p = plan("aunet3", 1e13, 0.5)
    q = plan_model(p.model, 1e13, ratio=0.5, measured=DataMeasurements(p.contraction))
    assert q == p


def test_a_plan_on_several_processes_keeps_whole_sequences_per_process_and_its_budget():
    p = plan("aunet2", 1e13, 0.3, bsz=3 * CPU_SEQ["bytes"])
    assert p.sequences_per_step == 3 and p.for_world(1) is p
    q = p.for_world(2)
    assert q.sequences_per_step == 4 and q.steps == round(p.budget / p.flops_per_unit / q.bsz)
    assert q.train_units == q.steps * q.bsz and q.total_flops == pytest.approx(q.train_units * q.flops_per_unit)
    assert (q.lr, q.model) == (p.lr, p.model)
