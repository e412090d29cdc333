"""Typed model configuration shared by every architecture.

One dataclass describes all four architectures so that presets, FLOP counting and
the ladder speak the same language. Per-stage fields are lists (one entry per stage;
a plain Transformer or Mamba has one stage). ``validate`` runs at construction and
names the field and the fix for every mistake it finds.

RoPE θ and initialisation. The paper presets (conf/model/*_1b*, *_7b, scaling_*) set
them as the reference code (facebookresearch/lingua) has them: θ = 500,000 for AU-Net
(apps/aunet configs), 10,000 for the 1B Transformers and the scaling baselines and
100,000 for the 7B one (lingua's default and llama_7B config), and ``init_std: null``,
lingua's fan-in init (every matrix truncated-normal with σ = 1/√(input width)). The
defaults below (θ 10,000, GPT-2's N(0, 0.02) with depth-scaled residual outputs) are
what the tiny CPU presets and the ladder's configs use: the demo study, the LR priors
checked on them and the tests' loss targets were set with that init, and RoPE θ does
not matter at their 256-1,024-unit sequences. Which init trains tiny models better was
not measured.

Architectures. ``arch`` names a spec of :mod:`aunet.archs`, which checks the fields only that
architecture reads; ``mamba_version`` picks Mamba-2 (SSD, the paper's baseline) or Mamba-1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from aunet.archs import ARCH_SPECS, ArchSpec, spec_of
from aunet.archs.aunet import POOLING, UPSAMPLING  # noqa: F401  (re-exported: their historical home)
from aunet.splitting.learned import is_learned

UNITS = ("bytes", "bpe")
#: What a batch size, a law or a record counts for a model of each ``units``: bytes, or BPE tokens.
COUNTED_IN = {"bytes": "bytes", "bpe": "tokens"}
#: The paper's training sequence, in input units (Sec. 3): 8,192 bytes, or 2,048 BPE tokens.
PAPER_SEQ_LEN = {"bytes": 8192, "bpe": 2048}

#: Byte vocabulary: 256 byte values, then BOS, EOS and PAD.
BOS_ID, EOS_ID, PAD_ID = 256, 257, 258
BYTE_VOCAB = 259


@dataclass
class ModelConfig:
    """Architecture of one model. Lists hold one entry per stage (byte stage first)."""

    arch: str = "aunet"
    name: str = ""
    units: str = "bytes"  # what one input position is: a byte, or a BPE token
    vocab_size: int = BYTE_VOCAB  # set from the tokenizer for BPE models
    dims: list[int] = field(default_factory=lambda: [64, 128])
    layers: list[int] = field(default_factory=lambda: [1, 2])  # non-final: each side; final: trunk
    head_dims: list[int] = field(default_factory=lambda: [32, 32])
    ffn_dims: list[int] = field(default_factory=lambda: [192, 384])
    splits: list[str] | None = None  # one rule per stage after the first; None = the paper's
    seq_len: int = 8192  # input units per training sequence
    window: int | None = 512  # byte-stage sliding attention window (None: full causal)
    max_pooled: list[int] | None = None  # static length of each pooled stage (stages 2..K)
    upsampling: str = "multilinear"
    pooling: str = "select"
    upsample_positions: int = 16  # position-specific linears, wrapping around
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float | None = 0.02  # None: the reference code's fan-in init (see layers.init_weights)
    # Mamba only
    mamba_version: int = 2  # 2: Mamba-2 (SSD, the paper's baseline); 1: Mamba-1 (selective scan)
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2

    def __post_init__(self) -> None:
        self.dims = [int(d) for d in self.dims]
        self.layers = [int(n) for n in self.layers]
        self.head_dims = [int(h) for h in self.head_dims]
        self.ffn_dims = [int(f) for f in self.ffn_dims]
        if self.arch in ARCH_SPECS:
            self.spec.fill_defaults(self)
        if self.splits is not None:
            self.splits = [str(s) for s in self.splits]
        if self.max_pooled is not None:
            self.max_pooled = [int(m) for m in self.max_pooled]
        self.validate()

    @property
    def spec(self) -> ArchSpec:
        """What this architecture is to the toolkit: build, FLOPs, memory, ladder shape (``aunet.archs``)."""
        return spec_of(self)

    @property
    def n_stages(self) -> int:
        return len(self.dims)

    def pooled_lengths(self) -> list[int]:
        """Static sequence length of every stage (the byte stage first)."""
        if self.max_pooled is None:
            return [self.seq_len] * self.n_stages
        return [self.seq_len, *self.max_pooled]

    def validate(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"model config {self.name or self.arch!r}: field '{name}' {message}")

        if self.arch not in ARCH_SPECS:
            fail("arch", f"is {self.arch!r}; use one of {tuple(ARCH_SPECS)}")
        spec = self.spec
        if self.units not in UNITS:
            fail("units", f"is {self.units!r}; use one of {UNITS}")
        if self.units not in spec.units:
            fail("units", f"must be one of {spec.units} for arch {self.arch!r}")
        self._validate_stages(spec, fail)
        if self.seq_len < 1:
            fail("seq_len", f"is {self.seq_len}; must be positive")
        if self.window is not None and self.window < 1:
            fail("window", f"is {self.window}; use a positive window or null for full attention")
        if self.vocab_size < 2:
            fail("vocab_size", f"is {self.vocab_size}; must be at least 2")
        if self.units == "bytes" and self.vocab_size != BYTE_VOCAB:
            fail("vocab_size", f"is {self.vocab_size}; byte models use {BYTE_VOCAB} (256 bytes + BOS/EOS/PAD)")
        if self.init_std is not None and not self.init_std > 0:
            fail("init_std", f"is {self.init_std}; use a positive std, or null for the reference fan-in init")
        if not spec.pools and any(is_learned(s) for s in self.splits or ()):
            fail("splits", f"has a learned rule, but arch {self.arch!r} has one stage: no pooled stage whose "
                           "input hidden states a router could score (use an AU-Net of 2 or more stages)")
        spec.validate(self, fail)

    def _validate_stages(self, spec: ArchSpec, fail: Callable[[str, str], None]) -> None:
        """One entry per stage in every per-stage list, as many stages as the architecture has, sane widths."""
        n = len(self.dims)
        if n < 1:
            fail("dims", "is empty; give one width per stage")
        for name in ("layers", "head_dims", "ffn_dims"):
            if len(getattr(self, name)) != n:
                fail(name, f"has {len(getattr(self, name))} entries but 'dims' has {n}; give one per stage")
        if n < spec.min_stages or (spec.max_stages is not None and n > spec.max_stages):
            most = "" if spec.max_stages is None else f" to {spec.max_stages}"
            fail("dims", f"has {n} stage(s); arch {self.arch!r} has {spec.min_stages}{most}")
        for k, (d, h) in enumerate(zip(self.dims, self.head_dims)):
            if d <= 0 or h <= 0:
                fail("dims", f"stage {k + 1}: width {d} and head dim {h} must be positive")
            if d % h:
                fail("head_dims", f"stage {k + 1}: width {d} is not divisible by head dim {h}"
                                  f"{spec.head_dim_meaning}; use a divisor of {d}")
            if spec.rotary and h % 2:
                fail("head_dims", f"stage {k + 1}: head dim {h} must be even for rotary positions")
        if any(L < 1 for L in self.layers):
            fail("layers", f"is {self.layers}; every stage needs at least one layer")
        if any(f < 1 for f in self.ffn_dims):
            fail("ffn_dims", f"is {self.ffn_dims}; every entry must be positive")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model config: unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**data)
