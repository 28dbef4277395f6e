# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Class weights from the training split, the balanced sampler, and config switches given as strings."""

from __future__ import annotations

import pytest
import torch

from scripts.engine import as_bool, optional_items
from scripts.imbalance import balanced_sampler, class_counts, inverse_frequency_weights, resolve_class_weights

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
    assert balanced_sampler(ITEMS, 2, enabled="false") is None
    sampler = balanced_sampler(ITEMS, 2, num_samples=4000)
    torch.manual_seed(0)
    labels = torch.tensor([ITEMS[i]["label"] for i in sampler])
    assert len(labels) == 4000 and float(labels.float().mean()) == pytest.approx(0.5, abs=0.03)
    assert len(balanced_sampler(ITEMS, 2)) == len(ITEMS)  # an epoch keeps the split's size


@pytest.mark.parametrize("value, expected", [(True, True), ("false", False), ("True", True), ("0", False), (1, True)])
def test_switches_accept_command_line_strings(value, expected):
    assert as_bool(value) is expected
    assert optional_items([1, 2], value) == ([1, 2] if expected else [])


def test_unclear_switch_is_an_error():
    with pytest.raises(ValueError, match="cal: .* not a true/false switch value"):
        as_bool("maybe", "cal")
