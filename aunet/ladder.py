"""The compute ladder: budget C and data-to-model ratio γ -> model, data, steps, LR, BSZ.

Conventions (Sec. 2.3, App. D Table 6, checked against Tables 9-11)
------------------------------------------------------------------
Let F be a model's FLOPs per input unit with the output head (Table 10's
"FLOPs/Token" column) and F_γ the same without the output head, the paper's
"6·N_params^no-embed + 6dLS" (its "embeddings" are both the input and the output
table: Table 2 lists 525M embedding parameters for the 1B BPE model, 2 × 128,256 ×
2,048). The ratio γ is given in LLaMA-3-token units and converted to the model's
units with k = bytes per LLaMA-3 token (4.56 on DCLM): γ_unit = γ · (k / b)², b the
bytes per unit (1 for bytes, so k² = 20.7936 as in Table 6; k for LLaMA-3 tokens).
With N the training units:

    ratio            γ_unit = N / F_γ
    compute spent    N · F           = γ_unit · F_γ · F   (Table 10's "Total FLOPs")
    paper's C        N · F_γ         = γ_unit · F_γ²      (Table 6's "(F/token)² γ"; the row labels)
    BSZ, LR          paper laws at N · F_γ; a fitted law at the budget
    steps            N / BSZ (BSZ in input units per step, whole sequences)

``budget`` is the compute spent, head included (``convention="total"``, the default,
as in DESIGN.md and ``aunet.train``), or the paper's C (``convention="paper"``).

Evidence, from the Table 9 presets and ``aunet.flops``:
* the 12 "Scaling baseline" rows satisfy Steps × Tokens/Step = 10 · F_γ to the step
  (14008.3 computed vs 14008 listed at 1e19, ... 84915.0 vs 84915 at 1e22), where
  Tokens/Step is G/Acc × Batch × SeqLen × NGpus; their LR is 19.3 · (10 · F_γ²)^-0.177
  to 0.1% on every row; and their Total FLOPs is 10 · F_γ · F (1e19 row: 2.0e19,
  while 10 · F_γ² = 1.16e19 is its label). With F instead of F_γ in the ratio the
  1e19 row would have 5.8 tokens per FLOP/token, not 10; with the law at N · F the
  1e19 row's LR would be 9% lower and its batch 12% larger than listed.
* the 24 "Scaling AUNet" rows satisfy Steps × Bytes/Step = 207.94 · F_γ with the
  F_γ that their LR implies through 6.6 · (207.94 · F_γ²)^-0.176 (within 1%); their
  head (259 × d) is negligible, so their Total FLOPs and their C coincide.
* Tokens/Step is the law's BSZ at C rounded to whole sequences and GPUs (within 6%).
So with the default convention, "the budget of a row" is its Total FLOPs; with
``convention="paper"`` it is N · F_γ (≈ the row's label). The paper's laws are always
evaluated at N · F_γ, the compute they were fitted against; a law fitted by
``analysis`` on our run records is evaluated at the budget, which those records
carry (``law_at`` overrides this).

The family rule (App. H's scaling rows, extended down to CPU sizes)
------------------------------------------------------------------
* Main width d (the Transformer's / Mamba's width, AU-Net's stage-2 width) grows as
  d = 0.727 · F_eq^0.35, fitted to the 12 baseline rows (within 4% on each), with
  F_eq = F_γ · k / b the FLOPs per LLaMA-3-token equivalent. Widths are snapped to a
  grid of head-dim multiples: 32 below 256, 64 below 1024, 128 above (head dims 32,
  64, 128, as in Table 9).
* AU-Net stages around it, as in Table 9: byte stage d/4 (multiple of 128 from 256
  up, rounded half down; at least 32); stage 3 = 1.5 × stage 2, stage 4 = 1.5 ×
  stage 3. Non-final stages have 3 layers per side (2 when d < 512, 1 when d < 256).
  SwiGLU width 8d/3 rounded up to a multiple of 256 (64 below 256, 32 below 128):
  this reproduces every FFN size of Table 9's scaling rows.
* Depth: the trunk depth (the only depth of Transformer and Mamba) is free. Each grid
  width owns the F-range the width rule maps to it; its rungs are the depths whose F
  falls in that range (or the one closest to it). A plan takes the rung whose cost
  F_γ·F (F_γ² with ``convention="paper"``) is nearest, in log, to C / γ_unit, so a
  bigger budget never gives a smaller model; the budget is then spent exactly
  (N = C / F, or C / F_γ) and the γ achieved is recorded.
* Sequence lengths: the paper's (8,192 bytes with a 512-byte window; 2,048 tokens,
  vocabulary 128,256) for budgets from :data:`CPU_REGIME_BELOW` up; below it, CPU
  sizes (1,024 bytes with a 128-byte window; 256 tokens, vocabulary 4,096). The
  smallest rungs (main width 64, one trunk layer) cost 2-8e5 FLOPs per byte, so at
  1e11-1e13 FLOPs the byte families need a ratio of about 0.1-1 (the error message
  says which); such runs take minutes on 2 CPU cores.

Hyperparameter laws: ``aunet.laws.PAPER_LAWS`` are the priors ("aunet" for the byte
families, "bpe" for ``transformer_bpe``; the paper fits no law for the byte-level
Transformer and Mamba, which get the byte law); any ``HyperLaws`` (e.g. one fitted by
``analysis``, ``--law fitted.json``) replaces them. BSZ is converted between bytes and
tokens with k when the law's units differ from the model's.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from aunet.config import BYTE_VOCAB, ModelConfig
from aunet.flops import count_params, flops_breakdown, resolve_contraction
from aunet.laws import PAPER_LAWS, HyperLaws

#: Bytes per LLaMA-3 token on DCLM (Sec. 2.3): the unit of the ratio γ.
LLAMA3_BYTES_PER_TOKEN = 4.56

PRESET_DIR = Path(__file__).resolve().parent.parent / "conf" / "model"

#: Budgets below this use CPU sequence lengths (see the module docstring).
CPU_REGIME_BELOW = 1e16
PAPER_SEQ = {"bytes": 8192, "bpe": 2048}
PAPER_WINDOW = 512
PAPER_BPE_VOCAB = 128256
CPU_SEQ = {"bytes": 1024, "bpe": 256}
CPU_WINDOW = 128
CPU_BPE_VOCAB = 4096

#: Width rule d = WIDTH_COEF · F_eq^WIDTH_EXP (fitted to Table 9's scaling baseline rows).
WIDTH_COEF = 0.727
WIDTH_EXP = 0.35
MAX_DEPTH = 256


@dataclass(frozen=True)
class Family:
    name: str
    arch: str
    units: str  # ModelConfig.units: "bytes" or "bpe"
    n_stages: int
    law: str  # key of PAPER_LAWS


FAMILIES: dict[str, Family] = {
    "aunet2": Family("aunet2", "aunet", "bytes", 2, "aunet"),
    "aunet3": Family("aunet3", "aunet", "bytes", 3, "aunet"),
    "aunet4": Family("aunet4", "aunet", "bytes", 4, "aunet"),
    "transformer_bytes": Family("transformer_bytes", "transformer", "bytes", 1, "aunet"),
    "transformer_bpe": Family("transformer_bpe", "transformer", "bpe", 1, "bpe"),
    "mamba_bytes": Family("mamba_bytes", "mamba", "bytes", 1, "aunet"),
}


def get_family(arch: str) -> Family:
    if arch not in FAMILIES:
        close = difflib.get_close_matches(str(arch), list(FAMILIES), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown architecture family {arch!r}{hint}; use one of {sorted(FAMILIES)}")
    return FAMILIES[arch]


# ---------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------


def list_presets() -> list[str]:
    """Names of the presets in conf/model/."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> ModelConfig:
    """The ModelConfig of preset ``conf/model/<name>.yaml``."""
    stem = str(name).removesuffix(".yaml")
    names = list_presets()
    if stem not in names:
        close = difflib.get_close_matches(stem, names, n=5, cutoff=0.5)
        hint = f"close names: {', '.join(close)}" if close else f"known presets: {', '.join(names)}"
        raise ValueError(f"unknown model preset {name!r} (no {PRESET_DIR / (stem + '.yaml')}); {hint}")
    data = yaml.safe_load((PRESET_DIR / f"{stem}.yaml").read_text()) or {}
    return ModelConfig.from_dict(data)


# ---------------------------------------------------------------------------------------
# The family rule
# ---------------------------------------------------------------------------------------


def _snap(x: float, multiple: int, half_down: bool = False) -> int:
    q = x / multiple
    n = math.ceil(q - 0.5) if half_down else math.floor(q + 0.5)
    return max(multiple, n * multiple)


def head_dim_for(width: int) -> int:
    """Head dim of a width: 128 from 1024 up, 64 from 256 up, else 32 (as in Table 9)."""
    if width >= 1024 and width % 128 == 0:
        return 128
    if width >= 128 and width % 64 == 0:
        return 64
    return 32


def grid_multiple(width: float) -> int:
    return 128 if width >= 1024 else 64 if width >= 256 else 32


def ffn_dim_for(width: int) -> int:
    """SwiGLU width: 8d/3 rounded up to a multiple of 256 (64 below 256, 32 below 128)."""
    multiple = 256 if width >= 256 else 64 if width >= 128 else 32
    return multiple * math.ceil(8 * width / 3 / multiple - 1e-9)


def byte_width_for(main: int) -> int:
    """AU-Net byte-stage width: a quarter of the main width (Table 9's scaling rows)."""
    x = main / 4
    return max(32, _snap(x, 128 if x >= 256 else 32, half_down=True))


def side_layers_for(main: int) -> int:
    """Layers per side of AU-Net's non-final stages: 3 (Table 9), fewer for tiny models."""
    return 3 if main >= 512 else 2 if main >= 256 else 1


def width_grid(max_width: int = 16384) -> list[int]:
    widths = list(range(64, 256, 32)) + list(range(256, 1024, 64)) + list(range(1024, max_width + 1, 128))
    return widths


def rule_width(f_eq: float) -> float:
    """The continuous width rule, d(F_eq)."""
    return WIDTH_COEF * f_eq**WIDTH_EXP


def rule_flops(width: float) -> float:
    """Inverse of the width rule: the F_eq at which the rule gives ``width``."""
    return (width / WIDTH_COEF) ** (1.0 / WIDTH_EXP)


def family_config(family: Family | str, main: int, depth: int, seq_len: int, window: int | None = None,
                  vocab_size: int | None = None) -> ModelConfig:
    """The family's model at main width ``main`` and trunk depth ``depth``."""
    fam = get_family(family) if isinstance(family, str) else family
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


def _unit_bytes(fam: Family, bytes_per_token: float, bpe_bytes_per_token: float | None) -> float:
    if fam.units == "bytes":
        return 1.0
    return bpe_bytes_per_token if bpe_bytes_per_token is not None else bytes_per_token


@lru_cache(maxsize=64)
def _rungs(family: str, seq_len: int, window: int | None, vocab: int | None, contraction: tuple[float, ...] | None,
           eq_factor: float) -> tuple[Rung, ...]:
    fam = FAMILIES[family]
    grid = width_grid()
    rungs: list[Rung] = []
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
        depths = list(range(first, last + 1))
        if not depths:
            centre = math.sqrt(lo * hi)
            best = min(range(1, MAX_DEPTH + 1), key=lambda n: abs(math.log((base + slope * n) / centre)))
            depths = [best]
        for n in depths:
            gamma_f = base + slope * n
            total = t1 + (t2 - t1) * (n - 1)
            rungs.append(Rung(d, n, gamma_f, total))
    return tuple(sorted(rungs, key=lambda r: (r.flops_ratio, r.main)))


# ---------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------


@dataclass
class RunPlan:
    """One training run chosen by the ladder (all counts in the model's input units)."""

    name: str
    arch: str  # family
    model: ModelConfig
    budget: float  # FLOPs: the compute spent (convention "total") or the paper's C ("paper")
    ratio: float  # requested γ, LLaMA-3-token units
    flops_per_unit: float  # F, output head included (Table 10's FLOPs/token)
    flops_per_unit_ratio: float  # F_γ: without the output head, the F of the ratio
    units: str  # "bytes" or "tokens"
    bytes_per_unit: float
    train_units: int  # steps x bsz
    bsz: int  # input units per optimizer step (whole sequences)
    steps: int
    lr: float
    law_source: str
    achieved_ratio: float  # γ actually trained (train_units / F_γ), LLaMA-3-token units
    total_flops: float  # train_units x F: compute spent, head included
    paper_compute: float  # train_units x F_γ: the paper's C
    law_compute: float  # where the law was evaluated
    params: int
    contraction: list[float] = field(default_factory=list)
    bytes_per_token: float = LLAMA3_BYTES_PER_TOKEN
    convention: str = "total"
    law_bsz: float = 0.0  # the law's BSZ before rounding to sequences, model units

    @property
    def seq_len(self) -> int:
        return self.model.seq_len

    @property
    def sequences_per_step(self) -> int:
        return self.bsz // self.model.seq_len

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "model"}
        out["model"] = self.model.to_dict()
        return out

    def record_fields(self) -> dict[str, Any]:
        """The fields of ``aunet.record.RunRecord`` this plan fixes."""
        return dict(arch=self.arch, budget=self.budget, lr=self.lr, bsz=float(self.bsz), units=self.units,
                    bytes_per_unit=self.bytes_per_unit, model=self.name, ratio=self.ratio,
                    flops_per_unit=self.flops_per_unit, params=float(self.params), steps=self.steps,
                    train_units=float(self.train_units), contraction=list(self.contraction))

    def to_overrides(self) -> list[str]:
        """Hydra overrides of ``conf/train.yaml`` (``aunet.train.TrainConfig``) that run this plan.

        ``++`` sets a key whether or not the composed config has it (a preset may leave
        fields at their defaults).
        """
        out = [f"++model.{k}={_hydra_value(v)}" for k, v in self.model.to_dict().items()]
        out += [f"++{k}={_hydra_value(v)}" for k, v in (
            ("arch", self.arch), ("budget", self.budget), ("ratio", self.ratio), ("bsz", self.bsz),
            ("steps", self.steps), ("optim.lr", self.lr))]
        return out

    def table(self) -> str:
        m = self.model
        rows = [
            ("plan", self.name),
            ("family", f"{self.arch} ({m.arch}, {self.units})"),
            ("budget", f"{self.budget:.3g} FLOPs ({CONVENTIONS[self.convention]})"),
            ("ratio", f"{self.ratio:g} requested, {self.achieved_ratio:.3g} achieved (LLaMA-3-token units)"),
            ("dims", _fmt_list(m.dims)),
            ("layers", _fmt_list(m.layers)),
            ("head_dims", _fmt_list(m.head_dims)),
            ("ffn_dims", _fmt_list(m.ffn_dims)),
            ("seq_len / window", f"{m.seq_len} / {m.window if m.arch == 'aunet' else 'full'}"),
            ("vocab_size", str(m.vocab_size)),
            ("params", f"{self.params:,}"),
            (f"FLOPs/{self.units[:-1]}", f"{self.flops_per_unit:.4g} (head included)"),
            (f"FLOPs/{self.units[:-1]} no head", f"{self.flops_per_unit_ratio:.4g} (the paper's F of the ratio)"),
            ("contraction", _fmt_list([round(c, 3) for c in self.contraction])),
            (f"train {self.units}", f"{self.train_units:.4g}"),
            (f"batch ({self.units}/step)", f"{self.bsz:,} = {self.sequences_per_step} x {m.seq_len} (law: {self.law_bsz:.4g})"),
            ("steps", f"{self.steps:,}"),
            ("peak LR", f"{self.lr:.4g}"),
            ("law", f"{self.law_source}, at C = {self.law_compute:.3g}"),
            ("compute spent", f"{self.total_flops:.3g} FLOPs (head included); paper's C {self.paper_compute:.3g}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _fmt_count(n: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"


def _fmt_list(values: Sequence) -> str:
    return "; ".join(str(v) for v in values)


def _hydra_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def plans_table(plans: Sequence[RunPlan]) -> str:
    """Several plans, one row each."""
    head = ("budget", "ratio", "dims", "layers", "params", "F/unit", "F_nohead", "units", "train", "bsz", "steps", "lr")
    rows = [head]
    for p in plans:
        rows.append((f"{p.budget:.3g}", f"{p.achieved_ratio:.3g}", _fmt_list(p.model.dims), _fmt_list(p.model.layers),
                     _fmt_count(p.params), f"{p.flops_per_unit:.3g}", f"{p.flops_per_unit_ratio:.3g}", p.units,
                     f"{p.train_units:.3g}", f"{p.bsz:,}", f"{p.steps:,}", f"{p.lr:.3g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def _resolve_laws(family: Family, laws: HyperLaws | str | Path | dict | None) -> HyperLaws:
    if laws is None:
        return PAPER_LAWS[family.law]
    if isinstance(laws, HyperLaws):
        return laws
    if isinstance(laws, dict):
        return HyperLaws.from_dict(laws)
    return HyperLaws.from_file(laws)


CONVENTIONS = {
    "total": "compute spent, head included: N x F",
    "paper": "the paper's C: N x F_no-head",
}
LAW_AT = ("auto", "paper", "budget")


def _is_paper_law(law: HyperLaws) -> bool:
    return any(law == paper for paper in PAPER_LAWS.values())


def plan(arch: str, budget: float, ratio: float, laws: HyperLaws | str | Path | None = None,
         seq_len: int | None = None, contraction: Sequence[float] | None = None,
         bytes_per_token: float = LLAMA3_BYTES_PER_TOKEN, *, window: int | None = None,
         vocab_size: int | None = None, bpe_bytes_per_token: float | None = None,
         convention: str = "total", law_at: str = "auto") -> RunPlan:
    """Choose the model, data, batch size, steps and prior LR for budget C and ratio γ.

    ``arch``: a family of :data:`FAMILIES`. ``budget``: FLOPs, the compute spent
    (``convention="total"``) or the paper's C = N x F_no-head (``"paper"``); see the
    module docstring. ``ratio``: γ in LLaMA-3-token units. ``laws``: a HyperLaws, a
    JSON file of one, or None for the paper's. ``seq_len``/``window``/``vocab_size``:
    None picks the regime's (paper sizes from 1e16 FLOPs up, CPU sizes below).
    ``contraction``: AU-Net's bytes per vector per stage (None:
    ``aunet.flops.DEFAULT_CONTRACTION``). ``bytes_per_token``: k, bytes per LLaMA-3
    token on the data. ``bpe_bytes_per_token``: bytes per token of a BPE model's own
    tokenizer (None: a LLaMA-3-like tokenizer, k). ``law_at``: where to evaluate the
    law: "paper" (N x F_no-head), "budget", or "auto" (the paper's laws at N x F_no-head,
    any other law at the budget).
    """
    fam = get_family(arch)
    budget = positive_number("budget", budget, "a compute budget in FLOPs, e.g. 1e20")
    ratio = positive_number("ratio", ratio, "a data-to-model ratio in LLaMA-3 tokens per FLOP/token, e.g. 10")
    bytes_per_token = positive_number("bytes_per_token", bytes_per_token, "bytes per LLaMA-3 token, e.g. 4.56")
    if bpe_bytes_per_token is not None:
        bpe_bytes_per_token = positive_number("bpe_bytes_per_token", bpe_bytes_per_token, "e.g. 3.8 for a 4k BPE")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention {convention!r}: use one of {sorted(CONVENTIONS)}")
    if law_at not in LAW_AT:
        raise ValueError(f"law_at {law_at!r}: use one of {LAW_AT}")
    cpu = budget < CPU_REGIME_BELOW
    if seq_len is None:
        seq_len = (CPU_SEQ if cpu else PAPER_SEQ)[fam.units]
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len {seq_len!r} must be a positive whole number of input units")
    if fam.arch == "aunet":
        window = window if window is not None else (CPU_WINDOW if cpu else PAPER_WINDOW)
        if window < 1:
            raise ValueError(f"window {window} must be a positive number of bytes")
    else:
        window = None
    vocab = None
    if fam.units == "bpe":
        vocab = vocab_size or (CPU_BPE_VOCAB if cpu else PAPER_BPE_VOCAB)
    b_unit = _unit_bytes(fam, bytes_per_token, bpe_bytes_per_token)
    unit_factor = (bytes_per_token / b_unit) ** 2  # γ_unit / γ
    gamma_unit = ratio * unit_factor
    contraction_key = None
    probe = family_config(fam, 256, 1, seq_len, window, vocab)
    if fam.arch == "aunet":
        contraction_key = tuple(resolve_contraction(probe, contraction))
    elif contraction is not None:
        resolve_contraction(probe, contraction)  # raises: only AU-Net pools
    rungs = _rungs(fam.name, seq_len, window, vocab, contraction_key, bytes_per_token / b_unit)

    def cost(r: Rung) -> float:  # budget / γ_unit for this rung
        return r.flops_ratio * (r.flops if convention == "total" else r.flops_ratio)

    # Keep a chain on which cost, F and F_no-head all grow, so that every one of them
    # grows with the budget (a wide shallow rung can cost more yet have a smaller F_no-head).
    chain: list[Rung] = []
    for r in sorted(rungs, key=lambda r: (cost(r), r.main)):
        if not chain or (r.flops_ratio >= chain[-1].flops_ratio and r.flops >= chain[-1].flops):
            chain.append(r)
    unit = "byte" if fam.units == "bytes" else "token"
    what = "F x F_no-head" if convention == "total" else "F_no-head²"
    smallest, largest = chain[0], chain[-1]
    if budget < gamma_unit * cost(smallest):
        need = gamma_unit * cost(smallest)
        raise ValueError(
            f"budget {budget:.3g} FLOPs is too small for the smallest {fam.name} model (main width "
            f"{smallest.main}, depth {smallest.depth}: {smallest.flops:.3g} FLOPs/{unit}, seq_len {seq_len}) "
            f"at ratio {ratio:g}: it needs at least {need:.3g} FLOPs (ratio x {unit_factor:.4g} x {what}); "
            f"raise the budget to >= {need:.3g} or lower the ratio to <= {budget / (unit_factor * cost(smallest)):.3g}"
        )
    if budget > gamma_unit * cost(largest) * 1.1:
        most = gamma_unit * cost(largest)
        raise ValueError(
            f"budget {budget:.3g} FLOPs at ratio {ratio:g} is beyond the largest {fam.name} model of the ladder "
            f"(main width {largest.main}, {largest.flops:.3g} FLOPs/{unit}); use a budget of at most "
            f"{most:.3g} FLOPs or a larger ratio"
        )
    log_t = math.log(budget / gamma_unit)
    best = min(chain, key=lambda r: (abs(math.log(cost(r)) - log_t), cost(r)))
    cfg = family_config(fam, best.main, best.depth, seq_len, window, vocab)
    breakdown = flops_breakdown(cfg, contraction_key)
    f_total, f_gamma = breakdown.total, breakdown.without_head
    units_wanted = budget / (f_total if convention == "total" else f_gamma)
    law = _resolve_laws(fam, laws)
    paper_law = _is_paper_law(law)
    at_paper = law_at == "paper" or (law_at == "auto" and paper_law)
    law_c = units_wanted * f_gamma if at_paper else budget
    model_units = "tokens" if fam.units == "bpe" else "bytes"
    law_bsz = law.bsz(law_c)
    if law.units != model_units:
        law_bytes = law_bsz * (bytes_per_token if law.units == "tokens" else 1.0)
        law_bsz = law_bytes / b_unit
    n_seq = max(1, round(law_bsz / seq_len))
    bsz = n_seq * seq_len
    steps = max(1, round(units_wanted / bsz))
    train_units = steps * bsz
    cfg.name = f"{fam.name}_C{budget:.2g}_r{ratio:g}".replace("+", "")
    return RunPlan(
        name=cfg.name, arch=fam.name, model=cfg, budget=budget, ratio=ratio,
        flops_per_unit=f_total, flops_per_unit_ratio=f_gamma, units=model_units, bytes_per_unit=b_unit,
        train_units=train_units, bsz=bsz, steps=steps, lr=law.lr(law_c), law_source=law.source or "custom law",
        achieved_ratio=train_units / f_gamma / unit_factor, total_flops=train_units * f_total,
        paper_compute=train_units * f_gamma, law_compute=law_c, params=count_params(cfg),
        contraction=list(breakdown.contraction), bytes_per_token=bytes_per_token, convention=convention,
        law_bsz=law_bsz,
    )


def law_compute(cfg: ModelConfig, budget: float, laws: HyperLaws, contraction: Sequence[float] | None = None,
                convention: str = "total", law_at: str = "auto") -> float:
    """Where to evaluate ``laws`` for a run of ``cfg`` with this budget (see ``plan``).

    For the paper's laws and a budget that counts the head: budget x F_no-head / F.
    """
    if law_at == "budget" or (law_at == "auto" and not _is_paper_law(laws)) or convention == "paper":
        return float(budget)
    b = flops_breakdown(cfg, contraction)
    return float(budget) * b.without_head / b.total


def positive_number(name: str, value: Any, example: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number; give {example}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}; give {example}")
    return number


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def _parse_contraction(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--contraction {text!r}: give comma-separated numbers, e.g. 4.9,10.5") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aunet.ladder",
        description="Plan runs for compute budgets: model, data, batch size, steps and prior learning rate.",
    )
    parser.add_argument("--arch", help=f"family: {', '.join(FAMILIES)}")
    parser.add_argument("--budget", nargs="+", help="compute budget(s) C in FLOPs, e.g. 1e20")
    parser.add_argument("--ratio", default="10", help="data-to-model ratio in LLaMA-3-token units (default 10)")
    parser.add_argument("--law", help="a fitted hyperparameter law (JSON, aunet.laws.HyperLaws); default: the paper's")
    parser.add_argument("--seq-len", type=int, help="input units per sequence (default: by regime)")
    parser.add_argument("--window", type=int, help="AU-Net byte-stage window (default: by regime)")
    parser.add_argument("--vocab-size", type=int, help="BPE vocabulary (default: by regime)")
    parser.add_argument("--contraction", help="AU-Net bytes per vector at stages 2..K, e.g. 5.1,10.8")
    parser.add_argument("--bytes-per-token", type=float, default=LLAMA3_BYTES_PER_TOKEN,
                        help="bytes per LLaMA-3 token on the data (default 4.56)")
    parser.add_argument("--bpe-bytes-per-token", type=float, help="bytes per token of the BPE model's tokenizer")
    parser.add_argument("--convention", choices=sorted(CONVENTIONS), default="total",
                        help="what the budget counts: 'total' compute spent (default) or the paper's C (no head)")
    parser.add_argument("--law-at", choices=LAW_AT, default="auto",
                        help="evaluate the law at the paper's C or at the budget (auto: paper laws at C)")
    parser.add_argument("--json", action="store_true", help="print the plan(s) as JSON")
    parser.add_argument("--overrides", action="store_true", help="print Hydra overrides")
    parser.add_argument("--presets", action="store_true", help="list the model presets with params and FLOPs/unit")
    args = parser.parse_args(argv)
    try:
        if args.presets:
            print(presets_table())
            return 0
        if not args.arch or not args.budget:
            parser.error("--arch and --budget are required (or --presets)")
        contraction = _parse_contraction(args.contraction)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plans, failed = [], False
    for budget in args.budget:
        try:
            plans.append(plan(args.arch, budget, args.ratio, laws=args.law, seq_len=args.seq_len,
                              contraction=contraction, bytes_per_token=args.bytes_per_token, window=args.window,
                              vocab_size=args.vocab_size, bpe_bytes_per_token=args.bpe_bytes_per_token,
                              convention=args.convention, law_at=args.law_at))
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
    if not plans:
        return 2
    if args.json:
        print(json.dumps([p.to_dict() for p in plans] if len(plans) > 1 else plans[0].to_dict(), indent=2))
    elif args.overrides:
        for p in plans:
            print(" ".join(p.to_overrides()))
    elif len(plans) == 1:
        print(plans[0].table())
    else:
        print(plans_table(plans))
    return 2 if failed else 0


def presets_table() -> str:
    rows = [("preset", "arch", "units", "params", "FLOPs/unit", "no head")]
    for name in list_presets():
        cfg = load_preset(name)
        b = flops_breakdown(cfg)
        rows.append((name, cfg.arch, cfg.units, _fmt_count(count_params(cfg)), f"{b.total:.3g}",
                     f"{b.without_head:.3g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


if __name__ == "__main__":
    sys.exit(main())
