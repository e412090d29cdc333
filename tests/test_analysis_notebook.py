"""notebooks/analysis.ipynb runs top to bottom (nbclient, kernel ``python3`` on this interpreter)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.synthetic import SweepDesign, synthetic_sweep

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"


def execute(tmp_path: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # jupyter_client starts the "python3" kernel with sys.executable: the venv's interpreter
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(REPO)}}).execute()
    text = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", ""))
            text.extend(str(v) for v in output.get("data", {}).values())
    return "\n".join(text)


@pytest.mark.slow
def test_notebook_runs_on_a_synthetic_sweep_when_no_results_are_given(tmp_path, monkeypatch):
    monkeypatch.delenv("AUNET_RESULTS", raising=False)
    monkeypatch.setenv("AUNET_ANALYSIS_OUT", str(tmp_path))
    text = execute(tmp_path)
    assert f"interpreter: {sys.executable}" in text
    assert "AUNET_RESULTS` is unset: analysing a synthetic sweep" in text
    assert (tmp_path / "report.md").is_file() and (tmp_path / "figures" / "isoflop.png").is_file()
    assert "transformer_bpe" in text and "warning(s); the full report is" in text


def test_notebook_runs_on_the_results_in_aunet_results(tmp_path, monkeypatch):
    design = SweepDesign(budgets=tuple(np.geomspace(1e18, 1e20, 4)), trials=12)
    results = tmp_path / "runs.csv"
    synthetic_sweep("aunet3", design=design, seed=40).to_csv(results, index=False)
    monkeypatch.setenv("AUNET_RESULTS", str(results))
    monkeypatch.setenv("AUNET_ANALYSIS_OUT", str(tmp_path / "out"))
    text = execute(tmp_path)
    assert f"Analysing the results in `{results}`" in text
    report = (tmp_path / "out" / "report.md").read_text()
    assert "aunet3" in report and "transformer_bpe" not in report
    assert "bowl" in text and "paper" in text  # the laws table, both estimators and the reference
