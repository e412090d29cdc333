"""The budget convention end to end: the ladder's plan, the record, the analysis's fit and its axis labels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analysis.fits import analyse
from analysis.load import compute_label, validate_results
from analysis.plots import plot_hyper_laws, plot_loss_curves
from analysis.synthetic import synthetic_sweep
from aunet.ladder import plan
from aunet.record import BUDGET_CONVENTIONS, RunRecord
from aunet.train import TrainConfig
from sweeps.study import StudyConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("convention", sorted(BUDGET_CONVENTIONS))
def test_ladder_plan_to_record_to_fit_and_axis_label(convention):
    p = plan("aunet2", 1e12, 0.005, convention=convention)
    spent_in_budget = p.total_flops if convention == "spent" else p.paper_compute
    assert spent_in_budget == pytest.approx(p.budget, rel=0.03)  # whole steps only
    assert p.paper_compute < p.total_flops  # the head is in the compute spent only
    assert f"++budget_convention={convention}" in p.to_overrides()
    record = RunRecord.from_dict(RunRecord(status="finished", **p.record_fields()).to_dict())
    assert record.convention == convention and record.budget == p.budget

    runs = synthetic_sweep("aunet2", seed=0).assign(convention=convention)
    result = analyse(runs, n_boot=50)
    assert set(result.results["convention"]) == {convention}
    assert result.law("aunet2").lr.exponent < 0  # fitted against the record's own budget column
    label = compute_label(result.results)
    assert BUDGET_CONVENTIONS[convention] in label
    assert plot_hyper_laws(result.laws["aunet2"]).axes[0].get_xlabel() == label
    assert plot_loss_curves(result.loss, result.results).axes[0].get_xlabel() == label


def test_a_family_mixing_conventions_is_refused_unless_told_which_column():
    spent = synthetic_sweep("aunet2", seed=1).assign(convention="spent")
    spent["paper_compute"] = spent["flops"] * 0.8
    paper = synthetic_sweep("aunet2", seed=2).assign(convention="paper")
    paper["paper_compute"] = paper["budget"]
    paper["flops"] = paper["budget"] / 0.8
    mixed = spent._append(paper, ignore_index=True)
    with pytest.raises(ValueError, match="'aunet2' mixes budget conventions.*budget_convention"):
        validate_results(mixed)
    as_paper = validate_results(mixed, budget_convention="paper")
    assert set(as_paper["convention"]) == {"paper"}
    converted = as_paper.iloc[: len(spent)]
    expected = [float(f"{b * 0.8:.6g}") for b in spent["budget"]]
    assert converted["budget"].tolist() == pytest.approx(expected)
    assert as_paper.iloc[len(spent):]["budget"].tolist() == pytest.approx(
        [float(f"{b:.6g}") for b in paper["budget"]])
    other_families = spent._append(synthetic_sweep("transformer_bpe", seed=3).assign(convention="paper"))
    assert len(validate_results(other_families)) == len(other_families)  # mixing across families is fine


def test_an_unknown_convention_is_refused_everywhere_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="convention 'total'.*'paper', 'spent'"):
        plan("aunet2", 1e12, 0.005, convention="total")  # the old name: no alias
    with pytest.raises(ValueError, match="budget_convention' 'head'"):
        TrainConfig(budget=1e12, budget_convention="head")
    with pytest.raises(ValueError, match="budget_convention' 'head'"):
        StudyConfig(budget_convention="head")
    with pytest.raises(ValueError, match="record convention 'head'"):
        RunRecord(status="finished", family="aunet2", budget=1e12, lr=1e-3, bsz=1024, convention="head")
    with pytest.raises(ValueError, match="convention 'head' is not a budget convention"):
        validate_results(synthetic_sweep("aunet2", seed=0).assign(convention="head"))
    with pytest.raises(ValueError, match="budget_convention 'head'"):
        validate_results(synthetic_sweep("aunet2", seed=0), budget_convention="head")
    proc = subprocess.run([sys.executable, "-m", "aunet.ladder", "--family", "aunet2", "--budget", "1e12",
                           "--convention", "total"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice: 'total'" in proc.stderr


def test_executed_flops_at_the_mean_stage_lengths_are_the_counted_flops():
    from aunet.flops import executed_flops, flops_breakdown

    p = plan("aunet3", 1e12, 0.005)
    breakdown = flops_breakdown(p.model, p.contraction)
    mean = [p.seq_len / c for c in p.contraction]
    assert executed_flops(breakdown, mean) == pytest.approx(p.seq_len * breakdown.total, rel=1e-12)
    padded = [p.seq_len, *(n * 1.2 for n in mean[1:])]
    assert executed_flops(breakdown, padded) > p.seq_len * breakdown.total
