"""The family table and the family rule: main width and depth -> a ModelConfig (see ``aunet.ladder``)."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from functools import lru_cache

from aunet.config import BYTE_VOCAB, ModelConfig
from aunet.flops import flops_breakdown
from aunet.laws import LLAMA3_BYTES_PER_TOKEN  # noqa: F401  (the unit of the ratio γ; re-exported)

# ---- The regimes: sequence lengths, window, vocabulary and width grid (one place) -------
#: Budgets below this use CPU sequence lengths (see the package docstring).
CPU_REGIME_BELOW = 1e16
#: The data-to-model ratio (LLaMA-3-token units) a plan takes when none is given: the paper's scaling
#: studies train 10 LLaMA-3 tokens per FLOP/token of their model (Table 6); a CPU study's smaller
#: ratio is chosen for its own budgets, never for a recipe at a bigger one.
DEFAULT_RATIO = 10.0
PAPER_SEQ = {"bytes": 8192, "bpe": 2048}
PAPER_WINDOW = 512
PAPER_BPE_VOCAB = 128256
# The CPU regime (issue 10). A CPU study spends 1e10-1e13 FLOPs per trial, so a run sees
# 0.3-10 MB of text, and every trial must still take >= MIN_STEPS optimizer steps with a
# search box of >= 8 distinct batch sizes: the largest batch is at most data / 200, i.e.
# 1.5-50 KB. Batches are whole sequences, so the sequence must be a few hundred bytes for
# 8 sizes to fit under that: 256 bytes (~66 words, ~3.9 bytes per word vector at stage 2)
# and 64 BPE tokens (~170 bytes at 2.6 bytes per token). Short sequences are also what the
# CPU runs fastest: SDPA computes the windowed byte stage densely, so 1,024-byte sequences
# with a 128-byte window ran 4.5x fewer bytes/s than 256 with 64 (same run, same model
# class). A 1,024-token BPE vocabulary keeps the output head from being most of a tiny
# Transformer's FLOPs (at width 64: 48% of F with 1,024 entries, 79% with 4,096; the
# paper's 1B baseline: ~25%).
CPU_SEQ = {"bytes": 256, "bpe": 64}
CPU_WINDOW = 64
CPU_BPE_VOCAB = 1024
#: Every trial of a CPU study trains at least this many optimizer steps (``planner.check_steps``).
MIN_STEPS = 200
#: Main widths below the paper's grid, for CPU budgets: with a 16-wide byte stage (head
#: dim 16) the smallest AU-Net 2 costs ~1.2e5 FLOPs per byte at 256 bytes (~40k params).
TINY_WIDTHS = (32, 48)
#: Trunk depths of the tiny widths: the width rule would give each one depth, but the next
#: width (64, with a 32-wide byte stage) costs 2.5x more per byte, and a CPU study's budgets
#: are a factor 2-2.5 apart: depths 1-4 keep the data growing with the budget at any fixed
#: ratio (a budget twice another trains more data, from 1e11 to 1e13 FLOPs at γ 0.2 and 1).
TINY_DEPTHS = (1, 2, 3, 4)


def width_grid(max_width: int = 16384) -> list[int]:
    """Main widths the ladder may pick: the tiny CPU widths, then head-dim multiples (32 below 256,
    64 below 1024, 128 above)."""
    return [*TINY_WIDTHS, *range(64, 256, 32), *range(256, 1024, 64), *range(1024, max_width + 1, 128)]


#: Width rule d = WIDTH_COEF · F_eq^WIDTH_EXP (fitted to Table 9's scaling baseline rows).
WIDTH_COEF = 0.727
WIDTH_EXP = 0.35
MAX_DEPTH = 256
# -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    arch: str  # ModelConfig.arch
    units: str  # ModelConfig.units: "bytes" or "bpe"
    n_stages: int
    law: str  # key of aunet.laws.PAPER_LAWS

    def regime(self, budget: float) -> tuple[int, int | None, int | None]:
        """(seq_len, window, BPE vocabulary) of this family at ``budget``: paper sizes, or CPU sizes below 1e16."""
        cpu = budget < CPU_REGIME_BELOW
        window = (CPU_WINDOW if cpu else PAPER_WINDOW) if self.arch == "aunet" else None
        vocab = (CPU_BPE_VOCAB if cpu else PAPER_BPE_VOCAB) if self.units == "bpe" else None
        return (CPU_SEQ if cpu else PAPER_SEQ)[self.units], window, vocab

    def probe(self, budget: float) -> ModelConfig:
        """A model of this family in ``budget``'s regime: what the data measurements of a plan depend on
        (units, sequence length, splitting rules), whichever width the plan then picks."""
        return family_config(self, 256, 1, *self.regime(budget))


FAMILIES: dict[str, Family] = {
    "aunet2": Family("aunet2", "aunet", "bytes", 2, "aunet"),
    "aunet3": Family("aunet3", "aunet", "bytes", 3, "aunet"),
    "aunet4": Family("aunet4", "aunet", "bytes", 4, "aunet"),
    "transformer_bytes": Family("transformer_bytes", "transformer", "bytes", 1, "aunet"),
    "transformer_bpe": Family("transformer_bpe", "transformer", "bpe", 1, "bpe"),
    "mamba_bytes": Family("mamba_bytes", "mamba", "bytes", 1, "aunet"),
}


def get_family(name: str | Family) -> Family:
    if isinstance(name, Family):
        return name
    if name not in FAMILIES:
        close = difflib.get_close_matches(str(name), list(FAMILIES), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown family {name!r}{hint}; use one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_of(model: ModelConfig) -> str:
    """The family name of any model config (a preset's too): aunet2, transformer_bpe, mamba_bytes..."""
    if model.arch == "aunet":
        return f"aunet{model.n_stages}"
    return f"{model.arch}_{model.units}"


def _snap(x: float, multiple: int, half_down: bool = False) -> int:
    q = x / multiple
    n = math.ceil(q - 0.5) if half_down else math.floor(q + 0.5)
    return max(multiple, n * multiple)


def head_dim_for(width: int) -> int:
    """Head dim of a width: 128 from 1024 up, 64 from 256 up, else 32 (as in Table 9); 16 for
    the tiny widths that 32 does not divide (16, 48)."""
    if width >= 1024 and width % 128 == 0:
        return 128
    if width >= 128 and width % 64 == 0:
        return 64
    return 32 if width % 32 == 0 else 16


def grid_multiple(width: float) -> int:
    return 128 if width >= 1024 else 64 if width >= 256 else 32


def ffn_dim_for(width: int) -> int:
    """SwiGLU width: 8d/3 rounded up to a multiple of 256 (64 below 256, 32 below 128)."""
    multiple = 256 if width >= 256 else 64 if width >= 128 else 32
    return multiple * math.ceil(8 * width / 3 / multiple - 1e-9)


def byte_width_for(main: int) -> int:
    """AU-Net byte-stage width: a quarter of the main width (Table 9's scaling rows); 16 for
    the tiny main widths below 64 (:data:`TINY_WIDTHS`), else at least 32."""
    if main < 64:
        return 16
    x = main / 4
    return max(32, _snap(x, 128 if x >= 256 else 32, half_down=True))


def side_layers_for(main: int) -> int:
    """Layers per side of AU-Net's non-final stages: 3 (Table 9), fewer for tiny models."""
    return 3 if main >= 512 else 2 if main >= 256 else 1


def rule_flops(width: float) -> float:
    """Inverse of the width rule: the F_eq at which the rule gives ``width``."""
    return (width / WIDTH_COEF) ** (1.0 / WIDTH_EXP)


def family_config(family: Family | str, main: int, depth: int, seq_len: int, window: int | None = None,
                  vocab_size: int | None = None) -> ModelConfig:
    """The family's model at main width ``main`` and trunk depth ``depth``."""
    fam = get_family(family)
    vocab = BYTE_VOCAB if fam.units == "bytes" else (vocab_size or PAPER_BPE_VOCAB)
    common = dict(arch=fam.arch, units=fam.units, vocab_size=vocab, seq_len=seq_len,
                  name=f"{fam.name}_d{main}_L{depth}")
    if fam.arch != "aunet":
        return ModelConfig(dims=[main], layers=[depth], head_dims=[head_dim_for(main)],
                           ffn_dims=[ffn_dim_for(main)], window=None, **common)
    widths = [byte_width_for(main), main]
    while len(widths) < fam.n_stages:
        widths.append(_snap(1.5 * widths[-1], grid_multiple(1.5 * widths[-1])))
    side = side_layers_for(main)
    return ModelConfig(
        dims=widths, layers=[side] * (fam.n_stages - 1) + [depth], head_dims=[head_dim_for(w) for w in widths],
        ffn_dims=[ffn_dim_for(w) for w in widths], window=window, **common,
    )


@dataclass(frozen=True)
class Rung:
    main: int
    depth: int
    flops_ratio: float  # F_γ: without the output head
    flops: float  # F: with the output head


@lru_cache(maxsize=64)
def rungs(family: str, seq_len: int, window: int | None, vocab: int | None, contraction: tuple[float, ...] | None,
          eq_factor: float) -> tuple[Rung, ...]:
    """Every (width, depth) the family rule allows, by increasing F_γ."""
    fam = FAMILIES[family]
    grid = width_grid()
    found: list[Rung] = []
    for i, d in enumerate(grid):
        lo_w = math.sqrt(grid[i - 1] * d) if i > 0 else d / 1.25
        hi_w = math.sqrt(d * grid[i + 1]) if i + 1 < len(grid) else d * 1.1
        lo, hi = rule_flops(lo_w) / eq_factor, rule_flops(hi_w) / eq_factor  # F_γ range owned by width d

        def cost(depth: int, d: int = d) -> tuple[float, float]:
            b = flops_breakdown(family_config(fam, d, depth, seq_len, window, vocab), contraction)
            return b.without_head, b.total

        (g1, t1), (g2, t2) = cost(1), cost(2)
        slope, base = g2 - g1, g1 - (g2 - g1)  # F_γ is affine in the trunk depth
        first = max(1, math.ceil((lo - base) / slope))
        last = min(MAX_DEPTH, math.floor((hi - base) / slope - 1e-12))
        depths = list(TINY_DEPTHS) if d in TINY_WIDTHS else list(range(first, last + 1))
        if not depths:
            centre = math.sqrt(lo * hi)
            best = min(range(1, MAX_DEPTH + 1), key=lambda n: abs(math.log((base + slope * n) / centre)))
            depths = [best]
        for n in depths:
            gamma_f = base + slope * n
            total = t1 + (t2 - t1) * (n - 1)
            found.append(Rung(d, n, gamma_f, total))
    return tuple(sorted(found, key=lambda r: (r.flops_ratio, r.main)))
