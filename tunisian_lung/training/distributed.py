"""Distributed data-parallel training through ``torchrun``: process group, ranks, gathering.

``torchrun --nproc_per_node=N -m tunisian_lung train ...`` (or any script calling
:func:`tunisian_lung.training.train`) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` reads them and starts the process
group with NCCL when the run uses CUDA and gloo on the CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from tunisian_lung.errors import TrainingError

__all__ = [
    "DistributedContext",
    "init_from_env",
    "current_context",
    "is_main_process",
    "barrier",
    "gather_objects",
    "all_reduce_sum",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """Rank and size of the current process group (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only process that writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as error:
        raise TrainingError(f"environment variable {name}={value!r} is not an integer") from error


def init_from_env(device_type: str) -> DistributedContext:
    """Start the default process group from torchrun's environment variables if present.

    Parameters
    ----------
    device_type
        ``"cuda"`` selects the NCCL backend and sets the CUDA device to ``LOCAL_RANK``;
        ``"cpu"`` selects gloo.

    Returns
    -------
    DistributedContext
        ``world_size == 1`` when ``WORLD_SIZE`` is unset or 1; an existing process group is
        reused.
    """
    if dist.is_available() and dist.is_initialized():
        return current_context()
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistributedContext()
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise TrainingError(
                f"WORLD_SIZE={world_size} but {name} is not set; launch with torchrun, which "
                "sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT"
            )
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    logger.info("process group started: rank %d of %d, backend %s", rank, world_size, backend)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def current_context() -> DistributedContext:
    """Return the rank and world size of the initialised process group, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistributedContext()
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=_env_int("LOCAL_RANK", 0),
    )


def is_main_process() -> bool:
    """True in a single-process run and on rank 0."""
    return current_context().is_main


def barrier() -> None:
    """Wait for every process; a no-op without a process group."""
    if current_context().enabled:
        dist.barrier()


def gather_objects(value: T) -> list[T]:
    """Collect one picklable object from every rank, in rank order, on every rank."""
    context = current_context()
    if not context.enabled:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a list of floats over every rank; returns the input unchanged without a group."""
    if not current_context().enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]
