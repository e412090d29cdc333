"""The dry run's printed numbers and lines, exactly: the CPU's measured rate on a fake clock, a cell's
micro-batch and evaluation passes, the bad-input lines of ``compose`` and ``evaluation_of``, the data
checks' wording at a rounding edge, the cell table's columns, and ``plan_study``'s totals, device line,
memory verdict and data line, each worked out here from the formulas ``sweeps.plan`` documents."""

from __future__ import annotations

import math
import os
import types
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from aunet.data import DataConfig, prepare_data
from aunet.memory import training_memory
from sweeps import plan
from sweeps.plan import (
    CellCost,
    Evaluation,
    cell_table,
    compose,
    cost_of,
    data_checks,
    evaluation_of,
    gigabytes,
    plan_study,
    trials_per_phase,
)
from sweeps.study import StudyConfig
from tests.helpers.data import make_docs, write_jsonl
from tests.helpers.plan_cells import MODEL, cell, cost

REPO = Path(__file__).resolve().parents[1]
#: One byte cell of the ladder on the default corpus: a plan in a quarter of a second.
ONE_CELL = ["sweep.families=[aunet2]", "sweep.budgets=[3e13]"]
#: The same cell with phase 1 only: every trial the plan counts runs in phase 1.
PHASE_ONE = [*ONE_CELL, "sweep.phases=[qmc]", "sweep.max_moves=0", "sweep.seeds=1"]
HELD_OUT_PER_PASS = 65536  # conf/sweep.yaml's eval_bytes (the default corpus holds out more than this)


def sequences(units: float, seq_len: int) -> int:
    """A batch of ``units`` in whole sequences, at least one (how the study's box is rounded)."""
    return max(1, round(units / seq_len)) * seq_len


def micro_batch(sequences_per_device: int, cap: int) -> int:
    """The trainer's micro-batch: the largest divisor of a device's sequences that is at most ``cap``."""
    return max(m for m in range(1, cap + 1) if sequences_per_device % m == 0)


def line_starting(text: str, prefix: str) -> str:
    return next(row for row in text.splitlines() if row.startswith(prefix))


def training_bytes() -> int:
    return prepare_data(DataConfig(units="bytes", seq_len=1)).info.train_bytes


# ----------------------------------------------------------------------------- the CPU's measured rate

class Clock:
    """``time.perf_counter`` that moves ``step`` seconds each time it is read, from ``start``."""

    def __init__(self, start: float, step: float):
        self.now, self.step = start - step, step

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now


def test_the_cpu_rate_is_products_done_within_the_time_given_over_the_time_they_took(monkeypatch):
    shapes = []
    randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *size: shapes.append(size) or randn(*size))
    monkeypatch.setattr(plan, "time", Clock(100.0, 0.25))
    # reads: 100 (start), 100.25 (0.25 s < 0.5: one product), 100.5 (0.5 s: stop), 100.75 (0.75 s taken)
    assert plan.measured_cpu_flops(seconds=0.5) == 2 * 512**3 / 0.75
    assert shapes == [(512, 512), (512, 512)]  # the square products 2·512³ FLOPs counts
    monkeypatch.setattr(plan, "time", Clock(1000.0, 0.25))
    assert plan.measured_cpu_flops(seconds=1.0) == 3 * 2 * 512**3 / 1.25  # reads at 0.25, 0.5, 0.75; stop at 1


def test_the_cpu_rate_on_the_real_clock_is_a_positive_finite_flop_rate():
    rate = plan.measured_cpu_flops(seconds=0.01)
    assert math.isfinite(rate) and rate > 0


# ----------------------------------------------------------------------------- trials and a cell's cost

def test_two_seeds_rerun_the_best_configuration_once():
    assert trials_per_phase(StudyConfig(trials=4, max_moves=0, phases=["qmc"], seeds=2)) == {
        "qmc": 4, "move": 0, "seed": 1}


def test_a_largest_batch_of_one_sequence_trains_in_micro_batches_of_one():
    study = StudyConfig(bsz_factor=2.0)  # BSZ 32 to 128 bytes: one sequence of 128 at both ends
    evaluation = Evaluation(128, 0, 0, "")
    for shards in (1, 2):  # two shards of one sequence: still at least one per device
        c = cost_of(cell(law_bsz=64.0), study, bf16=True, shards=shards, max_micro_batch=8, evaluation=evaluation,
                    rate=1e12, train_bytes=int(1e9))
        assert c.steps == (round(1e7 / 128), round(1e7 / 128))
        assert c.memory == training_memory(MODEL, 1, bf16=True, shards=shards).total
        assert c.memory != training_memory(MODEL, 2, bf16=True, shards=shards).total


@pytest.mark.parametrize("cap, micro", [(2, 2), (5, 4), (8, 6), (12, 12), (20, 12)])
def test_the_micro_batch_divides_a_devices_sequences_and_never_exceeds_max_micro_batch(cap, micro):
    study = StudyConfig(bsz_factor=2.0)  # BSZ 384 to 1,536 bytes: 3 to 12 sequences of 128
    c = cost_of(cell(law_bsz=768.0), study, bf16=True, shards=1, max_micro_batch=cap,
                evaluation=Evaluation(128, 0, 0, ""), rate=1e12, train_bytes=int(1e9))
    assert micro == micro_batch(12, cap)
    assert c.memory == training_memory(MODEL, micro, bf16=True).total


def test_evaluation_passes_are_counted_over_the_steps_of_the_boxs_smallest_batch():
    study = StudyConfig(bsz_factor=2.0)  # BSZ 384 to 1,536 bytes: 1e7 bytes take 26,042 or 6,510 steps
    c = cost_of(cell(law_bsz=768.0), study, bf16=True, shards=1, max_micro_batch=8,
                evaluation=Evaluation(1280, 100, 10, ""), rate=1e12, train_bytes=int(1e9))
    assert c.steps == (26042, 6510)
    # 1 + 26,041 // 100 = 261 passes of 1,280 bytes (10 sequences), then 10 downstream rows of one sequence
    assert c.eval_flops == pytest.approx((261 * 1280 + 10 * 128) * 3e5 / 3)


# ----------------------------------------------------------------------------- compose's one-line errors

def test_composing_a_study_uses_this_hydras_defaults_without_a_compatibility_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = compose(["sweep=demo"])
    assert config.sweep.name == "demo"
    assert not [w for w in caught if "version_base" in str(w.message)]


def test_an_unknown_option_of_a_nested_group_names_the_whole_group():
    with pytest.raises(ValueError) as err:
        compose(["hydra/launcher=nonexistent"])
    said = str(err.value)
    assert said.startswith("unknown hydra/launcher 'nonexistent' (hydra/launcher=nonexistent); the options are "
                           "conf/hydra/launcher/*.yaml: ")
    assert "submitit_slurm" in said.rsplit(": ", 1)[1].split(", ")


def test_an_unknown_option_of_another_group_than_the_study_is_called_an_option():
    with pytest.raises(ValueError) as err:
        compose(["data=nonexistent"])
    options = ", ".join(sorted(p.stem for p in (REPO / "conf" / "data").glob("*.yaml")))
    assert str(err.value) == (f"unknown data 'nonexistent' (data=nonexistent); the options are conf/data/*.yaml: "
                              f"{options}")


def test_a_missing_config_outside_any_group_is_hydras_first_line(monkeypatch, tmp_path):
    (tmp_path / "conf").mkdir()
    monkeypatch.setattr(plan, "REPO", tmp_path)  # a checkout without conf/sweep.yaml
    with pytest.raises(ValueError) as err:
        compose([])
    assert str(err.value) == "Cannot find primary config 'sweep'. Check that it's in your config search path."


# ----------------------------------------------------------------------------- what each trial evaluates

def eval_config(eval_bytes, eval_every, enabled: bool, tasks: list[str], limit=None):
    return OmegaConf.create({"eval_bytes": eval_bytes, "eval_every": eval_every,
                             "eval": {"enabled": enabled, "tasks": tasks, "limit": limit}})


def test_each_trial_evaluates_its_held_out_bytes_and_rows_per_downstream_item():
    # HellaSwag: 1,000 pinned items of 4 options, counted at the bound of 5; CUTE spelling is generated
    # (500 items) and generative: one row each.
    evaluation = evaluation_of(eval_config(0, None, True, ["hellaswag", "cute_spell"]), 280_500)
    assert evaluation == Evaluation(280_500, 0, 1000 * 5 + 500, "downstream (hellaswag 1,000, cute_spell 500 items; "
                                    "at most 5 options each, rows of at most one sequence)")
    limited = evaluation_of(eval_config(65536, 500, True, ["hellaswag", "cute_spell"], limit=40), 280_500)
    assert limited == Evaluation(65536, 500, 40 * 5 + 40, "downstream (hellaswag 40, cute_spell 40 items; at most "
                                 "5 options each, rows of at most one sequence)")
    assert evaluation_of(eval_config(10**9, 0, False, ["hellaswag"]), 1000) == Evaluation(
        1000, 0, 0, "no downstream tasks (eval.enabled=false)")


# ----------------------------------------------------------------------------- the data checks

def test_the_refusal_rounds_the_training_split_to_three_figures_of_megabytes():
    _, refusals = data_checks([cost(1.5)], DataConfig(), 12_350_001, 4.0)  # 12.350001 MB
    assert "more than 1 epoch(s) of the 12.4 MB training split" in refusals[0]


def test_between_one_and_two_epochs_of_allowed_repetition_is_noted():
    notes, refusals = data_checks([cost(1.5, "c")], DataConfig(epochs_allowed=True), int(4e6), 4.0)
    assert refusals == [] and notes == ["note: up to 1.50 epochs (c): repeated data, a change of regime from the "
                                        "single pass a scaling law assumes"]


def test_a_vocabulary_note_quotes_the_first_cells_bytes_per_token():
    costs = [CellCost(cell(4096, family="transformer_bpe", budget=b, bytes_per_unit=bpu), (1, 1), {"qmc": 1}, 1.0,
                      0.0, 1.0, 0.5, 1.0) for b, bpu in ((1e14, 3.14159), (3e14, 2.5))]
    notes, _ = data_checks(costs, DataConfig(), int(1e9), 4.0)
    assert notes[0].startswith("note: transformer_bpe reads a 4,096-entry BPE (3.14 bytes per token")
    single, _ = data_checks(costs[1:], DataConfig(), int(1e9), 4.0)
    assert single[0].startswith("note: transformer_bpe reads a 4,096-entry BPE (2.50 bytes per token")


def test_gigabytes_are_rounded_to_three_figures():
    assert gigabytes(cost(1.0, train_units=12_350_000_001)) == "12.4 GB"  # 12.350000001 GB


# ----------------------------------------------------------------------------- the cell table

HEADER = " ".join(["family".ljust(16), "budget".rjust(8), "model".ljust(28), "params".rjust(10),
                   "data/trial".rjust(12), "epochs".rjust(8), "vocab".rjust(7), "B/unit".rjust(6),
                   "steps lo-hi BSZ".rjust(17), "train FLOPs".rjust(11), "eval FLOPs".rjust(10),
                   "trials (phase: at most)".ljust(34), "mem/dev est.".rjust(12)])


def test_the_cell_table_prints_its_columns_and_each_cells_figures():
    model = types.SimpleNamespace(vocab_size=259)
    byte_cell = CellCost(cell(family="aunet2", budget=3e13, name="aunet2_C3e13_r0.2", params=1_039_680,
                              train_units=16_400_000, units="bytes", model=model),
                         (21364, 2787), {"qmc": 8, "move": 4, "adaptive": 0, "seed": 2}, 3e13, 3.99e10,
                         12_345_000_001, 1.81, 1.0)
    token_cell = CellCost(cell(family="transformer_bpe", budget=1e11, name="transformer_bpe_C1e11_r0.2_long_name",
                               params=126_096, train_units=209_000, units="tokens", bytes_per_unit=2.604,
                               model=types.SimpleNamespace(vocab_size=1024)),
                          (3260, 272), {"qmc": 8}, 1e11, 4.04e9, 5e6, 0.0596, 1.0)
    header, byte_row, token_row = cell_table([byte_cell, token_cell])
    assert header == HEADER
    assert byte_row == " ".join(["aunet2".ljust(16), "3e+13".rjust(8), "aunet2_C3e13_r0.2".ljust(28),
                                 "1,039,680".rjust(10), "1.64e+07 byt", "1.81".rjust(8), "259".rjust(7), "  1.00",
                                 "  21,364-2,787   ", "3e+13".rjust(11), "3.99e+10".rjust(10),
                                 "qmc 8, move 4, seed 2".ljust(34), "     12.35GB"])  # 12.345000001 GB
    assert token_row == " ".join(["transformer_bpe".ljust(16), "1e+11".rjust(8), "transformer_bpe_C1e11_r0.2_l",
                                  "126,096".rjust(10), "2.09e+05 tok", "0.0596".rjust(8), "1,024".rjust(7), "  2.60",
                                  "   3,260-272     ", "1e+11".rjust(11), "4.04e+09".rjust(10), "qmc 8".ljust(34),
                                  "      0.01GB"])


# ----------------------------------------------------------------------------- plan_study's lines

def cell_eval_flops(p, every: int, smallest_batch_steps: int) -> float:
    """A trial's held-out passes over whole padded sequences, forward only (a third of F), no downstream task."""
    passes = 1 + ((smallest_batch_steps - 1) // every if every else 0)
    return passes * math.ceil(HELD_OUT_PER_PASS / p.bytes_per_unit / p.seq_len) * p.seq_len * p.flops_per_unit / 3


def totals(result, study: StudyConfig, every: int = 0) -> tuple[float, float, float]:
    """(training, evaluation, phase 1) FLOPs of a plan, from each cell's plan and the study's phases."""
    per_cell = study.trials + study.max_moves * study.move_trials + (
        study.adaptive_trials if "adaptive" in study.phases else 0) + study.seeds - 1
    train = evaluated = first = 0.0
    for c in result.costs:
        p = c.cell.prior
        lo = sequences(p.law_bsz / study.bsz_factor, p.seq_len)
        flops = cell_eval_flops(p, every, round(p.budget / p.budget_per_unit / lo))
        train += p.total_flops * per_cell
        evaluated += flops * per_cell
        first += study.trials * (p.total_flops + flops)
    return train, evaluated, first


def study_of(overrides: list[str]) -> StudyConfig:
    return OmegaConf.to_object(compose(overrides).sweep)


def test_the_totals_count_every_phases_training_and_evaluation_and_phase_one_apart():
    args = [*ONE_CELL, "eval_every=500"]
    result = plan_study(args, "h100", 0.5, 1e15, 2)
    train, evaluated, first = totals(result, study_of(args), every=500)
    assert first < train  # moves and adaptive trials: phase 1 is a part
    lines = result.text.splitlines()
    at = next(i for i, row in enumerate(lines) if row.startswith("FLOPs (estimate"))
    assert lines[at - 1] == ""  # the totals stand apart from the table
    assert lines[at] == (f"FLOPs (estimate, every phase in full): {train + evaluated:.3g} = {train:.3g} training + "
                         f"{evaluated:.3g} evaluation (forward passes, padding included); phase 1, which always runs: "
                         f"{first:.3g}")
    # two devices per trial at 1e15 x 0.5 each: 1e15 FLOP/s per trial; device-hours count every device
    assert lines[at + 1] == "device h100: peak 1e+15 FLOP/s (given) x MFU 0.5 (assumed) x 2 per trial = 1e+15 FLOP/s per trial"
    assert lines[at + 2] == (f"device-hours (estimate, every phase in full): {(train + evaluated) / 5e14 / 3600:.3g} "
                             f"({first / 5e14 / 3600:.3g} in phase 1)")
    assert ", AdamW state over 2 FSDP shards, activations, logits)" in lines[at + 3]


def test_device_hours_are_rounded_to_three_figures_of_hours():
    args = PHASE_ONE
    train, evaluated, first = totals(plan_study(args, "h100", None, None, 1), study_of(args))
    assert first == pytest.approx(train + evaluated)  # phase 1 is the whole study
    peak = (train + evaluated) / (0.4 * 3600 * 1.2351)  # 1.2351 device-hours: 1.24 to three figures
    text = plan_study(args, "h100", None, peak, 1).text
    assert "device-hours (estimate, every phase in full): 1.24 (1.24 in phase 1)" in text.splitlines()


def test_the_peak_is_the_data_sheets_unless_given():
    text = plan_study(ONE_CELL, "h100", None, None, 1).text
    assert line_starting(text, "device h100: ") == ("device h100: peak 9.89e+14 FLOP/s (bf16, data sheet) x MFU 0.4 "
                                                    "(assumed) x 1 per trial = 3.96e+14 FLOP/s per trial")
    assert "AdamW state, activations, logits)" in line_starting(text, "peak memory per device")  # no shards


def test_a_cpu_plan_prices_at_the_measured_rate_in_fp32_against_the_machines_memory(monkeypatch):
    monkeypatch.setattr(plan, "measured_cpu_flops", lambda: 2.5e11)
    result = plan_study(ONE_CELL, "cpu", None, None, 1)
    assert line_starting(result.text, "device cpu: ") == ("device cpu: peak 2.5e+11 FLOP/s (fp32 matmul, measured "
                                                          "here) x MFU 0.5 (assumed) x 1 per trial = 1.25e+11 FLOP/s "
                                                          "per trial")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    memory = line_starting(result.text, "peak memory per device")
    assert f" GB of {ram / 1e9:.3g} GB: fits " in memory
    p = result.costs[0].cell.prior
    study = study_of(ONE_CELL)
    micro = micro_batch(sequences(p.law_bsz * study.bsz_factor, p.seq_len) // p.seq_len, 8)  # max_micro_batch: 8
    assert result.costs[0].memory == training_memory(p.model, micro, bf16=False, contraction=p.contraction or None,
                                                     shards=1).total
    given = plan_study(ONE_CELL, "cpu", None, 3e11, 1).text
    assert "device cpu: peak 3e+11 FLOP/s (given) x MFU 0.5" in given


def fixed_memory(total: float):
    return lambda *args, **kwargs: types.SimpleNamespace(total=total)


def test_a_trial_that_needs_exactly_the_devices_memory_fits(monkeypatch):
    monkeypatch.setattr(plan, "training_memory", fixed_memory(80e9))  # an H100's 80 GB exactly
    result = plan_study(ONE_CELL, "h100", None, None, 1)
    assert ": 80 GB of 80 GB: fits (" in line_starting(result.text, "peak memory per device")
    assert not [r for r in result.refusals if r.startswith("memory")]


def test_a_trial_over_the_devices_memory_is_refused_with_both_sizes_in_gigabytes(monkeypatch):
    monkeypatch.setattr(plan, "training_memory", fixed_memory(12_350_000_001.0))  # 12.350000001 GB
    monkeypatch.setitem(plan.DEVICES, "h100", (989e12, 1_235_000_001.0, 0.4))  # 1.235000001 GB
    result = plan_study(ONE_CELL, "h100", None, None, 1)
    name = result.costs[0].cell.prior.name
    assert line_starting(result.text, "peak memory per device") == (
        f"peak memory per device (estimate), largest trial ({name}): 12.4 GB of 1.24 GB: DOES NOT FIT "
        f"(aunet.memory: weights, gradients, AdamW state, activations, logits)")
    assert (f"memory: {name}'s trials need an estimated 12.4 GB per device, over the 1.24 GB of a h100; spread "
            f"them with --devices-per-trial (FSDP) or lower max_micro_batch") in result.refusals


def test_the_data_line_names_the_corpus_its_size_and_what_each_trial_evaluates(tmp_path):
    text = plan_study(ONE_CELL, "a100", None, None, 1).text
    assert text.splitlines()[1] == (f"data: the default corpus (data=default), {training_bytes():,} training bytes, "
                                    f"data.epochs_allowed=false; per trial: 65,536 held-out bytes evaluated at the "
                                    f"end, no downstream tasks (eval.enabled=false)")
    text = plan_study([*ONE_CELL, "eval_every=500", "data.epochs_allowed=true"], "a100", None, None, 1).text
    assert text.splitlines()[1].endswith("data.epochs_allowed=true; per trial: 65,536 held-out bytes evaluated every "
                                         "500 steps and at the end, no downstream tasks (eval.enabled=false)")
    corpus = write_jsonl(tmp_path / "own.jsonl", make_docs(300))
    own = plan_study(["sweep.families=[aunet2]", "sweep.budgets=[1e11]", "data=files", f"data.sources=[{corpus}]",
                      "data.valid_bytes=8192"], "a100", None, None, 1).text
    assert own.splitlines()[1].startswith(f"data: data.sources=['{corpus}'], ")


# ----------------------------------------------------------------------------- the command line

def test_the_help_names_the_command_its_purpose_and_every_option(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "500")  # one line per option
    with pytest.raises(SystemExit) as exit_:
        plan.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    said = " ".join(out.split())
    assert out.startswith("usage: python -m sweeps plan ")
    assert ("``python -m sweeps plan [options] [overrides]``: what a study will cost, before anything is submitted. "
            "positional arguments:") in said
    assert "The overrides are those" not in said  # the first paragraph only
    for help_ in ["overrides the overrides of python sweep.py -m, e.g. sweep=reference",
                  "--device DEVICE one of ['a100', 'cpu', 'h100', 'h200'] (default h100)",
                  "--mfu MFU model FLOP utilisation assumed (default 0.4 on GPUs, 0.5 on cpu)",
                  "--peak-flops PEAK_FLOPS the device's peak FLOP/s (default: its data sheet's)",
                  "--max-epochs MAX_EPOCHS passes over the training split a cell may read with "
                  "data.epochs_allowed=true (default 4)"]:
        assert help_ in said


def test_a_plan_that_can_run_exits_zero_and_one_that_cannot_names_each_reason(capsys):
    assert plan.main([*PHASE_ONE, "data.epochs_allowed=true", "--device", "a100"]) is None
    out = capsys.readouterr().out
    assert out.startswith("study 'demo': 1 cells, ") and "cannot run" not in out
    with pytest.raises(SystemExit) as exit_:
        plan.main([*PHASE_ONE, "--device", "a100"])  # 1.8 epochs of the default corpus, not allowed
    assert capsys.readouterr().out.startswith("study 'demo': 1 cells, ")
    assert exit_.value.code.startswith("cannot run: data: 1 of 1 cells read more than 1 epoch(s) of the ")
    assert "\n" not in exit_.value.code
    with pytest.raises(SystemExit) as exit_:
        plan.main([*PHASE_ONE, "--mfu", "1.5"])
    assert exit_.value.code == "error: --mfu 1.5 must be in (0, 1]: the fraction of the peak a run reaches"
