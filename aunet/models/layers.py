"""Llama-style building blocks shared by AU-Net and the Transformer baseline.

RMSNorm, rotary positions, SwiGLU, and causal attention that is either full or
limited to a sliding window. Every layer has two entry points: ``forward`` over a
whole sequence (training) and ``step`` over one new position with a key/value
cache (generation). Both compute exactly the same function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


class Rotary(nn.Module):
    """Rotary position tables, grown on demand; positions count within one stage's sequence."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self._cos = torch.empty(0)
        self._sin = torch.empty(0)

    def tables(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos.shape[0] < length or self._cos.device != device:
            size = max(length, 2 * self._cos.shape[0])
            inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
            angles = torch.outer(torch.arange(size, device=device).float(), inv_freq)
            self._cos, self._sin = angles.cos(), angles.sin()
        return self._cos[:length], self._sin[:length]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :h/2], x[..., h/2:]); ``cos``/``sin`` are [T, h/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.type_as(x)


class KVCache:
    """Keys and values of past positions in preallocated buffers.

    Appending is amortised O(1): full caches double their capacity when full; a
    windowed cache is a ring of ``window`` slots (attention does not care about the
    order of keys, whose positions are already rotated in).
    """

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.count = 0

    def append(self, k: torch.Tensor, v: torch.Tensor, window: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k is None:
            capacity = window or 256
            self.k = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])
            self.v = torch.empty_like(self.k)
        capacity = self.k.shape[2]
        if window is None and self.count == capacity:
            self.k = torch.cat((self.k, torch.empty_like(self.k)), dim=2)
            self.v = torch.cat((self.v, torch.empty_like(self.v)), dim=2)
        slot = self.count % window if window else self.count
        self.k[:, :, slot] = k[:, :, 0]
        self.v[:, :, slot] = v[:, :, 0]
        self.count += 1
        valid = min(self.count, window) if window else self.count
        return self.k[:, :, :valid], self.v[:, :, :valid]


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Causal attention where position t sees positions (t - window, t].

    Blocked so that the cost is O(T · 2W), not O(T²): the sequence is cut into blocks
    of ``window`` queries, and each block attends to its own keys and the previous
    block's, under one shared band mask. q, k, v: [B, H, T, hd].
    """
    B, H, T, hd = q.shape
    W = window
    n = math.ceil(T / W)
    pad = n * W - T
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qb = q.view(B, H, n, W, hd)
    kb = k.view(B, H, n, W, hd)
    vb = v.view(B, H, n, W, hd)
    k2 = torch.cat((F.pad(kb, (0, 0, 0, 0, 1, 0))[:, :, :-1], kb), dim=3)  # [B, H, n, 2W, hd]
    v2 = torch.cat((F.pad(vb, (0, 0, 0, 0, 1, 0))[:, :, :-1], vb), dim=3)
    i = torch.arange(W, device=q.device)[:, None]
    j = torch.arange(2 * W, device=q.device)[None, :]
    band = (j > i) & (j <= i + W)  # key j of [previous block | this block] for query i
    first = band & (j >= W)  # block 0 has no previous block
    mask = torch.stack((first, band)).index_select(0, (torch.arange(n, device=q.device) > 0).long())
    out = F.scaled_dot_product_attention(
        qb.transpose(1, 2).reshape(B * n, H, W, hd),
        k2.transpose(1, 2).reshape(B * n, H, 2 * W, hd),
        v2.transpose(1, 2).reshape(B * n, H, 2 * W, hd),
        attn_mask=mask.repeat(B, 1, 1).unsqueeze(1),
    )
    out = out.view(B, n, H, W, hd).transpose(1, 2).reshape(B, H, n * W, hd)
    return out[:, :, :T]


def window_kernel(device: torch.device) -> str:
    """The exact kernel that computes the sliding window on ``device`` (training and scoring).

    CUDA: ``flex_attention`` with a sliding-window block mask (compiled: it skips the
    blocks outside the window and runs flash-style tiles). Elsewhere: the blocked SDPA of
    :func:`sliding_window_attention` (flex_attention has no backward on the CPU).
    """
    return "flex_attention + sliding-window block mask" if device.type == "cuda" else "blocked SDPA (2W-key band mask)"


@torch.compiler.disable
@lru_cache(maxsize=32)
def sliding_window_block_mask(length: int, window: int, device: str):
    """flex_attention's block mask for a sequence of ``length``: query q sees keys (q - window, q]."""
    from torch.nn.attention.flex_attention import create_block_mask

    def in_window(b, h, q, kv):
        return (kv <= q) & (q - kv < window)

    return create_block_mask(in_window, None, None, length, length, device=device)


@lru_cache(maxsize=1)
def _compiled_flex_attention():
    """flex_attention compiled once: uncompiled, it falls back to a dense (T x T) reference."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask) -> torch.Tensor:
    """The same function as :func:`sliding_window_attention`, by flex_attention (CUDA path)."""
    return _compiled_flex_attention()(q, k, v, block_mask=block_mask)


class Attention(nn.Module):
    def __init__(self, dim: int, head_dim: int, window: int | None = None):
        super().__init__()
        self.n_heads = dim // head_dim
        self.head_dim = head_dim
        self.window = window
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        B, T, _ = x.shape
        q, k, v = self.wqkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, block_mask=None) -> torch.Tensor:
        """``block_mask``: the window's flex_attention mask (CUDA; see ``Stack.forward``)."""
        B, T, D = x.shape
        q, k, v = self._qkv(x, cos, sin)
        if block_mask is not None:
            out = flex_window_attention(q, k, v, block_mask)
        elif self.window is not None and T > self.window:
            out = sliding_window_attention(q, k, v, self.window)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(B, T, D))

    def step(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One new position per row: x [B, 1, D]; cos/sin of that position [1, hd/2]."""
        B, T, D = x.shape
        q, k, v = self._qkv(x, cos, sin)
        k, v = cache.append(k, v, self.window)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.wo(out.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), with w1 and w3 fused into one matmul."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, dim: int, head_dim: int, ffn_dim: int, window: int | None, eps: float):
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps)
        self.attn = Attention(dim, head_dim, window)
        self.ffn_norm = RMSNorm(dim, eps)
        self.ffn = FeedForward(dim, ffn_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, block_mask=None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, block_mask)
        return x + self.ffn(self.ffn_norm(x))

    def step(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache) -> torch.Tensor:
        x = x + self.attn.step(self.attn_norm(x), cos, sin, cache)
        return x + self.ffn(self.ffn_norm(x))


class Stack(nn.Module):
    """A run of blocks at one width, with its own rotary table (positions within its sequence)."""

    def __init__(self, dim: int, n_layers: int, head_dim: int, ffn_dim: int, window: int | None = None,
                 eps: float = 1e-5, rope_theta: float = 10000.0):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, head_dim, ffn_dim, window, eps) for _ in range(n_layers))
        self.rotary = Rotary(head_dim, rope_theta)
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        cos, sin = self.rotary.tables(T, x.device)
        block_mask = None
        if self.window is not None and T > self.window and x.is_cuda:  # built once per stack and length
            block_mask = sliding_window_block_mask(T, self.window, str(x.device))
        for block in self.blocks:
            x = block(x, cos, sin, block_mask)
        return x

    def new_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def step(self, x: torch.Tensor, position: int, caches: list[KVCache]) -> torch.Tensor:
        cos, sin = self.rotary.tables(position + 1, x.device)
        cos, sin = cos[position:position + 1], sin[position:position + 1]
        for block, cache in zip(self.blocks, caches):
            x = block.step(x, cos, sin, cache)
        return x


def init_weights(module: nn.Module, std: float | None, n_layers: int) -> None:
    """Initialise every matrix of ``module`` (1-d gains and biases keep their values).

    ``std`` None: the reference code's (lingua) fan-in init, truncated normal at ±3σ with
    σ = 1/√(input width), i.e. ``shape[1]``: a Linear's input features, an embedding's
    width, a depthwise convolution's taps. A number: N(0, std), residual output
    projections scaled down by 1/√(2 · n_layers) (GPT-2 style).
    """
    for name, param in module.named_parameters():
        if param.dim() < 2:
            continue
        if std is None:
            sigma = param.shape[1] ** -0.5
            nn.init.trunc_normal_(param, mean=0.0, std=sigma, a=-3 * sigma, b=3 * sigma)
            continue
        residual_out = name.endswith(("wo.weight", "w2.weight", "out_proj.weight"))
        scale = 1.0 / math.sqrt(2 * n_layers) if residual_out else 1.0
        nn.init.normal_(param, mean=0.0, std=std * scale)


class LanguageModel(nn.Module):
    """The shell of the one-stage models: embedding, a body, final norm and untied head. ``make_body`` is
    called between the embedding and the norm, so parameters are created (and drawn) in that order."""

    def __init__(self, cfg, body: str, make_body: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dims[0]
        self.embed = nn.Embedding(cfg.vocab_size, d)
        setattr(self, body, make_body())
        self.norm = RMSNorm(d, cfg.norm_eps)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x))
