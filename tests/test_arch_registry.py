"""The architecture registry: a toy architecture registered by a test alone goes through the ladder, the
dry run, training, a two-trial sweep and the analysis without a line of the toolkit knowing its name."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aunet import ladder
from aunet.archs import ARCH_SPECS, PLUGINS_ENV, get_arch, unregister_arch
from aunet.config import ModelConfig
from aunet.flops import count_flops, count_params, flops_breakdown, flops_per_unit, predict_flop_counter
from aunet.models import build_model
from tests.helpers.sweeps import run_sweep

REPO = Path(__file__).resolve().parents[1]
TOY_MODULE = "tests.helpers.toy_arch"
TOY_ENV = {PLUGINS_ENV: TOY_MODULE, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@pytest.fixture
def toy():
    module = importlib.import_module(TOY_MODULE)
    yield module.TOY
    unregister_arch("toy")
    sys.modules.pop(TOY_MODULE, None)


def test_every_shipped_architecture_is_registered_with_a_model_and_fsdp_units():
    assert list(ARCH_SPECS)[:3] == ["aunet", "transformer", "mamba"]
    mamba1 = ModelConfig(arch="mamba", mamba_version=1, dims=[32], layers=[1], head_dims=[32], ffn_dims=[1], d_state=4)
    configs = [ModelConfig(dims=[32, 48], layers=[1, 1], head_dims=[16, 16], ffn_dims=[32, 32], seq_len=64),
               ModelConfig(arch="transformer", dims=[32], layers=[1], head_dims=[16], ffn_dims=[32], seq_len=64,
                           window=None),
               ModelConfig(arch="mamba", dims=[32], layers=[1], head_dims=[16], ffn_dims=[1], d_state=4), mamba1]
    assert mamba1.spec is not configs[2].spec  # Mamba-1 and Mamba-2 are two specs
    for cfg in configs:
        model = build_model(cfg)
        units = cfg.spec.sharded_layers()
        # FSDP shards every layer of every architecture (a unit that matched nothing would shard none).
        blocks = sum(stage.blocks for stage in flops_breakdown(cfg).stages)
        assert units and sum(isinstance(m, units) for m in model.modules()) == blocks, cfg.arch
        assert count_params(cfg) == sum(p.numel() for p in model.parameters()), cfg.arch


def test_an_unknown_architecture_is_one_clear_error():
    with pytest.raises(ValueError, match=r"field 'arch' is 'transfomer'; use one of \('aunet', 'transformer'"):
        ModelConfig(arch="transfomer", dims=[32], layers=[1], head_dims=[16], ffn_dims=[32])
    with pytest.raises(ValueError, match="did you mean transformer"):
        get_arch("transfomer")
    with pytest.raises(ValueError, match="must be one of \\('bytes',\\) for arch 'mamba'"):
        ModelConfig(arch="mamba", units="bpe", vocab_size=512, dims=[32], layers=[1], head_dims=[16], ffn_dims=[1])


def test_a_toy_architecture_goes_through_the_ladder_flops_and_the_flop_counter(toy):
    assert ladder.get_family("toy_bytes").arch == "toy" and "toy_bytes" in ladder.FAMILIES
    plan = ladder.plan("toy_bytes", 2e10, 0.005)
    cfg = plan.model
    assert cfg.arch == "toy" and cfg.spec is toy and ladder.family_of(cfg) == "toy_bytes"
    d, L = cfg.dims[0], cfg.layers[0]
    assert flops_per_unit(cfg) == 6.0 * (L * 2 * d * d + d * cfg.vocab_size)
    model = build_model(cfg)
    assert count_params(cfg) == sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, 256, (2, 32))
    assert count_flops(model, ids)["total"] == pytest.approx(predict_flop_counter(cfg, 2, [32]).counted)
    assert plan.params == count_params(cfg) and plan.steps >= 1
    # The prior of a byte architecture the paper never fitted: the paper's byte-level law.
    assert ladder.get_family("toy_bytes").prior_law == "aunet" and ladder.get_family("toy_bytes").paper_law is None


@pytest.mark.slow
def test_a_toy_architecture_runs_a_dry_run_a_two_trial_sweep_and_its_analysis(toy, tmp_path):
    env = {**os.environ, **TOY_ENV}
    study = ["sweep.families=[toy_bytes]", "sweep.budgets=[2e10]", "sweep.trials=2"]
    dry = subprocess.run([sys.executable, "-m", "sweeps", "plan", *study, "sweep.ratio=0.005", "sweep.force=true"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert "toy_bytes" in dry.stdout
    sweep_dir = tmp_path / "study"
    done = run_sweep(sweep_dir, *study, env=TOY_ENV)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("toy_bytes/*/*/record.json")]
    assert len(records) == 2 and all(r["status"] == "finished" for r in records)
    assert all(r["config"]["model"]["arch"] == "toy" and r["family"] == "toy_bytes" for r in records)
    assert all(r["flops_per_unit"] == flops_per_unit(ModelConfig.from_dict(r["config"]["model"])) for r in records)
    assert all(0 < r["bpb"] < 9 for r in records)
    analysis = subprocess.run([sys.executable, "-m", "analysis", "report", str(sweep_dir), "--out", str(tmp_path / "report")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "toy_bytes" in analysis.stdout + analysis.stderr, analysis.stdout[-2000:] + analysis.stderr[-2000:]
