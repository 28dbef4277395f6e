# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Classification metrics of a whole evaluation, overall and per class, from MONAI's metric functions, and the
numbers behind the pictures (:mod:`scripts.reports.plots` draws them): one-vs-rest ROC points and the confusion matrix;
and the validation AUC over the classes present (:class:`PresentClassesROCAUC`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.handlers import ROCAUC
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.metrics import ROCAUCMetric, compute_confusion_matrix_metric, compute_roc_auc, get_confusion_matrix
from monai.networks.utils import one_hot
from monai.utils import Average

__all__ = [
    "roc_curve",
    "roc_curves",
    "confusion_matrix",
    "classification_metrics",
    "PresentClassesROCAUCMetric",
    "PresentClassesROCAUC",
]

logger = logging.getLogger(__name__)


def _clean(value: float) -> float | None:
    """A float for JSON: NaN (a metric undefined for the data, e.g. AUC of a class with no case) becomes None."""
    value = float(value)
    return None if math.isnan(value) else value


def roc_curve(scores: np.ndarray | torch.Tensor, positives: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """
    ROC points of ``scores`` (N,) for binary ``positives`` (N,): false and true positive rates (K,) at every
    distinct threshold, from (0, 0) to (1, 1); ties share one point (the trapezoid area is then MONAI's AUC).
    """
    scores = np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=np.float64).reshape(-1)
    positives = np.asarray(torch.as_tensor(positives).detach().cpu(), dtype=bool).reshape(-1)
    order = np.argsort(-scores, kind="mergesort")
    scores, positives = scores[order], positives[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last index of each distinct threshold
    tp, fp = np.cumsum(positives)[last], np.cumsum(~positives)[last]
    tpr = np.r_[0.0, tp / max(positives.sum(), 1)]
    fpr = np.r_[0.0, fp / max((~positives).sum(), 1)]
    return fpr, tpr


def roc_curves(probs: torch.Tensor, labels: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """
    One-vs-rest :func:`roc_curve` per class of ``probs`` (N, C) against true class indices ``labels`` (N,); None for
    a class without a positive or without a negative case (no curve).
    """
    probs = torch.as_tensor(probs).detach().float().cpu()
    labels = torch.as_tensor(labels).detach().reshape(-1).long().cpu()
    curves: list[tuple[np.ndarray, np.ndarray] | None] = []
    for c in range(probs.shape[1]):
        positives = labels == c
        curves.append(None if positives.all() or not positives.any() else roc_curve(probs[:, c], positives))
    return curves


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts (num_classes, num_classes) of class indices ``labels`` and ``preds`` (N,): row true, column predicted."""
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    preds = torch.as_tensor(preds).reshape(-1).long().cpu()
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    matrix.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    return matrix


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict:
    """
    Accuracy, balanced accuracy, macro F1 and macro one-vs-rest ROC AUC, per-class precision, recall, F1, AUC
    and support, and the confusion matrix (rows: true class, columns: predicted class).

    Args:
        probs: class probabilities (N, C).
        labels: true class indices (N,).
        class_names: C names, the keys of the per-class results.
    """
    probs = probs.detach().float().cpu()
    labels = labels.detach().reshape(-1).long().cpu()
    num_classes = probs.shape[1]
    preds = probs.argmax(dim=1)
    y = one_hot(labels[:, None], num_classes, dim=1)
    y_hat = one_hot(preds[:, None], num_classes, dim=1)
    counts = get_confusion_matrix(y_hat, y).sum(dim=0)  # (C, 4): tp, fp, tn, fn per class
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes without a positive or negative case give NaN, reported as null
        precision = compute_confusion_matrix_metric("precision", counts)
        recall = compute_confusion_matrix_metric("sensitivity", counts)
        f1 = compute_confusion_matrix_metric("f1 score", counts)
        auc = torch.as_tensor(compute_roc_auc(probs, y, average="none"), dtype=torch.float)
    matrix = confusion_matrix(labels, preds, num_classes)
    support = matrix.sum(dim=1)
    present = support > 0
    return {
        "num_cases": int(labels.numel()),
        "accuracy": _clean((preds == labels).float().mean()),
        "balanced_accuracy": _clean(recall[present].mean()),
        "f1_macro": _clean(torch.nan_to_num(f1, nan=0.0)[present].mean()),
        "auc_macro": _clean(auc[present & ~auc.isnan()].mean()),
        "per_class": {
            name: {
                "precision": _clean(precision[i]),
                "recall": _clean(recall[i]),
                "f1": _clean(f1[i]),
                "auc": _clean(auc[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }


class PresentClassesROCAUCMetric(ROCAUCMetric):
    """
    MONAI's ROC AUC, whose macro average is taken over the classes present in the data (at least one case) rather
    than over all ``num_classes``: MONAI's is NaN as soon as one class has no case (its one-vs-rest AUC is
    undefined), which would stop the best-model selection for good. The absent classes are logged as a warning
    (once per set). Other averages are MONAI's.
    """

    def __init__(self, average: Average | str = Average.MACRO) -> None:
        super().__init__(average=average)
        self._warned: set[tuple[int, ...]] = set()

    def aggregate(self, average: Average | str | None = None):  # type: ignore[override]
        average = Average(average or self.average)
        y_pred, y = self.get_buffer()
        if average != Average.MACRO or not isinstance(y, torch.Tensor) or y.ndim != 2 or y.shape[1] < 2:
            return super().aggregate(average)
        positives = y.sum(dim=0)
        absent = tuple(int(i) for i in torch.nonzero(positives == 0).flatten())
        present = (positives > 0) & (positives < y.shape[0])  # a case of the class and one of another
        if absent and absent not in self._warned:
            self._warned.add(absent)
            kept = [int(i) for i in torch.nonzero(present).flatten()]
            logger.warning(
                f"ROC AUC: class(es) {list(absent)} have no case among the {y.shape[0]} evaluated; the macro AUC is "
                f"the mean over the classes present {kept}. Fix: give every class cases in the validation split."
            )
        if not bool(present.any()):
            return float("nan")  # a single class: no AUC is defined
        return float(compute_roc_auc(y_pred[:, present], y[:, present], average=Average.MACRO))


class PresentClassesROCAUC(ROCAUC):
    """MONAI's ``ROCAUC`` handler computing :class:`PresentClassesROCAUCMetric`: the macro AUC over present classes."""

    def __init__(self, average: Average | str = Average.MACRO, output_transform: Callable = lambda x: x) -> None:
        IgniteMetricHandler.__init__(
            self,
            metric_fn=PresentClassesROCAUCMetric(average=Average(average)),
            output_transform=output_transform,
            save_details=False,
        )
