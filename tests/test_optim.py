"""The optimizer against the paper's Table 6: linear warm-up over 10% of the steps, cosine
decay to 0.01 x the peak, AdamW with decay on matrices only. Expected values are worked
out by hand from the schedule's closed form, not from ``lr_at``."""

import math

import pytest
import torch
from torch import nn

from aunet.optim import OptimConfig, build_optimizer, lr_at

TABLE6 = OptimConfig()  # the defaults are Table 6


def test_defaults_are_table6():
    assert (TABLE6.warmup_fraction, TABLE6.min_lr_fraction) == (0.1, 0.01)
    assert (TABLE6.beta1, TABLE6.beta2, TABLE6.weight_decay, TABLE6.grad_clip) == (0.9, 0.95, 0.1, 0.2)
    assert TABLE6.eps == 1e-8 and TABLE6.lr is None


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1),  # warm-up: 100 steps, 10 of them linear from peak/10 to the peak
        (4, 0.5),
        (9, 1.0),
        (10, 1.0),  # cosine starts at the peak
        (55, 0.01 + 0.99 * 0.5),  # halfway through the 90 decay steps: cos(pi/2) = 0
        (25, 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 6))),  # 15 of 90 decay steps
        (100, 0.01),  # the floor: 0.01 x peak
        (1000, 0.01),  # and it stays there
    ],
)
def test_schedule_matches_the_closed_form(step, expected):
    assert lr_at(step, 100, 1.0, TABLE6) == pytest.approx(expected, rel=1e-12, abs=0)


def test_schedule_scales_with_the_peak_and_the_fractions():
    cfg = OptimConfig(warmup_fraction=0.2, min_lr_fraction=0.1)
    assert lr_at(0, 50, 3e-3, cfg) == pytest.approx(3e-3 / 10, rel=1e-12)  # 10 warm-up steps
    assert lr_at(50, 50, 3e-3, cfg) == pytest.approx(3e-4, rel=1e-12)  # floor 0.1 x peak
    assert lr_at(30, 50, 3e-3, cfg) == pytest.approx(3e-4 + 2.7e-3 * 0.5, rel=1e-12)  # halfway


def test_schedule_without_warmup_starts_at_the_peak_and_decays_monotonically():
    cfg = OptimConfig(warmup_fraction=0.0)
    lrs = [lr_at(s, 40, 2.0, cfg) for s in range(41)]
    assert lrs[0] == 2.0
    assert lrs[20] == pytest.approx(0.02 + 1.98 * 0.5, rel=1e-12)
    assert lrs[-1] == pytest.approx(0.02, rel=1e-12)
    assert all(b < a for a, b in zip(lrs, lrs[1:]))


def test_short_runs_still_warm_up_for_one_step():
    # 10% of 3 steps rounds to 0: one warm-up step at the peak, then the decay.
    assert lr_at(0, 3, 1.0, TABLE6) == 1.0
    assert lr_at(1, 3, 1.0, TABLE6) == 1.0
    assert lr_at(2, 3, 1.0, TABLE6) == pytest.approx(0.01 + 0.99 * 0.5, rel=1e-12)
    # 10% of 15 steps rounds to 2 warm-up steps.
    assert lr_at(0, 15, 1.0, TABLE6) == 0.5
    # A one-step run without warm-up: the peak, then the floor right after.
    no_warmup = OptimConfig(warmup_fraction=0.0)
    assert (lr_at(0, 1, 1.0, no_warmup), lr_at(1, 1, 1.0, no_warmup)) == (1.0, pytest.approx(0.01, rel=1e-12))


def test_warmup_rises_linearly_and_decay_never_goes_below_the_floor():
    lrs = [lr_at(s, 1000, 1.0, TABLE6) for s in range(1000)]
    assert lrs[:100] == pytest.approx([(s + 1) / 100 for s in range(100)], rel=1e-12)
    assert max(lrs) == 1.0 and min(lrs[100:]) > 0.01
    assert all(b <= a for a, b in zip(lrs[100:], lrs[101:]))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.proj = nn.Linear(4, 3, bias=True)
        self.norm = nn.LayerNorm(3)
        self.frozen = nn.Linear(3, 3, bias=False)
        self.frozen.weight.requires_grad_(False)


def test_weight_decay_goes_to_matrices_only():
    model = _Tiny()
    cfg = OptimConfig(weight_decay=0.3, beta1=0.8, beta2=0.9, eps=1e-6)
    opt = build_optimizer(model, cfg, lr=0.5)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.3 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model.embed.weight), id(model.proj.weight)}
    assert {id(p) for p in plain["params"]} == {id(model.proj.bias), id(model.norm.weight), id(model.norm.bias)}
    for group in opt.param_groups:
        assert group["lr"] == 0.5 and group["betas"] == (0.8, 0.9) and group["eps"] == 1e-6
        assert not group["fused"]  # CPU parameters: the fused kernel is CUDA-only


def test_one_step_with_zero_gradients_only_shrinks_the_matrices():
    # With zero gradients Adam's update is 0, so only the decoupled decay moves a parameter:
    # p <- p * (1 - lr * weight_decay) for matrices, unchanged for everything else.
    model = _Tiny()
    opt = build_optimizer(model, OptimConfig(weight_decay=0.3), lr=0.5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        factor = 1 - 0.5 * 0.3 if name in ("embed.weight", "proj.weight") else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lr", 0.0, "is 0.0; use a positive learning rate or null for the law's prior"),
        ("lr", -1e-3, "is -0.001; use a positive learning rate or null for the law's prior"),
        ("lr", math.inf, "is inf; use a positive learning rate or null for the law's prior"),
        ("lr", math.nan, "is nan; use a positive learning rate or null for the law's prior"),
        ("weight_decay", -1e-9, "is -1e-09; must be >= 0"),
        ("beta1", 1.0, "is 1.0; must be in \\[0, 1\\)"),
        ("beta1", -0.1, "is -0.1; must be in \\[0, 1\\)"),
        ("beta2", 1.0, "is 1.0; must be in \\[0, 1\\)"),
        ("beta2", -0.1, "is -0.1; must be in \\[0, 1\\)"),
        ("grad_clip", 0.0, "is 0.0; must be positive"),
        ("warmup_fraction", 1.0, "is 1.0; must be in \\[0, 1\\)"),
        ("warmup_fraction", -0.1, "is -0.1; must be in \\[0, 1\\)"),
        ("min_lr_fraction", 1.01, "is 1.01; must be in \\[0, 1\\]"),
        ("min_lr_fraction", -0.01, "is -0.01; must be in \\[0, 1\\]"),
    ],
)
def test_bad_config_is_refused_with_the_field_and_the_fix(field, value, message):
    with pytest.raises(ValueError, match=f"^optim config: field '{field}' {message}$"):
        OptimConfig(**{field: value})


def test_boundary_values_are_accepted():
    OptimConfig(lr=1e-9, weight_decay=0.0, beta1=0.0, beta2=0.0, grad_clip=1e-9,
                warmup_fraction=0.0, min_lr_fraction=0.0)
    OptimConfig(min_lr_fraction=1.0)
