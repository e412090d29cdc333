"""AdamW over a packed model: one optimizer step for K members, each as if it had its own optimizer.

Every member has its own learning rate (a [K] tensor, each member's schedule value at this step), its own
gradient clipping (its global norm over its own slices) and its own moments (slices of the packed state);
betas, eps and weight decay are shared, from the project's OptimConfig. The update follows torch's
single-tensor AdamW operation by operation, so a member's weights match its unpacked twin's to the float
order of the forward and backward passes. A member whose loss or gradients are not finite is frozen
(learning rate 0, gradients zeroed from then on) and reported as diverged; the others step on untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from aunet.optim import OptimConfig, lr_at
from aunet.packing.modules import PackedModel


def member_lrs(step: int, total_steps: Sequence[int], peaks: Sequence[float], cfg: OptimConfig) -> torch.Tensor:
    """Each member's scheduled learning rate at optimizer step ``step`` (``aunet.optim.lr_at``), [K]."""
    return torch.tensor([lr_at(step, n, peak, cfg) for n, peak in zip(total_steps, peaks, strict=True)],
                        dtype=torch.float64)


class PackedAdamW:
    """AdamW with per-member LR, clipping and divergence; weight decay on what is a matrix per member."""

    def __init__(self, packed: PackedModel, cfg: OptimConfig):
        self.cfg = cfg
        self.members = packed.members
        self.params = [p for p in packed.parameters() if p.requires_grad]
        device = self.params[0].device
        # A parameter is [K, *member shape]: matrices per member are decayed, gains are not (build_optimizer).
        self.decayed = [p.dim() - 1 >= 2 for p in self.params]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0
        self.diverged = torch.zeros(self.members, dtype=torch.bool, device=device)

    def _per_member(self, values: torch.Tensor) -> list[torch.Tensor]:
        """[K] values as one view per parameter, shaped to broadcast over it ([K, 1, ...])."""
        return [values.view(self.members, *[1] * (p.dim() - 1)) for p in self.params]

    def grad_norms(self) -> torch.Tensor:
        """Each member's global gradient norm over its own slices, [K] (clip_grad_norm_'s order of sums)."""
        norms = [torch.linalg.vector_norm(p.grad.view(self.members, -1), dim=1) for p in self.params]
        return torch.linalg.vector_norm(torch.stack(norms), dim=0)

    def freeze(self, members: torch.Tensor) -> None:
        """Stop the members marked in ``members`` [K] bool for good (the trainer's own divergence rule)."""
        self.diverged |= members.to(self.diverged.device)

    @torch.no_grad()
    def step(self, lrs: torch.Tensor, losses: torch.Tensor | None = None) -> torch.Tensor:
        """Clip each member's gradients and take one AdamW step at learning rates ``lrs`` [K].

        A member whose ``losses`` entry or gradient norm is not finite is frozen first. Returns the
        members' gradient norms before clipping, [K]."""
        if lrs.shape != (self.members,):
            raise ValueError(f"learning rates have shape {tuple(lrs.shape)}; a pack of {self.members} needs "
                             f"({self.members},)")
        norms = self.grad_norms()
        bad = ~torch.isfinite(norms)
        if losses is not None:
            bad |= ~torch.isfinite(losses.detach().to(bad.device))
        self.freeze(bad)
        live = ~self.diverged
        coef = torch.where(live, (self.cfg.grad_clip / (norms + 1e-6)).clamp(max=1.0), 0.0)
        lrs = torch.where(live.cpu(), lrs.double(), 0.0)
        self.steps += 1
        beta1, beta2 = self.cfg.beta1, self.cfg.beta2
        # Computed in float64 and rounded once, as torch rounds its Python-float step size and decay.
        like = self.params[0]
        step_size = (lrs / (1 - beta1 ** self.steps)).to(like.device, like.dtype)
        decay = (1 - lrs * self.cfg.weight_decay).to(like.device, like.dtype)
        coef = coef.to(like.dtype)
        grads = [p.grad for p in self.params]
        if bool(live.all()):
            torch._foreach_mul_(grads, self._per_member(coef))
        else:  # a frozen member's gradients may be NaN, and NaN * 0 is NaN
            grads = [torch.where(alive, g * c, 0.0) for g, alive, c in
                     zip(grads, self._per_member(live), self._per_member(coef))]
        decayed = [p for p, d in zip(self.params, self.decayed) if d]
        torch._foreach_mul_(decayed, [c for c, d in zip(self._per_member(decay), self.decayed) if d])
        # torch's single-tensor AdamW, operation by operation, with a per-member step size.
        torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, (1 - beta2 ** self.steps) ** 0.5)
        torch._foreach_add_(denom, self.cfg.eps)
        update = torch._foreach_mul(self.exp_avg, self._per_member(-step_size))
        torch._foreach_div_(update, denom)
        torch._foreach_add_(self.params, update)
        return norms

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict[str, object]:
        return {"steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq,
                "diverged": self.diverged}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.steps = int(state["steps"])  # type: ignore[call-overload]
        for mine, theirs in ((self.exp_avg, state["exp_avg"]), (self.exp_avg_sq, state["exp_avg_sq"])):
            for a, b in zip(mine, theirs, strict=True):  # type: ignore[call-overload]
                a.copy_(b)
        self.diverged.copy_(state["diverged"])  # type: ignore[arg-type]

