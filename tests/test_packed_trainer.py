"""The packed trainer: each member of a pack ends as its unpacked twin (``train`` on the same config) does,
a diverging member is recorded diverged without touching the others, an interrupted pack resumes to the
same weights, and configs that cannot pack are refused in one line before anything runs."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import aunet.packing.trainer as trainer
from aunet.data import DataConfig
from aunet.optim import OptimConfig
from aunet.packing.trainer import CHECKPOINT_NAME, train_pack
from aunet.record import RunRecord
from aunet.train import TrainConfig, train
from tests.helpers.train import tiny_config

SEQ = 64
# (peak LR, sequences per step, seed, steps, max_micro_batch): different LRs, batches (a and c padded to b's 3
# rows; b's twin sums 3 micro-batches of 1), seeds and lengths (b stops a step before the others).
MEMBERS = {"a": (3e-3, 2, 0, 4, 8), "b": (1e-2, 3, 1, 3, 2), "c": (2e-3, 1, 2, 4, 8)}
# Measured (fp32, CPU, 3-4 steps, these members on seeds 0-2, 10-12, 20-22): weights within 1.3e-5 of the
# twins' (largest for b, whose twin sums three micro-batches), training losses within 1e-7 and gradient norms
# within 8e-7 (relative), final held-out loss within 4e-8: the packed kernels and the one-pass mean over a
# member's batch change only the order of float sums. The bounds leave a margin of 8x and more.
WEIGHT_TOL, LOSS_REL = 1e-4, 1e-5


def member_config(root: Path, name: str, **overrides) -> TrainConfig:
    lr, sequences, seed, steps, max_micro = MEMBERS[name]
    fields = dict(model={"seq_len": SEQ}, data=DataConfig(seq_len=SEQ, valid_bytes=65536), optim=OptimConfig(lr=lr),
                  bsz=sequences * SEQ, seed=seed, steps=steps, max_micro_batch=max_micro, eval_bytes=1024,
                  threads=1)  # one thread: a loaded machine slows two spinning ones far more
    return tiny_config(root / name, **{**fields, **overrides})


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", weights_only=True)["model"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, RunRecord]:
    root = tmp_path_factory.mktemp("twins")
    return {name: train(member_config(root, name)) for name in MEMBERS}


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> tuple[Path, list[RunRecord]]:
    root = tmp_path_factory.mktemp("pack")
    return root, train_pack([member_config(root, name) for name in MEMBERS])


def test_each_member_ends_as_its_unpacked_twin(pack, twins) -> None:
    root, records = pack
    for name, record in zip(MEMBERS, records, strict=True):
        twin = twins[name]
        assert record.status == twin.status == "finished", record.error
        out, twin_out = root / name, Path(twin.config["output_dir"])
        assert max_difference(weights(out), weights(twin_out)) < WEIGHT_TOL
        # Stamped as the twin's final weights are, with the same config.
        stored = torch.load(out / "model.pt", weights_only=True)
        assert stored["fingerprint"] == torch.load(twin_out / "model.pt", weights_only=True)["fingerprint"]
        assert record.loss == pytest.approx(twin.loss, rel=LOSS_REL)
        assert record.bpb == pytest.approx(twin.bpb, rel=LOSS_REL)
        # Its own plan and compute, counted as the unpacked run counts them (micro-batch by micro-batch).
        for key in ("steps", "train_units", "bsz", "lr", "seed", "flops", "paper_compute", "executed_flops",
                    "params", "contraction"):
            assert getattr(record, key) == getattr(twin, key), key
        history, twin_history = record.metrics["history"], twin.metrics["history"]
        assert [h["step"] for h in history] == [h["step"] for h in twin_history]
        for key in ("loss", "lr", "grad_norm"):
            assert [h[key] for h in history] == pytest.approx([h[key] for h in twin_history], rel=LOSS_REL), key
        assert RunRecord.read(out / "record.json").to_dict() == record.to_dict()
        assert record.metrics["pack_members"] == 3 and 0 < record.metrics["pack_padded_fraction"] < 1
    # The members moved apart: three trials, not one copied three times.
    assert max_difference(weights(root / "a"), weights(root / "c")) > 100 * WEIGHT_TOL
    # A finished pack leaves no checkpoint behind, as a finished run does.
    assert not (root / "a" / CHECKPOINT_NAME).exists()


def assert_equals_twin(record: RunRecord, out: Path, twin: RunRecord) -> None:
    assert record.status == "finished", record.error
    assert max_difference(weights(out), weights(Path(twin.config["output_dir"]))) < WEIGHT_TOL
    assert record.loss == pytest.approx(twin.loss, rel=LOSS_REL)


def test_a_member_whose_loss_explodes_is_stopped_and_the_others_train_on(tmp_path, twins) -> None:
    wild = member_config(tmp_path / "wild", "b", optim=OptimConfig(lr=50.0))
    records = train_pack([member_config(tmp_path, "a"), wild])
    twin_wild = train(replace(wild, output_dir=str(tmp_path / "wild_twin")))
    assert records[1].status == twin_wild.status == "diverged"
    assert records[1].error == twin_wild.error and "training loss" in records[1].error
    assert records[1].steps == twin_wild.steps < wild.steps
    assert records[1].flops == twin_wild.flops and records[1].executed_flops == twin_wild.executed_flops
    assert RunRecord.read(tmp_path / "wild" / "b" / "record.json").status == "diverged"
    assert not (tmp_path / "wild" / "b" / "model.pt").exists()
    assert_equals_twin(records[0], tmp_path / "a", twins["a"])


class NanGradient(torch.autograd.Function):
    """The members' losses unchanged, but member 1's gradients NaN."""

    @staticmethod
    def forward(ctx, losses: torch.Tensor) -> torch.Tensor:
        return losses.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * torch.tensor([1.0, float("nan")])


def test_a_member_with_nan_gradients_is_stopped_and_the_others_train_on(tmp_path, twins, monkeypatch) -> None:
    losses, calls = trainer.member_losses, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        out = losses(*args, **kwargs)
        return NanGradient.apply(out) if len(calls) == 2 else out

    monkeypatch.setattr(trainer, "member_losses", poisoned)
    records = train_pack([member_config(tmp_path, "a"), member_config(tmp_path, "c")])
    assert records[1].status == "diverged" and records[1].error == "gradient norm nan at step 2"
    assert records[1].steps == 2 and not (tmp_path / "c" / "model.pt").exists()
    assert_equals_twin(records[0], tmp_path / "a", twins["a"])


@pytest.mark.parametrize("interruption", ["signal", "crash"])
def test_an_interrupted_pack_resumes_to_the_same_weights(tmp_path, pack, monkeypatch, interruption: str) -> None:
    """SIGUSR2 (a preemption) at step 3: the pack checkpoints and stops; a crash at step 4 loses the steps
    since the periodic checkpoint at step 2. Rerun on the same configs, both end bit for bit as the pack
    that never stopped (member b, three steps long, finishes before or during the interruption)."""
    cfgs = [member_config(tmp_path, name, checkpoint_every=2) for name in MEMBERS]
    losses, calls = trainer.member_losses, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if interruption == "signal" and len(calls) == 3:
            os.kill(os.getpid(), signal.SIGUSR2)
        if interruption == "crash" and len(calls) == 4:
            raise RuntimeError("killed")
        return losses(*args, **kwargs)

    monkeypatch.setattr(trainer, "member_losses", interrupted)
    first = train_pack(cfgs)
    expected = ["preempted", "finished", "preempted"] if interruption == "signal" else ["failed", "finished", "failed"]
    assert [r.status for r in first] == expected
    assert (tmp_path / "a" / CHECKPOINT_NAME).exists()
    monkeypatch.setattr(trainer, "member_losses", losses)
    records = train_pack([member_config(tmp_path, name, checkpoint_every=2) for name in MEMBERS])
    root, uninterrupted = pack
    for name, record, straight in zip(MEMBERS, records, uninterrupted, strict=True):
        assert record.status == "finished" and record.steps == straight.steps
        assert max_difference(weights(tmp_path / name), weights(root / name)) == 0.0
        assert record.executed_flops == straight.executed_flops  # the checkpoint carries the counts
        assert [h["loss"] for h in record.metrics["history"]] == [h["loss"] for h in straight.metrics["history"]]
    assert not (tmp_path / "a" / CHECKPOINT_NAME).exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"model": {"seq_len": SEQ, "dims": [32, 96]}}, "member 1 differs from member 0 in model.dims ([32, 96] vs [32, 64])"),
    ({"model": {"seq_len": 32}, "data": DataConfig(seq_len=32, valid_bytes=65536)},
     "member 1 differs from member 0 in model.seq_len (32 vs 64)"),
    ({"data": DataConfig(seq_len=SEQ, valid_bytes=32768)}, "member 1 differs from member 0 in data.valid_bytes"),
    ({"optim": OptimConfig(lr=1e-3, weight_decay=0.0)}, "member 1 differs from member 0 in optim.weight_decay"),
    ({"output_dir": "SAME"}, "members 0 and 1 share output_dir"),
])
def test_members_that_cannot_pack_are_refused_in_one_line(tmp_path, change: dict, message: str) -> None:
    first = member_config(tmp_path, "a")
    change = {**change, "output_dir": first.output_dir} if change.get("output_dir") == "SAME" else change
    with pytest.raises(ValueError, match=r"^pack: " + message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")) as refused:
        train_pack([first, member_config(tmp_path, "b", **change)])
    assert "\n" not in str(refused.value)
    assert not any(tmp_path.iterdir())  # refused before anything ran or was written


def test_packs_that_cannot_run_are_refused_in_one_line(tmp_path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="^pack: no trial configs given"):
        train_pack([])
    learned = member_config(tmp_path, "a", model={"seq_len": SEQ, "splits": ["learned:c=4"]})
    with pytest.raises(ValueError, match=r"^pack: packing does not support learned splitting rules \(`learned:`\)"):
        train_pack([learned])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="^pack: WORLD_SIZE is 2, but a pack trains in one process"):
        train_pack([member_config(tmp_path, "a")])
    assert not any(tmp_path.iterdir())


def test_each_member_logs_its_own_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from aunet.tracking import TrackingConfig, default_tracking_uri

    cfgs = [member_config(tmp_path, name, tracking=TrackingConfig(enabled=True)) for name in ("a", "c")]
    records = train_pack(cfgs)
    assert [r.status for r in records] == ["finished", "finished"]
    for cfg, record in zip(cfgs, records):  # each member's store (its output directory's) holds its one run
        client = MlflowClient(default_tracking_uri(cfg.output_dir))
        runs = client.search_runs([client.get_experiment_by_name("aunet").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        losses = [m.value for m in client.get_metric_history(runs[0].info.run_id, "train_loss")]
        assert losses == [entry["loss"] for entry in record.metrics["history"] if "loss" in entry]
