"""A toy architecture registered from outside the package, as a user would add one (docs/extending.md):
each layer mixes a unit's vector with the previous unit's through one matrix. Causal, no attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aunet.archs import ArchSpec, FamilyShape, register_arch
from aunet.archs.terms import WHY_WEIGHTS, CounterTerm, StageFlops


class ToyLayer(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.mix = nn.Linear(2 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        previous = F.pad(x, (0, 0, 1, 0))[:, :-1]
        return x + self.mix(torch.relu(torch.cat([x, previous], dim=-1)))


class ToyLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg.dims[0]
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.layers = nn.ModuleList(ToyLayer(d) for _ in range(cfg.layers[0]))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)

    def forward(self, ids: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


class ToySpec(ArchSpec):
    name = "toy"
    model = f"{__name__}:ToyLM"
    fsdp_units = (f"{__name__}:ToyLayer",)
    rotary = False
    families = (FamilyShape("toy_bytes", "bytes", 1),)

    def body_params(self, cfg) -> dict[str, int]:
        return {"blocks": cfg.layers[0] * 2 * cfg.dims[0] ** 2}

    def stage_flops(self, cfg, contraction) -> tuple[StageFlops, ...]:
        d, L = cfg.dims[0], cfg.layers[0]
        return (StageFlops(1, d, L, 0.0, 1.0, 6.0 * L * 2 * d * d, 0.0),)

    def counter_terms(self, cfg, batch, lengths):
        w = 6.0 * cfg.layers[0] * 2 * cfg.dims[0] ** 2 * batch * int(lengths[0])
        return (1.0,), [CounterTerm("mix weights", w, w, WHY_WEIGHTS)]


TOY = register_arch(ToySpec())
