"""The dry run's CPU step timing: real steps of the planned model, skipped where a step is too large."""

import torch

from aunet.ladder.planner import plan
from sweeps.step_timing import MAX_TIMED_STEP_FLOPS, sample_ids, seconds_per_step, torch_threads

TEXT = b"To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"


def test_byte_rows_are_the_text_and_token_rows_stay_in_the_vocabulary():
    byte_plan = plan("aunet2", 1e11, 0.2, laws="conf/laws/cpu_aunet.json")
    ids = sample_ids(byte_plan, TEXT, rows=3)
    assert ids.shape == (3, byte_plan.seq_len + 1)
    assert bytes(ids.flatten()[: len(TEXT)].tolist()) == TEXT  # AU-Net pools as on the data
    token_plan = plan("transformer_bpe", 1e11, 0.2, laws="conf/laws/cpu_bpe.json")
    tokens = sample_ids(token_plan, TEXT, rows=2)
    assert tokens.shape == (2, token_plan.seq_len + 1)
    assert 0 <= int(tokens.min()) and int(tokens.max()) < token_plan.model.vocab_size


def test_a_small_step_is_timed_and_a_large_one_is_left_to_the_flop_estimate():
    small = plan("aunet2", 1e11, 0.2, laws="conf/laws/cpu_aunet.json")
    seconds = seconds_per_step(small, TEXT, threads=1, repeats=1)
    assert seconds is not None and 0 < seconds < 60
    large = plan("transformer_bpe", 1e21, 10)
    assert large.total_flops / large.steps > MAX_TIMED_STEP_FLOPS
    assert seconds_per_step(large, TEXT, threads=1) is None  # returns at once: no 1e16-FLOP step on a CPU


def test_threads_are_restored_after_timing():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
