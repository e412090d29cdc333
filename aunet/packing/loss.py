"""Each member's mean next-unit loss, with the head and the cross-entropy fused member by member.

Applying the packed head to all K*B rows at once would hold K times one trial's logits, out of the
CPU's cache for the BPE vocabulary; one member at a time, the logits, their softmax and their gradient
stay as small as in an unpacked trial. The gradient is computed in the forward pass (the loss is the
graph's last operation), as fused linear cross-entropy kernels do.
"""

from __future__ import annotations

from typing import Any

import torch

from aunet.packing.modules import PackedModel
from aunet.train import next_unit_logits


class _HeadCrossEntropy(torch.autograd.Function):
    """losses[k] = mean over member k's counted rows of CE(hidden[k] @ weight[k].T, targets[k])."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                pad_id: int) -> torch.Tensor:
        members = weight.shape[0]
        losses = hidden.new_empty(members, dtype=torch.float32)
        want_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        grad_weight = torch.empty_like(weight) if want_grad else None
        for k in range(members):
            logp = (hidden[k] @ weight[k].T).float().log_softmax(-1)
            counted = targets[k] != pad_id
            count = counted.sum()
            nats = -logp.gather(1, targets[k].unsqueeze(1)).squeeze(1)
            losses[k] = (nats * counted).sum() / count
            if want_grad:  # d loss / d logits = (softmax - one-hot of the target) / count, on counted rows
                grad = logp.exp_()
                grad[torch.arange(len(grad)), targets[k]] -= 1
                grad *= (counted / count).unsqueeze(1)
                grad = grad.to(hidden.dtype)
                torch.mm(grad, weight[k], out=grad_hidden[k])
                torch.mm(grad.T, hidden[k], out=grad_weight[k])
        ctx.save_for_backward(grad_hidden, grad_weight)
        return losses

    @staticmethod
    def backward(ctx: Any, grad_losses: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_losses.view(-1, 1, 1)
        return grad_hidden * scale.to(grad_hidden.dtype), grad_weight * scale.to(grad_weight.dtype), None, None


def member_losses(packed: PackedModel, batch: dict[str, torch.Tensor], pad_id: int) -> torch.Tensor:
    """Each member's mean next-unit cross-entropy over its own non-padding targets, [K].

    Their sum is what to differentiate: each member's gradients are then those of its own mean loss."""
    if packed.model.head.bias is not None:
        raise ValueError("the packed loss applies a head without bias; this pack's head has one")
    with packed.hidden_states() as head:
        hidden, targets = next_unit_logits(packed, batch)
    members = packed.members
    return _HeadCrossEntropy.apply(hidden.view(members, -1, hidden.shape[-1]), head.weight,
                                   targets.view(members, -1), pad_id)
