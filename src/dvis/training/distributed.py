"""torch.distributed set-up for ``torchrun`` (one process per GPU, or several CPU processes).

``torchrun --nproc_per_node=N [--nnodes=M --node_rank=R --master_addr=HOST] -m dvis.cli train ...``
sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` then joins the process group
(NCCL on CUDA, gloo on CPU) and picks ``cuda:LOCAL_RANK``. Without those variables the run is a
single process and nothing is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _parse_device(requested: str) -> torch.device | None:
    """"auto" -> None; "cpu", "cuda", "cuda:N" -> that device; anything else: ConfigError."""
    from dvis.errors import ConfigError

    if requested == "auto":
        return None
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {requested!r}")
    return device


def _device(local_rank: int, requested: str, world_size: int = 1) -> torch.device:
    """The device of this process: ``cuda:N`` as asked in a single process; under torchrun
    (``world_size`` > 1) ``cuda`` / ``auto`` mean ``cuda:LOCAL_RANK``."""
    from dvis.errors import ConfigError

    device = _parse_device(requested)
    if (device is not None and device.type == "cpu") or (device is None and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} requested but CUDA is not available")
    index = local_rank
    if device is not None and device.index is not None:
        if world_size > 1:
            raise ConfigError(f"device {requested!r}: under torchrun each rank uses cuda:LOCAL_RANK; "
                              "pass --device cuda")
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        index = device.index
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def setup(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = _device(local_rank, device, world_size)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, target)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over processes (returns the input unchanged in a single process)."""
    if not is_distributed():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def gather_objects(obj) -> list:
    """Every process's ``obj`` (picklable), in rank order."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
