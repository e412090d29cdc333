"""Plans: (family or model, budget, ratio, law, data measurements) -> RunPlan.

``plan_model`` is the one function that turns a budget into a batch size (whole
sequences) and a number of steps; ``plan`` picks a family's model for the budget and
ratio, then calls it. ``resolve_laws`` is the one place a hyperparameter law is chosen.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from aunet.config import COUNTED_IN, ModelConfig
from aunet.flops import count_params, flops_breakdown, resolve_contraction
from aunet.ladder.families import (
    CPU_REGIME_BELOW,
    LLAMA3_BYTES_PER_TOKEN,
    MIN_STEPS,
    Family,
    Rung,
    family_config,
    family_of,
    get_family,
    rungs,
)
from aunet.ladder.presets import PROJECT_ROOT
from aunet.laws import PAPER_LAW_FOR_UNITS, PAPER_LAWS, HyperLaws, Regime, tokens_per_param
from aunet.record import BUDGET_CONVENTIONS, check_convention

LAW_AT = ("auto", "paper", "budget")
#: The paper's law for a model's units (the byte law for every byte model, the BPE law for tokens).


@dataclass
class RunPlan:
    """One training run as planned (all counts in the model's input units). Also a structured config:
    a sweep ships it with each trial, and the trainer runs it."""

    name: str
    family: str
    model: ModelConfig
    budget: float  # FLOPs: the compute spent (convention "spent") or the paper's C ("paper")
    ratio: float  # requested γ, LLaMA-3-token units (nan: none requested)
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
    convention: str = "spent"
    law_bsz: float = 0.0  # the law's BSZ before rounding to sequences, model units
    steps_given: bool = False  # steps were fixed, not derived from the budget

    @property
    def seq_len(self) -> int:
        return self.model.seq_len

    @property
    def sequences_per_step(self) -> int:
        return self.bsz // self.model.seq_len

    @property
    def budget_per_unit(self) -> float:
        """What one training unit costs against the budget: F in the "spent" convention, F_no-head in "paper"."""
        return self.flops_per_unit if self.convention == "spent" else self.flops_per_unit_ratio

    def for_world(self, world_size: int) -> RunPlan:
        """This plan on ``world_size`` processes: the batch rounded to whole sequences on every process,
        the steps re-derived from the budget (unless they were fixed)."""
        n = self.sequences_per_step
        if n % world_size == 0:
            return self
        bsz = max(world_size, round(n / world_size) * world_size) * self.seq_len
        steps = self.steps if self.steps_given else whole_steps(self.budget, self.budget_per_unit, bsz)
        scale = steps * bsz / self.train_units
        return replace(self, bsz=bsz, steps=steps, train_units=steps * bsz, total_flops=self.total_flops * scale,
                       paper_compute=self.paper_compute * scale, achieved_ratio=self.achieved_ratio * scale)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        out["model"] = self.model.to_dict()
        return out

    @property
    def tokens_per_param(self) -> float:
        return tokens_per_param(self.train_units, self.bytes_per_unit, self.params)

    def regime(self) -> Regime:
        """The kind of run this is, as a law's verdict compares it with the law's fitted runs."""
        ratio = () if math.isnan(self.ratio) else (self.ratio,)
        return Regime(self.family, ratio, (self.tokens_per_param,) * 2, (self.model.seq_len,),
                      (self.model.vocab_size,), (self.bytes_per_unit,) * 2, origin="planned")

    def record_fields(self) -> dict[str, Any]:
        """The fields of ``aunet.record.RunRecord`` this plan fixes."""
        return dict(family=self.family, budget=self.budget, lr=self.lr, bsz=float(self.bsz), units=self.units,
                    bytes_per_unit=self.bytes_per_unit, model=self.model.name, ratio=self.ratio,
                    flops_per_unit=self.flops_per_unit, params=float(self.params), steps=self.steps,
                    train_units=float(self.train_units), contraction=list(self.contraction),
                    convention=self.convention, seq_len=self.model.seq_len, vocab_size=self.model.vocab_size)

    def to_overrides(self) -> list[str]:
        """Hydra overrides of ``conf/train.yaml`` (``aunet.train.TrainConfig``) that run this plan.

        ``++`` sets a key whether or not the composed config has it (a preset may leave
        fields at their defaults).
        """
        out = [f"++model.{k}={hydra_value(v)}" for k, v in self.model.to_dict().items()]
        out += [f"++{k}={hydra_value(v)}" for k, v in (
            ("family", self.family), ("budget", self.budget), ("ratio", self.ratio), ("bsz", self.bsz),
            ("steps", self.steps), ("optim.lr", self.lr), ("budget_convention", self.convention))]
        return out

    def table(self) -> str:
        m = self.model
        rows = [
            ("plan", self.name),
            ("family", f"{self.family} ({m.arch}, {self.units})"),
            ("budget", f"{self.budget:.3g} FLOPs ({BUDGET_CONVENTIONS[self.convention]})"),
            ("ratio", f"{self.ratio:g} requested, {self.achieved_ratio:.3g} achieved (LLaMA-3-token units): "
                      f"{self.tokens_per_param:.3g} LLaMA-3 tokens per parameter"),
            ("dims", _fmt_list(m.dims)),
            ("layers", _fmt_list(m.layers)),
            ("head_dims", _fmt_list(m.head_dims)),
            ("ffn_dims", _fmt_list(m.ffn_dims)),
            ("seq_len / window", f"{m.seq_len} / {m.window if m.spec.windowed else 'full'}"),
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

    def to_override(self) -> str:
        """The whole plan as one Hydra override, ``plan={...}`` (how a sweep ships it with a trial)."""
        return f"plan={hydra_value(self.to_dict())}"


def hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar (strings quoted, floats exact)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and not (_BARE.fullmatch(value) and value.lower() not in _KEYWORDS):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


_BARE = re.compile(r"[A-Za-z_][\w\-]*")
_KEYWORDS = ("null", "true", "false", "inf", "nan")


def _fmt_list(values: Sequence) -> str:
    return "; ".join(str(v) for v in values)


@dataclass(frozen=True)
class DataMeasurements:
    """What the planner needs from the data: AU-Net's contraction, a BPE's bytes per token and vocabulary."""

    contraction: list[float] | None = None
    bpe_bytes_per_token: float | None = None
    vocab_size: int | None = None

    @classmethod
    def of(cls, corpus: Any, model: ModelConfig) -> DataMeasurements:
        """Measured on a prepared corpus (``aunet.data.Corpus``) for ``model``'s units, sequences and splits."""
        bpe = model.units == "bpe"
        return cls(corpus.contraction(model) if model.spec.pools else None,
                   corpus.bytes_per_unit if bpe else None, corpus.vocab_size if bpe else None)


def data_contraction(family: str | Family, budget: float | str, seq_len: int | None = None) -> list[float]:
    """A pooling family's contraction (bytes per vector, byte stage first) measured on the default corpus
    in sequences of ``seq_len`` bytes (None: those of ``budget``'s regime), as a sweep's cell measures it
    on its data: what the ladder's command counts with for a family whose splitting rules have no
    default factors."""
    fam = get_family(family)
    if not fam.spec.pools:
        raise ValueError(f"family {fam.name!r} does not pool bytes: it has no contraction")
    budget = positive_number("budget", budget, "a compute budget in FLOPs, e.g. 1e20")
    return list(_default_corpus_contraction(fam.name, seq_len or fam.regime(budget)[0]))


@lru_cache(maxsize=32)
def _default_corpus_contraction(family: str, seq_len: int) -> tuple[float, ...]:
    from aunet.data import DataConfig, prepare_data  # the data layer, only when data is measured

    probe = family_config(family, 256, 1, seq_len)
    corpus = prepare_data(DataConfig(units=probe.units, seq_len=seq_len), progress=False)
    contraction = DataMeasurements.of(corpus, probe).contraction
    assert contraction is not None
    return tuple(contraction)


def resolve_laws(spec: HyperLaws | str | Path | dict | None, units: str) -> HyperLaws:
    """The hyperparameter law for a model reading ``units`` ("bytes" or "bpe").

    ``spec``: None or "paper" (the paper's law for those units), a HyperLaws, a JSON file of
    one, one law as a dict, or a dict keyed like ``PAPER_LAWS`` ("aunet", "bpe") of laws, each
    inline or a JSON file (``{aunet: conf/laws/cpu_aunet.json, bpe: conf/laws/cpu_bpe.json}``).
    """
    key = PAPER_LAW_FOR_UNITS[units]
    if spec is None or spec == "paper":
        return PAPER_LAWS[key]
    if isinstance(spec, HyperLaws):
        return spec
    if isinstance(spec, dict):
        spec = spec.get(key, spec)
        if isinstance(spec, dict):
            return HyperLaws.from_dict(spec)
    return HyperLaws.from_file(law_path(spec))


def law_path(path: str | Path) -> Path:
    """A law file as given (absolute, or from the working directory), else from the project root: a
    study's ``conf/laws/...`` then works from any directory."""
    path = Path(path)
    return path if path.is_absolute() or path.exists() else PROJECT_ROOT / path


def is_paper_law(law: HyperLaws) -> bool:
    return any(law == paper for paper in PAPER_LAWS.values())


def positive_number(name: str, value: Any, example: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number; give {example}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}; give {example}")
    return number


def whole_steps(budget: float, per_unit: float, bsz: int) -> int:
    """Optimizer steps of ``bsz`` units that spend ``budget`` FLOPs at ``per_unit`` FLOPs per unit."""
    return round(budget / per_unit / bsz)


def whole_sequences(units: float, seq_len: int) -> int:
    """A batch of ``units`` rounded to whole sequences (at least one): how plans and study boxes round."""
    return max(1, round(units / seq_len)) * seq_len


def steps_at(plan: RunPlan, bsz: float) -> float:
    """Optimizer steps the plan's budget buys at ``bsz`` units per step (every trial of a study cell
    trains the same units, whatever its batch)."""
    return plan.budget / plan.budget_per_unit / bsz


def check_steps(plan: RunPlan, max_bsz: float | None = None, min_steps: int = MIN_STEPS,
                force: bool = False) -> float:
    """Refuse a plan whose largest batch (``max_bsz``, e.g. the top of a study's box; default the
    plan's own) trains fewer than ``min_steps`` optimizer steps: such a run measures the first
    steps of training, not a scaling regime. The error names the budget that would fix it (steps
    grow linearly with the budget at a fixed model) and the largest batch that would.
    ``force=True`` lets it through. Returns the steps at ``max_bsz``."""
    bsz = float(max_bsz if max_bsz is not None else plan.bsz)
    steps = steps_at(plan, bsz)
    if steps < min_steps and not force:
        raise ValueError(
            f"{plan.family} at budget {plan.budget:.3g} FLOPs (ratio {plan.ratio:g}) trains only {steps:.0f} optimizer "
            f"steps at a batch of {bsz:,.0f} {plan.units}; a scaling study needs at least {min_steps}: raise the "
            f"budget to >= {plan.budget * min_steps / steps:.3g} FLOPs, or keep batches <= "
            f"{bsz * steps / min_steps:,.0f} {plan.units} (a smaller BSZ box or prior), or force it"
        )
    return steps


def plan_model(model: ModelConfig, budget: float | None, *, laws: HyperLaws | str | Path | dict | None = None,
               ratio: float = math.nan, family: str | None = None, measured: DataMeasurements | None = None,
               bytes_per_token: float = LLAMA3_BYTES_PER_TOKEN, convention: str = "spent", law_at: str = "auto",
               bsz: int | None = None, lr: float | None = None, steps: int | None = None) -> RunPlan:
    """Plan a run of ``model``: batch size in whole sequences, steps that spend ``budget``, peak LR.

    ``bsz``/``lr`` default to the law's at the budget (see the package docstring for where the
    law is evaluated); ``steps`` fixes the number of steps (``budget`` None: it is what they spend).
    Refuses a budget that buys less than one step, naming the smallest one that works.
    """
    measured = measured or DataMeasurements()
    check_convention(convention, "convention")
    if law_at not in LAW_AT:
        raise ValueError(f"law_at {law_at!r}: use one of {LAW_AT}")
    law = resolve_laws(laws, model.units)
    breakdown = flops_breakdown(model, measured.contraction)
    f_total, f_gamma = breakdown.total, breakdown.without_head
    per_unit = f_total if convention == "spent" else f_gamma
    bpe = model.units == "bpe"
    units = COUNTED_IN[model.units]
    b_unit = (measured.bpe_bytes_per_token or bytes_per_token) if bpe else 1.0
    seq = model.seq_len
    if budget is None:
        if steps is None or bsz is None:
            raise ValueError("train config: give a budget, or both steps and bsz (the law needs a budget)")
        budget = per_unit * whole_sequences(bsz, seq) * steps
    at_paper = law_at == "paper" or (law_at == "auto" and is_paper_law(law))

    def law_point(c: float) -> tuple[float, float]:
        """(the compute the law is evaluated at, its BSZ in model units) for a budget c."""
        at = c * f_gamma / f_total if at_paper and convention == "spent" else c
        law_bsz = law.bsz(at)
        if law.units != units:
            law_bsz = law_bsz * (bytes_per_token if law.units == "tokens" else 1.0) / b_unit
        return at, law_bsz

    def batch(c: float) -> int:
        return whole_sequences(bsz if bsz is not None else law_point(c)[1], seq)

    law_c, law_bsz = law_point(budget)
    n_units = batch(budget)
    n_steps = steps if steps is not None else whole_steps(budget, per_unit, n_units)
    if n_steps < 1:
        raise ValueError(_too_small(budget, model, family or family_of(model), per_unit, n_units, units,
                                    lambda c: whole_steps(c, per_unit, batch(c)) >= 1))
    train_units = n_steps * n_units
    unit_factor = (bytes_per_token / b_unit) ** 2  # γ_unit / γ
    return RunPlan(
        name=model.name, family=family or family_of(model), model=model, budget=float(budget), ratio=float(ratio),
        flops_per_unit=f_total, flops_per_unit_ratio=f_gamma, units=units, bytes_per_unit=b_unit,
        train_units=train_units, bsz=n_units, steps=n_steps, lr=float(lr) if lr is not None else law.lr(law_c),
        law_source=law.source or "custom law", achieved_ratio=train_units / f_gamma / unit_factor,
        total_flops=train_units * f_total, paper_compute=train_units * f_gamma, law_compute=law_c,
        params=count_params(model), contraction=list(breakdown.contraction), bytes_per_token=bytes_per_token,
        convention=convention, law_bsz=law_bsz, steps_given=steps is not None,
    )


def _too_small(budget: float, model: ModelConfig, family: str, per_unit: float, bsz: int, units: str,
               works) -> str:
    """The refusal of a budget that buys no whole step, with the smallest budget that does."""
    hi = budget * 2
    while not works(hi):
        hi *= 2
    lo = hi / 2
    for _ in range(60):  # bisect in log space: more budget never buys fewer steps
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if works(mid) else (mid, hi)
    exponent = math.floor(math.log10(hi)) - 2
    need = math.ceil(hi / 10**exponent) * 10**exponent  # 3 significant digits, rounded up
    return (f"budget {budget:.3g} FLOPs is too small for model {model.name or family!r} ({per_unit:.3g} FLOPs per "
            f"{units[:-1]}): one step of {bsz:,} {units} costs {per_unit * bsz:.3g} FLOPs and this budget buys "
            f"{budget / per_unit / bsz:.3g} of one; the smallest budget that buys a whole step is {need:.3g} FLOPs")


def plan(family: str, budget: float, ratio: float, laws: HyperLaws | str | Path | dict | None = None,
         seq_len: int | None = None, contraction: Sequence[float] | None = None,
         bytes_per_token: float = LLAMA3_BYTES_PER_TOKEN, *, window: int | None = None,
         vocab_size: int | None = None, bpe_bytes_per_token: float | None = None,
         convention: str = "spent", law_at: str = "auto", bsz: int | None = None, lr: float | None = None) -> RunPlan:
    """Choose the model, data, batch size, steps and prior LR for budget C and ratio γ.

    ``family``: a family of ``FAMILIES``. ``budget``: FLOPs, the compute spent
    (``convention="spent"``) or the paper's C = N x F_no-head (``"paper"``); see the
    package docstring. ``ratio``: γ in LLaMA-3-token units. ``laws``: see ``resolve_laws``.
    ``seq_len``/``window``/``vocab_size``: None picks the regime's (paper sizes from 1e16
    FLOPs up, CPU sizes below). ``contraction``: AU-Net's bytes per vector per stage (None:
    ``aunet.flops.DEFAULT_CONTRACTION``; a family with its own splitting rule, ``aunet2_stride4``,
    needs its measured one: ``data_contraction``). ``bytes_per_token``: k, bytes per LLaMA-3
    token on the data. ``bpe_bytes_per_token``: bytes per token of a BPE model's own
    tokenizer (None: a LLaMA-3-like tokenizer, k). ``law_at``: where to evaluate the
    law: "paper" (N x F_no-head), "budget", or "auto" (the paper's laws at N x F_no-head,
    any other law at the budget). ``bsz``/``lr``: a trial's own, instead of the law's.
    """
    fam = get_family(family)
    budget = positive_number("budget", budget, "a compute budget in FLOPs, e.g. 1e20")
    ratio = positive_number("ratio", ratio, "a data-to-model ratio in LLaMA-3 tokens per FLOP/token, e.g. 10")
    bytes_per_token = positive_number("bytes_per_token", bytes_per_token, "bytes per LLaMA-3 token, e.g. 4.56")
    if bpe_bytes_per_token is not None:
        bpe_bytes_per_token = positive_number("bpe_bytes_per_token", bpe_bytes_per_token, "e.g. 3.8 for a 4k BPE")
    check_convention(convention, "convention")
    regime_seq, regime_window, regime_vocab = fam.regime(budget)
    seq_len = regime_seq if seq_len is None else seq_len
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len {seq_len!r} must be a positive whole number of input units")
    window = (window if window is not None else regime_window) if fam.spec.windowed else None
    if window is not None and window < 1:
        raise ValueError(f"window {window} must be a positive number of bytes")
    vocab = (vocab_size or regime_vocab) if fam.units == "bpe" else None
    b_unit = (bpe_bytes_per_token or bytes_per_token) if fam.units == "bpe" else 1.0
    unit_factor = (bytes_per_token / b_unit) ** 2  # γ_unit / γ
    contraction_key = None
    probe = family_config(fam, 256, 1, seq_len, window, vocab)
    if fam.spec.pools:
        contraction_key = tuple(resolve_contraction(probe, contraction))
    elif contraction is not None:
        resolve_contraction(probe, contraction)  # raises: this architecture does not pool
    ladder = rungs(fam.name, seq_len, window, vocab, contraction_key, bytes_per_token / b_unit)
    best = _pick_rung(fam, ladder, budget, ratio, unit_factor, convention, seq_len)
    model = family_config(fam, best.main, best.depth, seq_len, window, vocab)
    model.name = f"{fam.name}_C{budget:.2g}_r{ratio:g}".replace("+", "")
    return plan_model(model, budget, laws=laws, ratio=ratio, family=fam.name,
                      measured=DataMeasurements(list(contraction_key) if contraction_key else None, bpe_bytes_per_token),
                      bytes_per_token=bytes_per_token, convention=convention, law_at=law_at, bsz=bsz, lr=lr)


def _pick_rung(fam: Family, ladder: Sequence[Rung], budget: float, ratio: float, unit_factor: float,
               convention: str, seq_len: int) -> Rung:
    """The rung whose data at ``ratio`` spends ``budget``: the nearest in log cost, or below the CPU regime
    the largest that still trains the ratio asked for; too small or too large a budget is refused."""
    gamma_unit = ratio * unit_factor

    def cost(r: Rung) -> float:  # budget / γ_unit for this rung
        return r.flops_ratio * (r.flops if convention == "spent" else r.flops_ratio)

    # Keep a chain on which cost, F and F_no-head all grow, so that every one of them
    # grows with the budget (a wide shallow rung can cost more yet have a smaller F_no-head).
    chain: list[Rung] = []
    for r in sorted(ladder, key=lambda r: (cost(r), r.main)):
        if not chain or (r.flops_ratio >= chain[-1].flops_ratio and r.flops >= chain[-1].flops):
            chain.append(r)
    unit = "byte" if fam.units == "bytes" else "token"
    what = "F x F_no-head" if convention == "spent" else "F_no-head²"
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
    if budget < CPU_REGIME_BELOW:
        # The tiny rungs are coarse (x2-2.5 in cost): the nearest one could train well under the
        # ratio asked for, and the data could shrink as the budget grows. So take the largest rung
        # that still trains at least the requested ratio: data >= γ_unit x F_γ, growing with C.
        best = [r for r in chain if cost(r) <= budget / gamma_unit * (1 + 1e-9)][-1]
    else:
        log_t = math.log(budget / gamma_unit)
        best = min(chain, key=lambda r: (abs(math.log(cost(r)) - log_t), cost(r)))
    return best
