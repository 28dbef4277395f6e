# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Pictures written as PNG files with matplotlib's Agg canvas (no display, no pyplot state): one-vs-rest ROC curves,
the confusion matrix, and montages of saliency maps over three orthogonal slices. The numbers are computed by
:mod:`scripts.reports.metrics` (:func:`~scripts.reports.metrics.classification_metrics`,
:func:`~scripts.reports.metrics.roc_curves`); this module only draws them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .metrics import roc_curves

__all__ = ["save_roc", "save_confusion_matrix", "save_classification_plots", "SaliencyPanel", "save_montage"]

VIEWS = ("axial", "coronal", "sagittal")


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> Path:
    """Write ``fig`` as a PNG with a 256-colour palette (a third of the size of full colour, or less)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(256).save(path, format="PNG", optimize=True)
    return path


def save_roc(
    curves: Sequence[tuple[np.ndarray, np.ndarray] | None],
    metrics: Mapping[str, Any],
    path: str | os.PathLike,
    dpi: int = 100,
) -> Path:
    """
    One-vs-rest ROC curves (per class ``(fpr, tpr)`` or None, from :func:`scripts.reports.metrics.roc_curves`), the AUC of
    ``metrics`` (:func:`scripts.reports.metrics.classification_metrics`) in the legend.
    """
    names, total = metrics["class_names"], metrics["num_cases"]
    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    for name, curve in zip(names, curves):
        if curve is None:
            support = metrics["per_class"][name]["support"]
            ax.plot([], [], label=f"{name} (no curve: {support} of {total} cases)")
            continue
        ax.plot(*curve, lw=1.5, label=f"{name} (AUC {metrics['per_class'][name]['auc']:.3f})")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title(f"ROC, one class vs rest ({total} cases)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi)


def save_confusion_matrix(metrics: Mapping[str, Any], path: str | os.PathLike, dpi: int = 100) -> Path:
    """The confusion matrix of ``metrics`` (:func:`scripts.reports.metrics.classification_metrics`): counts and row %."""
    names = list(metrics["class_names"])
    counts = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    n = len(names)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.0 + 0.7 * n
    fig = Figure(figsize=(size + 0.8, size))
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            color = "white" if rates[i, j] > 0.6 else "black"
            ax.text(
                j, i, f"{counts[i, j]}\n{100 * rates[i, j]:.0f}%", ha="center", va="center", fontsize=8, color=color
            )
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels=names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(f"confusion matrix ({metrics['num_cases']} cases)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    return _save(fig, path, dpi)


def save_classification_plots(
    probs: torch.Tensor,
    labels: torch.Tensor,
    metrics: Mapping[str, Any],
    output_dir: str | os.PathLike,
    roc_file: str = "roc.png",
    confusion_file: str = "confusion_matrix.png",
) -> list[Path]:
    """
    Write :func:`save_roc` (curves of ``probs`` (N, C) against ``labels`` (N,)) and :func:`save_confusion_matrix`
    of ``metrics`` (:func:`scripts.reports.metrics.classification_metrics` of the same cases) in ``output_dir``; returns
    the two paths.
    """
    return [
        save_roc(roc_curves(probs, labels), metrics, Path(output_dir) / roc_file),
        save_confusion_matrix(metrics, Path(output_dir) / confusion_file),
    ]


class SaliencyPanel(NamedTuple):
    """One montage group: an image (D, H, W) in RAS voxel order, its saliency map in [0, 1], an optional mask."""

    title: str
    image: np.ndarray
    saliency: np.ndarray
    mask: np.ndarray | None = None


def _slices(volume: np.ndarray, peak: Sequence[int]) -> list[np.ndarray]:
    """Axial (x-y), coronal (x-z) and sagittal (y-z) slices through ``peak``, transposed for ``origin="lower"``."""
    i, j, k = peak
    return [volume[:, :, k].T, volume[:, j, :].T, volume[i, :, :].T]


def save_montage(
    rows: Sequence[tuple[str, Sequence[SaliencyPanel]]], path: str | os.PathLike, alpha: float = 0.55, dpi: int = 80
) -> Path:
    """
    A grid with one row per case (``(row title, panels)``) and, per panel, its axial, coronal and sagittal slices
    through the saliency peak (the centre for an empty, constant map): the image in grey, the saliency in an
    inferno overlay, the mask's contour in cyan and the peak marked with a white cross. Arrays are (D, H, W) in RAS
    order (first axis left-right, second posterior-anterior, third inferior-superior), shown with the lower-left
    origin.
    """
    if not rows:
        raise ValueError("save_montage needs at least one row.")
    ncols = 3 * max(len(panels) for _, panels in rows)
    fig = Figure(figsize=(1.55 * ncols, 1.75 * len(rows) + 0.2))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (row_title, panels) in enumerate(rows):
        for p, panel in enumerate(panels):
            saliency = np.asarray(panel.saliency, dtype=np.float32)
            empty = float(saliency.max()) <= float(saliency.min())  # no peak: slice through the centre
            peak = (
                tuple(n // 2 for n in saliency.shape) if empty else np.unravel_index(saliency.argmax(), saliency.shape)
            )
            points = [(peak[0], peak[1]), (peak[0], peak[2]), (peak[1], peak[2])]
            masks = _slices(panel.mask, peak) if panel.mask is not None else [None] * 3
            for v, (view, img, sal, msk, point) in enumerate(
                zip(VIEWS, _slices(panel.image, peak), _slices(saliency, peak), masks, points)
            ):
                ax = axes[r, 3 * p + v]
                ax.imshow(img, cmap="gray", origin="lower", interpolation="nearest")
                ax.imshow(
                    sal, cmap="inferno", vmin=0.0, vmax=1.0, alpha=alpha, origin="lower", interpolation="bilinear"
                )
                if msk is not None and msk.any():
                    ax.contour(msk.astype(np.float32), levels=[0.5], colors="cyan", linewidths=1.0)
                if not empty:
                    ax.plot(*point, marker="+", color="white", markersize=7, mew=1.2)
                title = panel.title + (" (empty map)" if empty else "")
                ax.set_title(f"{title}\n{view}" if v == 1 else view, fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[r, 3 * p].set_ylabel(row_title, fontsize=7)
        for c in range(3 * len(panels), ncols):
            axes[r, c].axis("off")
    fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.2)
    return _save(fig, path, dpi)
