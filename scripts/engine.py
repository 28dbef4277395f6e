# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Small glue between the configs and MONAI's engines, where a config expression alone would be unreadable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["split_metrics", "as_bool"]


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
