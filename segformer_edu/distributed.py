"""Training on several processes (torchrun, DistributedDataParallel): the process's rank and
device, one decision for all ranks, and one set of BatchNorm statistics to evaluate."""

import os

import torch
import torch.distributed as dist
from torch import nn


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device): from torchrun's environment variables, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def any_rank(flags: list[bool], device: torch.device, world: int) -> list[bool]:
    """Each flag true on every rank if it is true on one: all ranks must stop (or save) together.
    One all-reduce for all the flags."""
    if world == 1:
        return list(flags)
    values = torch.tensor([float(flag) for flag in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(value) for value in values.tolist()]


def broadcast_bn_buffers(model: nn.Module, world: int) -> None:
    """Rank 0's BatchNorm running statistics to every rank, as mmcv's evaluation hook
    (broadcast_bn_buffer=True).

    Without SyncBatchNorm (on CPUs) each rank updates its own statistics in its last forward, so the
    ranks would evaluate slightly different models; after this they all evaluate the weights rank 0
    saves.
    """
    if world == 1:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked):
                dist.broadcast(buffer, src=0)
