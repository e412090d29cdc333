"""What an architecture is to this toolkit, in one place: the spec a model config's ``arch`` names.

A spec answers every question the rest of the code used to answer by comparing architecture names: which
units and how many stages a config may have, how to build the model, its parameters and FLOPs per unit
term by term, what FlopCounterMode counts for it, its activation memory, whether it pools bytes (and so
needs splitting rules and contraction factors) or attends over a window, the blocks FSDP shards, the
ladder's families and shape rule, and the paper's laws. Specs import neither torch nor the configs: a
dry run plans a study without loading the trainer, and the model class is named by its import path.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aunet.archs.shapes import ffn_dim_for, head_dim_for
from aunet.archs.terms import CounterTerm, StageFlops
from aunet.laws import PAPER_LAW_FOR_UNITS


class ModelFields(Protocol):
    """The fields of ``aunet.config.ModelConfig`` a spec reads: specs sit below the config, which asks them
    to check and complete it, so they see it through this structural type."""

    arch: str
    name: str
    units: str
    vocab_size: int
    dims: list[int]
    layers: list[int]
    head_dims: list[int]
    ffn_dims: list[int]
    splits: list[str] | None
    seq_len: int
    window: int | None
    max_pooled: list[int] | None
    upsampling: str
    pooling: str
    upsample_positions: int
    mamba_version: int
    d_state: int
    d_conv: int
    expand: int

    @property
    def n_stages(self) -> int: ...


Fail = Callable[[str, str], None]  # fail(field, message) raises the config's one-line error


@dataclass(frozen=True)
class FamilyShape:
    """A ladder family of an architecture: its name, the units it reads and its stage count."""

    name: str
    units: str
    n_stages: int


def resolve_class(path: str) -> type:
    """``"package.module:Class"`` -> the class (imported only when a model is built or sharded)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class ArchSpec:
    """The base spec: a one-stage model of Llama blocks reading bytes. Subclasses override what differs."""

    name: str = ""
    #: The model class, as "module:Class" (torch is imported only when a model is built).
    model: str = ""
    #: The layer classes FSDP shards one by one, as "module:Class".
    fsdp_units: tuple[str, ...] = ()
    #: What one input position may be: "bytes", "bpe".
    units: tuple[str, ...] = ("bytes",)
    min_stages: int = 1
    max_stages: int | None = 1
    #: Pools bytes into deeper stages: needs splitting rules, contraction factors and per-stage lengths.
    pools: bool = False
    #: Its byte stage attends over a sliding window (``ModelConfig.window``); else over the whole sequence.
    windowed: bool = False
    #: Rotary positions: head dims must be even.
    rotary: bool = True
    #: What ``head_dims`` means when it is not an attention head's width (for error messages).
    head_dim_meaning: str = ""
    #: The ladder's families of this architecture.
    families: tuple[FamilyShape, ...] = ()
    #: The paper's fitted law for this architecture, by units ("bytes", "bpe") -> key of PAPER_LAWS.
    paper_laws: dict[str, str] = {}
    #: The law a sweep's box is centred on before anything is fitted, by units.
    prior_laws: dict[str, str] = PAPER_LAW_FOR_UNITS

    # ---- configuration
    def select(self, cfg: ModelFields) -> ArchSpec:
        """The spec that describes ``cfg`` (a spec with versions picks one here)."""
        return self

    def fill_defaults(self, cfg: ModelFields) -> None:
        """Set the fields a config may leave out (before it is validated)."""

    def validate(self, cfg: ModelFields, fail: Fail) -> None:
        """Checks of this architecture's own fields (the shared ones are checked by ``ModelConfig``)."""

    def family_name(self, cfg: ModelFields) -> str:
        return f"{self.name}_{cfg.units}"

    def paper_law(self, units: str) -> str | None:
        return self.paper_laws.get(units)

    def prior_law(self, units: str) -> str:
        return self.prior_laws[units]

    # ---- the model
    def build(self, cfg: ModelFields) -> Any:
        return resolve_class(self.model)(cfg)

    def sharded_layers(self) -> tuple[type, ...]:
        return tuple(resolve_class(path) for path in self.fsdp_units)

    # ---- accounting
    def body_params(self, cfg: ModelFields) -> dict[str, int]:
        """Parameters between the embedding and the final norm, by part."""
        raise NotImplementedError

    def param_breakdown(self, cfg: ModelFields) -> dict[str, int]:
        d, V = cfg.dims[0], cfg.vocab_size
        return {"embedding": V * d, **self.body_params(cfg), "norm": d, "head": d * V}

    def stage_flops(self, cfg: ModelFields, contraction: Sequence[float]) -> tuple[StageFlops, ...]:
        """FLOPs per vector of every stage (``contraction``: units per vector, the byte stage first)."""
        raise NotImplementedError

    def counter_terms(self, cfg: ModelFields, batch: int,
                      lengths: Sequence[int]) -> tuple[tuple[float, ...], list[CounterTerm]]:
        """FlopCounterMode's terms of the body (not the head) for ``batch`` rows of stage ``lengths``, and the
        contraction as run."""
        raise NotImplementedError

    def activation_width_tokens(self, cfg: ModelFields, tokens: float, contraction: Sequence[float]) -> float:
        """Sum over the blocks run per sequence of (vectors x width): what activation memory scales with."""
        return tokens * cfg.dims[0] * sum(cfg.layers)

    # ---- the ladder
    def shape(self, main: int, depth: int, n_stages: int) -> dict[str, list[int]]:
        """The ladder's model at main width ``main`` and trunk depth ``depth``: its per-stage fields."""
        return {"dims": [main], "layers": [depth], "head_dims": [head_dim_for(main)], "ffn_dims": [ffn_dim_for(main)]}
