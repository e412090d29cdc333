"""Model zoo: ``build_model(cfg)`` builds the model of any registered architecture (``aunet.archs``).

Every model maps input ids [B, T] to next-unit logits [B, T, vocab] with
``model(ids)``, and supports cached generation with ``init_state()`` and
``step(token, state)``. Models know nothing of budgets, data or SLURM.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aunet.config import ModelConfig
from aunet.models.aunet import AUNet
from aunet.models.aunet import stage_lengths as pooled_lengths
from aunet.models.mamba import Mamba1LM, MambaLM
from aunet.models.transformer import Transformer

__all__ = ["AUNet", "Mamba1LM", "MambaLM", "Transformer", "build_model", "stage_lengths"]


def build_model(cfg: ModelConfig | dict[str, Any]) -> nn.Module:
    """Build the model a config describes (a ModelConfig or a plain dict of its fields)."""
    if not isinstance(cfg, ModelConfig):
        cfg = ModelConfig.from_dict(dict(cfg))
    return cfg.spec.build(cfg)


def stage_lengths(cfg: ModelConfig, ids: torch.Tensor, levels: torch.Tensor | None) -> list[int]:
    """Vectors per row each stage of ``cfg`` runs on ``ids`` [B, T] (one stage: the sequence; a pooling
    architecture: its pooled lengths from the per-byte ``levels``)."""
    return pooled_lengths(levels, cfg) if cfg.spec.pools else [int(ids.shape[1])]
