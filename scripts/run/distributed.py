# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Distributed data-parallel training under ``torchrun``: joining and leaving the process group, the process's rank
and device. ``configs/multi_gpu_train.json`` calls these; every process runs the same bundle workflow.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import ignite.distributed as idist
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "TORCHRUN_ENV",
    "default_backend",
    "local_device",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "destroy_process_group",
    "quiet_other_ranks",
    "report_rank",
    "prepare_network",
    "unwrap_network",
]

# what torchrun (and any launcher using the ``env://`` rendezvous) sets for every process
TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

logger = logging.getLogger(__name__)


def default_backend() -> str:
    """``"nccl"`` when CUDA GPUs (and NCCL) are available, ``"gloo"`` (CPU) otherwise."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def local_device() -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def get_rank() -> int:
    """``ignite.distributed.get_rank()`` once the process group exists, before that ``RANK`` (0 if unset)."""
    return idist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    """``ignite.distributed.get_world_size()`` once the process group exists, before that ``WORLD_SIZE`` (1 if unset)."""
    return (
        idist.get_world_size()
        if dist.is_available() and dist.is_initialized()
        else int(os.environ.get("WORLD_SIZE", "1"))
    )


def init_process_group(backend: str | None = None, timeout_s: float = 1800.0) -> None:
    """
    Join the process group that ``torchrun`` describes in the environment (``env://`` rendezvous) and, on GPUs,
    make ``cuda:<LOCAL_RANK>`` this process's current device; a group that already exists is kept.

    Ignite (under MONAI's engines and metrics) is told about the new group here, on every process: ignite sets
    up its own view of the group lazily with a collective call, which would deadlock if only the process that
    writes checkpoints made it.

    Args:
        backend: ``"nccl"`` (GPUs), ``"gloo"`` (CPU), or None for :func:`default_backend`.
        timeout_s: how long a collective waits for the other processes before failing, in seconds.
    """
    if not dist.is_initialized():
        _init_from_environment(backend, timeout_s)
    idist.sync()


def _init_from_environment(backend: str | None, timeout_s: float) -> None:
    missing = [key for key in TORCHRUN_ENV if key not in os.environ]
    if missing:
        raise RuntimeError(
            f"configs/multi_gpu_train.json runs one process per device under torchrun, but the environment lacks "
            f"{missing}. Launch it with `torchrun --nproc_per_node=<N> -m monai.bundle run --config_file "
            "\"['configs/train.json','configs/multi_gpu_train.json']\"`, or train in one process with "
            "configs/train.json alone."
        )
    backend = backend or default_backend()
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("the nccl backend needs CUDA GPUs; on CPUs use `--dist_backend gloo` (the default there).")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))


def destroy_process_group() -> None:
    """Leave the process group (after a barrier, so that no process exits while another still communicates)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        idist.sync()


def quiet_other_ranks(level: int = logging.WARNING) -> None:
    """
    On every process but rank 0, drop log messages below ``level`` (warnings and errors still show), so that the
    console carries one copy of the training progress.
    """
    if get_rank() > 0:
        logging.disable(level - 1)


def report_rank(engine: Any) -> str:
    """
    Print (and return) one line per process after training: its rank, iterations and the cases its sampler gave
    it per epoch, so that a user sees every process took part.
    """
    state = engine.state
    sampler = getattr(getattr(engine, "data_loader", None), "sampler", None)
    cases = len(sampler) if sampler is not None and hasattr(sampler, "__len__") else "?"
    line = (
        f"rank {get_rank()} of {get_world_size()}: trained {state.iteration} iterations over {state.epoch} epochs, "
        f"{cases} training cases per epoch"
    )
    print(line, flush=True)
    return line


def prepare_network(
    network: nn.Module,
    device: str | torch.device,
    channels_last: bool = False,
    distributed: bool = False,
    sync_batchnorm: bool = False,
    ddp_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """
    The training network: ``network`` on ``device``, optionally in channels-last (NDHWC) memory format, and, when
    ``distributed``, wrapped in ``DistributedDataParallel`` (the process group must exist).

    Args:
        network: the model, e.g. :class:`scripts.cal_net.CALNet`.
        device: where it trains.
        channels_last: store the convolution weights as ``torch.channels_last_3d``; convolutions then run in that
            layout, which suits oneDNN on CPUs and tensor cores on GPUs. The state dict keeps its keys and values.
        distributed: wrap in ``torch.nn.parallel.DistributedDataParallel``.
        sync_batchnorm: with ``distributed`` on CUDA, BatchNorm statistics over the whole distributed batch
            (``torch.nn.SyncBatchNorm``); on CPUs it is not supported by PyTorch and is ignored with a warning.
        ddp_kwargs: further arguments of ``DistributedDataParallel``.
    """
    device = torch.device(device)
    if distributed and sync_batchnorm:
        if device.type == "cuda":
            network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
        else:
            logger.warning("sync_batchnorm needs CUDA devices; it is ignored on %s.", device)
    network = network.to(device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
    if distributed:
        device_ids = [device] if device.type == "cuda" else None
        network = nn.parallel.DistributedDataParallel(network, device_ids=device_ids, **(ddp_kwargs or {}))
    return network


def unwrap_network(network: nn.Module) -> nn.Module:
    """
    The model inside its training wrappers: ``DistributedDataParallel`` (or ``DataParallel``), see
    :func:`prepare_network`, and ``torch.compile`` (MONAI's trainer with ``compile``), in any nesting; a network
    without wrappers is returned as it is. For calls of the model's own methods (``forward_attention``) and
    attributes, and for an evaluator that must not run the distributed wrapper's collectives.
    """
    while True:
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            network = network._orig_mod
        else:
            return network
