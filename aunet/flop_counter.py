"""Reality check of the analytic FLOPs: what ``torch.utils.flop_counter.FlopCounterMode`` counts over a
forward and backward pass, predicted term by term from the shapes a model runs, next to the paper's F.

Only tests and ``benchmarks/bench_flops.py`` use it; the planning path never does (torch is imported by
the two functions that run a model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aunet.archs.terms import WHY_WEIGHTS, CounterTerm
from aunet.config import ModelConfig


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


def predict_flop_counter(cfg: ModelConfig, batch: int, lengths: Sequence[int]) -> CounterPrediction:
    """FlopCounterMode's forward + backward count for ``batch`` rows, term by term, next to F's.

    ``lengths``: the static length of every stage as the model runs it (the sequence
    length, then AU-Net's pooled lengths, padded to the longest row or ``max_pooled``);
    see :func:`stage_lengths`. The analytic column is F with contraction
    ``units / (batch · length)``, times the batch's units: where the two differ, the
    ``why`` of the term says why.
    """
    units = batch * int(lengths[0])
    contraction, terms = cfg.spec.counter_terms(cfg, batch, lengths)
    head = 6.0 * cfg.dims[0] * cfg.vocab_size * units
    terms = [*terms, CounterTerm("output head", head, head, WHY_WEIGHTS),
             CounterTerm("embedding lookup, norms, activations", 0.0, 0.0,
                         "neither counts them: a lookup and elementwise work")]
    return CounterPrediction(units, tuple(contraction), tuple(terms))


def stage_lengths(model, ids, levels=None) -> list[int]:
    """The static length of every stage when ``model`` runs on ``ids`` [B, T]."""
    from aunet.models import stage_lengths as run_lengths

    pools = model.cfg.spec.pools
    return run_lengths(model.cfg, ids, model.levels(ids) if pools and levels is None else levels)


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
