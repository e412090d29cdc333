"""``python -m analysis optimal`` and the report's allocation section, on isoFLOP studies drawn from a known
L(N, D): the JSON, the figures, bounds, the skip and error lines."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.synthetic import SweepDesign, synthetic_sweep
from tests.helpers.isoflop_table import TRUTH, K, isoflop_results, true_a, true_n_opt

N_BOOT = "40"
FAMILY = "transformer_bpe"


def write(table: pd.DataFrame, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "results.csv", index=False)
    return folder / "results.csv"


def optimal(csv: Path, *extra: str) -> int:
    return main(["optimal", str(csv), "--n-boot", N_BOOT, *extra])


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict, str]:
    """The CLI on a centred isoFLOP study (4 budgets, 7 sizes, 0.3% noise): its folder, JSON and output."""
    folder = tmp_path_factory.mktemp("isoflop")
    csv = write(isoflop_results(seed=1), folder)
    stdout = io.StringIO()  # capsys is per test; this fixture is per module
    with contextlib.redirect_stdout(stdout):
        assert optimal(csv) == 0
    return folder, json.loads((folder / "optimal" / "optimal.json").read_text()), stdout.getvalue()


def test_the_cli_writes_both_fits_whose_exponent_covers_the_truth(study):
    folder, doc, _ = study
    fam = doc["families"][FAMILY]
    assert fam["units"] == "tokens" and "FLOPs" in fam["convention"] and fam["points"] == 28
    for name in ("approach2", "approach3"):
        lo, hi = fam[name]["a_ci"]
        assert lo < true_a() < hi, (name, fam[name]["a"], lo, hi)
        assert fam[name]["k"] == pytest.approx(K)
    fit3 = fam["approach3"]
    for name in ("E", "A", "B", "alpha", "beta", "a"):
        lo, hi = fit3[f"{name}_ci"]
        assert lo <= fit3[name] <= hi, name
    for name in ("alpha", "beta"):
        assert fit3[f"{name}_ci"][0] < TRUTH[name] < fit3[f"{name}_ci"][1], name
    assert fit3["converged"] and fit3["starts_at_best"] >= 2
    assert [v["kind"] for v in fam["approach2"]["vertices"]] == ["value"] * 4
    (target,) = fam["targets"]
    assert target["target"] == pytest.approx(1e22)  # 10x the largest budget
    for name in ("approach2", "approach3"):
        lo, hi = target[f"n_opt_ci_{name}"]
        assert lo < true_n_opt(1e22) < hi, name
        assert target[f"d_opt_{name}"] == pytest.approx(1e22 / (K * target[f"n_opt_{name}"]), rel=1e-6)
    assert 0 <= target["misallocated_share"] < 0.02 and not target["flagged"]
    for stem in (f"isoflops_{FAMILY}", f"n_opt_{FAMILY}"):
        for suffix in (".png", ".pdf"):
            assert (folder / "optimal" / f"{stem}{suffix}").stat().st_size > 1000, stem


def test_the_cli_prints_vertices_parameters_convergence_and_the_comparison(study):
    _, doc, out = study
    fam = doc["families"][FAMILY]
    first = fam["approach2"]["vertices"][0]
    assert f"{first['n_opt']:.3g} [{first['n_opt_ci'][0]:.3g}, {first['n_opt_ci'][1]:.3g}]" in out
    assert f"{fam['approach3']['a']:.4f} [" in out and f"{fam['approach2']['a']:.4f} [" in out
    assert "approach 3 optimiser converged" in out and "projected gradient" in out
    assert "|a2 - a3| =" in out and "misallocates" in out and "flag above 2%" in out


def test_a_grid_whose_vertex_lies_outside_it_gives_a_bound_not_a_value(tmp_path, capsys):
    table = isoflop_results(sizes=5, span=8.0, offsets=(1.0, 4.0, 1.0, 1.0), seed=1)  # budget 2 sits above N_opt
    assert optimal(write(table, tmp_path)) == 0
    fam = json.loads((tmp_path / "optimal" / "optimal.json").read_text())["families"][FAMILY]
    vertex = fam["approach2"]["vertices"][1]
    sizes = np.sort(table.loc[table["budget"] == 1e19, "params"].unique())
    assert vertex["kind"] == "upper" and vertex["n_opt_ci"] == [None, None]
    assert vertex["n_opt"] == pytest.approx(sizes[1]) and true_n_opt(1e19) < vertex["n_opt"]
    assert [v["kind"] for i, v in enumerate(fam["approach2"]["vertices"]) if i != 1] == ["value"] * 3
    captured = capsys.readouterr()
    assert f"bound: N_opt < {sizes[1]:.3g}" in captured.out
    assert "vertex is a bound, not a value" in captured.err


def test_a_grid_tilted_across_budgets_biases_approach_2_and_is_flagged_far_out(tmp_path, capsys):
    """Centred below N_opt at the smallest budget and above it at the largest: approach 2's a drifts up."""
    table = isoflop_results(span=64.0, offsets=tuple(np.geomspace(1 / 4, 4, 4)), seed=1)
    assert optimal(write(table, tmp_path), "--target", "1e22", "1e24") == 0
    fam = json.loads((tmp_path / "optimal" / "optimal.json").read_text())["families"][FAMILY]
    assert fam["approach2"]["a"] - true_a() > 0.02 > abs(fam["approach3"]["a"] - true_a())
    assert [t["target"] for t in fam["targets"]] == [1e22, 1e24]
    assert [t["flagged"] for t in fam["targets"]] == [False, True]
    share = fam["targets"][1]["misallocated_share"]
    captured = capsys.readouterr()
    assert f"misallocates {share:.2%} of the compute under approach 3's L (FLAGGED: above 2%)" in captured.out
    assert "approaches 2 and 3 disagree" in captured.err


def test_a_family_without_an_isoflop_design_is_skipped_with_why_unless_named(tmp_path, capsys):
    ladder = synthetic_sweep("aunet2", design=SweepDesign(budgets=(1e18, 1e19, 1e20), trials=4), seed=0)
    csv = write(pd.concat([isoflop_results(seed=1), ladder], ignore_index=True), tmp_path)
    assert optimal(csv) == 0
    out = capsys.readouterr().out
    assert "skipped aunet2: no isoFLOP design: 0 of 3 budget(s) hold 3 or more model sizes" in out
    doc = json.loads((tmp_path / "optimal" / "optimal.json").read_text())
    assert list(doc["families"]) == [FAMILY] and "aunet2" in doc["skipped"]
    assert optimal(csv, "--family", "aunet2") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: aunet2: no isoFLOP design") and err.count("\n") == 1


def test_a_thin_budget_is_left_out_and_named_unless_the_family_is_named(tmp_path, capsys):
    table = isoflop_results(seed=1)
    csv = write(table[~((table["budget"] == 1e18) & (table["params"] > table["params"].min() * 3))], tmp_path)
    assert optimal(csv) == 0
    captured = capsys.readouterr()
    assert "left out: budget(s) 1e+18 (2 sizes), fewer than 3 sizes each" in captured.out
    assert "not part of the allocation fits" in captured.err
    fam = json.loads((tmp_path / "optimal" / "optimal.json").read_text())["families"][FAMILY]
    assert fam["budgets"] == [1e19, 1e20, 1e21] and fam["left_out"] == [{"budget": 1e18, "sizes": 2}]
    assert [v["budget"] for v in fam["approach2"]["vertices"]] == [1e19, 1e20, 1e21]
    assert optimal(csv, "--family", FAMILY) == 2
    err = capsys.readouterr().err
    assert "1e+18 have 2 distinct size(s); an isoFLOP fit needs at least 3" in err and err.count("\n") == 1


@pytest.mark.parametrize(("change", "args", "message"), [
    (lambda t: t.drop(columns=["params"]), (), "runs have no params"),
    (lambda t: t.drop(columns=["train_units"]), ("--family", FAMILY), "runs have no train_units"),
    (lambda t: t[t["budget"] == 1e18], ("--family", FAMILY), "no isoFLOP design: 1 of 1 budget(s)"),
    (lambda t: t, ("--family", "aunet9"), "no runs of family 'aunet9'"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, capsys, change, args, message):
    assert optimal(write(change(isoflop_results(sizes=5)), tmp_path), *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "optimal").exists()


def test_a_bad_target_or_replicate_count_is_refused_by_the_parser(tmp_path, capsys):
    csv = write(isoflop_results(sizes=5), tmp_path)
    for flag in (["--target", "0"], ["--n-boot", "2.5"]):
        with pytest.raises(SystemExit) as stop:
            main(["optimal", str(csv), *flag])
        assert stop.value.code == 2 and f"'{flag[1]}' must be" in capsys.readouterr().err


def test_the_report_shows_the_allocation_section_with_the_clis_numbers(tmp_path, capsys):
    csv = write(isoflop_results(budgets=(1e18, 1e19, 1e20), sizes=5, seed=1, seeds=2), tmp_path)
    assert main(["report", str(csv), "--bootstrap", N_BOOT]) == 0
    assert optimal(csv) == 0
    capsys.readouterr()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Compute-optimal model size" in report and f"### {FAMILY}: compute-optimal model size" in report
    for stem in (f"isoflops_{FAMILY}", f"n_opt_{FAMILY}"):
        assert f"(optimal/{stem}.png)" in report and (tmp_path / "report" / "optimal" / f"{stem}.png").exists()
    in_report = json.loads((tmp_path / "report" / "optimal" / "optimal.json").read_text())["families"][FAMILY]
    from_cli = json.loads((tmp_path / "optimal" / "optimal.json").read_text())["families"][FAMILY]
    assert in_report["runs"] == 30  # every seed's run, as the command line fits them
    for name in ("approach2", "approach3"):
        assert in_report[name] == from_cli[name]
    assert [t["target"] for t in in_report["targets"]] == [1e21, 1e22]  # the report's targets: 10x and 100x
    assert in_report["targets"][0] == from_cli["targets"][0]
    assert f"{from_cli['approach3']['a']:.4f} [" in report


def test_a_report_without_an_isoflop_design_says_nothing_new(tmp_path):
    ladder = synthetic_sweep("aunet2", design=SweepDesign(budgets=(1e18, 1e19, 1e20), trials=4), seed=0)
    assert not math.isnan(ladder["params"].iloc[0])
    assert main(["report", str(write(ladder, tmp_path)), "--bootstrap", N_BOOT]) == 0
    assert "Compute-optimal" not in (tmp_path / "report" / "report.md").read_text()
    assert not (tmp_path / "report" / "optimal").exists()
