# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The validation-chosen threshold on fixed predictions whose best threshold is known."""

from __future__ import annotations

import csv

import pytest

from scripts.tools.thresholds import choose_threshold, metrics_at_threshold, validation_threshold_metrics


def _write(path, probs, labels, names=("normal", "hyperplasia")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "image", "label", "label_name", "pred", "pred_name"] + [f"prob_{n}" for n in names])
        for i, (p, y) in enumerate(zip(probs, labels)):
            pred = max(range(len(p)), key=lambda k: p[k])
            writer.writerow([f"c{i}", f"c{i}.nii.gz", y, names[y], pred, names[pred]] + [f"{v:.6f}" for v in p])
    return path


def test_metrics_at_threshold_follow_the_report_definitions():
    # labels 0 0 1 1, positive probabilities 0.1 0.4 0.35 0.8; at 0.3: predictions 0 1 1 1
    metrics = metrics_at_threshold([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.3)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)  # class 0: P 1 R 1/2; class 1: P 2/3 R 1


def test_threshold_separates_the_validation_classes_and_prefers_the_one_nearest_argmax():
    # every positive above every negative: any threshold between 0.2 and 0.3 is perfect; the midpoint is chosen
    assert choose_threshold([0.05, 0.1, 0.2, 0.3, 0.45], [0, 0, 0, 1, 1]) == pytest.approx(0.25)
    # perfect at argmax already (between 0.4 and 0.6): the tie goes to the candidate nearest 0.5
    assert choose_threshold([0.1, 0.4, 0.6, 0.9], [0, 0, 1, 1]) == pytest.approx(0.5)
    # a single class: every threshold that predicts only that class is perfect
    assert choose_threshold([0.2, 0.3], [0, 0]) > 0.3


def test_validation_threshold_is_applied_to_the_test_split(tmp_path):
    val = _write(
        tmp_path / "val.csv", [[0.95, 0.05], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.55, 0.45]], [0, 0, 0, 1, 1]
    )
    test = _write(tmp_path / "test.csv", [[0.9, 0.1], [0.72, 0.28], [0.74, 0.26], [0.6, 0.4]], [0, 0, 1, 1])
    result = validation_threshold_metrics(val, test)
    assert result["threshold"] == pytest.approx(0.25) and result["val_f1_macro"] == pytest.approx(1.0)
    # test at 0.25: predictions 0 1 1 1 -> accuracy 3/4; argmax would have said 0 0 0 0
    assert result["accuracy"] == pytest.approx(0.75) and result["balanced_accuracy"] == pytest.approx(0.75)


def test_multiclass_gives_none_and_mismatched_files_an_error(tmp_path):
    names = ("a", "b", "c")
    three = _write(tmp_path / "three.csv", [[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]], [0, 1], names)
    assert validation_threshold_metrics(three, three) is None
    two = _write(tmp_path / "two.csv", [[0.5, 0.5]], [0])
    with pytest.raises(ValueError, match="class names differ"):
        validation_threshold_metrics(two, three)
    (tmp_path / "bad.csv").write_text("case,pred\nc0,1\n")
    with pytest.raises(ValueError, match="not a labelled"):
        validation_threshold_metrics(tmp_path / "bad.csv", two)
