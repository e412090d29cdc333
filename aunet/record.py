"""The result record: what one run leaves behind, and the row the analysis reads.

A run writes exactly one record, atomically, when it ends (finished, diverged,
failed or preempted). A sweep collects records into a table (one row each, nested
fields flattened: ``metrics.bpb`` becomes the column ``bpb``, ``downstream`` scores
become ``eval_<task>`` columns). Analysis needs nothing else.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aunet.atomic import json_safe, write_json_atomic

STATUSES = ("pending", "running", "finished", "diverged", "failed", "preempted")
FINAL_STATUSES = ("finished", "diverged", "failed")
#: Suffixes of ``downstream`` keys that qualify a task's score (aunet.eval.suite); the rest are scores.
DOWNSTREAM_DETAILS = ("_ci_low", "_ci_high", "_chance", "_n", "_acc_raw", "_acc_token")
#: What a budget counts (see ``aunet.ladder``), and the record column holding a run's compute in it.
BUDGET_CONVENTIONS = {
    "spent": "compute spent, head included: N x F",
    "paper": "the paper's C: N x F_no-head",
}
COMPUTE_COLUMN = {"spent": "flops", "paper": "paper_compute"}


def check_convention(value: str, where: str = "budget_convention") -> str:
    """``value`` if it names a budget convention; else a one-line error naming the choices."""
    if value not in BUDGET_CONVENTIONS:
        raise ValueError(f"{where} {value!r} is not a budget convention; use one of {sorted(BUDGET_CONVENTIONS)} "
                         "('spent': head included, the default; 'paper': the paper's C, no output head)")
    return value


@dataclass
class RunRecord:
    """One run. Units: compute in FLOPs; batch size in input units per optimizer step."""

    status: str
    family: str  # aunet2, aunet3, aunet4, transformer_bytes, transformer_bpe, mamba_bytes
    budget: float  # target compute C (FLOPs), counted in ``convention``
    lr: float  # peak learning rate
    bsz: float  # input units (bytes or tokens) per optimizer step
    units: str = "bytes"  # "bytes" or "tokens"
    bytes_per_unit: float = 1.0  # 1 for byte models; measured BPE compression k otherwise
    study: str = ""
    trial: int = -1
    model: str = ""  # preset or ladder name
    ratio: float = float("nan")  # data-to-model ratio, in LLaMA-3-token units (Sec. 2.3)
    flops_per_unit: float = float("nan")
    flops: float = float("nan")  # compute actually spent (counted: mean contraction), head included
    paper_compute: float = float("nan")  # the paper's C of the same run: no output head
    executed_flops: float = float("nan")  # what the model ran: AU-Net's stages padded to the longest row
    convention: str = "spent"  # what ``budget`` counts: a key of BUDGET_CONVENTIONS
    params: float = float("nan")
    steps: int = 0
    train_units: float = 0.0
    loss: float = float("nan")  # final held-out loss, nats per input unit
    bpb: float = float("nan")  # final held-out bits per byte (comparable across architectures)
    lr_box: tuple[float, float] | None = None  # the sweep's search box, to flag optima on its edge
    bsz_box: tuple[float, float] | None = None
    contraction: list[float] = field(default_factory=list)  # bytes per pooled vector, per stage
    downstream: dict[str, float] = field(default_factory=dict)  # task -> accuracy
    metrics: dict[str, Any] = field(default_factory=dict)  # throughput, memory, wall time, curves
    config: dict[str, Any] = field(default_factory=dict)  # the full resolved config
    error: str = ""
    seed: int = 0
    threads: int = 0  # intra-op threads the run trained with
    threads_source: str = ""  # the CPU allocation (or config) they came from, e.g. "SLURM_CPUS_PER_TASK=1"
    seq_len: int = 0  # input units per sequence (0: not recorded): part of the regime a law is fitted on
    vocab_size: int = 0  # the model's input vocabulary (256: bytes; a BPE's own)
    law_verdict: str = ""  # the verdict of a fitted law file (law=) at this run's budget, where one set LR or BSZ

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"record status {self.status!r} is not one of {STATUSES}")
        if self.units not in ("bytes", "tokens"):
            raise ValueError(f"record units {self.units!r} must be 'bytes' or 'tokens'")
        check_convention(self.convention, "record convention")

    @property
    def bsz_bytes(self) -> float:
        return self.bsz * self.bytes_per_unit

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        data = dict(data)
        for key in ("lr_box", "bsz_box"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        for key, value in list(data.items()):
            if value is None and key in _FLOAT_FIELDS:
                data[key] = float("nan")
        return cls(**data)

    def to_row(self) -> dict[str, Any]:
        """Flat row for the results table."""
        row = {k: v for k, v in asdict(self).items() if k not in ("downstream", "metrics", "config", "contraction")}
        row["bsz_bytes"] = self.bsz_bytes
        for key in ("lr_box", "bsz_box"):
            box = row.pop(key)
            row[f"{key[:-4]}_min"], row[f"{key[:-4]}_max"] = box if box else (math.nan, math.nan)
        for key, score in self.downstream.items():  # headline accuracy per task; intervals etc. apart
            row[f"downstream_{key}" if key.endswith(DOWNSTREAM_DETAILS) else f"eval_{key}"] = score
        for key, value in self.metrics.items():
            if isinstance(value, (int, float)):
                row.setdefault(key, value)
        return row

    def write(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        return cls.from_dict(json.loads(Path(path).read_text()))


_FLOAT_FIELDS = {"budget", "lr", "bsz", "bytes_per_unit", "ratio", "flops_per_unit", "flops", "paper_compute",
                 "executed_flops", "params", "train_units", "loss", "bpb"}
