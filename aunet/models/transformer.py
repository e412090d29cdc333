"""Decoder-only Transformer baseline, on bytes or on BPE tokens (Llama-style, untied head)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aunet.config import ModelConfig
from aunet.models.layers import KVCache, LanguageModel, Stack, init_weights


@dataclass
class TransformerState:
    caches: list[KVCache]
    position: int = 0


class Transformer(LanguageModel):
    def __init__(self, cfg: ModelConfig):
        d = cfg.dims[0]
        super().__init__(cfg, "trunk", lambda: Stack(d, cfg.layers[0], cfg.head_dims[0], cfg.ffn_dims[0], None,
                                                     cfg.norm_eps, cfg.rope_theta))
        init_weights(self, cfg.init_std, n_layers=cfg.layers[0])

    def forward(self, ids: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(self.trunk(self.embed(ids)))

    def init_state(self) -> TransformerState:
        return TransformerState(self.trunk.new_cache())

    @torch.no_grad()
    def step(self, token: int, state: TransformerState) -> torch.Tensor:
        x = self.embed(torch.tensor([[token]], device=self.head.weight.device))
        x = self.trunk.step(x, state.position, state.caches)
        state.position += 1
        return self.logits(x)[0, -1]
