# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""ROC curves, confusion matrix and montage pictures: the numbers behind them and the PNG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc

from scripts.reports.metrics import classification_metrics, confusion_matrix, roc_curve
from scripts.reports.plots import SaliencyPanel, save_classification_plots, save_confusion_matrix, save_montage

PNG = b"\x89PNG\r\n\x1a\n"


def area(scores, positives) -> float:
    fpr, tpr = roc_curve(scores, positives)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def test_roc_curve_known_answers():
    fpr, tpr = roc_curve(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0]))
    assert area([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0 and fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
    assert area(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0])) == 0.0
    assert area(np.full(4, 0.5), np.array([1, 0, 1, 0])) == pytest.approx(0.5)  # ties share one point
    rng = np.random.default_rng(0)
    scores, positives = rng.random(50).round(1), rng.random(50) > 0.6
    expected = compute_roc_auc(torch.tensor(scores), torch.tensor(positives, dtype=torch.float))
    assert area(scores, positives) == pytest.approx(expected)  # the curve drawn encloses the AUC reported


def test_confusion_matrix_counts():
    counts = confusion_matrix(torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2]), 3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_classification_plots_write_png(tmp_path):
    probs = torch.softmax(torch.randn(12, 3), dim=1)
    labels = torch.tensor([0, 1, 2] * 4)
    metrics = classification_metrics(probs, labels, ["a", "b", "c"])
    paths = save_classification_plots(probs, labels, metrics, tmp_path / "out")
    assert [p.name for p in paths] == ["roc.png", "confusion_matrix.png"]
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    # a class missing from the labels still gives a picture
    one = torch.zeros(12, dtype=torch.long)
    save_classification_plots(probs, one, classification_metrics(probs, one, ["a", "b", "c"]), tmp_path / "one")
    assert save_confusion_matrix(metrics, tmp_path / "cm.png").read_bytes()[:8] == PNG


def test_montage_writes_png(tmp_path):
    image = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    saliency, mask = np.zeros_like(image), np.zeros((8, 8, 8), dtype=np.uint8)
    saliency[2, 3, 4], mask[1:4, 2:5, 3:6] = 1.0, 1
    empty = np.zeros_like(image)  # a constant map: sliced through the centre
    rows = [("case 1", [SaliencyPanel("CAL", image, saliency, mask), SaliencyPanel("baseline", image, empty)])]
    assert save_montage(rows * 2, tmp_path / "m.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError):
        save_montage([], tmp_path / "none.png")
