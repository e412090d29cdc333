"""AdamW with the paper's schedule (Table 6): linear warm-up over a fraction of the
steps, then cosine decay to a fraction of the peak."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class OptimConfig:
    lr: float | None = None  # peak LR; None: the hyperparameter law's prior at this budget
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 0.2
    warmup_fraction: float = 0.1
    min_lr_fraction: float = 0.01

    def __post_init__(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"optim config: field '{name}' {message}")

        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            fail("lr", f"is {self.lr}; use a positive learning rate or null for the law's prior")
        if self.weight_decay < 0:
            fail("weight_decay", f"is {self.weight_decay}; must be >= 0")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                fail(name, f"is {getattr(self, name)}; must be in [0, 1)")
        if self.grad_clip <= 0:
            fail("grad_clip", f"is {self.grad_clip}; must be positive")
        if not 0 <= self.warmup_fraction < 1:
            fail("warmup_fraction", f"is {self.warmup_fraction}; must be in [0, 1)")
        if not 0 <= self.min_lr_fraction <= 1:
            fail("min_lr_fraction", f"is {self.min_lr_fraction}; must be in [0, 1]")


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.AdamW:
    """Weight decay on matrices only; norms, biases and 1-d parameters are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused or None)


def lr_at(step: int, total_steps: int, peak: float, cfg: OptimConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based) out of ``total_steps``."""
    warmup = max(1, round(cfg.warmup_fraction * total_steps)) if cfg.warmup_fraction > 0 else 0
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = cfg.min_lr_fraction * peak
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
