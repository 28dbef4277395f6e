# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Class weights from the training split and the training sampler (balanced or not, one process or distributed)."""

from __future__ import annotations

import pytest
import torch
from monai.data import DistributedSampler, DistributedWeightedRandomSampler

from scripts.data.imbalance import class_counts, inverse_frequency_weights, resolve_class_weights, training_sampler

ITEMS = [{"image": f"c{i}.nii.gz", "label": 0} for i in range(6)] + [{"image": "c6.nii.gz", "label": 1},
                                                                     {"image": "c7.nii.gz", "label": 1}]  # fmt: skip


def test_counts_and_inverse_frequency_weights():
    assert class_counts(ITEMS, 2) == [6, 2]
    assert inverse_frequency_weights([6, 2]) == pytest.approx([8 / 12, 8 / 4])
    assert inverse_frequency_weights([5, 5, 5]) == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="no training case"):
        inverse_frequency_weights([3, 0])


def test_resolve_class_weights_from_config_values():
    assert resolve_class_weights(None, ITEMS, 2) is None
    assert resolve_class_weights("auto", ITEMS, 2) == pytest.approx([2 / 3, 2.0])
    assert resolve_class_weights([1, 3], ITEMS, 2) == [1.0, 3.0]
    with pytest.raises(ValueError, match="one per class"):
        resolve_class_weights([1.0], ITEMS, 2)
    with pytest.raises(ValueError, match="'auto'"):
        resolve_class_weights("inverse", ITEMS, 2)
    with pytest.raises(ValueError, match="label 1, outside"):
        resolve_class_weights("auto", ITEMS, 1)


def test_balanced_sampler_draws_classes_equally():
    assert training_sampler(ITEMS, 2, balanced=False) is None  # the data loader shuffles
    sampler = training_sampler(ITEMS, 2, balanced=True, num_samples=4000)
    torch.manual_seed(0)
    labels = torch.tensor([ITEMS[i]["label"] for i in sampler])
    assert len(labels) == 4000 and float(labels.float().mean()) == pytest.approx(0.5, abs=0.03)
    assert len(training_sampler(ITEMS, 2, balanced=True)) == len(ITEMS)  # an epoch keeps the split's size


@pytest.mark.parametrize("balanced", [False, True])
def test_distributed_sampler_shares_the_cases_and_balances_classes(balanced):
    """
    Under multi_gpu_train.json: each of 2 processes (world size and rank given, no process group) gets a share of
    the split, drawn with the class-balancing weights when asked.
    """
    items = [{"label": 0}] * 60 + [{"label": 1}] * 20
    samplers = [
        training_sampler(items, 2, balanced=balanced, distributed=True, seed=3, num_replicas=2, rank=rank)
        for rank in (0, 1)
    ]
    kind = DistributedWeightedRandomSampler if balanced else DistributedSampler
    assert all(type(s) is kind for s in samplers) and [len(s) for s in samplers] == [40, 40]
    torch.manual_seed(0)
    labels = []
    for epoch in range(100):
        drawn = []
        for sampler in samplers:
            sampler.set_epoch(epoch)  # as MONAI's trainer does
            drawn.append(list(sampler))
        assert all(len(d) == 40 for d in drawn)
        if not balanced:  # a permutation of the split, split between the processes
            assert sorted(drawn[0] + drawn[1]) == list(range(len(items)))
        labels += [items[i]["label"] for d in drawn for i in d]
    share = float(torch.tensor(labels, dtype=torch.float).mean())  # of class 1, a quarter of the cases
    assert share == pytest.approx(0.5 if balanced else 0.25, abs=0.03)
