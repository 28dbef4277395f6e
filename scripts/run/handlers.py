# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Event handlers of the bundle's engines: the evaluation report a user opens (per-case CSV and metrics JSON) and the
training split's tabular normalisation, set in the network when training starts.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import decollate_batch
from monai.utils import evenly_divisible_all_gather, min_version, optional_import, string_list_all_gather
from torch import nn

from ..data.tabular import tabular_statistics
from ..reports.metrics import classification_metrics
from ..reports.outputs import atomic_write_text, case_name
from .distributed import get_rank, unwrap_network

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["case_name", "ClassificationReport", "TabularStatisticsHandler"]


class ClassificationReport:
    """
    Collects every case's class probabilities (and true label, when the data has one) during an evaluation
    run and, when the run's epoch completes, writes in ``output_dir`` (rank 0 only, results gathered across
    ranks):

    - ``predictions_file``: one row per case with ``case``, ``image``, ``label``/``label_name`` (if known),
      ``pred``/``pred_name`` and ``prob_<class name>`` per class;
    - ``metrics_file`` (when labels are present): :func:`scripts.reports.metrics.classification_metrics` as JSON;
    - ``roc.png`` and ``confusion_matrix.png`` (when labels are present and ``plots`` is True): see
      :func:`scripts.reports.plots.save_classification_plots`.

    Args:
        output_dir: folder of the files, created when missing.
        class_names: names of the classes, in index order.
        predictions_file: CSV file name.
        metrics_file: JSON file name, or None to skip the metrics.
        pred_key: key of the probabilities (C,) in the engine's output (after post-processing).
        label_key: key of the true class index in the engine's output.
        image_key: key of the image, whose ``filename_or_obj`` meta names the case.
        failed: cases that could not be run (``{"case", "image", "error"}`` each, e.g. from
            :func:`scripts.data.checks.screen_items`); when given, the CSV gets an ``error`` column, empty for the
            cases that ran, and one row per failed case after them.
        plots: write the ROC curves and the confusion matrix as PNG next to the metrics.
        case_names: unique case name per image path (:func:`scripts.reports.outputs.unique_case_names`, as the attention
            maps are named); the ``case`` column of images not in it is their :func:`case_name`.

    Every file is written atomically: a run that fails keeps the previous one whole. When only some cases have a
    label (the others -1 or none), the metrics cover the labelled ones and a warning names the others.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        predictions_file: str = "predictions.csv",
        metrics_file: str | None = "metrics.json",
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        failed: Sequence[dict[str, str]] | None = None,
        plots: bool = True,
        case_names: Mapping[str, str] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.predictions_file = predictions_file
        self.metrics_file = metrics_file
        self.pred_key = pred_key
        self.label_key = label_key
        self.image_key = image_key
        self.failed = None if failed is None else [dict(row) for row in failed]
        self.plots = plots
        self.case_names = {os.path.normpath(str(k)): v for k, v in (case_names or {}).items()}
        self.logger = logging.getLogger(self.__class__.__name__)
        self.metrics: dict[str, Any] | None = None
        self._reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self) -> None:
        self._images: list[str] = []
        self._probs: list[torch.Tensor] = []
        self._labels: list[int] = []

    def _collect(self, engine: Engine) -> None:
        items = engine.state.output
        if isinstance(items, dict):
            items = decollate_batch(items)
        for item in items:
            image = item.get(self.image_key)
            meta = getattr(image, "meta", {})
            self._images.append(str(meta.get("filename_or_obj", f"case_{len(self._images)}")))
            self._probs.append(torch.as_tensor(item[self.pred_key]).detach().float().reshape(-1).cpu())
            label = item.get(self.label_key)
            self._labels.append(-1 if label is None else int(torch.as_tensor(label).reshape(-1)[0]))

    def _gather(self) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        num_classes = len(self.class_names)
        probs = torch.stack(self._probs) if self._probs else torch.zeros(0, num_classes)
        labels = torch.as_tensor(self._labels, dtype=torch.long)
        images = string_list_all_gather(self._images)
        probs = evenly_divisible_all_gather(probs, concat=True)
        labels = evenly_divisible_all_gather(labels, concat=True)
        return images, probs, labels

    def _case(self, image: str) -> str:
        return self.case_names.get(os.path.normpath(image), case_name(image)) if image else ""

    def _write(self, engine: Engine) -> None:
        images, probs, labels = self._gather()
        if get_rank() != 0:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        labelled = labels >= 0
        has_labels = bool(labelled.any())
        names = self.class_names
        header = ["case", "image"] + (["label", "label_name"] if has_labels else []) + ["pred", "pred_name"]
        header += [f"prob_{name}" for name in names]
        header += ["error"] if self.failed is not None else []
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(header)
        for image, prob, label in zip(images, probs, labels):
            pred = int(prob.argmax())
            row: list[Any] = [self._case(image), image]
            if has_labels:
                row += [int(label), names[int(label)]] if label >= 0 else ["", ""]
            row += [pred, names[pred]] + [f"{p:.6f}" for p in prob.tolist()]
            writer.writerow(row + ([""] if self.failed is not None else []))
        for failed in self.failed or []:
            blanks = [""] * (len(header) - 3)
            case = self._case(failed.get("image", "")) or failed.get("case", "")
            writer.writerow([case, failed.get("image", "")] + blanks + [failed.get("error", "")])
        atomic_write_text(self.output_dir / self.predictions_file, text.getvalue())
        self.logger.info(f"wrote {len(images)} predictions to {self.output_dir / self.predictions_file}")
        if has_labels and not bool(labelled.all()):
            unlabelled = [self._case(image) for image, known in zip(images, labelled.tolist()) if not known]
            self.logger.warning(
                f"metrics cover {int(labelled.sum())} of {len(images)} cases: {len(unlabelled)} case(s) have no label "
                f"({', '.join(unlabelled[:10])}{', ...' if len(unlabelled) > 10 else ''}). Fix: give every case of "
                f"the datalist a 'label' to include it."
            )
            probs, labels = probs[labelled], labels[labelled]
        if has_labels and (self.metrics_file or self.plots):
            self.metrics = classification_metrics(probs, labels, names)  # the numbers the plots draw, too
        if has_labels and self.metrics_file:
            atomic_write_text(self.output_dir / self.metrics_file, json.dumps(self.metrics, indent=2))
            summary = ", ".join(
                f"{k}={self.metrics[k]:.4f}"
                for k in ("accuracy", "f1_macro", "auc_macro")
                if self.metrics[k] is not None
            )
            self.logger.info(f"test metrics ({self.metrics['num_cases']} cases): {summary}")
        if has_labels and self.plots:
            from ..reports.plots import save_classification_plots  # matplotlib is loaded only when pictures are wanted

            save_classification_plots(probs, labels, self.metrics, self.output_dir)


class TabularStatisticsHandler:
    """
    Ignite handler for the trainer: when training starts, computes the training split's tabular normalisation
    (:func:`scripts.data.tabular.tabular_statistics` of ``items``) and stores it in the network's tabular branch,
    whose buffers are then saved with the weights (``models/model.pt``). A network without a tabular branch is left
    alone.

    Args:
        network: the CAL network (possibly wrapped by DistributedDataParallel).
        items: the training split's datalist items.
        key: the items' key of the tabular values.
    """

    def __init__(self, network: nn.Module, items: Sequence[Mapping[str, Any]], key: str = "tabular") -> None:
        self.network = network
        self.items = items
        self.key = key
        self.logger = logging.getLogger(self.__class__.__name__)

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Any = None) -> None:
        encoder = getattr(unwrap_network(self.network), "tabular", None)
        if encoder is None:
            return
        stats = tabular_statistics(self.items, encoder.in_features, self.key)
        encoder.set_statistics(stats["mean"], stats["std"])
        self.logger.info(
            f"tabular normalisation from {len(self.items)} training cases: mean {np.round(stats['mean'], 4).tolist()}, "
            f"std {np.round(stats['std'], 4).tolist()}"
        )
