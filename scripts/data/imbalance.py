# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Options for small, imbalanced data sets: class weights of the loss computed from the training split, and the
training sampler, which can draw every class equally often, in one process or split across distributed processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import DistributedSampler, DistributedWeightedRandomSampler
from torch.utils.data import Sampler, WeightedRandomSampler

__all__ = [
    "class_counts",
    "inverse_frequency_weights",
    "resolve_class_weights",
    "balancing_weights",
    "training_sampler",
]


def _labels(items: Sequence[Mapping[str, Any]], num_classes: int) -> list[int]:
    labels = []
    for i, item in enumerate(items):
        label = int(torch.as_tensor(item["label"]).reshape(-1)[0])
        if not 0 <= label < num_classes:
            raise ValueError(
                f"training case {i} ({item.get('image', '?')}) has label {label}, outside [0, {num_classes}): "
                f"fix the datalist or set --num_classes."
            )
        labels.append(label)
    return labels


def class_counts(items: Sequence[Mapping[str, Any]], num_classes: int) -> list[int]:
    """Number of cases per class in datalist items ``[{"label": int, ...}, ...]``."""
    counts = [0] * num_classes
    for label in _labels(items, num_classes):
        counts[label] += 1
    return counts


def inverse_frequency_weights(counts: Sequence[int]) -> list[float]:
    """
    Per-class weights ``N / (num_classes * count)``: 1 for every class when the classes are balanced, and the
    weighted loss counts every class as much as the others. A class without cases is an error.
    """
    if any(c <= 0 for c in counts):
        raise ValueError(
            f"class counts {list(counts)}: a class has no training case, so inverse-frequency weights are "
            f"undefined; check --num_classes or give explicit --class_weights."
        )
    total = float(sum(counts))
    return [total / (len(counts) * c) for c in counts]


def resolve_class_weights(
    class_weights: str | Sequence[float] | None, items: Sequence[Mapping[str, Any]], num_classes: int
) -> list[float] | None:
    """
    The loss's class weights from a config value: ``None`` (unweighted), ``"auto"`` (inverse class frequency in
    the training ``items``, :func:`inverse_frequency_weights`) or explicit weights, one per class.
    """
    if class_weights is None:
        return None
    if isinstance(class_weights, str):
        if class_weights.lower() != "auto":
            raise ValueError(f"class_weights must be null, 'auto' or one weight per class, got '{class_weights}'.")
        return inverse_frequency_weights(class_counts(items, num_classes))
    weights = [float(w) for w in class_weights]
    if len(weights) != num_classes:
        raise ValueError(f"class_weights has {len(weights)} values for {num_classes} classes: give one per class.")
    return weights


def balancing_weights(items: Sequence[Mapping[str, Any]], num_classes: int) -> torch.Tensor:
    """Per-case sampling weights ``1 / count(class of the case)``: every class is drawn equally often."""
    labels = _labels(items, num_classes)
    counts = class_counts(items, num_classes)
    return torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.double)


def training_sampler(
    items: Sequence[Mapping[str, Any]],
    num_classes: int,
    balanced: bool = False,
    distributed: bool = False,
    seed: int = 0,
    num_samples: int | None = None,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> Sampler | None:
    """
    The sampler of the training data loader over the training ``items`` (in the data set's order):

    - one process: None (the data loader shuffles as usual), or with ``balanced`` a ``WeightedRandomSampler`` that
      draws every class equally often (with replacement, ``num_samples`` per epoch, the split's size by default);
    - ``distributed`` (``configs/multi_gpu_train.json``): MONAI's ``DistributedSampler``, each process a shuffled
      share of the cases, or with ``balanced`` its ``DistributedWeightedRandomSampler``, which draws from each
      process's share with the class-balancing weights of the whole split (as many cases as the share holds;
      ``num_samples`` applies to one process only): classes are balanced as far as each share holds them, so a
      split of a few cases per class per process comes out only roughly balanced.

    Both distributed samplers reshuffle every epoch from ``seed`` (MONAI's trainer sets the epoch); ``num_replicas``
    and ``rank`` default to the process group's.
    """
    if distributed:
        shared = {"shuffle": True, "seed": seed, "even_divisible": True, "num_replicas": num_replicas, "rank": rank}
        if not balanced:
            return DistributedSampler(items, **shared)
        return DistributedWeightedRandomSampler(items, balancing_weights(items, num_classes).tolist(), **shared)
    if not balanced:
        return None
    weights = balancing_weights(items, num_classes)
    return WeightedRandomSampler(weights, num_samples=num_samples or len(weights), replacement=True)
