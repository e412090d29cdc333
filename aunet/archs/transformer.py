"""The Transformer baseline: one stage of Llama blocks over bytes or BPE tokens, full causal attention."""

from __future__ import annotations

from collections.abc import Sequence

from aunet.archs.base import ArchSpec, FamilyShape, ModelFields
from aunet.archs.terms import CounterTerm, StageFlops, attention_stage, block_params, full_attention_terms


class TransformerSpec(ArchSpec):
    name = "transformer"
    model = "aunet.models.transformer:Transformer"
    fsdp_units = ("aunet.models.layers:Block",)
    units = ("bytes", "bpe")
    families = (FamilyShape("transformer_bytes", "bytes", 1), FamilyShape("transformer_bpe", "bpe", 1))
    paper_laws = {"bpe": "bpe"}

    def body_params(self, cfg: ModelFields) -> dict[str, int]:
        return {"blocks": cfg.layers[0] * block_params(cfg.dims[0], cfg.ffn_dims[0])}

    def stage_flops(self, cfg: ModelFields, contraction: Sequence[float]) -> tuple[StageFlops, ...]:
        return (attention_stage(1, cfg.dims[0], cfg.ffn_dims[0], cfg.layers[0], cfg.seq_len),)

    def counter_terms(self, cfg: ModelFields, batch: int,
                      lengths: Sequence[int]) -> tuple[tuple[float, ...], list[CounterTerm]]:
        T = int(lengths[0])
        return (1.0,), full_attention_terms("", cfg.dims[0], cfg.ffn_dims[0], cfg.head_dims[0], cfg.layers[0],
                                            batch, T)


TRANSFORMER = TransformerSpec()
