"""The dry run (``python -m sweeps plan``): what a study costs and whether it can run, before anything is
submitted; and the retry command a study prints, which must run from any directory."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from aunet.data import DataConfig, prepare_data
from sweeps.__main__ import main as sweeps_main
from sweeps.ledger import Ledger
from sweeps.plan import DEVICES, MAX_OPTIONS, OWN_DATA, Evaluation, compose, plan_study
from sweeps.report import retry_hint
from sweeps.study import StudyConfig, Trial

REPO = Path(__file__).resolve().parents[1]
#: The README's dry run of the paper study (on this machine's default corpus).
PAPER = ["sweep=paper", "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=600"]


def training_bytes() -> int:
    return prepare_data(DataConfig(units="bytes", seq_len=1)).info.train_bytes


def refusal(argv: list[str], capsys) -> tuple[str, str]:
    """(the plan printed, the reasons it exits with) of a dry run that must exit non-zero."""
    with pytest.raises(SystemExit) as exit_:
        sweeps_main(["plan", *argv])
    assert isinstance(exit_.value.code, str)  # a message: exit status 1
    return capsys.readouterr().out, exit_.value.code


@pytest.fixture(scope="module")
def paper():
    """The README's paper plan on an H100."""
    return plan_study(PAPER, "h100", None, None, 1)


def test_the_readme_paper_plan_exits_non_zero_on_the_default_corpus_naming_the_data_shortfall(capsys):
    out, exit_message = refusal([*PAPER, "--device", "h100"], capsys)
    reasons = exit_message.splitlines()
    assert all(line.startswith("cannot run: ") for line in reasons), reasons
    data = next(line for line in reasons if line.startswith("cannot run: data: "))
    assert "8 of 8 cells read more than 1 epoch(s)" in data and "data.epochs_allowed=false" in data
    assert "43.8 GB (aunet2_C1e19_r10, " in data and OWN_DATA in data
    assert "study 'paper'" in out  # the plan is still printed


def test_each_cell_prints_its_epochs_vocabulary_and_bytes_per_token(paper):
    corpus = training_bytes()
    for cost in paper.costs:
        p = cost.cell.prior
        line = next(row for row in paper.text.splitlines() if row.startswith(f"{p.family:<16} {p.budget:>8.3g}"))
        epochs = p.train_units * p.bytes_per_unit / corpus
        assert epochs > 1000 and f"{epochs:.3g}" in line.split()
        assert f"{p.model.vocab_size:,}" in line.split() and f"{p.bytes_per_unit:.2f}" in line.split()
    bpe = next(c.cell.prior for c in paper.costs if c.cell.prior.family == "transformer_bpe")
    assert bpe.model.vocab_size == 4096 and 2 < bpe.bytes_per_unit < 5  # the default data.bpe_vocab
    assert (f"note: transformer_bpe reads a 4,096-entry BPE ({bpe.bytes_per_unit:.2f} bytes per token on the "
            "held-out split) where the family uses 128,256 entries at 1e+19-8e+19 FLOPs") in paper.text


def test_a_timeout_not_covered_by_requeues_is_a_reason_to_refuse(paper):
    assert ("time: the longest trial (an estimated 3.43e+03 min) needs 5 requeue(s) past timeout_min=600, and "
            "max_num_timeout=0") in "\n".join(paper.refusals)
    covered = plan_study([*PAPER, "hydra.launcher.max_num_timeout=5"], "h100", None, None, 1)
    assert [r.split(":")[0] for r in covered.refusals] == ["data"]


def test_a_trial_that_does_not_fit_in_memory_exits_non_zero(capsys):
    out, reasons = refusal([*PAPER, "max_micro_batch=512", "--device", "h100"], capsys)
    assert "DOES NOT FIT" in out
    memory = next(line for line in reasons.splitlines() if line.startswith("cannot run: memory: "))
    assert "aunet2_C2e19_r10's trials need an estimated 604 GB per device, over the 80 GB of a h100" in memory


def test_epochs_past_one_are_refused_unless_allowed_and_past_the_limit_even_then(capsys):
    study = ["sweep.families=[aunet2]", "sweep.budgets=[3e13,1e14]"]  # 1.8 and 2.4 epochs of the default corpus
    _, reasons = refusal([*study, "--device", "a100"], capsys)
    assert "cannot run: data: 2 of 2 cells read more than 1 epoch(s)" in reasons
    plan = plan_study([*study, "data.epochs_allowed=true"], "a100", None, None, 1)
    assert plan.refusals == [] and "note: up to 2.37 epochs (aunet2_C1e14_r0.2): repeated data" in plan.text
    _, reasons = refusal([*study, "data.epochs_allowed=true", "--max-epochs", "2", "--device", "a100"], capsys)
    assert "cannot run: data: 1 of 2 cells read more than 2 epoch(s)" in reasons and "--max-epochs 2" in reasons


@pytest.mark.parametrize("option, said", [
    (["--peak-flops", "0"], "error: --peak-flops 0 must be a positive, finite FLOP/s"),
    (["--peak-flops=-1e15"], "error: --peak-flops -1e+15 must be a positive, finite FLOP/s"),
    (["--peak-flops", "inf"], "error: --peak-flops inf must be a positive, finite FLOP/s"),
    (["--mfu", "2"], "error: --mfu 2 must be in (0, 1]"),
    (["--mfu", "0"], "error: --mfu 0 must be in (0, 1]"),
    (["--device", "tpu"], "error: --device 'tpu' is not one of"),
    (["--devices-per-trial", "0"], "error: --devices-per-trial 0 must be at least 1"),
    (["--max-epochs", "0.5"], "error: --max-epochs 0.5 must be"),
])
def test_bad_options_are_refused_in_one_line_before_composing(option, said, monkeypatch):
    monkeypatch.setattr("sweeps.plan.compose", lambda overrides: pytest.fail("composed despite a bad option"))
    with pytest.raises(SystemExit) as exit_:
        sweeps_main(["plan", *option, "sweep=paper"])
    assert exit_.value.code.startswith(said) and "\n" not in exit_.value.code


def test_an_unknown_study_is_refused_in_one_line_naming_the_studies():
    with pytest.raises(SystemExit) as exit_:
        sweeps_main(["plan", "sweep=nonexistent"])
    studies = ", ".join(sorted(p.stem for p in (REPO / "conf" / "sweep").glob("*.yaml")))
    assert exit_.value.code == (f"error: unknown study 'nonexistent' (sweep=nonexistent); the studies are "
                                f"conf/sweep/*.yaml: {studies}")


def test_the_cost_includes_evaluation_and_every_figure_says_it_is_an_estimate():
    args = ["sweep=demo", "eval.enabled=true", "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=1"]
    plan = plan_study(args, "a100", 0.5, None, 1)
    train = evaluated = 0.0
    for cost in plan.costs:
        p = cost.cell.prior
        heldout = math.ceil(65536 / p.bytes_per_unit / p.seq_len) * p.seq_len  # conf/sweep.yaml's eval_bytes, padded
        downstream = 4 * 40 * MAX_OPTIONS * p.seq_len  # conf/eval/quick.yaml: 4 multiple-choice tasks, 40 items
        assert cost.n_trials == 16  # the demo: qmc 8, move 4, adaptive 4
        train += p.total_flops * 16
        evaluated += (heldout + downstream) * p.flops_per_unit / 3 * 16
    assert 0.01 < evaluated / train < 0.5  # a CPU study's evaluation is a visible share of its cost
    cell = plan.costs[0].cell  # eval_every=500 over 2,503 steps: 5 passes during training, 1 at the end
    assert Evaluation(65536, 500, 0, "").flops(cell, 2503) == 6 * Evaluation(65536, 0, 0, "").flops(cell, 2503)
    assert (f"FLOPs (estimate, every phase in full): {train + evaluated:.3g} = {train:.3g} training + "
            f"{evaluated:.3g} evaluation") in plan.text
    rate = DEVICES["a100"][0] * 0.5
    assert f"device-hours (estimate, every phase in full): {(train + evaluated) / rate / 3600:.3g} " in plan.text
    assert "peak memory per device (estimate)" in plan.text and "mem/dev est." in plan.text
    assert "SLURM: the longest trial takes " in plan.text and " min (estimate: training and evaluation" in plan.text
    assert "at most" not in plan.text.split("FLOPs (estimate")[1]  # the totals are estimates, not bounds


def test_the_dry_run_prints_each_cell_its_totals_and_the_slurm_limits(capsys):
    args = ["sweep=demo", "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=1",
            "hydra.launcher.max_num_timeout=3", "hydra.launcher.array_parallelism=4"]
    sweeps_main(["plan", *args, "--device", "a100"])  # the demo runs as configured: no exit status
    text = capsys.readouterr().out
    study = OmegaConf.to_object(compose(args).sweep)
    for family in study.families:
        for budget in study.budgets:
            line = next(row for row in text.splitlines() if row.startswith(f"{family:<16} {budget:>8.3g}"))
            assert "qmc 8, move 4, adaptive 4" in line
    assert "at most 16 trials per cell (qmc 8, move 4, adaptive 4)" in text
    assert "the first round is an array of 48 jobs; array_parallelism=4 runs 4 at once" in text
    assert "GB of 80 GB: fits" in text and "within timeout_min=1" in text and "cannot run" not in text
    slow = plan_study(args, "a100", 1e-6, None, 1)  # the same trials at a 500,000th of the rate: over the limit
    assert "over timeout_min=1" in slow.text and "max_num_timeout=3: NOT covered" in slow.text
    assert [r.split(":")[0] for r in slow.refusals] == ["time"]


def test_the_retry_command_names_sweep_py_and_the_study_by_absolute_paths(tmp_path, monkeypatch):
    folder = tmp_path / "outputs" / "study"
    folder.mkdir(parents=True)
    ledger = Ledger(folder / "ledger.sqlite")
    ledger.bind(StudyConfig(name="s"))
    ledger.add([Trial("aunet2", 1e11, 0, 1e-3, 1024)])
    ledger.mark("aunet2/C1e11/t0", "failed", error="boom", attempts=2)
    monkeypatch.chdir(tmp_path)  # the study named relatively, as `sweeps status outputs/study` does
    hint = retry_hint(Ledger(Path("outputs/study/ledger.sqlite")))
    command = shlex.split(hint.splitlines()[-1].split(": ", 1)[1])
    assert command[:3] == ["python", str(REPO / "sweep.py"), "-m"] and Path(command[1]).is_file()
    assert command[-2:] == [f"hydra.sweep.dir={folder}", "sweep.max_attempts=3"]


def test_a_cpu_plan_prices_at_this_machines_measured_matmul_rate_in_fp32_and_its_memory():
    """The CPU branch: the peak is measured here (fp32), memory estimated in fp32 against the machine's RAM."""
    import os

    study = ["sweep.families=[aunet2]", "sweep.budgets=[2e10]", "sweep.trials=2", "sweep.ratio=0.005",
             "sweep.force=true"]
    cpu = plan_study(study, "cpu", 0.1, None, 1)
    line = next(x for x in cpu.text.splitlines() if x.startswith("device cpu: peak "))
    peak = float(line.split("peak ")[1].split(" FLOP/s")[0])
    assert "(fp32 matmul, measured here)" in line and 1e8 < peak < 1e14
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert f"of {ram / 1e9:.3g} GB: fits" in cpu.text
    gpu = plan_study(study, "a100", 0.1, None, 1)
    # The same trial in fp32 words: weights, gradients and activations take twice bf16's bytes (bf16 adds
    # fp32 master weights and both keep fp32 logits, so the whole is not 2x; the same words would give 1x).
    assert cpu.costs[0].memory > 1.3 * gpu.costs[0].memory
    given = plan_study(study, "cpu", 0.1, 2e9, 1)
    assert "peak 2e+09 FLOP/s (given)" in given.text  # a peak the user gives is not called measured
