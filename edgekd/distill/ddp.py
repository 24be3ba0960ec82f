"""Data-parallel training when started by ``torchrun --nproc-per-node N`` (no home-made launcher).

torchrun sets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT; the trainer then joins the process group (gloo
on CPU, nccl on CUDA), every rank draws the same batch order and trains on its slice of each batch,
DistributedDataParallel averages the gradients of the student and the loss parts (projectors) and
broadcasts BN buffers from rank 0, so all ranks keep identical weights; only rank 0 writes checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import ConfigError, ModelError
from edgekd.torchrun import env_world


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    created: bool = False  # this call started the process group, and ends it

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> tuple[int, int]:
    """(processes, this one's rank) of the data-parallel run this process belongs to, before training joins it:
    the running process group's, else torchrun's environment; (1, 0) alone. A RANK without a WORLD_SIZE above
    one is no run of several, and is ignored as ``join`` ignores it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return env_world()


def join(student: nn.Module) -> World:
    """The current process group, or a new one when torchrun's environment asks for more than one process."""
    import torch.distributed as dist

    size, rank = launched()
    if size <= 1 or (dist.is_available() and dist.is_initialized()):  # alone, or in a group the caller runs
        return World(rank, size)
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={size} but this torch build has no torch.distributed",
                          "run a single process, or install a torch build with distributed support")
    _check_env(size)
    cuda = any(p.is_cuda for p in student.parameters())
    dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), created=True)


def _check_env(size: int) -> None:
    missing = [name for name in ("RANK", "MASTER_ADDR") if name not in os.environ]
    if missing:  # named as they are: with RANK set, "without RANK/MASTER_ADDR" sent the user after the wrong one
        raise ConfigError(f"WORLD_SIZE={size} is set without {' and '.join(missing)}",
                          "start distributed training with torchrun --nproc-per-node N (it sets them all), or "
                          "unset WORLD_SIZE to train in one process")


def check_launch(batch_size: int) -> None:
    """What joining the run of several processes would refuse once the data and teacher had loaded (minutes,
    on a user's data), refused before: an environment torchrun did not set whole, a batch smaller than the
    processes that split it."""
    import torch.distributed as dist

    size, _ = launched()
    if size <= 1:
        return
    if not (dist.is_available() and dist.is_initialized()):
        _check_env(size)
    check_batch(batch_size, size)


def check_batch(batch_size: int, processes: int) -> None:
    """Each process trains its slice of every batch: a batch smaller than the processes leaves one none."""
    if processes > batch_size:
        raise ConfigError(f"batch size {batch_size} is smaller than the {processes} training processes",
                          f"use a batch size of at least {processes}")


def leave(world: World) -> None:
    import torch.distributed as dist

    if world.created and dist.is_initialized():
        dist.destroy_process_group()


class _Step(nn.Module):
    """Student and loss parts as one module whose forward returns the training loss, so that
    DistributedDataParallel sees (and synchronises) every trained parameter."""

    def __init__(self, student: nn.Module, parts: nn.Module, loss: Callable[[Any, Any], torch.Tensor]) -> None:
        super().__init__()
        self.student = student
        self.parts = parts
        self._loss = loss

    def forward(self, index: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return self._loss(index, xb)


def wrap(world: World, student: nn.Module, parts: nn.Module,
         loss: Callable[[Any, Any], torch.Tensor]) -> Callable[[Any, Any], torch.Tensor]:
    """``loss`` itself for one process; a DistributedDataParallel module computing it otherwise."""
    if world.size == 1:
        return loss
    return nn.parallel.DistributedDataParallel(_Step(student, parts, loss))


def sync_buffers(world: World, *modules: nn.Module) -> None:
    """Average the BN running statistics over the ranks (each rank's last batches updated its own copy)
    so that validation, best weights and checkpoints agree on every rank; other buffers come from rank 0."""
    if world.size == 1:
        return
    import torch.distributed as dist

    for module in modules:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= world.size
            else:
                dist.broadcast(buffer, src=0)


def shard(idx: Any, world: World) -> Any:
    """This rank's slice of one batch's indices."""
    return idx if world.size == 1 else idx[world.rank::world.size]


def global_mean(value: torch.Tensor, world: World) -> torch.Tensor:
    """The loss averaged over the ranks (NaN on every rank when it is NaN on one)."""
    if world.size == 1:
        return value.detach()
    import torch.distributed as dist

    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world.size


# What gloo and nccl say when the process at the other end of a collective is gone (killed for memory, its node
# lost): torch raises them as DistBackendError, or, from DDP's backward, as a plain RuntimeError.
_PEER_FAILURES = ("connection reset", "connection closed", "broken pipe", "timed out")
_LOST_PEER = (*_PEER_FAILURES, "gloo", "nccl")


@contextmanager
def lost_process(world: World, checkpoint: Path | None, finished: Callable[[], int]) -> Iterator[None]:
    """Turn a collective that failed because another training process stopped into one line naming it and the
    checkpoint to resume from (``finished()``: the epochs done): rank 0 printed a raw ~50-line traceback through
    the loop, and never said the checkpoint was there. Any other error passes through as it came."""
    try:
        yield
    except RuntimeError as exc:
        if world.size == 1 or not collective_failed(exc):
            raise
        raise ModelError(f"another of the {world.size} training processes stopped ({_reason(exc)}), and this one "
                         f"(rank {world.rank}) cannot train on without it", _resume_fix(checkpoint, finished())
                         ) from None


def collective_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective (all-reduce, broadcast, DDP's gradient sync) that failed for want of a peer."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(mark in text for mark in _LOST_PEER)


def _reason(exc: BaseException) -> str:
    """The peer failure ``exc`` names, else its type."""
    text = str(exc).lower()
    return next((mark for mark in _PEER_FAILURES if mark in text), type(exc).__name__)


def _resume_fix(checkpoint: Path | None, finished: int) -> str:
    if checkpoint is not None and finished and checkpoint.is_file():
        return (f"{checkpoint} holds the last finished epoch ({finished}); find why the process stopped (killed "
                "for memory?) and run the same command with --resume, in place of any --force, to continue")
    return "find why the process stopped (killed for memory?) and run the same command again"
