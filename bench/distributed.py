"""Multi-process data-parallel runs under torchrun: the process group, who this rank is, and who writes.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; when all of them are present the
process group is initialised (NCCL on CUDA, gloo on CPU). Without them nothing is initialised and every
helper answers as a single process does, so a plain ``bench run`` behaves exactly as before.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in _ENV)


def init_from_env(device: str = "auto") -> bool:
    """Initialise the process group from torchrun's environment (idempotent); True when distributed. The
    backend follows the requested ``--device`` (NCCL for CUDA, gloo for the CPU), not merely whether the
    machine has a GPU: ``--device cpu`` on a GPU machine trains on the CPU with gloo."""
    if not launched_by_torchrun() or not dist.is_available():
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        if cuda and per_node > torch.cuda.device_count():
            from tvr_bench.bench.errors import ConfigError

            raise ConfigError(f"torchrun starts {per_node} processes on this node but it has "
                              f"{torch.cuda.device_count()} GPU(s): one GPU per process (NCCL); use "
                              "--nproc_per_node <= the GPUs, or --device cpu (gloo)")
        if cuda:  # before init: NCCL binds each rank's communicator to its own GPU
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if active() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_from_main(obj):
    """Rank 0's ``obj`` on every rank (the others' argument is ignored)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_grads_mean(params) -> None:
    """Average every parameter's gradient over the ranks. A parameter no rank reached keeps ``grad=None`` (the
    optimizer skips it, as in a single process); one reached on some rank only counts as zeros elsewhere."""
    if not active():
        return
    params = list(params)
    world = dist.get_world_size()
    dev = params[0].device if params else torch.device("cpu")
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=dev)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    for p, h in zip(params, has.tolist()):
        if not h:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(world)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def speaks() -> bool:
    """Whether this process prints errors: one process, or rank 0 of a torchrun launch (read from the
    environment, so it still answers after the process group is torn down)."""
    return os.environ.get("RANK", "0") == "0"


def check_global_batch(batch: int, key: str) -> None:
    """Refuse, before any data is read, a global batch the number of processes does not divide."""
    from tvr_bench.bench.errors import ConfigError

    world = world_size()
    if batch % world:
        raise ConfigError(f"{key}={batch} is the global batch and must be divisible by the number of processes "
                          f"({world})")
