# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Small glue between the configs and MONAI's engines, where a config expression alone would be unreadable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["split_metrics", "as_bool", "optional_items"]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def split_metrics(metrics: Mapping[str, Any], key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Split named metrics into the key metric (the one that selects the best model) and the others, as
    ``(key_metric, additional_metrics)`` for MONAI's evaluators.
    """
    if key not in metrics:
        raise ValueError(f"key metric '{key}' is not one of the computed metrics {sorted(metrics)}.")
    return {key: metrics[key]}, {k: v for k, v in metrics.items() if k != key}


def as_bool(value: Any, name: str = "value") -> bool:
    """
    A config switch as a bool. ``python -m monai.bundle run ... --cal false`` passes the string ``"false"`` (only
    ``False`` is parsed as a bool on the command line), which Python would take as true: ``true``/``false``,
    ``yes``/``no``, ``on``/``off`` and ``1``/``0`` are accepted in any case; anything else is an error.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def optional_items(items: Sequence[Any], enabled: Any) -> list[Any]:
    """``items`` as a list when ``enabled`` (see :func:`as_bool`), else an empty list: an optional config block."""
    return list(items) if as_bool(enabled, "enabled") else []
