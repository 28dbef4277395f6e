# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

from __future__ import annotations

import pytest
import torch

from scripts.reports.metrics import classification_metrics


def test_metrics_on_a_hand_counted_example():
    # true:      0 0 0 1 1 2
    # predicted: 0 0 1 1 2 2
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    probs = torch.tensor(
        [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.7, 0.2], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6]]
    )
    m = classification_metrics(probs, labels, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recalls 2/3, 1/2, 1 ; precisions 1, 1/2, 1/2
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    f1 = [2 * p * r / (p + r) for p, r in ((1, 2 / 3), (1 / 2, 1 / 2), (1 / 2, 1))]
    assert m["f1_macro"] == pytest.approx(sum(f1) / 3, rel=1e-5)
    assert m["per_class"]["a"]["precision"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["support"] == 1
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # class "a" one-vs-rest: positives score 0.8, 0.6, 0.3 vs negatives 0.1, 0.1, 0.2 -> AUC 1
    assert m["per_class"]["a"]["auc"] == pytest.approx(1.0)
    assert 0.5 < m["auc_macro"] <= 1.0


def test_absent_class_is_reported_as_null_not_averaged():
    labels = torch.tensor([0, 1, 0, 1])
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.3, 0.6, 0.1]])
    m = classification_metrics(probs, labels, ["a", "b", "c"])
    assert m["accuracy"] == 1.0 and m["f1_macro"] == pytest.approx(1.0) and m["auc_macro"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["auc"] is None and m["per_class"]["c"]["support"] == 0
