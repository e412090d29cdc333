"""Data parallelism, kept apart from the models (torchtitan's rule).

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; one process per device. gloo on
the CPU, NCCL on GPUs. ``wrap`` applies DDP, or FSDP2 (``fully_shard``, per block
then the whole model) for models that need sharding; the model code is unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
    return device


def init_distributed(requested_device: str = "auto") -> DistEnv:
    """Join the process group when launched by torchrun (or submitit's exported env)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank, world_size, local_rank, device)


def wrap(model: nn.Module, env: DistEnv, strategy: str) -> nn.Module:
    """``strategy``: "ddp" or "fsdp" (ignored on one process)."""
    if not env.distributed:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        layers = unwrap(model).cfg.spec.sharded_layers()  # models know nothing of FSDP: their spec names them
        for module in model.modules():  # each layer its own shard unit
            if isinstance(module, layers):
                fully_shard(module)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and not hasattr(model, "cfg") else model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A plain, unsharded state dict on every rank (FSDP2 gathers its shards)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if dist.is_initialized():
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if dist.is_initialized():
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
    else:
        unwrap(model).load_state_dict(state)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(values)
    return values


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
