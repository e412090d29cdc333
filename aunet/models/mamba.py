"""Mamba on bytes: Mamba-2 (the paper's baseline, as the reference code builds it) or Mamba-1.

Mamba-2 (``MambaLM``) follows the reference code's 1B baseline
(facebookresearch/lingua, apps/mamba): per layer a pre-norm residual block whose mixer
projects to [z, x, B, C, dt] in one matmul, runs a causal depthwise convolution and SiLU
over [x, B, C], the SSD scan (one group: B and C shared by all heads; a scalar decay
A per head; no dt bias; D per head), then RMSNorm(y · SiLU(z)) and the output projection.
Its SSM heads: ``n_heads = d / head_dims[0]``, each carrying ``P = expand · head_dim``
channels of the inner width (lingua's 1B: 32 heads of 128 channels; Table 9's "head
dim" 64 is 2048 / 32). Initialisation as the reference's 1B config: A uniform in
[0.01, 2], D = 1; matrices by ``init_weights`` (the convolution taps always fan-in).

The scan runs as the chunked SSD algorithm in PyTorch (any device, fp32); on CUDA,
where ``mamba_ssm`` is installed, its Triton kernel ``mamba_chunk_scan_combined``
computes the same function. Cached generation runs the recurrence one byte at a time.

Mamba-1 (``Mamba1LM``, ``mamba_version: 1``): mambapy's residual blocks with our embedding, norm
and head (``mamba_ssm``'s fused kernels on CUDA where installed, else mambapy's
parallel scan). Note: mambapy's own ``mamba2`` module needs ``mamba_ssm`` and einops
even on the CPU, so Mamba-2 is implemented here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from mambapy.mamba import Mamba, MambaConfig
from torch import nn

from aunet.archs.mamba import SSD_CHUNK
from aunet.config import ModelConfig
from aunet.models.layers import LanguageModel, RMSNorm, init_weights

#: A's initial range in the reference code's 1B Mamba config.
A_INIT_RANGE = (0.01, 2.0)


def _mamba_ssm_available() -> bool:
    try:
        import mamba_ssm  # noqa: F401
    except ImportError:
        return False
    return True


def _cuda_scan_kernel():
    """``mamba_ssm``'s SSD kernel, or None where it is not installed."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except ImportError:
        return None
    return mamba_chunk_scan_combined


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             chunk: int = SSD_CHUNK) -> torch.Tensor:
    """The SSM h_t = exp(dt_t·A) h_{t-1} + dt_t · x_t ⊗ B_t, y_t = h_t · C_t, by chunks.

    x [b, T, H, P], dt [b, T, H] (positive), A [H] (negative), B, C [b, T, N] -> y [b, T, H, P].
    Within a chunk of Q positions the output is a masked (Q x Q) matmul; the state at each
    chunk's end is carried to the later chunks by one (chunks x chunks) matmul. Padding at
    the end (dt = 0, x = 0) leaves the real positions unchanged. Computed in fp32.
    """
    b, T, H, P = x.shape
    N = B.shape[-1]
    Q = min(chunk, T)
    pad = (-T) % Q
    with torch.autocast(x.device.type, enabled=False):
        x, dt, B, C = (F.pad(t.float(), (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
        n = (T + pad) // Q
        x = x.view(b, n, Q, H, P)
        B, C = B.view(b, n, Q, N), C.view(b, n, Q, N)
        a = (dt * A.float()).view(b, n, Q, H).transpose(2, 3)  # [b, n, H, Q]: log decay per position
        a_cum = a.cumsum(-1)
        xdt = (x * dt.view(b, n, Q, H, 1)).transpose(2, 3)  # [b, n, H, Q, P]
        causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
        decay = (a_cum.unsqueeze(-1) - a_cum.unsqueeze(-2)).masked_fill(~causal, -math.inf).exp()  # [b, n, H, Q, Q]
        scores = (C @ B.transpose(-1, -2)).unsqueeze(2) * decay
        y = scores @ xdt  # within each chunk
        to_end = (a_cum[..., -1:] - a_cum).exp().unsqueeze(-1)  # decay from each position to its chunk's end
        states = (xdt * to_end).transpose(-1, -2) @ B.unsqueeze(2)  # [b, n, H, P, N]: each chunk's own input
        total = a_cum[..., -1].transpose(1, 2)  # [b, H, n]: log decay over each chunk
        cum = total.cumsum(-1)
        later = torch.ones(n, n, dtype=torch.bool, device=x.device).tril(-1)  # chunk i sees chunks j < i
        carry = ((cum - total).unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~later, -math.inf).exp()
        start = (carry @ states.transpose(1, 2).reshape(b, H, n, P * N)).view(b, H, n, P, N).transpose(1, 2)
        y = y + (C.unsqueeze(2) @ start.transpose(-1, -2)) * a_cum.exp().unsqueeze(-1)  # from earlier chunks
        return y.transpose(2, 3).reshape(b, n * Q, H, P)[:, :T]


@dataclass
class Mamba2Cache:
    conv: torch.Tensor  # [1, d_conv - 1, channels]: the last inputs of the convolution
    ssm: torch.Tensor  # [1, H, P, N]: the state, fp32


class Mamba2Mixer(nn.Module):
    def __init__(self, d: int, head_dim: int, d_state: int, d_conv: int, expand: int, eps: float):
        super().__init__()
        self.n_heads = d // head_dim
        self.inner = expand * d
        self.head_channels = self.inner // self.n_heads
        self.d_state = d_state
        self.conv_channels = self.inner + 2 * d_state
        self.in_proj = nn.Linear(d, 2 * self.inner + 2 * d_state + self.n_heads, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(self.conv_channels, d_conv))
        self.A_log = nn.Parameter(torch.empty(self.n_heads).uniform_(*A_INIT_RANGE).log())
        self.D = nn.Parameter(torch.ones(self.n_heads))
        self.norm = RMSNorm(self.inner, eps)
        self.out_proj = nn.Linear(self.inner, d, bias=False)

    def _split(self, zxbcdt: torch.Tensor):
        return zxbcdt.split([self.inner, self.conv_channels, self.n_heads], dim=-1)

    def _heads(self, xbc: torch.Tensor):
        x, B, C = xbc.split([self.inner, self.d_state, self.d_state], dim=-1)
        return x.unflatten(-1, (self.n_heads, self.head_channels)), B, C

    def _out(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = (y + x.float() * self.D.float().unsqueeze(-1)).flatten(-2).type_as(z)
        return self.out_proj(self.norm(y * F.silu(z)))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z, xbc, dt = self._split(self.in_proj(u))
        k = self.conv_weight.shape[1]
        padded = F.pad(xbc, (0, 0, k - 1, 0))
        T = xbc.shape[1]
        xbc = F.silu(sum(padded[:, i : i + T] * self.conv_weight[:, i] for i in range(k)))  # causal depthwise
        x, B, C = self._heads(xbc)
        dt = F.softplus(dt.float())
        A = -self.A_log.float().exp()
        kernel = _cuda_scan_kernel() if x.is_cuda else None
        if kernel is not None:
            y = kernel(x, dt, A, B.unsqueeze(2), C.unsqueeze(2), chunk_size=SSD_CHUNK).float()
        else:
            y = ssd_scan(x, dt, A, B, C)
        return self._out(y, x, z)

    def new_cache(self, device: torch.device) -> Mamba2Cache:
        k = self.conv_weight.shape[1]
        return Mamba2Cache(torch.zeros(1, k - 1, self.conv_channels, device=device),
                           torch.zeros(1, self.n_heads, self.head_channels, self.d_state, device=device))

    def step(self, u: torch.Tensor, cache: Mamba2Cache) -> torch.Tensor:
        """One position: u [1, d] -> [1, d]; the recurrence the chunked scan computes."""
        z, xbc, dt = self._split(self.in_proj(u))
        window = torch.cat((cache.conv, xbc.unsqueeze(1)), dim=1)  # [1, k, channels]
        cache.conv = window[:, 1:]
        xbc = F.silu((window * self.conv_weight.t()).sum(1))
        x, B, C = self._heads(xbc)
        dt = F.softplus(dt.float())  # [1, H]
        decay = (dt * -self.A_log.float().exp()).exp()
        update = (dt.unsqueeze(-1) * x.float()).unsqueeze(-1) * B.float()[:, None, None, :]
        cache.ssm = decay[..., None, None] * cache.ssm + update
        y = cache.ssm @ C.float()[:, None, :, None]  # [1, H, P, 1]
        return self._out(y.squeeze(-1), x, z)


class Mamba2Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.dims[0]
        self.norm = RMSNorm(d, cfg.norm_eps)
        self.mixer = Mamba2Mixer(d, cfg.head_dims[0], cfg.d_state, cfg.d_conv, cfg.expand, cfg.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))

    def step(self, x: torch.Tensor, cache: Mamba2Cache) -> torch.Tensor:
        return x + self.mixer.step(self.norm(x), cache)


@dataclass
class MambaState:
    caches: list


class MambaLM(LanguageModel):
    """Mamba-2 on bytes: the reference code's baseline."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, "layers", lambda: nn.ModuleList(Mamba2Block(cfg) for _ in range(cfg.layers[0])))
        init_weights(self, cfg.init_std, n_layers=cfg.layers[0])
        sigma = cfg.d_conv ** -0.5
        for layer in self.layers:  # convolution taps: fan-in, as the reference, whatever init_std says
            nn.init.trunc_normal_(layer.mixer.conv_weight, std=sigma, a=-3 * sigma, b=3 * sigma)

    def forward(self, ids: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.logits(x)

    def init_state(self) -> MambaState:
        return MambaState([layer.mixer.new_cache(self.head.weight.device) for layer in self.layers])

    @torch.no_grad()
    def step(self, token: int, state: MambaState) -> torch.Tensor:
        x = self.embed(torch.tensor([token], device=self.head.weight.device))
        for layer, cache in zip(self.layers, state.caches):
            x = layer.step(x, cache)
        return self.logits(x)[0]


class Mamba1LM(LanguageModel):
    """Mamba-1 on bytes: mambapy's residual blocks between our embedding, norm and head."""

    def __init__(self, cfg: ModelConfig):
        config = MambaConfig(
            d_model=cfg.dims[0], n_layers=cfg.layers[0], d_state=cfg.d_state, expand_factor=cfg.expand,
            d_conv=cfg.d_conv, rms_norm_eps=cfg.norm_eps,
            use_cuda=torch.cuda.is_available() and _mamba_ssm_available(),
        )
        super().__init__(cfg, "mamba", lambda: Mamba(config))
        self.mamba_config = config
        for module in (self.embed, self.head):  # mambapy initialises its own blocks
            init_weights(module, cfg.init_std, n_layers=1)

    def forward(self, ids: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(self.mamba(self.embed(ids)))

    def init_state(self) -> MambaState:
        d_inner, d_conv = self.mamba_config.d_inner, self.mamba_config.d_conv
        device = self.head.weight.device
        return MambaState([(None, torch.zeros(1, d_inner, d_conv - 1, device=device)) for _ in self.mamba.layers])

    @torch.no_grad()
    def step(self, token: int, state: MambaState) -> torch.Tensor:
        x = self.embed(torch.tensor([token], device=self.head.weight.device))
        x, state.caches = self.mamba.step(x, state.caches)
        return self.logits(x)[0]
