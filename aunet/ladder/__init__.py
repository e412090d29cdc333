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
  (N = C / F, or C / F_γ) and the γ achieved is recorded. In the CPU regime the
  rungs are coarse (one trunk layer, x2-2.5 in cost from one to the next), so the
  nearest rung could train far less than the requested γ and give a bigger budget
  less data; there a plan takes the largest rung whose achieved γ is at least the one
  requested (C / γ_unit >= its cost).
* Sequence lengths: the paper's (8,192 bytes with a 512-byte window; 2,048 tokens,
  vocabulary 128,256) for budgets from ``families.CPU_REGIME_BELOW`` up; below it, CPU
  sizes (256 bytes with a 64-byte window; 64 tokens, vocabulary 1,024; why: see
  ``families.CPU_SEQ``), and main widths 32 and 48 below the paper's grid. The
  smallest AU-Net 2 (widths 16 and 32, one layer each) costs 1.2e5 FLOPs per byte,
  so γ = 1 starts at about 3e11 FLOPs; below that a CPU study lowers γ (the demo:
  0.2). ``check_steps`` refuses a trial of fewer than ``MIN_STEPS`` (200) optimizer
  steps, naming the budget that fixes it; the sweeper calls it on every study cell.

Hyperparameter laws: ``aunet.laws.PAPER_LAWS`` are the priors ("aunet" for the byte
families, "bpe" for ``transformer_bpe``; the paper fits no law for the byte-level
Transformer and Mamba, which get the byte law); any ``HyperLaws`` (e.g. one fitted by
``analysis``, ``--law fitted.json``) replaces them. ``resolve_laws`` is the one place a
law is chosen; BSZ is converted between bytes and tokens with k when the law's units
differ from the model's.

The package: ``families`` (the family table, the regime constants, the family rule),
``planner`` (``plan`` for a family, ``plan_model`` for a given model: the one function that
turns a budget into a batch size and a number of steps), ``presets`` (``conf/model/``)
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
    batch_sizes_in_box,
    check_steps,
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
    "batch_sizes_in_box",
    "check_steps",
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
