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

``budget`` is the compute spent, head included (``convention="spent"``, the default,
as in DESIGN.md), or the paper's C (``convention="paper"``): ``aunet.record.BUDGET_CONVENTIONS``;
``budget_convention`` of ``aunet.train.TrainConfig`` and of a sweep's study config.

Why these conventions: they are the ones that reproduce the paper's Tables 9-11 (steps, batch,
LR and Total FLOPs of every scaling row); ``tests/test_ladder.py`` checks that row by row, and
``benchmarks/README.md`` keeps the evidence with the figures. So with the default convention,
"the budget of a row" is its Total FLOPs; with ``convention="paper"`` it is N · F_γ (about the
row's label). The paper's laws are always evaluated at N · F_γ, the compute they were fitted
against; a law fitted by ``analysis`` on our run records is evaluated at the budget, which those
records carry (``law_at`` overrides this).

The family rule (App. H's scaling rows, extended down to CPU sizes)
------------------------------------------------------------------
* Main width d (the Transformer's / Mamba's width, AU-Net's stage-2 width) grows as
  d = 0.727 · F_eq^0.35, fitted to the 12 baseline rows, with
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
  (N = C / F, or C / F_γ) and the γ achieved is recorded. In the CPU regime the
  rungs are coarse (one trunk layer each), so the nearest rung could train far less
  than the requested γ and give a bigger budget less data; there a plan takes the
  largest rung whose achieved γ is at least the one requested (C / γ_unit >= its cost).
* Sequence lengths: the paper's (8,192 bytes with a 512-byte window; 2,048 tokens,
  vocabulary 128,256) for budgets from ``families.CPU_REGIME_BELOW`` up; below it, CPU
  sizes (256 bytes with a 64-byte window; 64 tokens, vocabulary 1,024; why: see
  ``families.CPU_SEQ``), and main widths 32 and 48 below the paper's grid. Even the
  smallest AU-Net 2 cannot take γ = 1 at the smallest CPU budgets, so a CPU study there
  lowers γ (the demo does; ``benchmarks/README.md`` has the figures). ``check_steps``
  refuses a trial of fewer than ``MIN_STEPS`` optimizer steps, naming the budget that
  fixes it; the sweeper calls it on every study cell.

Hyperparameter laws: ``aunet.laws.PAPER_LAWS`` are the priors ("aunet" for the byte
families, "bpe" for ``transformer_bpe``; the paper fits no law for the byte-level
Transformer and Mamba, which get the byte law); any ``HyperLaws`` (e.g. one fitted by
``analysis``, ``--law fitted.json``) replaces them. ``resolve_laws`` is the one place a
law is chosen; BSZ is converted between bytes and tokens with k when the law's units
differ from the model's.

The package: ``families`` (the family table, the regime constants, the family rule),
``planner`` (``plan`` for a family, ``plan_model`` for a given model: the one function that
turns a budget into a batch size and a number of steps; ``data_contraction``, a family's contraction
measured on the default corpus), ``presets`` (``conf/model/``)
and ``cli`` (``python -m aunet.ladder``).
"""

from aunet.ladder.cli import main
from aunet.ladder.families import (
    CPU_BPE_VOCAB,
    CPU_REGIME_BELOW,
    CPU_SEQ,
    CPU_WINDOW,
    DEFAULT_RATIO,
    FAMILIES,
    LLAMA3_BYTES_PER_TOKEN,
    MIN_STEPS,
    Family,
    family_config,
    family_of,
    ffn_dim_for,
    get_family,
    head_dim_for,
    rule_flops,
    width_grid,
)
from aunet.ladder.planner import (
    DataMeasurements,
    RunPlan,
    check_steps,
    data_contraction,
    hydra_value,
    plan,
    plan_model,
    positive_number,
    resolve_laws,
    steps_at,
    whole_sequences,
)
from aunet.ladder.presets import PRESET_DIR, list_presets, load_preset

__all__ = [
    "CPU_BPE_VOCAB",
    "CPU_REGIME_BELOW",
    "CPU_SEQ",
    "CPU_WINDOW",
    "DEFAULT_RATIO",
    "FAMILIES",
    "LLAMA3_BYTES_PER_TOKEN",
    "MIN_STEPS",
    "PRESET_DIR",
    "DataMeasurements",
    "Family",
    "RunPlan",
    "check_steps",
    "data_contraction",
    "family_config",
    "family_of",
    "ffn_dim_for",
    "get_family",
    "head_dim_for",
    "hydra_value",
    "list_presets",
    "load_preset",
    "main",
    "plan",
    "plan_model",
    "positive_number",
    "resolve_laws",
    "rule_flops",
    "steps_at",
    "whole_sequences",
    "width_grid",
]
