"""Model zoo: ``build_model(cfg)`` builds any of the four architectures from its config.

Every model maps input ids [B, T] to next-unit logits [B, T, vocab] with
``model(ids)``, and supports cached generation with ``init_state()`` and
``step(token, state)``. Models know nothing of budgets, data or SLURM.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from aunet.config import ModelConfig
from aunet.models.aunet import AUNet
from aunet.models.mamba import MambaLM
from aunet.models.transformer import Transformer

__all__ = ["AUNet", "MambaLM", "Transformer", "build_model"]


def build_model(cfg: ModelConfig | dict[str, Any]) -> nn.Module:
    """Build the model a config describes (a ModelConfig or a plain dict of its fields)."""
    if not isinstance(cfg, ModelConfig):
        cfg = ModelConfig.from_dict(dict(cfg))
    if cfg.arch == "aunet":
        return AUNet(cfg)
    if cfg.arch == "transformer":
        return Transformer(cfg)
    return MambaLM(cfg)
