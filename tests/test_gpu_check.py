"""The GPU proof script runs, at tiny sizes, on the CPU: it cannot rot before a GPU is at hand."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def run(*args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parent.parent), **env_vars}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_gpu_check_passes_every_check_on_the_cpu():
    result = run("--cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("bf16 autocast", "torch.compile", "sliding window", "FSDP2 (one process)", "bf16 vs CPU fp32"):
        assert f"[PASS] {check}:" in result.stdout
    assert "kernel here: blocked SDPA" in result.stdout  # the CPU keeps its path
    rows = [line for line in result.stdout.splitlines() if line.startswith(("AU-Net 2 ", "AU-Net 3 ", "BPE Transformer"))]
    assert len(rows) == 3 and all(float(row.split()[-3].replace(",", "")) > 0 for row in rows)  # bytes/s
    assert "0 check(s) failed" in result.stdout


def test_gpu_check_without_a_gpu_says_how_to_run_it():
    result = run(CUDA_VISIBLE_DEVICES="")  # no GPU visible, on any machine
    assert result.returncode == 2
    assert "no CUDA device" in result.stderr and "--cpu" in result.stderr
