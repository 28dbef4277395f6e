# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Thresholded metrics at a decision threshold chosen on the validation split, for binary tasks.

The argmax rule thresholds the positive class's probability at 0.5, which favours the majority class of an
imbalanced task; a comparison of thresholded metrics (F1, balanced accuracy) at argmax then mixes how well a model
ranks the cases with where its probabilities happen to sit. The rule here, the same for every run of a comparison:

- the positive class is the second class (index 1, e.g. ``hyperplasia`` in AdrenalMNIST3D);
- on the validation predictions, the threshold ``t`` on its probability (a case is positive when ``p >= t``) is
  the one that maximises macro F1; the candidates are the midpoints between consecutive distinct validation
  probabilities and one below and one above them all; ties go to the candidate closest to 0.5 (the argmax rule);
- that threshold is applied, unchanged, to the test predictions, and the test accuracy, balanced accuracy and macro
  F1 are computed with :func:`scripts.reports.metrics.classification_metrics` (the definitions of the bundle's own report).

Multi-class tasks have no single threshold: :func:`validation_threshold_metrics` returns None for them and the
comparison reports argmax metrics only.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

__all__ = ["read_predictions", "metrics_at_threshold", "choose_threshold", "validation_threshold_metrics"]

# What a thresholded evaluation reports, from scripts.reports.metrics.classification_metrics.
THRESHOLDED = ("accuracy", "balanced_accuracy", "f1_macro")


def read_predictions(path: str | os.PathLike) -> tuple[list[list[float]], list[int], list[str]]:
    """
    Class probabilities (one list per case), true labels and class names from a ``predictions.csv`` written by
    :class:`scripts.run.handlers.ClassificationReport` (``label`` and ``prob_<class name>`` columns, in class order);
    rows of cases that failed (no probabilities) are left out.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = [c for c in reader.fieldnames or [] if c.startswith("prob_")]
        if "label" not in (reader.fieldnames or []) or not columns:
            raise ValueError(f"'{path}' has no 'label' and 'prob_<class>' columns: not a labelled evaluation's CSV.")
        probs, labels = [], []
        for row in reader:
            if row["label"] == "" or any(row[c] == "" for c in columns):
                continue
            probs.append([float(row[c]) for c in columns])
            labels.append(int(row["label"]))
    return probs, labels, [c[len("prob_") :] for c in columns]


def metrics_at_threshold(positive_probs: Sequence[float], labels: Sequence[int], threshold: float) -> dict:
    """Accuracy, balanced accuracy and macro F1 of a binary task when a case is positive iff ``p >= threshold``."""
    import torch

    from ..reports.metrics import classification_metrics

    preds = (torch.as_tensor(positive_probs, dtype=torch.float64) >= threshold).long()
    # one-hot "probabilities" whose argmax is the thresholded decision: the report's definitions, unchanged
    metrics = classification_metrics(
        torch.nn.functional.one_hot(preds, 2).float(), torch.as_tensor(labels, dtype=torch.long), ["0", "1"]
    )
    return {key: metrics[key] for key in THRESHOLDED}


def choose_threshold(positive_probs: Sequence[float], labels: Sequence[int]) -> float:
    """The threshold on the positive class's probability that maximises macro F1 (see the module's rule)."""
    values = sorted({float(p) for p in positive_probs})
    if not values:
        raise ValueError("no predictions to choose a threshold on.")
    candidates = [values[0] / 2] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [(values[-1] + 1) / 2]
    scored = [(metrics_at_threshold(positive_probs, labels, t)["f1_macro"] or 0.0, t) for t in candidates]
    best = max(score for score, _ in scored)
    return min((t for score, t in scored if score == best), key=lambda t: (abs(t - 0.5), t))


def validation_threshold_metrics(validation_csv: str | os.PathLike, test_csv: str | os.PathLike) -> dict | None:
    """
    The threshold chosen on ``validation_csv`` and the test metrics at it (keys ``threshold``, ``val_f1_macro``
    and :data:`THRESHOLDED` of the test split), or None for a task with more than two classes.
    """
    val_probs, val_labels, names = read_predictions(validation_csv)
    test_probs, test_labels, test_names = read_predictions(test_csv)
    if names != test_names:
        raise ValueError(f"class names differ between '{validation_csv}' ({names}) and '{test_csv}' ({test_names}).")
    if len(names) != 2:
        return None
    threshold = choose_threshold([p[1] for p in val_probs], val_labels)
    val_f1 = metrics_at_threshold([p[1] for p in val_probs], val_labels, threshold)["f1_macro"]
    return {
        "threshold": threshold,
        "val_f1_macro": val_f1,
        **metrics_at_threshold([p[1] for p in test_probs], test_labels, threshold),
    }
