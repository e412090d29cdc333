"""Mamba on bytes: mambapy's residual blocks with our own embedding, norm and head.

On CUDA, ``mamba_ssm``'s fused kernels are used when that package is installed
(mambapy's ``use_cuda`` switch); everywhere else mambapy's parallel scan runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from mambapy.mamba import Mamba, MambaConfig
from torch import nn

from aunet.config import ModelConfig
from aunet.models.layers import RMSNorm


def _mamba_ssm_available() -> bool:
    try:
        import mamba_ssm  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class MambaState:
    caches: list


class MambaLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dims[0]
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.mamba_config = MambaConfig(
            d_model=d, n_layers=cfg.layers[0], d_state=cfg.d_state, expand_factor=cfg.expand, d_conv=cfg.d_conv,
            rms_norm_eps=cfg.norm_eps, use_cuda=torch.cuda.is_available() and _mamba_ssm_available(),
        )
        self.mamba = Mamba(self.mamba_config)
        self.norm = RMSNorm(d, cfg.norm_eps)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        nn.init.normal_(self.head.weight, std=cfg.init_std)

    def forward(self, ids: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.norm(self.mamba(self.embed(ids))))

    def init_state(self) -> MambaState:
        device = self.head.weight.device
        d_inner, d_conv = self.mamba_config.d_inner, self.mamba_config.d_conv
        return MambaState([(None, torch.zeros(1, d_inner, d_conv - 1, device=device)) for _ in self.mamba.layers])

    @torch.no_grad()
    def step(self, token: int, state: MambaState) -> torch.Tensor:
        x = self.embed(torch.tensor([token], device=self.head.weight.device))
        x, state.caches = self.mamba.step(x, state.caches)
        return self.head(self.norm(x))[0]



