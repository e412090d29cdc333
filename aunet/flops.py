"""FLOPs per input unit and parameter counts for every architecture (Sec. 2.3, App. A).

Conventions
-----------
FLOPs per input unit (byte or token), forward + backward, follow the paper:

    F = 6 · N + 6 · d · L · S

* ``N`` counts the *weight matrices* every unit is multiplied through: attention
  (wq, wk, wv, wo: 4d²), SwiGLU (w1, w3, w2: 3df), the output head (d·V), AU-Net's
  pooling and upsampling projections, Mamba's projections and convolution. The input
  embedding is a lookup, not a multiplication, and is left out. RMSNorm gains, biases
  and Mamba's ``D`` are elementwise and left out too: this is what the paper's numbers
  do (with norm gains counted, Table 10's step counts come out 2-4 steps too high on
  every baseline row; without them they are exact).
* ``6dLS`` is the attention term: QKᵀ costs 2d per (query, key) pair forward, ×3 with
  the backward pass, and a query sees S keys. S is the sequence length for causal
  attention over the whole sequence (Transformers, AU-Net's deeper stages) and the
  window for AU-Net's sliding-window byte stage: ``S = min(window, seq_len)``. The
  window is an AU-Net byte-stage setting only: the Transformer baseline attends over
  its whole sequence whatever ``window`` says (as ``aunet.models`` does).
* AU-Net (Sec. 2.3): each stage's FLOPs per vector *of that stage* divided by its
  contraction factor c_k (bytes per vector of stage k, c_0 = 1). A non-final stage
  runs its blocks twice (contracting and expanding side); the final stage's blocks
  are the trunk. Stage k ≥ 1 sees ``seq_len / c_k`` vectors, which is its attended
  length S. The pooling projection into stage k (d_{k-1}·d_k) and the upsampling
  projection out of it (``(P+1)·d_k·d_{k-1}`` for multi-linear upsampling, computed as
  one matmul per coarse vector; d_k·d_{k-1} for 'simple' and 'repeat') run once per
  stage-k vector and are counted there. The head runs at the byte rate.
* Mamba-1: 6 × (in_proj, depthwise conv, x_proj, dt_proj, out_proj weights) per layer,
  plus the selective scan, which has no weights: per position and per (channel, state)
  pair, ΔA, ΔB and ΔB·x (3 multiplies), h = ΔA·h + ΔBx (2) and y = C·h (2), i.e.
  7·E·d·N forward, ×3 with the backward pass.
* Mamba-2: 6 × (in_proj, depthwise conv, out_proj weights) per layer, plus the scan's
  recurrence: A is a scalar per head, so per (channel, state) pair (Δx)·B (1 multiply),
  h = ΔA·h + ΔBx (2) and y = C·h (2), i.e. 5·E·d·N forward, ×3 with the backward pass.
  This is the recurrence's cost, linear in the sequence; the chunked SSD algorithm that
  trains it does more (quadratic within each chunk): see ``predict_flop_counter``.

Contraction factors are measured on data with :func:`measure_contraction` and every run
records the ones it used. When none are given, :data:`DEFAULT_CONTRACTION` applies to
the paper's splitting rules (word / 2 words / 4 words).

The paper's tables. The formula gives Table 10's FLOPs/token and step counts for the scaling
baselines of Table 9, and its AU-Net rows with :data:`PAPER_CONTRACTION` (three factors fitted to
those rows); ``tests/test_flops.py`` holds both to the table, and ``benchmarks/README.md``
records how close they come and what the paper's rules contract on other text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from aunet.archs.aunet import upsample_out  # noqa: F401  (re-exported)
from aunet.archs.mamba import (  # noqa: F401  (re-exported: the tests' and benchmarks' import path)
    SCAN_FORWARD_FLOPS,
    SSD_FORWARD_FLOPS,
    mamba2_layer_params,
    mamba_dt_rank,
    mamba_layer_params,
)
from aunet.archs.terms import (  # noqa: F401  (re-exported)
    WHY_WEIGHTS,
    StageFlops,
    block_matmul_params,
    block_params,
)
from aunet.config import COUNTED_IN, ModelConfig
from aunet.flop_counter import (  # noqa: F401  (re-exported)
    CounterPrediction,
    CounterTerm,
    count_flops,
    predict_flop_counter,
    stage_lengths,
)
from aunet.splitting import default_rules, learned_targets, pool_levels
from aunet.splitting.learned import fixed_prefix, with_learned_targets

#: Bytes per vector at stages 1..4 for the paper's rules, measured with ``pool_levels`` on English
#: prose (State of the Union addresses 1950-2016; other text in benchmarks/README.md). Measure your own
#: corpus with ``measure_contraction``.
DEFAULT_CONTRACTION: tuple[float, ...] = (1.0, 5.13, 9.21, 15.05)

#: Contraction factors used when a config gives none, keyed by its tuple of rule specs (the
#: byte stage first): the paper's rules at 1-4 stages. Rules not listed need measured factors.
CONTRACTION_BY_RULES: dict[tuple[str, ...], tuple[float, ...]] = {
    tuple(default_rules(k)): DEFAULT_CONTRACTION[:k] for k in range(1, len(DEFAULT_CONTRACTION) + 1)
}

#: Contraction factors that reproduce the AU-Net rows of Table 10 (fitted; see above).
PAPER_CONTRACTION: tuple[float, ...] = (1.0, 4.91, 7.15, 10.56)

# ---------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------


def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by part (embedding, blocks, pooling, upsampling, norm, head, ...)."""
    return cfg.spec.param_breakdown(cfg)


def count_params(cfg: ModelConfig) -> int:
    """Exact number of parameters of ``aunet.models.build_model(cfg)`` (embedding included)."""
    return sum(param_breakdown(cfg).values())


def count_params_no_embedding(cfg: ModelConfig) -> int:
    """Parameters without the input embedding (output head included)."""
    parts = param_breakdown(cfg)
    return sum(parts.values()) - parts["embedding"]


# ---------------------------------------------------------------------------------------
# Contraction
# ---------------------------------------------------------------------------------------


def measure_contraction(byte_docs: Iterable[bytes | str], n_stages: int, rules: Sequence[str] | None = None) -> list[float]:
    """Bytes per vector at each stage, measured with ``pool_levels`` on documents.

    Returns ``n_stages`` numbers, the byte stage first (always 1.0): stage k's factor is
    total bytes / number of bytes whose level is >= k. Each document is split from a
    fresh state (its first byte is kept at every stage, as at a sequence start).
    """
    if isinstance(byte_docs, (bytes, bytearray, str)):
        byte_docs = [byte_docs]
    if n_stages < 1:
        raise ValueError(f"n_stages must be >= 1, got {n_stages}")
    rule_list = list(rules) if rules is not None else None
    total = 0
    kept = [0] * n_stages
    for doc in byte_docs:
        data = doc.encode("utf-8") if isinstance(doc, str) else bytes(doc)
        if not data:
            continue
        levels = pool_levels(data, n_stages, rule_list)
        total += len(levels)
        counts = [0] * n_stages
        for level in levels:
            counts[level] += 1
        running = 0
        for k in reversed(range(n_stages)):
            running += counts[k]
            kept[k] += running
    if total == 0:
        raise ValueError("measure_contraction needs at least one non-empty document")
    return [total / n for n in kept]


def resolve_contraction(cfg: ModelConfig, contraction: Sequence[float] | None = None) -> list[float]:
    """The contraction factors used for ``cfg``: one per stage, the byte stage (1.0) first.

    ``contraction`` may give all ``n_stages`` values (starting with 1.0) or only the
    ``n_stages - 1`` pooled stages. None: the factors :data:`CONTRACTION_BY_RULES` holds for
    the config's rules (the paper's: :data:`DEFAULT_CONTRACTION`); a config with other rules
    must give its own (see ``measure_contraction``).
    """
    K = cfg.n_stages
    if not cfg.spec.pools:
        if contraction is not None and list(contraction) not in ([], [1.0]):
            raise ValueError(
                f"contraction {list(contraction)} given for arch {cfg.arch!r}, which does not pool; "
                "leave it out (only an architecture that pools bytes, like AU-Net, has contraction factors)"
            )
        return [1.0]
    if contraction is None and any(t is not None for t in learned_targets(cfg.splits or ())):
        return _planned_learned(cfg)
    if contraction is None:
        known = CONTRACTION_BY_RULES.get(tuple(cfg.splits or ()))
        if known is not None:
            return list(known)
        if list(cfg.splits or []) != default_rules(K):
            raise ValueError(
                f"model {cfg.name or 'aunet'!r} uses splitting rules {cfg.splits}, not the paper's "
                f"{default_rules(K)}; the default contraction factors do not apply. Measure them with "
                "aunet.flops.measure_contraction(docs, n_stages, rules) and pass contraction=..."
            )
        raise ValueError(
            f"no default contraction for {K} stages (known up to {len(DEFAULT_CONTRACTION)}); "
            "pass contraction= measured with aunet.flops.measure_contraction"
        )
    values = [float(c) for c in contraction]
    if len(values) == K - 1:
        values = [1.0, *values]
    if len(values) != K:
        raise ValueError(
            f"contraction {list(contraction)} has {len(contraction)} values; a {K}-stage AU-Net needs "
            f"{K - 1} (bytes per vector at stages 2..{K}) or {K} starting with 1.0"
        )
    if values[0] != 1.0:
        raise ValueError(f"contraction {values}: the byte stage's factor must be 1.0")
    if any(not math.isfinite(c) or c < 1.0 for c in values) or any(b < a for a, b in zip(values, values[1:])):
        raise ValueError(
            f"contraction {values} must be finite, >= 1 and non-decreasing (bytes per vector grow with depth)"
        )
    return values


def _planned_learned(cfg: ModelConfig) -> list[float]:
    """A config with learned stages: its fixed prefix's known factors, then each learned stage at its target."""
    prefix = tuple(fixed_prefix(cfg.splits or ()))
    known = CONTRACTION_BY_RULES.get(prefix)
    if known is None:
        raise ValueError(f"model {cfg.name or 'aunet'!r}: no known contraction for its fixed rules {list(prefix)} "
                         "before the learned ones; measure them with aunet.flops.measure_contraction and pass "
                         "contraction=...")
    return with_learned_targets(known, cfg.splits or ())


# ---------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlopsBreakdown:
    """FLOPs per input unit, term by term, and the contraction factors used."""

    arch: str
    units: str  # "bytes" or "tokens"
    stages: tuple[StageFlops, ...]
    head: float  # output head, per unit
    contraction: tuple[float, ...]

    @property
    def total(self) -> float:
        """FLOPs per unit, output head included (Table 10's FLOPs/token column)."""
        return self.without_head + self.head

    @property
    def without_head(self) -> float:
        """FLOPs per unit without the output head: the paper's F for the ratio γ and the budget C."""
        return sum(s.per_unit for s in self.stages)

    @property
    def resampling(self) -> float:
        """AU-Net's pooling and upsampling projections, per unit."""
        return sum((s.pooling + s.upsampling) / s.contraction for s in self.stages)

    @property
    def attention(self) -> float:
        return sum(s.attention / s.contraction for s in self.stages)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(total=self.total, without_head=self.without_head, resampling=self.resampling,
                   attention=self.attention)
        return out

def flops_breakdown(cfg: ModelConfig, contraction: Sequence[float] | None = None) -> FlopsBreakdown:
    """FLOPs per input unit of ``cfg``, term by term (see the module docstring)."""
    c = resolve_contraction(cfg, contraction)
    head = 6.0 * cfg.dims[0] * cfg.vocab_size
    return FlopsBreakdown(cfg.arch, COUNTED_IN[cfg.units], cfg.spec.stage_flops(cfg, c), head, tuple(c))


def flops_per_unit(cfg: ModelConfig, contraction: Sequence[float] | None = None, include_head: bool = True) -> float:
    """FLOPs (forward + backward) per input unit: 6·N (no input embedding) + 6·d·L·S.

    ``include_head=True`` (default) counts the output head, as Table 10's FLOPs/token
    column does; ``False`` gives the paper's F of the data-to-model ratio and of the
    budget (see :mod:`aunet.ladder`). ``contraction``: AU-Net's bytes per vector per
    stage (see ``resolve_contraction``); ignored by the other architectures.
    """
    b = flops_breakdown(cfg, contraction)
    return b.total if include_head else b.without_head


def executed_flops(breakdown: FlopsBreakdown, lengths: Sequence[int]) -> float:
    """FLOPs (forward + backward) of one sequence whose stages ran ``lengths`` vectors (byte stage first).

    ``breakdown.total`` counts each stage at its mean contraction; a batch runs every pooled
    stage at its longest row's length, attending over that many vectors. With ``lengths`` the
    padded lengths of a batch, this is what the model executed per row (the head at the byte rate).
    """
    out = lengths[0] * breakdown.head
    for k, (stage, n) in enumerate(zip(breakdown.stages, lengths, strict=True)):
        attended = stage.attended if k == 0 else n
        out += n * (stage.per_vector - stage.attention + 6.0 * stage.width * stage.blocks * attended)
    return out


