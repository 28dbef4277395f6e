# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The run's setting-up: PyTorch's thread count and deterministic kernels, mixed precision, and the key metric that
selects the best model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from .errors import stop

__all__ = [
    "AMP_DTYPES",
    "split_metrics",
    "use_deterministic_algorithms",
    "set_num_threads",
    "amp_enabled",
    "autocast_kwargs",
]

AMP_DTYPES = ("bfloat16", "float16")

logger = logging.getLogger(__name__)


def split_metrics(metrics: Mapping[str, Any], key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Split named metrics into the key metric (the one that selects the best model) and the others, as
    ``(key_metric, additional_metrics)`` for MONAI's evaluators.
    """
    if key not in metrics:
        raise ValueError(f"key metric '{key}' is not one of the computed metrics {sorted(metrics)}.")
    return {key: metrics[key]}, {k: v for k, v in metrics.items() if k != key}


def use_deterministic_algorithms(enabled: bool) -> None:
    """
    With ``enabled`` (``--deterministic True``), make PyTorch use deterministic kernels only (an error where an
    operation has none) and set the cuBLAS workspace that deterministic CUDA matrix products need.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def set_num_threads(num_threads: int | str | None) -> int:
    """
    Pin PyTorch's intra-op thread count (``torch.set_num_threads``: the OpenMP, MKL and oneDNN threads that CPU
    kernels split their work across) to ``num_threads``, whatever ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` or the
    number of cores say. How a CPU kernel splits a sum between threads changes its rounding, so a pinned count lets
    one seed train the same weights on any machine. ``0`` or ``None`` leave PyTorch's default (the environment's
    setting, else one thread per core). Returns the thread count in effect.
    """
    text = str(num_threads).strip().lower()
    text = "0" if text in ("none", "null") else text
    if isinstance(num_threads, bool) or not text.isdigit():
        stop(
            f"--num_threads {num_threads!r}",
            "not a thread count",
            "use a whole number >= 1, or 0 for PyTorch's default",
        )
    if int(text) > 0:
        torch.set_num_threads(int(text))
    return torch.get_num_threads()


def amp_enabled(amp: bool, device: str | torch.device) -> bool:
    """
    Whether MONAI's engines should run with automatic mixed precision: ``amp`` on a CUDA ``device``. MONAI's
    engines autocast on CUDA only, so on other devices a requested ``amp`` is ignored with a warning.
    """
    if amp and torch.device(device).type != "cuda":
        logger.warning("amp (mixed precision) runs on CUDA devices only; training on %s in float32.", device)
        return False
    return amp


def autocast_kwargs(dtype: str = "bfloat16") -> dict[str, Any]:
    """``torch.autocast`` arguments for mixed precision in ``dtype``: ``"bfloat16"`` or ``"float16"``."""
    if dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {AMP_DTYPES}, got '{dtype}'.")
    return {"dtype": getattr(torch, dtype)}
