"""The dry run's memory estimate (``aunet.memory.training_memory``): each term of its docstring's formula,
worked by hand for small models, so that a wrong factor, stage or precision shows as a wrong number."""

from __future__ import annotations

import pytest

from aunet.config import ModelConfig
from aunet.flops import count_params
from aunet.memory import ACTIVATION_BYTES_PER_TOKEN_WIDTH, MemoryEstimate, training_memory

#: Two stages: 64 wide (1 layer each side) and 128 wide (2 layers, the final stage runs once).
AUNET = ModelConfig(arch="aunet", name="a", dims=[64, 128], layers=[1, 2], head_dims=[32, 32], ffn_dims=[192, 384],
                    seq_len=256, window=64)
#: A plain transformer over BPE tokens: one stage, 3 layers of width 96, vocabulary 1,000.
DENSE = ModelConfig(arch="transformer", name="t", units="bpe", vocab_size=1000, dims=[96], layers=[3],
                    head_dims=[32], ffn_dims=[256], seq_len=128, window=None)


def test_a_transformer_in_fp32_holds_weights_gradients_moments_activations_and_logits():
    params = count_params(DENSE)
    memory = training_memory(DENSE, 4, bf16=False)
    tokens = 4 * 128
    assert memory.parameters == params * 4 * 2  # fp32 weights and their gradients
    assert memory.optimizer == params * 8  # AdamW's two fp32 moments, no master copy
    assert memory.activations == 34 * tokens * 96 * 3 * 4 / 2  # 34 two-byte units per token, width and layer
    assert memory.logits == tokens * 1000 * 4 * 2  # fp32 logits and their gradient
    assert memory.total == memory.parameters + memory.optimizer + memory.activations + memory.logits


def test_bf16_halves_weights_and_activations_and_adds_an_fp32_master_copy():
    params = count_params(DENSE)
    fp32, bf16 = training_memory(DENSE, 4, bf16=False), training_memory(DENSE, 4, bf16=True)
    assert bf16.parameters == params * 2 * 2 and bf16.parameters == fp32.parameters / 2
    assert bf16.optimizer == params * 12  # two moments and the master weights, all fp32
    assert bf16.activations == fp32.activations / 2 and bf16.logits == fp32.logits


def test_fsdp_shards_spread_the_state_but_not_the_activations():
    one, four = training_memory(DENSE, 2, bf16=True), training_memory(DENSE, 2, bf16=True, shards=4)
    assert four.parameters == one.parameters / 4 and four.optimizer == one.optimizer / 4
    assert four.activations == one.activations and four.logits == one.logits


def test_an_aunet_stage_runs_its_layers_on_its_contracted_sequence_and_non_final_stages_twice():
    memory = training_memory(AUNET, 2, bf16=True, contraction=[1.0, 4.0])
    tokens = 2 * 256
    # stage 1: all tokens, 64 wide, 1 layer on each side; stage 2 (final): a quarter of them, 128 wide, 2 layers
    width_tokens = tokens * 64 * 1 * 2 + tokens / 4 * 128 * 2 * 1
    assert memory.activations == ACTIVATION_BYTES_PER_TOKEN_WIDTH * width_tokens * 2 / 2
    assert memory.logits == tokens * AUNET.vocab_size * 8
    coarser = training_memory(AUNET, 2, bf16=True, contraction=[1.0, 8.0])
    assert coarser.activations < memory.activations  # fewer pooled vectors, less kept for the backward pass


def test_the_estimate_grows_in_proportion_with_the_micro_batch_where_it_should():
    one, eight = training_memory(DENSE, 1, bf16=True), training_memory(DENSE, 8, bf16=True)
    assert eight.activations == 8 * one.activations and eight.logits == 8 * one.logits
    assert eight.parameters == one.parameters and eight.optimizer == one.optimizer


@pytest.mark.parametrize("micro_batch, shards", [(0, 1), (1, 0), (-2, 1)])
def test_a_micro_batch_or_shard_count_below_one_is_refused(micro_batch, shards):
    with pytest.raises(ValueError, match=rf"micro_batch \({micro_batch}\) and shards \({shards}\) must be at least 1"):
        training_memory(DENSE, micro_batch, bf16=True, shards=shards)


def test_the_total_is_the_sum_of_its_parts():
    assert MemoryEstimate(1.0, 20.0, 300.0, 4000.0).total == 4321.0
