"""K trials of one architecture and shape as one module: every parameter gains a leading member axis.

A built model is converted by swapping each parametrised submodule for a packed twin (Linear: batched
matmuls; Embedding: one table with per-member row offsets; RMSNorm: a per-member gain). The model's own
forward then runs unchanged on K*B rows, member-major (rows ``[k*B:(k+1)*B]`` are member k's): its
parameter-free parts (attention, rotary positions, pooling by index) already treat rows one by one, so
member k computes what its own model would, and its gradients reach only its own slices. The packed
matmuls are real batched kernels, not ``torch.func.vmap``, whose CPU attention backward falls back to
a loop over members.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aunet.models.aunet import AUNet
from aunet.models.layers import RMSNorm
from aunet.models.transformer import Transformer

#: Models whose forward was checked to treat rows independently (a pack's members must not mix) and to end
#: in ``self.head(...)``, an untied Linear (``PackedModel.hidden_states`` relies on it).
ROW_WISE = (Transformer, AUNet)


class PackedLinear(nn.Module):
    """K linears: weight [K, out, in], applied to member k's rows by one ``bmm``."""

    def __init__(self, members: Sequence[nn.Linear]):
        super().__init__()
        self.members = len(members)
        self.in_features, self.out_features = members[0].in_features, members[0].out_features
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in members]))
        has_bias = members[0].bias is not None
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in members])) if has_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(self.members, -1, self.in_features)
        if self.bias is None:
            out = torch.bmm(rows, self.weight.transpose(1, 2))
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), rows, self.weight.transpose(1, 2))
        return out.view(*x.shape[:-1], self.out_features)

    def member(self, k: int) -> nn.Linear:
        one = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            one.weight.copy_(self.weight[k])
            if self.bias is not None:
                one.bias.copy_(self.bias[k])
        return one


class PackedEmbedding(nn.Module):
    """K embedding tables [K, V, D], looked up as one [K*V, D] table with member k's ids offset by k*V."""

    def __init__(self, members: Sequence[nn.Embedding]):
        super().__init__()
        first = members[0]
        if first.padding_idx is not None or first.max_norm is not None or first.sparse:
            raise ValueError("cannot pack an Embedding with padding_idx, max_norm or sparse gradients")
        self.members = len(members)
        self.num_embeddings, self.embedding_dim = first.num_embeddings, first.embedding_dim
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in members]))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(self.members, device=ids.device) * self.num_embeddings
        ids = ids + offsets.repeat_interleave(ids.shape[0] // self.members).view(-1, *[1] * (ids.dim() - 1))
        return F.embedding(ids, self.weight.view(-1, self.embedding_dim))

    def member(self, k: int) -> nn.Embedding:
        one = nn.Embedding(self.num_embeddings, self.embedding_dim, device=self.weight.device,
                           dtype=self.weight.dtype)
        with torch.no_grad():
            one.weight.copy_(self.weight[k])
        return one


class PackedRMSNorm(nn.Module):
    """K RMSNorm gains [K, D]: normalise every row, then scale member k's rows by its gain."""

    def __init__(self, members: Sequence[RMSNorm]):
        super().__init__()
        self.members = len(members)
        self.eps = members[0].eps
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in members]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps)
        gain = self.weight.float().view(self.members, *[1] * (x.dim() - 1), -1)
        return (normed.view(self.members, -1, *x.shape[1:]) * gain).view(x.shape).type_as(x)

    def member(self, k: int) -> RMSNorm:
        one = RMSNorm(self.weight.shape[1], self.eps).to(self.weight.device, self.weight.dtype)
        with torch.no_grad():
            one.weight.copy_(self.weight[k])
        return one


#: The packed twin of each parametrised module type (exact types: a subclass may compute otherwise).
TWINS: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: PackedLinear, nn.Embedding: PackedEmbedding,
                                                 RMSNorm: PackedRMSNorm}


class PackedModel(nn.Module):
    """K members of one model, run together on K*B member-major rows (``members`` = K)."""

    def __init__(self, model: nn.Module, members: int):
        super().__init__()
        self.model = model
        self.members = members

    def forward(self, ids: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        if ids.shape[0] % self.members:
            raise ValueError(f"a pack of {self.members} members needs a multiple of {self.members} rows "
                             f"(member-major); got {ids.shape[0]}")
        return self.model(ids, levels)

    @contextlib.contextmanager
    def hidden_states(self) -> Iterator[PackedLinear]:
        """Within: the pack returns the vectors its head would read, and this yields the head; the loss
        then applies the head member by member, so no logits of the whole pack are ever held at once."""
        head = self.model.head
        self.model.head = nn.Identity()
        try:
            yield head
        finally:
            self.model.head = head


def _parametrised(model: nn.Module) -> list[str]:
    """Names of the submodules that hold parameters of their own (not through children)."""
    return [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]


def _check_packable(models: Sequence[nn.Module]) -> list[str]:
    """One clear line for a pack that cannot be made; else the names of the modules to twin."""
    if len(models) < 1:
        raise ValueError(f"pack size is {len(models)}; a pack needs at least 1 member")
    first = models[0]
    if type(first) not in ROW_WISE:
        raise ValueError(f"cannot pack {type(first).__name__}: packing supports "
                         f"{', '.join(t.__name__ for t in ROW_WISE)} (models checked to keep batch rows apart)")
    names = _parametrised(first)
    for name in names:
        module = first.get_submodule(name)
        if type(module) not in TWINS:
            held = [n for n, _ in module.named_parameters(recurse=False)]
            raise ValueError(f"cannot pack module '{name}' ({type(module).__name__}, parameters {held}): it has "
                             f"no packed twin (packable: {', '.join(t.__name__ for t in TWINS)})")
    reference = _signature(first)
    for k, model in enumerate(models[1:], start=1):
        if type(model) is not type(first):
            raise ValueError(f"cannot pack: member {k} is a {type(model).__name__}, member 0 a "
                             f"{type(first).__name__}; a pack holds one architecture and shape")
        signature = _signature(model)
        if signature != reference:
            key = next(key for key in sorted(set(reference) | set(signature))
                       if reference.get(key) != signature.get(key))
            raise ValueError(f"cannot pack: member {k} differs from member 0 in {key} ({signature.get(key)} vs "
                             f"{reference.get(key)}); a pack holds one architecture and shape")
    return names


def _signature(model: nn.Module) -> dict[str, object]:
    """What members of one pack must share: the model config (but its name) and every parameter's shape."""
    cfg = getattr(model, "cfg", None)
    fields = {k: v for k, v in cfg.to_dict().items() if k != "name"} if cfg is not None else {}
    return {**fields, **{f"parameter {n}": tuple(p.shape) for n, p in model.named_parameters()}}


def pack_models(models: Sequence[nn.Module]) -> PackedModel:
    """Stack K built models (each drawn with its own seed) into one packed module; member k starts as models[k]."""
    names = _check_packable(models)
    first = models[0]
    twins = {id(first.get_submodule(name)): TWINS[type(first.get_submodule(name))](
        [model.get_submodule(name) for model in models]) for name in names}
    return PackedModel(copy.deepcopy(first, memo=dict(twins)), len(models))


def unpack(packed: PackedModel, k: int) -> nn.Module:
    """Member k as a model of its own (copied weights): for its checkpoint, evaluation or generation."""
    if not 0 <= k < packed.members:
        raise ValueError(f"member {k} is not in a pack of {packed.members} (members 0 to {packed.members - 1})")
    memo = {id(module): module.member(k) for module in packed.model.modules() if type(module) in TWINS.values()}
    return copy.deepcopy(packed.model, memo=memo)
