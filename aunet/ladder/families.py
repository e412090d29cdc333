"""The family table and the family rule: main width and depth -> a ModelConfig (see ``aunet.ladder``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

from aunet.archs import ARCH_SPECS, ArchSpec, get_arch
from aunet.archs.aunet import byte_width_for, side_layers_for  # noqa: F401  (re-exported)
from aunet.archs.shapes import ffn_dim_for, grid_multiple, head_dim_for  # noqa: F401  (re-exported)
from aunet.config import BYTE_VOCAB, PAPER_SEQ_LEN, ModelConfig
from aunet.flops import flops_breakdown
from aunet.laws import LLAMA3_BYTES_PER_TOKEN  # noqa: F401  (the unit of the ratio γ; re-exported)
from aunet.names import did_you_mean
from aunet.splitting import canonical_spec, default_rules, rule_from_suffix, rule_suffix

# ---- The regimes: sequence lengths, window, vocabulary and width grid (one place) -------
#: Budgets below this use CPU sequence lengths (see the package docstring).
CPU_REGIME_BELOW = 1e16
#: The data-to-model ratio (LLaMA-3-token units) a plan takes when none is given: the paper's scaling
#: studies train 10 LLaMA-3 tokens per FLOP/token of their model (Table 6); a CPU study's smaller
#: ratio is chosen for its own budgets, never for a recipe at a bigger one.
DEFAULT_RATIO = 10.0
PAPER_SEQ = PAPER_SEQ_LEN
PAPER_WINDOW = 512
PAPER_BPE_VOCAB = 128256
# The CPU regime. A CPU study spends 1e10-1e13 FLOPs per trial, and every trial must still take
# >= MIN_STEPS optimizer steps with a search box of >= 8 distinct batch sizes of whole sequences: so
# sequences of a few hundred bytes. Short sequences and a small BPE vocabulary are also what a CPU runs
# fastest and what keeps the head from dominating a tiny Transformer (measurements: benchmarks/README.md).
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
    splits: tuple[str, ...] | None = None  # splitting rules of a pooling family; None: the architecture's default

    @property
    def spec(self) -> ArchSpec:
        return get_arch(self.arch)

    @property
    def prior_law(self) -> str:
        """The key of ``aunet.laws.PAPER_LAWS`` a sweep's box is centred on before anything is fitted."""
        return self.spec.prior_law(self.units)

    @property
    def paper_law(self) -> str | None:
        """The key of the law the paper fitted for this family, if it fitted one."""
        return self.spec.paper_law(self.units)

    def regime(self, budget: float) -> tuple[int, int | None, int | None]:
        """(seq_len, window, BPE vocabulary) of this family at ``budget``: paper sizes, or CPU sizes below 1e16."""
        cpu = budget < CPU_REGIME_BELOW
        window = (CPU_WINDOW if cpu else PAPER_WINDOW) if self.spec.windowed else None
        vocab = (CPU_BPE_VOCAB if cpu else PAPER_BPE_VOCAB) if self.units == "bpe" else None
        return (CPU_SEQ if cpu else PAPER_SEQ)[self.units], window, vocab

    def probe(self, budget: float) -> ModelConfig:
        """A model of this family in ``budget``'s regime: what the data measurements of a plan depend on
        (units, sequence length, splitting rules), whichever width the plan then picks."""
        return family_config(self, 256, 1, *self.regime(budget))


class _Families(Mapping[str, Family]):
    """The ladder's families, read from the architecture registry (a registered architecture's
    families appear here), and a pooling family with another stage-2 splitting rule, named with the
    rule as a suffix (``aunet2_stride4``, ``aunet3_word1``): looked up, not listed."""

    def _table(self) -> dict[str, Family]:
        return {shape.name: Family(shape.name, spec.name, shape.units, shape.n_stages)
                for spec in ARCH_SPECS.values() for shape in spec.families}

    def find(self, name: str) -> Family | None:
        """The family ``name`` stands for, None if none; raises ValueError for a suffix that is not a rule."""
        table = self._table()
        return table.get(name) or _with_rule(table, name)

    def __getitem__(self, name: str) -> Family:
        try:
            family = self.find(name)
        except ValueError:
            family = None
        if family is None:
            raise KeyError(name)
        return family

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


FAMILIES = _Families()


def _with_rule(table: Mapping[str, Family], name: str) -> Family | None:
    """``<family>_<rule>``: the pooling family with ``rule`` at stage 2 and its default rules deeper; None
    when no pooling family starts the name. Raises ValueError when the suffix is not a splitting rule."""
    base = next((f for f in table.values() if f.spec.pools and name.startswith(f"{f.name}_")), None)
    if base is None:
        return None
    defaults = default_rules(base.n_stages)
    rule = rule_from_suffix(name[len(base.name) + 1:])
    if canonical_spec(rule) == canonical_spec(defaults[0]):
        return base
    return Family(f"{base.name}_{rule_suffix(rule)}", base.arch, base.units, base.n_stages,
                  (rule, *defaults[1:]))


def get_family(name: str | Family) -> Family:
    if isinstance(name, Family):
        return name
    try:
        family = FAMILIES.find(name)
    except ValueError as err:
        raise ValueError(f"family {name!r}: the part after the family names a stage-2 splitting rule; {err}") from None
    if family is None:
        raise ValueError(f"unknown family {name!r}{did_you_mean(name, FAMILIES)}; use one of {sorted(FAMILIES)}, "
                         "or a pooling family with a stage-2 splitting rule (aunet2_stride4, aunet2_spacelike, "
                         "aunet3_word1)")
    return family


def family_of(model: ModelConfig) -> str:
    """The family name of any model config (a preset's too): aunet2, transformer_bpe, mamba_bytes..."""
    return model.spec.family_name(model)


def rule_flops(width: float) -> float:
    """Inverse of the width rule: the F_eq at which the rule gives ``width``."""
    return (width / WIDTH_COEF) ** (1.0 / WIDTH_EXP)


def family_config(family: Family | str, main: int, depth: int, seq_len: int, window: int | None = None,
                  vocab_size: int | None = None) -> ModelConfig:
    """The family's model at main width ``main`` and trunk depth ``depth``."""
    fam = get_family(family)
    vocab = BYTE_VOCAB if fam.units == "bytes" else (vocab_size or PAPER_BPE_VOCAB)
    return ModelConfig(arch=fam.arch, units=fam.units, vocab_size=vocab, seq_len=seq_len,
                       name=f"{fam.name}_d{main}_L{depth}", window=window if fam.spec.windowed else None,
                       splits=list(fam.splits) if fam.splits else None, **fam.spec.shape(main, depth, fam.n_stages))


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
