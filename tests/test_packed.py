"""Packed training: member k of a pack trains exactly as its unpacked twin (same seed, rows and LR), a
member whose loss turns NaN is frozen without touching the others, and bad packs are refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aunet.config import PAD_ID, ModelConfig
from aunet.models import build_model
from aunet.optim import OptimConfig, build_optimizer, lr_at
from aunet.packing import PackedAdamW, member_losses, member_lrs, pack_models, unpack
from aunet.train import lm_loss

K, B = 3, 2  # members, rows per member
TEXT = (b"The cat sat on the mat. Then it slept soundly! A dog came by, 1234 times, and barked at the moon. "
        b"Packed trials share one process: each keeps its own seed, data rows and learning rate. ") * 8
CONFIGS = {
    "transformer": ModelConfig(arch="transformer", dims=[32], layers=[2], head_dims=[16], ffn_dims=[64],
                               seq_len=48, window=None),
    "transformer_bpe": ModelConfig(arch="transformer", units="bpe", vocab_size=300, dims=[32], layers=[2],
                                   head_dims=[16], ffn_dims=[64], seq_len=32, window=None),
    # The byte stage's window is shorter than the sequence: the blocked sliding-window path runs.
    "aunet2": ModelConfig(arch="aunet", dims=[16, 32], layers=[1, 2], head_dims=[16, 16], ffn_dims=[32, 64],
                          seq_len=64, window=16),
    "aunet3": ModelConfig(arch="aunet", dims=[16, 32, 48], layers=[1, 1, 1], head_dims=[16, 16, 16],
                          ffn_dims=[32, 64, 96], seq_len=64, window=16),
}
# Measured (fp32, CPU): gradients agree to 5e-7 of their largest entry (the fused head and cross-entropy,
# the batched matmuls and AU-Net's pooled lengths, the longest row of the whole pack, change the order of
# sums); given the same gradients, the optimizers agree to 6e-8 (the clipping norm's order of sums). Adam divides by sqrt(v) + 1e-8, so a
# near-zero gradient entry turns that noise into up to 2e-5 of a weight after 1-3 steps (a step moves
# weights by about the LR, 3e-3 and up); logits then differ by up to 2.5e-5.
GRAD_TOL, OPTIM_TOL, WEIGHT_TOL, LOGIT_TOL = 2e-6, 1e-6, 1e-4, 1e-4
OPTIM = OptimConfig(grad_clip=0.05, warmup_fraction=0.0)  # clipping active at every step of these tiny models
PEAKS = [3e-3, 1e-2, 3e-2]  # a different LR per member


def build(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(CONFIGS[name])


def batches(name: str, steps: int) -> list[dict[str, torch.Tensor]]:
    """``steps`` packed batches of K*B member-major rows, every row a different window of the text."""
    cfg = CONFIGS[name]
    length = cfg.seq_len + 1
    out = []
    for step in range(steps):
        rows = [list(TEXT[(step * K * B + r) * 7:][:length]) for r in range(K * B)]
        ids = torch.tensor(rows) % cfg.vocab_size
        out.append({"ids": ids})
    return out


def rows(batch: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    return {key: value[k * B:(k + 1) * B] for key, value in batch.items()}


def twin_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], lr: float) -> None:
    """One step of the unpacked trainer (TrainState.train_step without accumulation)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    lm_loss(model, batch, PAD_ID).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def packed_step(packed, optimizer: PackedAdamW, batch: dict[str, torch.Tensor], step: int, steps: int,
                poison: torch.Tensor | None = None) -> torch.Tensor:
    losses = member_losses(packed, batch, PAD_ID)
    if poison is not None:
        losses = losses * poison
    losses.sum().backward()
    optimizer.step(member_lrs(step, [steps] * K, PEAKS, OPTIM), losses)
    optimizer.zero_grad()
    return losses


def max_difference(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[n] - sb[n]).abs().max()) for n in sa)


def train_both(name: str, steps: int, poison: torch.Tensor | None = None):
    """A pack of K members and their K unpacked twins (the poisoned members' twins are not trained)."""
    twins = [build(name, seed=10 + k) for k in range(K)]
    packed = pack_models([build(name, seed=10 + k) for k in range(K)])
    optimizer = PackedAdamW(packed, OPTIM)
    twin_optimizers = [build_optimizer(t, OPTIM, PEAKS[k]) for k, t in enumerate(twins)]
    data = batches(name, steps)
    for step, batch in enumerate(data):
        packed_step(packed, optimizer, batch, step, steps, poison)
        for k, (twin, opt) in enumerate(zip(twins, twin_optimizers)):
            if poison is None or torch.isfinite(poison[k]):
                twin_step(twin, opt, rows(batch, k), lr_at(step, steps, PEAKS[k], OPTIM))
    return packed, optimizer, twins, data


@pytest.mark.parametrize(("name", "steps"), [("transformer", 1), ("transformer", 3), ("aunet2", 1), ("aunet2", 3),
                                             ("transformer_bpe", 3), ("aunet3", 3)])
def test_member_equals_its_unpacked_twin(name: str, steps: int) -> None:
    packed, optimizer, twins, data = train_both(name, steps)
    assert optimizer.steps == steps and not optimizer.diverged.any()
    probe = data[0]
    with torch.no_grad():
        logits = packed(probe["ids"][:, :-1])
    for k, twin in enumerate(twins):
        member = unpack(packed, k)
        assert type(member) is type(twin)
        assert max_difference(member, twin) < WEIGHT_TOL
        with torch.no_grad():
            own = twin(probe["ids"][k * B:(k + 1) * B, :-1])
        assert float((logits[k * B:(k + 1) * B] - own).abs().max()) < LOGIT_TOL
    # The members moved, and apart: different seeds and LRs, not one model copied K times.
    start = build(name, seed=10)
    assert max_difference(unpack(packed, 0), start) > 10 * WEIGHT_TOL
    assert max_difference(unpack(packed, 0), unpack(packed, 1)) > 10 * WEIGHT_TOL


@pytest.mark.parametrize("name", ["transformer_bpe", "aunet2"])
def test_member_gradients_and_losses_equal_the_twins(name: str) -> None:
    twins = [build(name, seed=10 + k) for k in range(K)]
    packed = pack_models([build(name, seed=10 + k) for k in range(K)])
    batch = batches(name, 1)[0]
    losses = member_losses(packed, batch, PAD_ID)
    losses.sum().backward()
    packed_params = dict(packed.model.named_parameters())
    for k, twin in enumerate(twins):
        loss = lm_loss(twin, rows(batch, k), PAD_ID)
        loss.backward()
        assert float(losses[k].detach()) == pytest.approx(float(loss.detach()), rel=1e-6)
        for n, p in twin.named_parameters():
            difference = float((packed_params[n].grad[k] - p.grad).abs().max())
            assert difference <= GRAD_TOL * float(p.grad.abs().max()), n


def test_optimizer_step_equals_torch_adamw() -> None:
    """Given each twin's gradients, the packed AdamW (decay, clipping, bias correction, per-member LR)
    lands on torch AdamW's weights but for the rounding of the clipping norm's sums, step after step."""
    twins = [build("aunet2", seed=10 + k) for k in range(K)]
    packed = pack_models([build("aunet2", seed=10 + k) for k in range(K)])
    optimizer = PackedAdamW(packed, OPTIM)
    twin_optimizers = [build_optimizer(t, OPTIM, PEAKS[k]) for k, t in enumerate(twins)]
    packed_params = dict(packed.model.named_parameters())
    for step, batch in enumerate(batches("aunet2", 3)):
        for k, twin in enumerate(twins):
            lm_loss(twin, rows(batch, k), PAD_ID).backward()
        for n, p in packed_params.items():
            p.grad = torch.stack([dict(t.named_parameters())[n].grad for t in twins])
        optimizer.step(member_lrs(step, [3] * K, PEAKS, OPTIM))
        optimizer.zero_grad()
        for k, (twin, opt) in enumerate(zip(twins, twin_optimizers)):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, 3, PEAKS[k], OPTIM)
            torch.nn.utils.clip_grad_norm_(twin.parameters(), OPTIM.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        for k, twin in enumerate(twins):
            assert max_difference(unpack(packed, k), twin) < OPTIM_TOL


def test_members_start_as_their_own_seeds() -> None:
    models = [build("aunet2", seed=s) for s in (3, 4)]
    packed = pack_models(models)
    for k, model in enumerate(models):
        assert max_difference(unpack(packed, k), model) == 0.0
    assert max_difference(models[0], models[1]) > 0.0


def test_clipping_is_per_member() -> None:
    """Each member's norm is over its own slices: scaling one member's loss scales its norm only."""
    packed = pack_models([build("transformer", seed=s) for s in range(K)])
    optimizer = PackedAdamW(packed, OPTIM)
    batch = batches("transformer", 1)[0]
    scale = torch.tensor([1.0, 10.0, 1.0])
    (member_losses(packed, batch, PAD_ID) * scale).sum().backward()
    norms = optimizer.grad_norms()
    for k in range(K):
        twin = build("transformer", seed=k)
        lm_loss(twin, rows(batch, k), PAD_ID).backward()
        alone = torch.nn.utils.clip_grad_norm_(twin.parameters(), OPTIM.grad_clip)
        assert float(norms[k]) == pytest.approx(float(scale[k] * alone), rel=1e-5)


@pytest.mark.parametrize("name", ["transformer", "aunet2"])
def test_nan_member_is_frozen_and_others_unchanged(name: str) -> None:
    poison = torch.tensor([1.0, float("nan"), 1.0])
    packed, optimizer, twins, _ = train_both(name, 3, poison)
    assert optimizer.diverged.tolist() == [False, True, False]
    for k in (0, 2):
        assert max_difference(unpack(packed, k), twins[k]) < WEIGHT_TOL
    # The frozen member keeps its initial weights, finite (its first step was already refused).
    assert max_difference(unpack(packed, 1), twins[1]) == 0.0


def test_freeze_stops_a_member_for_good() -> None:
    """The trainer's own rule (loss far above the first) freezes a member through ``freeze``."""
    packed = pack_models([build("transformer", seed=s) for s in range(K)])
    optimizer = PackedAdamW(packed, OPTIM)
    optimizer.freeze(torch.tensor([False, False, True]))
    before = unpack(packed, 2)
    for step, batch in enumerate(batches("transformer", 2)):
        packed_step(packed, optimizer, batch, step, 2)
    assert max_difference(unpack(packed, 2), before) == 0.0
    assert max_difference(unpack(packed, 0), build("transformer", seed=0)) > 0.0


def test_unpack_round_trips() -> None:
    packed = pack_models([build("aunet2", seed=s) for s in range(K)])
    again = pack_models([unpack(packed, k) for k in range(K)])
    state, state_again = packed.state_dict(), again.state_dict()
    assert all(torch.equal(state[n], state_again[n]) for n in state)
    ids = batches("aunet2", 1)[0]["ids"][:, :-1]
    assert torch.equal(packed(ids), again(ids))


def test_optimizer_state_round_trips() -> None:
    """A pack resumed from its optimizer's state takes the same next step as one that never stopped."""
    data = batches("transformer", 2)
    runs = []
    for resume in (False, True):
        packed = pack_models([build("transformer", seed=s) for s in range(K)])
        optimizer = PackedAdamW(packed, OPTIM)
        packed_step(packed, optimizer, data[0], 0, 2)
        if resume:
            saved = {k: [t.clone() for t in v] if isinstance(v, list) else v for k, v in optimizer.state_dict().items()}
            optimizer = PackedAdamW(packed, OPTIM)
            optimizer.load_state_dict(saved)
        packed_step(packed, optimizer, data[1], 1, 2)
        runs.append(packed)
    assert max_difference(*runs) == 0.0


@pytest.mark.parametrize(("models", "message"), [
    (lambda: [], "pack size is 0; a pack needs at least 1 member"),
    (lambda: [build("aunet2", 0), build_model(ModelConfig(arch="aunet", dims=[16, 48], layers=[1, 2],
                                                          head_dims=[16, 16], ffn_dims=[32, 64], seq_len=64,
                                                          window=16))],
     "member 1 differs from member 0 in dims"),
    (lambda: [build("aunet2", 0), build("transformer", 0)], "member 1 is a Transformer, member 0 a AUNet"),
    (lambda: [build_model(ModelConfig(arch="aunet", dims=[16, 32], layers=[1, 1], head_dims=[16, 16],
                                      ffn_dims=[32, 64], seq_len=64, window=16, upsampling="repeat"))],
     "cannot pack module 'upsample.0' (Upsample, parameters ['bias'])"),
    (lambda: [build_model(ModelConfig(arch="mamba", dims=[32], layers=[1], head_dims=[16], ffn_dims=[64],
                                      seq_len=64, d_state=16))],
     "cannot pack MambaLM: packing supports Transformer, AUNet"),
])
def test_bad_packs_are_refused(models, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        pack_models(models())


def test_bad_batches_and_members_are_refused() -> None:
    packed = pack_models([build("transformer", seed=s) for s in range(K)])
    with pytest.raises(ValueError, match="a pack of 3 members needs a multiple of 3 rows"):
        packed(torch.zeros(4, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="member 3 is not in a pack of 3"):
        unpack(packed, 3)
    with pytest.raises(ValueError, match=r"learning rates have shape \(2,\)"):
        PackedAdamW(packed, OPTIM).step(torch.ones(2))
