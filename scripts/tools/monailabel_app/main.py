# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
MONAI Label app serving this bundle's classifier: ``POST /infer/cal_3d_classification`` with a volume returns the
predicted class and the class probabilities, named by ``channel_def`` in ``configs/metadata.json``.

MONAI Label's generic ``monaibundle`` app types the bundle as classification from its name, but its
``BundleInferTask`` appends ``Restored`` to the bundle's post-processing, which resizes the prediction to the image's
spatial shape: a class vector (C,) has no spatial shape, and the request fails with "operands could not be broadcast
together with shapes (0,) (3,)". This app builds the same task without that step and adds the predicted class and
the named probabilities to MONAI Label's classification answer.

Run it from the bundle's folder, in an environment with ``monailabel`` (README, "Serve the bundle with MONAI Label")::

    monailabel start_server --app scripts/tools/monailabel_app --studies /path/to/volumes

``--conf bundle /path/to/bundle`` serves another copy of the bundle (default: the one this file is in); the bundle
needs ``models/model.pt`` or ``models/model.ts``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import monailabel
import torch
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask

logger = logging.getLogger(__name__)

BUNDLE_ROOT = Path(__file__).resolve().parents[3]


def bundle_class_names(bundle: str | Path) -> tuple[str, list[str]]:
    """The bundle's name and its class names in index order, from ``configs/metadata.json`` (output channel_def)."""
    meta = json.loads((Path(bundle) / "configs" / "metadata.json").read_text())
    pred = next(iter(meta["network_data_format"]["outputs"].values()))
    channels = pred.get("channel_def", {})
    names = [str(channels[k]) for k in sorted(channels, key=int)]
    if len(names) != int(pred["num_channels"]):
        raise ValueError(
            f"{bundle}/configs/metadata.json: the output's channel_def names {len(names)} classes but num_channels is "
            f"{pred['num_channels']}; give one name per class."
        )
    return str(meta.get("name", Path(bundle).name)), names


class ClassificationBundleInferTask(BundleInferTask):
    """
    ``BundleInferTask`` for a classification bundle: no restore to image space after the bundle's post-processing
    (whose ``pred`` is the (C,) class probabilities), and an answer that names the class::

        {"class_index": 2, "class_name": "striped", "probabilities": {"solid": 0.01, ...},
         "prediction": [{"idx": 0, "label": "solid", "score": 0.01}, ...], ...}

    ``prediction`` is MONAI Label's own classification answer (lower-cased labels); ``class_name`` and the keys of
    ``probabilities`` are the metadata's ``channel_def`` names as written.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        super().__init__(path, conf, type=InferType.CLASSIFICATION, add_post_restore=False, **kwargs)
        self.bundle_name, self.class_names = bundle_class_names(path)

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        label_file, result = super().writer(data, extension, dtype)
        probs = torch.as_tensor(data[self.output_label_key]).detach().float().reshape(-1).cpu()
        if probs.numel() != len(self.class_names):
            raise ValueError(
                f"the network gave {probs.numel()} class scores but configs/metadata.json names "
                f"{len(self.class_names)} classes: make num_classes in configs/inference.json and the output's "
                f"channel_def in the metadata agree."
            )
        index = int(probs.argmax())
        result["class_index"] = index
        result["class_name"] = self.class_names[index]
        result["probabilities"] = {name: float(p) for name, p in zip(self.class_names, probs.tolist())}
        return label_file, result


class CALClassificationApp(MONAILabelApp):
    """Serves one classification bundle (``--conf bundle``, default: this bundle) under its metadata name."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundle = Path(conf.get("bundle", str(BUNDLE_ROOT))).resolve()
        if not (self.bundle / "configs" / "inference.json").is_file():
            raise FileNotFoundError(
                f"'{self.bundle}' is not a bundle (no configs/inference.json): pass the bundle's folder with "
                f"--conf bundle /path/to/cal_3d_classification."
            )
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"cal_3d_classification on MONAI Label ({monailabel.__version__})",
            description="3D classification with Counterfactual Attention Learning, served from a MONAI bundle",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        task = ClassificationBundleInferTask(str(self.bundle), self.conf)
        if not task.is_valid():
            raise FileNotFoundError(
                f"no weights in '{self.bundle}/models': train the bundle (python -m monai.bundle run training "
                f"--config_file configs/train.json), export models/model.ts, or download the released weights "
                f"listed in large_files.yml."
            )
        logger.info(f"+++ Adding Inferer:: {task.bundle_name} => {self.bundle}")
        return {task.bundle_name: task}

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}
