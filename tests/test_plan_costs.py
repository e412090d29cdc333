"""The dry run's arithmetic (``sweeps.plan``) on cells small enough to work out by hand: evaluation FLOPs,
trials per phase, a cell's steps, micro-batch and epochs, the data and vocabulary checks, and the SLURM limits."""

from __future__ import annotations

import math
import types

import pytest
from omegaconf import OmegaConf

from aunet.data import DataConfig
from aunet.memory import training_memory
from sweeps.plan import (
    OWN_DATA,
    CellCost,
    Evaluation,
    check_options,
    cost_of,
    data_checks,
    gigabytes,
    launcher_checks,
    trials_per_phase,
)
from sweeps.study import StudyConfig
from tests.helpers.plan_cells import MODEL, cell, cost


def test_evaluation_counts_forward_flops_over_whole_padded_sequences():
    c = cell(bytes_per_unit=2.0)
    # 1,000 held-out bytes are 500 tokens, padded to 4 sequences of 128 (512 units) per pass; 250 steps with a
    # pass every 100 are 2 passes during training and 1 at the end; 10 downstream rows of one sequence each.
    evaluation = Evaluation(1000, 100, 10, "")
    units = 3 * 512 + 10 * 128
    assert evaluation.flops(c, 250) == pytest.approx(units * 3e5 / 3)
    assert Evaluation(1000, 100, 10, "").flops(c, 201) == pytest.approx((3 * 512 + 1280) * 1e5)  # steps 100, 200, end
    assert Evaluation(1000, 100, 10, "").flops(c, 200) == pytest.approx((2 * 512 + 1280) * 1e5)
    assert Evaluation(1000, 0, 0, "").flops(c, 10_000) == pytest.approx(512 * 1e5)  # the final pass only


def test_trials_per_phase_follow_the_study():
    study = StudyConfig(trials=8, max_moves=2, move_trials=3, phases=["qmc", "adaptive"], adaptive_trials=5, seeds=3)
    assert trials_per_phase(study) == {"qmc": 8, "move": 6, "adaptive": 5, "seed": 2}
    assert trials_per_phase(StudyConfig(trials=4, max_moves=0, phases=["qmc"], seeds=1)) == {"qmc": 4, "move": 0}


def test_a_cells_cost_reads_its_steps_micro_batch_memory_and_epochs():
    study = StudyConfig(trials=8, max_moves=1, move_trials=2, phases=["qmc"], bsz_factor=4.0)
    evaluation = Evaluation(1280, 0, 0, "")
    c = cost_of(cell(), study, bf16=True, shards=1, max_micro_batch=8, evaluation=evaluation, rate=1e12, train_bytes=int(4e6))
    # the box is BSZ 1,024 to 16,384 bytes (8 and 128 sequences): 1e7 bytes take 9,766 and 610 steps
    assert c.steps == (round(1e7 / 1024), round(1e7 / 16384))
    assert c.trials == {"qmc": 8, "move": 2} and c.n_trials == 10
    assert c.flops_per_trial == 1e12 and c.eval_flops == pytest.approx(1280 * 1e5)
    assert c.trial_flops == c.flops_per_trial + c.eval_flops
    assert c.epochs == pytest.approx(1e7 / 4e6)
    assert c.memory == training_memory(MODEL, 8, bf16=True).total  # 128 sequences: micro-batches of 8
    # with 3 shards each takes 42 of the 128 sequences; the largest divisor of 42 up to 8 is 7
    sharded = cost_of(cell(), study, bf16=False, shards=3, max_micro_batch=8, evaluation=evaluation, rate=1e12, train_bytes=0)
    assert sharded.memory == training_memory(MODEL, 7, bf16=False, shards=3).total and sharded.epochs == math.inf


def test_a_trial_takes_its_flops_at_the_rate_or_its_steps_at_the_timed_step():
    """Without a timed step a trial's seconds are its FLOPs (training and evaluation) at the rate; with one, its
    steps at the prior's batch at that pace, evaluation at the step's own FLOP/s."""
    study = StudyConfig(trials=8, max_moves=0, phases=["qmc"])
    evaluation = Evaluation(1280, 0, 0, "")
    at_rate = cost_of(cell(), study, bf16=True, shards=1, max_micro_batch=8, evaluation=evaluation, rate=2e9,
                      train_bytes=int(1e9))
    assert not at_rate.timed and at_rate.seconds == pytest.approx(at_rate.trial_flops / 2e9)
    timed = cost_of(cell(), study, bf16=True, shards=1, max_micro_batch=8, evaluation=evaluation, rate=2e9,
                    train_bytes=int(1e9), step_seconds=0.03)
    prior = cell().prior
    assert timed.timed and timed.seconds == pytest.approx(prior.steps * 0.03 * (1 + timed.eval_flops / 1e12))


def test_the_held_out_budget_runs_one_predicted_trial():
    study = StudyConfig(trials=8, max_moves=0, phases=["qmc"], budgets=[1e9, 1e10, 1e11, 1e12], holdout=1e12)
    c = cost_of(cell(), study, bf16=True, shards=1, max_micro_batch=8, evaluation=Evaluation(1, 0, 0, ""),
                rate=1e12, train_bytes=int(1e9))
    assert c.trials == {"qmc": 8, "move": 0, "predicted": 1}
    other = cost_of(cell(budget=1e11), study, bf16=True, shards=1, max_micro_batch=8,
                    evaluation=Evaluation(1, 0, 0, ""), rate=1e12, train_bytes=int(1e9))
    assert "predicted" not in other.trials


@pytest.mark.parametrize("args, said", [
    (("gpu", None, None, 1, 4.0), "--device 'gpu' is not one of"),
    (("h100", 1.01, None, 1, 4.0), "--mfu 1.01 must be in (0, 1]"),
    (("h100", -0.1, None, 1, 4.0), "--mfu -0.1 must be in (0, 1]"),
    (("h100", None, math.nan, 1, 4.0), "--peak-flops nan must be a positive, finite FLOP/s"),
    (("h100", None, -1.0, 1, 4.0), "--peak-flops -1 must be"),
    (("h100", None, None, 0, 4.0), "--devices-per-trial 0 must be at least 1"),
    (("h100", None, None, 1, 0.99), "--max-epochs 0.99 must be a finite number of passes, at least 1"),
    (("h100", None, None, 1, math.inf), "--max-epochs inf must be"),
])
def test_a_bad_option_is_one_line(args, said):
    with pytest.raises(ValueError) as err:
        check_options(*args)
    assert str(err.value).startswith(said)


def test_options_at_their_limits_are_accepted():
    check_options("cpu", 1.0, 1.0, 1, 1.0)
    check_options("a100", None, None, 8, 4.0)


def test_data_read_past_one_epoch_is_refused_when_the_trainer_will_not_repeat_it():
    costs = [cost(0.5, "small", train_units=2e6), cost(3.0, "big", train_units=12e6)]
    notes, refusals = data_checks(costs, DataConfig(), int(4e6), 4.0)
    assert notes == [] and len(refusals) == 1
    assert refusals[0] == ("data: 1 of 2 cells read more than 1 epoch(s) of the 4 MB training split: a trial reads "
                           "0.002 GB (small, 0 epochs) to 0.012 GB (big, 3 epochs); the trainer refuses a second pass "
                           "(data.epochs_allowed=false), so every such trial would stop at its start. Point the study "
                           f"at a corpus of at least 0.012 GB with {OWN_DATA}, or lower the budgets")


def test_repeated_data_is_allowed_up_to_the_limit_and_noted():
    allowed = DataConfig(epochs_allowed=True)
    notes, refusals = data_checks([cost(0.5), cost(3.0, "big")], allowed, int(4e6), 4.0)
    assert refusals == [] and notes == ["note: up to 3.00 epochs (big): repeated data, a change of regime from the "
                                        "single pass a scaling law assumes"]
    notes, refusals = data_checks([cost(4.0)], allowed, int(4e6), 4.0)  # at the limit: allowed
    assert refusals == [] and len(notes) == 1
    notes, refusals = data_checks([cost(4.5)], allowed, int(4e6), 4.0)
    assert "past --max-epochs 4, repeated data changes what the study measures" in refusals[0]
    assert data_checks([cost(1.0)], DataConfig(), int(4e6), 4.0) == ([], [])  # exactly one pass


def test_a_bpe_of_another_vocabulary_than_the_familys_is_noted_once_per_vocabulary():
    costs = [CellCost(cell(4096, family="transformer_bpe", budget=b, bytes_per_unit=3.14159), (1, 1), {"qmc": 1}, 1.0,
                      0.0, 1.0, 0.5, 1.0) for b in (1e14, 3e14)]
    notes, _ = data_checks(costs, DataConfig(), int(1e9), 4.0)
    assert notes == ["note: transformer_bpe reads a 4,096-entry BPE (3.14 bytes per token on the held-out split) where "
                     "the family uses 1,024 entries at 1e+14-3e+14 FLOPs: its tokens are another unit than the ladder's; "
                     "data.bpe_vocab=1024 trains that vocabulary"]
    same = [CellCost(cell(1024, family="transformer_bpe", budget=1e14), (1, 1), {"qmc": 1}, 1.0, 0.0, 1.0, 0.5, 1.0)]
    assert data_checks(same, DataConfig(), int(1e9), 4.0) == ([], [])
    assert data_checks([cost(0.5)], DataConfig(), int(1e9), 4.0) == ([], [])  # bytes: no vocabulary to compare


def test_gigabytes_are_the_bytes_one_trial_reads():
    assert gigabytes(cost(1.0, train_units=2.5e9, bytes_per_unit=2.0)) == "5 GB"


def slurm(**fields) -> object:
    return OmegaConf.create({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                             **fields})


def test_a_trial_longer_than_its_time_limit_needs_requeues_and_is_refused_without_them():
    costs = [cost(0.5), CellCost(cell(), (1, 1), {"qmc": 3}, 5.4e12, 0.6e12, 1.0, 0.5, 6000.0)]  # 100 min
    lines, refusals = launcher_checks(slurm(timeout_min=30, max_num_timeout=2, array_parallelism=4), costs)
    assert lines[0] == ("SLURM: the longest trial takes 100 min (estimate: training and evaluation), over "
                        "timeout_min=30: it needs 3 requeue(s) from its checkpoint; max_num_timeout=2: NOT covered")
    assert refusals == ["time: the longest trial (an estimated 100 min) needs 3 requeue(s) past timeout_min=30, and "
                        "max_num_timeout=2; set hydra.launcher.max_num_timeout=3 or raise hydra.launcher.timeout_min"]
    assert lines[1] == "SLURM: the first round is an array of 11 jobs; array_parallelism=4 runs 4 at once"
    lines, refusals = launcher_checks(slurm(timeout_min=30, max_num_timeout=3), costs)
    assert refusals == [] and lines[0].endswith("max_num_timeout=3: covered")
    assert lines[1].endswith("array_parallelism=None runs 11 at once")
    lines, refusals = launcher_checks(slurm(timeout_min=100), costs)  # exactly the limit
    assert refusals == [] and lines[0].endswith(", within timeout_min=100")
    lines, _ = launcher_checks(slurm(), costs)
    assert lines[0].endswith(", within timeout_min=None")


def test_a_launcher_without_slurm_has_no_limits_to_check():
    local = OmegaConf.create({"_target_": "hydra_plugins.x.LocalLauncher"})
    assert launcher_checks(local, [cost(0.5)]) == (["launcher: LocalLauncher (no SLURM limits to check)"], [])
    assert launcher_checks(OmegaConf.create({}), [cost(0.5)])[0] == [
        "launcher: in-process (no SLURM limits to check)"]


def test_the_cpus_flop_rate_is_matmuls_done_over_the_time_they_took(monkeypatch):
    from sweeps import plan

    ticks = iter(0.1 * i for i in range(100))  # a clock that moves 0.1 s each time it is read
    monkeypatch.setattr(plan, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    # read at 0 (start), 0.1 and 0.2 (two products within 0.3 s), 0.3 (stop), 0.4 (the time taken)
    assert plan.measured_cpu_flops() == pytest.approx(2 * (2 * 512**3) / 0.4)
