# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

from __future__ import annotations

import math

import pytest
import torch

from scripts.cal_net import cal_output
from scripts.losses import CALLoss


def test_seed_weights_on_known_logits():
    # two classes, logits chosen so that each cross-entropy has a closed form
    logits = torch.tensor([[0.0, 0.0]])  # CE = log 2
    effect = torch.tensor([[math.log(3.0), 0.0]])  # p(class 0) = 3/4 -> CE = log 4/3
    loss = CALLoss()(cal_output(logits, effect=effect), torch.tensor([0]))
    assert float(loss) == pytest.approx(math.log(2.0) / 3 + math.log(4.0 / 3.0), rel=1e-6)


def test_weights_are_configurable():
    logits, effect, target = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1]])
    ce = torch.nn.functional.cross_entropy
    loss = CALLoss(factual_weight=0.5, effect_weight=2.0)(cal_output(logits, effect=effect), target)
    expected = 0.5 * ce(logits, torch.tensor([1])) + 2.0 * ce(effect, torch.tensor([1]))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_plain_cross_entropy_when_cal_is_off():
    logits, target = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    assert float(CALLoss()(cal_output(logits), target)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, target)), rel=1e-6
    )


def test_class_weights_and_label_smoothing():
    logits, target = torch.randn(5, 2), torch.tensor([0, 1, 1, 1, 0])
    weight = torch.tensor([3.0, 1.0])
    expected = torch.nn.functional.cross_entropy(logits, target, weight=weight, label_smoothing=0.1)
    got = CALLoss(class_weights=[3.0, 1.0], label_smoothing=0.1)(cal_output(logits), target)
    assert float(got) == pytest.approx(float(expected), rel=1e-6)


def test_only_the_cal_output_is_read():
    """A bare tensor or a dict without the fixed fields is refused with what to do, not guessed at."""
    logits, target = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="cal_output"):
        CALLoss()(logits, target)
    with pytest.raises(TypeError, match="effect"):
        CALLoss()({"logits": logits, "effect": logits}, target)


def test_centre_loss_without_features_is_refused_not_skipped():
    """With the centre loss on, a network that returns no feature matrix is an error naming the fix."""
    logits, target = torch.randn(2, 3), torch.tensor([0, 1])
    loss = CALLoss(center_weight=1.0, num_classes=3)
    with pytest.raises(ValueError, match="return_features=True"):
        loss(cal_output(logits, effect=logits), target)
    features = torch.randn(2, 4)
    with_centre = loss(cal_output(logits, effect=logits, features=features), target)
    assert float(with_centre) > float(CALLoss()(cal_output(logits, effect=logits), target))
