"""Multi-process training for the training command: which process this is, and what ranks share.

``torchrun --nproc_per_node N -m diffstride.examples.train --framework torch ...`` starts N
processes with ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment;
:func:`from_env` reads them. The torch trainer then joins the process group (:func:`init_torch`:
``nccl`` on GPUs, one per local rank, ``gloo`` on CPU), wraps the model in
``DistributedDataParallel`` (which averages every gradient, the strides' included, over the
ranks), trains each rank on its shard of the training set (:func:`shard`), splits evaluation
over the ranks and sums the counts (:func:`all_sum`). Rank 0 alone prints and writes the
outputs; :func:`check_identical` fails the run if the ranks' final strides differ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SINGLE",
    "Context",
    "all_gather",
    "all_sum",
    "check_identical",
    "from_env",
    "init_torch",
    "restart_count",
    "shard",
    "shutdown",
]


@dataclass(frozen=True)
class Context:
    """This process's place in a multi-process run (``world_size == 1``: a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process prints and writes the outputs (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


SINGLE = Context()


def from_env(environ: dict[str, str] | None = None) -> Context:
    """The context ``torchrun`` describes in ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``
    (:data:`SINGLE` without them)."""
    env = os.environ if environ is None else environ
    world_size = int(env.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    rank = int(env["RANK"])
    context = Context(rank, world_size, int(env.get("LOCAL_RANK", rank)))
    if not 0 <= context.rank < world_size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE); received {context}")
    return context


def restart_count(environ: dict[str, str] | None = None) -> int:
    """How many times ``torchrun`` has restarted this job (``TORCHELASTIC_RESTART_COUNT``; 0
    on the first start and outside ``torchrun``): a restarted job resumes from its
    checkpoint."""
    env = os.environ if environ is None else environ
    return int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))


def shard(x: np.ndarray, y: np.ndarray, context: Context) -> tuple[np.ndarray, np.ndarray]:
    """This rank's share of ``(x, y)``: every ``world_size``-th example from ``rank`` on, cut so
    that every rank has as many (and so runs as many steps: ``DistributedDataParallel`` needs
    each rank to take part in every gradient all-reduce)."""
    if not context.active:
        return x, y
    count = len(y) // context.world_size
    if count == 0:
        raise ValueError(
            f"{len(y)} training images cannot be shared by {context.world_size} processes"
        )
    picked = np.arange(context.rank, count * context.world_size, context.world_size)
    return x[picked], y[picked]


def init_torch(context: Context) -> Any:
    """Join the process group (once) and return this rank's device: ``cuda:LOCAL_RANK`` with
    ``nccl`` where CUDA is available, else the CPU with ``gloo``."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{context.local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if cuda else "gloo", rank=context.rank, world_size=context.world_size
        )
    return device


def all_sum(values: list[float], context: Context) -> list[float]:
    """``values`` summed over the ranks (unchanged in a single process)."""
    if not context.active:
        return list(values)
    import torch
    import torch.distributed as dist

    device = None
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def all_gather(value: Any, context: Context) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order."""
    if not context.active:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def check_identical(strides: list[list[float]], context: Context) -> list[list[list[float]]]:
    """Every rank's strides, in rank order; raise on every rank if they differ (they must not:
    the gradients are averaged and the projection depends only on the input sizes)."""
    gathered = all_gather(strides, context)
    if any(other != gathered[0] for other in gathered[1:]):
        raise RuntimeError(f"the ranks ended with different strides: {gathered}")
    return gathered


def shutdown(context: Context) -> None:
    """Leave the process group, if this process joined one, together with the other ranks: a
    rank that tore gloo down while rank 0 was still writing its files aborted at exit."""
    if not context.active:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
