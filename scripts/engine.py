# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Small glue between the configs and MONAI's engines, where a config expression alone would be unreadable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["split_metrics", "as_bool", "use_deterministic_algorithms"]


def split_metrics(metrics: Mapping[str, Any], key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Split named metrics into the key metric (the one that selects the best model) and the others, as
    ``(key_metric, additional_metrics)`` for MONAI's evaluators.
    """
    if key not in metrics:
        raise ValueError(f"key metric '{key}' is not one of the computed metrics {sorted(metrics)}.")
    return {key: metrics[key]}, {k: v for k, v in metrics.items() if k != key}


def as_bool(value: Any) -> bool:
    """
    A config switch as a bool. ``python -m monai.bundle run ... --use_tabular false`` passes the string
    ``"false"`` (the command line parser only turns ``False`` into a bool), which Python would take as true.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", "none", "null", ""):
            return False
        raise ValueError(f"'{value}' is not a true/false switch value; use true or false.")
    return bool(value)


def use_deterministic_algorithms(enabled: bool | str) -> None:
    """
    With ``enabled`` (``--deterministic true``), make PyTorch use deterministic kernels only (an error where an
    operation has none) and set the cuBLAS workspace that deterministic CUDA matrix products need.
    """
    if as_bool(enabled):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
