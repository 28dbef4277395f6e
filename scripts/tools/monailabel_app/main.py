# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
MONAI Label app serving this bundle's classifier, with the whole labelling loop (README, "Serve the bundle with MONAI
Label"):

* ``POST /infer/cal_3d_classification`` with a volume (an upload, or ``?image=<id>`` of the datastore) answers the
  predicted class and the class probabilities (JSON, ``output=json``), and the attention map as a NIfTI volume in the
  input's geometry, the map the bundle's ``inferring`` writes as ``<case>_attention.nii.gz`` (``output=image``, or
  both as multipart with ``output=all``, what 3D Slicer asks for).
* Bad requests are answered 4xx with the bundle's own input screening message (:func:`scripts.data.checks.screen_items`):
  404 for an image id the datastore does not have, 400 for an empty file, 415 for a file no image reader reads (not
  an image, text renamed ``.nii.gz``), 422 for an image that is not a single-channel 3D volume with finite voxels
  (a PNG, a 2D NIfTI, a 3-channel volume); the server keeps serving.
* ``PUT /datastore/image/info?image=<id>`` with ``info={"label": <class index or name>}`` sets a volume's class; it is
  kept in the datastore's file (``datastore_v2.json`` in the studies folder), so it survives a restart.
  ``{"label": null}`` removes it. A volume with a class counts as labelled (``/datastore`` status, strategies).
* ``POST /train/cal_3d_classification`` runs the bundle's own training workflow (``configs/train.json`` through
  ``python -m monai.bundle run training``) on the labelled volumes, written as a datalist with a validation share split
  off; the bundle's data check runs first and its log lines are the task's progress in ``GET /train/``. The best
  weights are published to ``<app>/model/cal_3d_classification/model.pt`` when training succeeds, and ``/infer`` serves
  them from then on (they take precedence over the bundle's ``models/model.pt`` or ``models/model.ts``).
* ``POST /activelearning/entropy`` (or ``margin``) names the unlabelled volume whose predicted class is least certain:
  the highest entropy, or the smallest margin between the two most probable classes.

Run it from the bundle's folder, in an environment with ``monailabel``::

    monailabel start_server --app scripts/tools/monailabel_app --studies /path/to/volumes

``--conf`` options (all optional):

* ``bundle /path/to/bundle``: serve another copy of the bundle (default: the one this file is in). It needs
  ``models/model.pt`` or ``models/model.ts`` until a training has published weights.
* ``configs configs/a.json,configs/b.json``: config files (relative to the bundle) merged on top of
  ``configs/inference.json`` and ``configs/train.json``, as on the bundle's command line.
* ``overrides '{"spatial_size": [16, 16, 16], "epochs": 2}'``: config ids and values (JSON) for both workflows; an id
  whose parent is absent from inference.json (``train#...``) applies to training only.
* ``val_split 0.2``: the share of the labelled volumes used for validation in ``/train``.
* ``epochs N``: the epochs of a ``/train`` request that does not give ``max_epochs`` (default: train.json's).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import monailabel
import numpy as np
import torch
from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, UploadFile
from fastapi.routing import APIRoute
from monai.bundle import ConfigParser
from monai.metrics import compute_roc_auc
from monai.networks.utils import one_hot
from monai.transforms import Compose
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.writer import ClassificationWriter

logger = logging.getLogger(__name__)

BUNDLE_ROOT = Path(__file__).resolve().parents[3]
LABEL_KEY = "label"  # the image-info key holding a volume's class (index), as in the bundle's datalists
CLASS_NAME_KEY = "class_name"
# the volume formats the datastore stores: one file per volume (no .mhd + .raw pairs, no DICOM series of slices)
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "1", "yes"):
        return True
    if str(value).strip().lower() in ("false", "0", "no", ""):
        return False
    raise ValueError(f"{what} {value!r}: give true or false.")


def _use_bundle_scripts(bundle: Path) -> None:
    """Make the bundle's ``scripts`` package importable (the configs' ``_target_`` and the input screening)."""
    if str(bundle) not in sys.path:
        sys.path.insert(0, str(bundle))


def _json_conf(conf: dict[str, str], key: str) -> dict[str, Any]:
    text = conf.get(key, "")
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"--conf {key} {text!r} is not JSON ({e}); give an object, e.g. '{{\"epochs\": 2}}'."
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"--conf {key} must be a JSON object of config ids and values, not {text!r}.")
    return value


class BundleSettings:
    """The bundle served and the app's ``--conf`` options, shared by the tasks (see the module docstring)."""

    def __init__(self, conf: dict[str, str], app_dir: str) -> None:
        self.bundle = Path(conf.get("bundle", str(BUNDLE_ROOT))).resolve()
        if not (self.bundle / "configs" / "inference.json").is_file():
            raise FileNotFoundError(
                f"'{self.bundle}' is not a bundle (no configs/inference.json): pass the bundle's folder with "
                f"--conf bundle /path/to/cal_3d_classification."
            )
        _use_bundle_scripts(self.bundle)
        self.extra_configs = [c.strip() for c in conf.get("configs", "").split(",") if c.strip()]
        for name in self.extra_configs:
            if not (self.bundle / name).is_file():
                raise FileNotFoundError(f"--conf configs: '{self.bundle / name}' does not exist; give paths relative "
                                        f"to the bundle, separated by commas.")  # fmt: skip
        self.overrides = _json_conf(conf, "overrides")
        self.val_split = float(conf.get("val_split", "0.2"))
        if not 0 < self.val_split < 1:
            raise ValueError(f"--conf val_split {self.val_split}: give a share between 0 and 1, e.g. 0.2.")
        self.epochs = int(conf["epochs"]) if conf.get("epochs") else None
        self.from_scratch = _flag(conf.get("from_scratch", "false"), "--conf from_scratch")
        self.min_gain = float(conf.get("min_gain", "0"))
        self.min_val_per_class = int(conf.get("min_val_per_class", "5"))
        if not math.isfinite(self.min_gain) or self.min_val_per_class < 1:
            raise ValueError("--conf min_gain must be a number and --conf min_val_per_class at least 1.")
        meta = json.loads((self.bundle / "configs" / "metadata.json").read_text())
        # the model's id in MONAI Label's URLs: the metadata's display name as an identifier ("cal_3d_classification")
        self.name = re.sub(r"\W+", "_", str(meta.get("name", self.bundle.name))).strip("_").lower()
        self.version = meta.get("version")
        self.description = meta.get("description", "")
        self.model_dir = Path(app_dir) / "model" / self.name  # where /train publishes its weights
        parser = self.parser("inference.json")
        self.num_classes = int(parser.get_parsed_content("num_classes"))
        self.in_channels = int(parser.get_parsed_content("in_channels"))
        self.max_voxels = int(parser.get_parsed_content("max_voxels"))  # larger volumes are refused before loading
        self.class_names = self._class_names(meta, parser)

    def config_files(self, main: str) -> list[str]:
        return [str(self.bundle / "configs" / main)] + [str(self.bundle / c) for c in self.extra_configs]

    def parser(self, main: str) -> ConfigParser:
        """The bundle's config ``main`` with the extra configs and the overrides (those that apply to it)."""
        parser = ConfigParser()
        parser.read_config(self.config_files(main))
        parser["bundle_root"] = str(self.bundle)
        for key, value in self.overrides.items():
            parent = key.replace("::", "#").rpartition("#")[0]
            if not parent or parser.get(parent) is not None:
                parser[key] = value
        return parser

    def _class_names(self, meta: dict, parser: ConfigParser) -> list[str]:
        """The output's ``channel_def`` in the metadata, or the configs' ``class_names`` when they change the
        number of classes (e.g. ``--conf configs configs/synthetic_attention.json``)."""
        pred = next(iter(meta["network_data_format"]["outputs"].values()))
        channels = pred.get("channel_def", {})
        names = [str(channels[k]) for k in sorted(channels, key=int)]
        if len(names) == self.num_classes:
            return names
        configured = parser.get("class_names")
        if isinstance(configured, list) and len(configured) == self.num_classes:
            return [str(n) for n in configured]
        raise ValueError(
            f"{self.bundle}/configs/metadata.json names {len(names)} classes (output channel_def) and the configs "
            f"give num_classes={self.num_classes}: give one class name per class (channel_def, or class_names in the "
            f"configs passed with --conf configs)."
        )

    def weights(self) -> Path | None:
        """The weights served: the last ones /train published, else the bundle's models/model.pt, else model.ts."""
        for path in (
            self.model_dir / "model.pt",
            self.bundle / "models" / "model.pt",
            self.bundle / "models" / "model.ts",
        ):
            if path.is_file():
                return path
        return None

    def class_index(self, value: Any) -> int:
        """A class given as an index (int or digits) or a name (any case); HTTP 422 when it is neither."""
        if isinstance(value, bool):
            value = None
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, int) and 0 <= value < self.num_classes:
            return value
        if isinstance(value, str):
            lowered = [n.lower() for n in self.class_names]
            if value.strip().lower() in lowered:
                return lowered.index(value.strip().lower())
        choices = ", ".join(f"{i} ({n})" for i, n in enumerate(self.class_names))
        raise HTTPException(
            status_code=422,
            detail=f"'{LABEL_KEY}': {value!r} is not a class of this model. Fix: give a class index or name: {choices}.",
        )


def screen_image(path: str, in_channels: int, what: str, max_voxels: int | None = None) -> None:
    """
    The bundle's input screening (:func:`scripts.data.checks.screen_items`) of one image; raises the HTTP error a
    client should get: 400 empty file, 415 unreadable (no reader takes it: not an image), 422 readable but not a
    single-channel 3D volume with finite voxels, or larger than ``max_voxels``. ``what`` names the image in the
    message.
    """
    from scripts.data.checks import screen_items

    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise HTTPException(
            status_code=400, detail=f"{what}: the file is empty (0 bytes). Fix: send the volume's file."
        )
    screening = screen_items([{"image": path}], in_channels=in_channels, num_workers=1, max_voxels=max_voxels)
    if screening.failed:
        error = screening.failed[0]["error"]
        status = 415 if error.startswith("unreadable image") else 404 if error.startswith("file not found") else 422
        raise HTTPException(status_code=status, detail=f"{what}: {error}")


def image_extension(name: str) -> str | None:
    """The volume format of a file name (one of :data:`IMAGE_EXTENSIONS`), or None."""
    return next((e for e in IMAGE_EXTENSIONS if name.endswith(e)), None)


def check_plain_name(value: str, what: str) -> None:
    """HTTP 400 unless ``value`` is a plain name: no folder part, not ``.``/``..``, so that it stays in its folder."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\0") or value != value.strip():
        raise HTTPException(
            status_code=400,
            detail=f"{what} {value!r} is not a plain name: the datastore keeps every volume in its studies folder, so an "
            f"id may not contain '/' or '\\', be '.' or '..', or start or end with a space. Fix: give a name such as "
            f"'case001'.",
        )


class ClassLabelDatastore(LocalDatastore):
    """
    MONAI Label's local datastore where a volume's class is its image info ``label`` (index; ``class_name`` is added):
    a volume with a class is labelled, and a class that is not one of the model's is refused with HTTP 422.

    It stays inside its studies folder: an image id, label tag or file that would resolve outside it is refused with
    HTTP 400, a file that is not a volume (:data:`IMAGE_EXTENSIONS`, then the bundle's input screening) with 415 or 422,
    before anything is written or deleted.
    """

    def __init__(self, *args: Any, settings_: BundleSettings, **kwargs: Any) -> None:
        self.settings = settings_
        super().__init__(*args, **kwargs)

    def _inside(self, folder: str, name: str, what: str) -> str:
        """``folder/name`` when it resolves to a file directly in ``folder`` (no link out of it); else HTTP 400."""
        check_plain_name(name, what)
        base = os.path.realpath(folder)
        path = os.path.realpath(os.path.join(base, name))
        if os.path.dirname(path) != base:
            raise HTTPException(
                status_code=400,
                detail=f"{what} {name!r} resolves to {path}, outside the datastore's folder {base}. Fix: give a plain "
                f"name such as 'case001'.",
            )
        return path

    def _volume_extension(self, filename: str, what: str) -> str:
        ext = image_extension(filename)
        if ext is None:
            raise HTTPException(
                status_code=415,
                detail=f"{what} {os.path.basename(filename)!r}: not a volume file this datastore stores. Fix: send one "
                f"of {', '.join(IMAGE_EXTENSIONS)} (convert a DICOM series or an .mhd/.raw pair to one of them first).",
            )
        return ext

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        ext = self._volume_extension(image_filename, "uploaded file")
        image_id = image_id or os.path.basename(image_filename)[: -len(ext)]
        check_plain_name(image_id, "image id")
        self._inside(self._datastore.image_path(), image_id + ext, "image id")
        screen_image(
            image_filename, self.settings.in_channels, f"uploaded file for image '{image_id}'", self.settings.max_voxels
        )
        return super().add_image(image_id, image_filename, image_info)

    def remove_image(self, image_id: str) -> None:
        self._inside(self._datastore.image_path(), image_id, "image id")
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=_unknown_image(image_id))
        super().remove_image(image_id)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        check_plain_name(label_tag, "label tag")
        ext = self._volume_extension(label_filename, "label file")
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=_unknown_image(image_id))
        check_plain_name(image_id, "image id")
        self._inside(self._datastore.label_path(label_tag), image_id + ext, "image id")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        check_plain_name(label_tag, "label tag")
        self._inside(self._datastore.label_path(label_tag), label_id, "label id")
        super().remove_label(label_id, label_tag)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        if image_id not in self.list_images():
            raise HTTPException(status_code=404, detail=_unknown_image(image_id))
        info = dict(info)
        if LABEL_KEY in info:
            obj = self._datastore.objects[image_id]
            if info[LABEL_KEY] is None:
                info.pop(LABEL_KEY)
                obj.image.info.pop(LABEL_KEY, None)
                obj.image.info.pop(CLASS_NAME_KEY, None)
            else:
                index = self.settings.class_index(info[LABEL_KEY])
                info.update({LABEL_KEY: index, CLASS_NAME_KEY: self.settings.class_names[index]})
        super().update_image_info(image_id, info)

    def class_labels(self) -> dict[str, int]:
        """Image id -> class index, for the volumes that have a class."""
        self._init_from_datastore_file()
        labels = {}
        for image_id, obj in self._datastore.objects.items():
            value = obj.image.info.get(LABEL_KEY)
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < self.settings.num_classes:
                labels[image_id] = value
        return labels

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return list(self.class_labels())

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        labelled = self.class_labels()
        return [i for i in self.list_images() if i not in labelled]


def _unknown_image(image_id: str) -> str:
    return (
        f"image '{image_id}' is not in the datastore. Fix: use an id listed by GET /datastore/?output=all, upload "
        f"the volume first (PUT /datastore/image?image={image_id}), or send the file itself with the request."
    )


RESULT_PREFIX = "cal_attention_result_"


class _RequestState(threading.local):
    parser: ConfigParser | None = None
    output_dir: str | None = None


class ClassificationBundleInferTask(BasicInferTask):
    """
    The bundle's inference (``configs/inference.json``: preprocessing, ``AttentionInferer``, post-processing with
    the attention map inverted to the input's geometry and saved by its ``SaveImaged``), answering::

        {"class_index": 2, "class_name": "striped", "probabilities": {"solid": 0.01, ...},
         "prediction": [{"idx": 0, "label": "solid", "score": 0.01}, ...], ...}

    with the attention NIfTI as the result file. ``prediction`` is MONAI Label's own classification answer
    (lower-cased labels); ``class_name`` and the keys of ``probabilities`` are the class names as written.

    Built on ``BasicInferTask`` rather than MONAI Label's ``BundleInferTask``: that one appends a restore to the
    image's size, which fails on a class vector, and imports torchvision, which this app does not need.
    """

    def __init__(self, settings_: BundleSettings) -> None:
        self.settings = settings_
        super().__init__(
            path=None,
            network=None,
            type=InferType.CLASSIFICATION,
            labels={name.lower(): i for i, name in enumerate(settings_.class_names)},
            dimension=3,
            description=settings_.description,
        )
        self.version = settings_.version
        self._state = _RequestState()
        self._lock = threading.Lock()
        self._cached: tuple[tuple[str, float, str], torch.nn.Module] | None = None

    def is_valid(self) -> bool:
        return self.settings.weights() is not None

    def info(self) -> dict[str, Any]:
        return {**super().info(), "version": self.version}

    def __call__(self, request, callbacks=None):
        output_dir = tempfile.mkdtemp(prefix="cal_attention_")
        self._state.parser = self.settings.parser("inference.json")
        self._state.parser["output_dir"] = output_dir
        # one volume per request: the attention map is named after it; no names from the bundle's data folder
        self._state.parser["case_names"] = {}
        self._state.output_dir = output_dir
        try:
            return super().__call__(request, callbacks)
        finally:
            self._state.parser = None
            shutil.rmtree(output_dir, ignore_errors=True)

    def _parsed(self, key: str) -> Any:
        return self._state.parser.get_parsed_content(key)

    def pre_transforms(self, data=None):
        return [self._parsed("preprocessing")]

    def inferer(self, data=None):
        return self._parsed("inferer")

    def post_transforms(self, data=None):
        post = self._parsed("postprocessing")
        return list(post.transforms) if isinstance(post, Compose) else list(post)

    def _get_network(self, device, data):
        path = self.settings.weights()
        if path is None:
            raise HTTPException(status_code=503, detail=_no_weights(self.settings))
        key = (str(path), path.stat().st_mtime, str(device))
        with self._lock:
            if self._cached is None or self._cached[0] != key:
                logger.info(f"loading weights {path}")
                self._cached = (key, load_network(self.settings, path, device))
            return self._cached[1]

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[Any, Any]:
        label_names = {v: k for k, v in self.labels.items()}
        _, result = ClassificationWriter(label=self.output_label_key, label_names=label_names)(data)
        probs = torch.as_tensor(data[self.output_label_key]).detach().float().reshape(-1).cpu()
        names = self.settings.class_names
        if probs.numel() != len(names):
            raise ValueError(
                f"the network gave {probs.numel()} class scores but {len(names)} classes are named: make num_classes "
                f"in the configs and the output's channel_def in the metadata agree."
            )
        index = int(probs.argmax())
        result["class_index"] = index
        result["class_name"] = names[index]
        result["probabilities"] = {name: float(p) for name, p in zip(names, probs.tolist())}
        return self._attention_file(), result

    def _attention_file(self) -> str | None:
        """The attention NIfTI that the bundle's SaveImaged wrote (``<case>_attention.nii.gz``, the case named after the
        upload or the image id), moved out of the request's folder into a folder of its own, under the same name."""
        written = sorted(Path(self._state.output_dir).glob("*.nii*"))
        if not written:
            return None  # a network without attention maps (the tabular-only model)
        target = Path(tempfile.mkdtemp(prefix=RESULT_PREFIX)) / written[0].name
        shutil.move(str(written[0]), target)
        return str(target)

    def probabilities(self, image: str, device: str = "cpu") -> np.ndarray:
        """The class probabilities of one volume (the bundle's preprocessing, network and softmax), for strategies."""
        parser = self.settings.parser("inference.json")
        data = parser.get_parsed_content("preprocessing")({"image": image})
        network = self._get_network(device, None)
        with torch.no_grad():
            logits = network(torch.as_tensor(data["image"])[None].to(device))
        return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


def _no_weights(settings_: BundleSettings) -> str:
    return (
        f"no weights to serve: neither {settings_.model_dir}/model.pt (published by /train) nor "
        f"{settings_.bundle}/models/model.pt or model.ts exists. Fix: label volumes and POST /train/{settings_.name}, "
        f"or put the bundle's released weights (large_files.yml) in its models folder."
    )


def load_network(settings_: BundleSettings, path: Path, device: str) -> torch.nn.Module:
    """The served network: TorchScript for ``.ts``, else inference.json's ``network_def`` with the checkpoint's
    weights (a state dict, or a training checkpoint holding it under ``model``)."""
    if path.suffix == ".ts":
        return torch.jit.load(str(path), map_location=device).eval()
    network = settings_.parser("inference.json").get_parsed_content("network_def")
    state = torch.load(str(path), map_location=device, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    network.load_state_dict(state)
    return network.to(device).eval()


class UncertaintyStrategy(Strategy):
    """
    The unlabelled volume whose predicted class is least certain: ``entropy`` (highest entropy of the class
    probabilities) or ``margin`` (smallest difference between the two most probable classes). Probabilities are
    cached per volume and weights file; volumes that fail the input screening are skipped.
    """

    def __init__(self, task: ClassificationBundleInferTask, measure: str) -> None:
        super().__init__(f"unlabelled volume with the {'highest entropy' if measure == 'entropy' else 'smallest margin'}"
                         f" of the predicted class probabilities")  # fmt: skip
        self.task = task
        self.measure = measure
        self._cache: dict[tuple[str, str, float], np.ndarray] = {}

    def score(self, probs: np.ndarray) -> float:
        """Higher is more uncertain."""
        if self.measure == "entropy":
            return float(-(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum())
        top = np.sort(probs)[::-1]
        return float(-(top[0] - top[1])) if top.size > 1 else 0.0

    def __call__(self, request, datastore: Datastore):
        weights = self.task.settings.weights()
        if weights is None:
            raise HTTPException(status_code=503, detail=_no_weights(self.task.settings))
        candidates = datastore.get_unlabeled_images()
        best: dict[str, Any] = {}
        best_score = -math.inf
        for image_id in candidates:
            uri = datastore.get_image_uri(image_id)
            key = (uri, str(weights), weights.stat().st_mtime)
            if key not in self._cache:
                try:
                    screen_image(
                        uri, self.task.settings.in_channels, f"image '{image_id}'", self.task.settings.max_voxels
                    )
                except HTTPException as e:
                    logger.warning(f"active learning skips {e.detail}")
                    continue
                self._cache[key] = self.task.probabilities(uri)
            probs = self._cache[key]
            score = self.score(probs)
            if score > best_score:
                best_score = score
                value = score if self.measure == "entropy" else -score
                names = self.task.settings.class_names
                best = {"id": image_id, self.measure: value, "probabilities": dict(zip(names, probs.tolist()))}
        if best:
            logger.info(f"next sample by {self.measure}: {best['id']} of {len(candidates)} unlabelled")
        return best


def _validation_count(count: int, share: float) -> int:
    return int(share * count + 0.5)


def plan_split(
    labels: dict[str, int], class_names: list[str], share: float, min_val_per_class: int, seed: int = 0
) -> tuple[list[str], list[str]]:
    """
    Training and validation image ids, split class by class: ``share`` of each class's volumes (rounded) for
    validation, the rest for training; deterministic for a given set. Raises ``ValueError`` whose message starts with
    the labelled volumes per class when fewer than two classes are labelled, or when a class would get fewer than
    ``min_val_per_class`` validation volumes or no training volume (a validation set too small to tell whether a new
    model is at least as good as the served one): the message says how many volumes per class it needs.
    """
    groups: dict[int, list[str]] = {}
    for image_id in sorted(labels):
        groups.setdefault(labels[image_id], []).append(image_id)
    counts = "labelled volumes per class: " + ", ".join(
        f"{name} {len(groups.get(i, []))}" for i, name in enumerate(class_names)
    )
    if len(groups) < 2:
        raise ValueError(
            f"{counts}. Training needs volumes of at least 2 classes. Fix: set the class of volumes of the other "
            f'classes (PUT /datastore/image/info?image=<id> with info={{"label": <class>}}).'
        )
    short = {
        c: ids for c, ids in groups.items() if not min_val_per_class <= _validation_count(len(ids), share) < len(ids)
    }
    if short:
        need = next(n for n in range(2, 100000) if min_val_per_class <= _validation_count(n, share) < n)
        given = ", ".join(f"{class_names[c]} {_validation_count(len(ids), share)}" for c, ids in sorted(short.items()))
        raise ValueError(
            f"{counts}. Validation share {share} gives too few validation volumes per class ({given}): deciding whether "
            f"the new model is at least as good as the served one needs {min_val_per_class} per class, and one more for "
            f"training. Fix: label at least {need} volumes of each class, or raise val_split (--conf "
            f"min_val_per_class sets the minimum)."
        )
    rng = random.Random(seed)
    training: list[str] = []
    validation: list[str] = []
    for c in sorted(groups):
        ids = groups[c]
        rng.shuffle(ids)
        k = _validation_count(len(ids), share)
        validation += ids[:k]
        training += ids[k:]
    return sorted(training), sorted(validation)


def train_options(request: dict[str, Any], settings_: BundleSettings) -> dict[str, Any]:
    """The options of a ``/train`` request over the ``--conf`` defaults; ``ValueError`` names a bad one."""
    epochs = request.get("max_epochs") or request.get("epochs") or settings_.epochs
    share = request.get("val_split") or settings_.val_split
    try:
        epochs = int(epochs) if epochs else None
        share = float(share)
        min_gain = float(request.get("min_gain", settings_.min_gain))
    except (TypeError, ValueError):
        raise ValueError(
            f"max_epochs {epochs!r}, val_split {share!r}, min_gain {request.get('min_gain')!r}: give an integer, a "
            f"share between 0 and 1 and a number."
        ) from None
    if (epochs is not None and epochs < 1) or not 0 < share < 1 or not math.isfinite(min_gain):
        raise ValueError(f"max_epochs {epochs}, val_split {share}, min_gain {min_gain}: give max_epochs >= 1, "
                         f"0 < val_split < 1 and a finite min_gain.")  # fmt: skip
    from_scratch = _flag(request.get("from_scratch", settings_.from_scratch), "from_scratch")
    return {"epochs": epochs, "val_split": share, "min_gain": min_gain, "from_scratch": from_scratch}


def evaluate_weights(settings_: BundleSettings, weights: Path, items: list[dict[str, Any]]) -> dict[str, float]:
    """Macro ROC AUC (over the classes present) and accuracy of ``weights`` on labelled ``items`` with the bundle's
    inference preprocessing and network, what ``/infer`` would answer."""
    network = load_network(settings_, weights, "cpu")
    preprocessing = settings_.parser("inference.json").get_parsed_content("preprocessing")
    probs = []
    with torch.no_grad():
        for item in items:
            image = torch.as_tensor(preprocessing({"image": item["image"]})["image"])
            probs.append(torch.softmax(network(image[None]).float(), dim=1)[0])
    y_pred = torch.stack(probs)
    y = torch.tensor([item["label"] for item in items])
    present = sorted(set(y.tolist()))
    onehot = one_hot(y[:, None], num_classes=settings_.num_classes, dim=1)
    auc = float(compute_roc_auc(y_pred[:, present], onehot[:, present], average="macro"))
    finite = bool(torch.isfinite(y_pred).all())
    accuracy = float((y_pred.argmax(dim=1) == y).float().mean())
    return {"auc": auc if finite else float("nan"), "accuracy": accuracy if finite else float("nan")}


def _figures(scores: dict[str, float]) -> str:
    return f"macro AUC {scores['auc']:.4f}, accuracy {scores['accuracy']:.4f}"


class BundleTrainingTask(TrainTask):
    """
    ``/train``: the labelled volumes of the datastore as a datalist (``training`` / ``validation``, class names under
    ``labels``), then the bundle's training workflow on it in a subprocess (``python -m monai.bundle run training``
    with configs/train.json, the app's extra configs and overrides): its data check first, its log as progress.
    It starts from the served weights (fine-tuning) unless ``from_scratch``. Weights go to ``<app>/model/<name>/train/``;
    the best ``model.pt`` is published one level up only if its macro AUC on the validation volumes is at least the
    served weights' (plus ``min_gain``); both figures end the task's log. Request parameters: ``max_epochs`` (or
    ``epochs``), ``val_split``, ``from_scratch``, ``min_gain``.
    """

    def __init__(self, settings_: BundleSettings) -> None:
        super().__init__("the bundle's training workflow (configs/train.json) on the volumes labelled in the datastore")
        self.settings = settings_

    def config(self) -> dict[str, Any]:
        return {
            "max_epochs": self.settings.epochs or 0,
            "val_split": self.settings.val_split,
            "from_scratch": self.settings.from_scratch,
            "min_gain": self.settings.min_gain,
        }

    def stats(self) -> dict[str, Any]:
        path = self.settings.model_dir / "train_stats.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def plan(self, request: dict[str, Any], datastore: Datastore) -> tuple[dict[str, Any], dict[str, int], list, list]:
        """The options, the classes and the split of a request; ``ValueError`` (message: class counts first) when
        training cannot start or its validation could not decide."""
        if not isinstance(datastore, ClassLabelDatastore):
            raise ValueError("training needs the app's local datastore (the classes are its image info).")
        options = train_options(request, self.settings)
        labels = datastore.class_labels()
        training, validation = plan_split(
            labels, self.settings.class_names, options["val_split"], self.settings.min_val_per_class
        )
        return options, labels, training, validation

    def __call__(self, request, datastore: Datastore):
        try:
            options, labels, training, validation = self.plan(request, datastore)
        except ValueError as e:
            print(f"not trained: {e}", flush=True)
            raise RuntimeError(str(e)) from None
        counts = Counter(labels.values())
        print("labelled volumes per class: " + ", ".join(f"{n} {counts.get(i, 0)}" for i, n in
              enumerate(self.settings.class_names)), flush=True)  # fmt: skip
        work = self.settings.model_dir / "train"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        names = self.settings.class_names
        datalist = {
            "labels": {str(i): n for i, n in enumerate(names)},
            "training": [{"image": datastore.get_image_uri(i), "label": labels[i], "id": i} for i in training],
            "validation": [{"image": datastore.get_image_uri(i), "label": labels[i], "id": i} for i in validation],
        }
        (work / "datalist.json").write_text(json.dumps(datalist, indent=2))
        args: dict[str, Any] = {
            "config_file": self.settings.config_files("train.json"),
            "bundle_root": str(self.settings.bundle),
            "logging_file": str(self.settings.bundle / "configs" / "logging.conf"),
            **self.settings.overrides,
            "datalist": str(work / "datalist.json"),
            "ckpt_dir": str(work),
            "output_dir": str(work),
            "log_dir": str(work / "logs"),
            "dataset_cache_dir": str(work / "cache"),
        }
        if options["epochs"]:
            args["epochs"] = options["epochs"]
        cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--args_file", str(work / "args.json")]
        served = self.settings.weights()
        if served is not None and not options["from_scratch"]:
            init = served
            if served.suffix == ".ts":  # TorchScript: its state dict, which the bundle's network loads
                init = work / "init.pt"
                torch.save(torch.jit.load(str(served), map_location="cpu").state_dict(), init)
            # the bundle's initialisation, then the served weights into its network (the bundle's own loader), as a
            # config file of its own: its new key is a config's, not a command-line override the bundle would refuse
            finetune = {
                "app_initialize": [
                    "@initialize",
                    {"_target_": "scripts.run.checkpoints.load_weights", "path": str(init), "network": "@network",
                     "map_location": "@device"},
                ]
            }  # fmt: skip
            (work / "finetune.json").write_text(json.dumps(finetune, indent=2))
            args["config_file"] = args["config_file"] + [str(work / "finetune.json")]
            cmd += ["--init_id", "app_initialize"]
        (work / "args.json").write_text(json.dumps(args, indent=2))
        fine_tuning = "--init_id" in cmd
        start_from = f"the served weights {served}" if fine_tuning else "random weights"
        print(
            f"training on {len(training)} volumes, validating on {len(validation)} (datalist {work / 'datalist.json'}; "
            f"epochs {args.get('epochs', 'as in train.json')}), starting from {start_from}",
            flush=True,
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.settings.bundle), os.environ.get("PYTHONPATH", "")]),
        }
        start = time.time()
        proc = subprocess.run(cmd, cwd=str(self.settings.bundle), env=env, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"the bundle's training failed (exit status {proc.returncode}); see the lines above.")
        best = work / "model.pt"
        if not best.is_file():
            raise RuntimeError(f"the bundle's training wrote no {best}: was there a validation epoch (val_interval)?")
        stats = {
            "epochs": args.get("epochs"),
            "training": len(training),
            "validation": len(validation),
            "from_scratch": not fine_tuning,
            "seconds": round(time.time() - start, 1),
            "new": evaluate_weights(self.settings, best, datalist["validation"]),
            "served": None,
            "served_weights": str(served) if served else None,
            "min_gain": options["min_gain"],
        }
        print(f"validation on the same {len(validation)} held-out volumes:", flush=True)
        if served is not None:
            stats["served"] = evaluate_weights(self.settings, served, datalist["validation"])
            print(f"  served weights ({served}): {_figures(stats['served'])}", flush=True)
        print(f"  new weights ({best}): {_figures(stats['new'])}", flush=True)
        new_auc = stats["new"]["auc"]
        if not math.isfinite(new_auc):
            stats["reason"] = "the new weights give non-finite probabilities"
        elif stats["served"] is not None and math.isfinite(stats["served"]["auc"]):
            gain = new_auc - stats["served"]["auc"]
            if gain < options["min_gain"]:
                stats["reason"] = (
                    f"the new weights' macro AUC {new_auc:.4f} is {gain:+.4f} against the served weights' "
                    f"{stats['served']['auc']:.4f}, below min_gain {options['min_gain']}"
                )
        stats["published"] = "reason" not in stats
        stats["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        if stats["published"]:
            target = self.settings.model_dir / "model.pt"
            if target.is_file():  # the weights served so far stay on disk (rollback: POST /train/<model>/rollback)
                retire(target)
            tmp = target.with_name(".model.pt.tmp")
            shutil.copyfile(best, tmp)
            os.replace(tmp, target)  # /infer reloads when the file changes
            stats["published_to"] = str(target)
        (self.settings.model_dir / "train_stats.json").write_text(json.dumps(stats, indent=2))
        if stats["published"]:
            print(f"published {target}: /infer serves the new weights", flush=True)
        else:
            print(f"not published: {stats['reason']}; /infer keeps serving {served}", flush=True)
        return stats


def retire(published: Path) -> Path:
    """Move weights that /train published to ``retired/model-<time>.pt`` beside them; the retired file."""
    target = published.parent / "retired" / f"model-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.pt"
    target.parent.mkdir(exist_ok=True)
    os.replace(published, target)
    return target


class CALClassificationApp(MONAILabelApp):
    """Serves one classification bundle (``--conf bundle``, default: this bundle) under its metadata name."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.settings = BundleSettings(conf, app_dir)
        self._uploads: dict[str, str] = {}  # files that this server's /infer saved from uploads -> the upload's name
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"cal_3d_classification on MONAI Label ({monailabel.__version__})",
            description="3D classification with Counterfactual Attention Learning, served from a MONAI bundle",
            version=monailabel.__version__,
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return ClassLabelDatastore(
            self.studies,
            extensions=[f"*{e}" for e in IMAGE_EXTENSIONS],
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            settings_=self.settings,
        )

    def init_infers(self) -> dict[str, InferTask]:
        task = ClassificationBundleInferTask(self.settings)
        if not task.is_valid():  # the server still starts: label volumes and train, /infer answers 503 until then
            logger.warning(_no_weights(self.settings))
        logger.info(f"+++ Adding Inferer:: {self.settings.name} => {self.settings.bundle}")
        return {self.settings.name: task}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {self.settings.name: BundleTrainingTask(self.settings)}

    def init_strategies(self) -> dict[str, Strategy]:
        task = self._infers[self.settings.name]
        return {
            "entropy": UncertaintyStrategy(task, "entropy"),
            "margin": UncertaintyStrategy(task, "margin"),
            "random": Random(),
            "first": First(),
        }

    def on_init_complete(self) -> None:
        super().on_init_complete()
        server = sys.modules.get("monailabel.app")  # the server's FastAPI app (absent in the /train subprocess)
        if server is not None:
            install_routes(server.app)

    def _unknown(self, what: str, name: str, known: Any) -> HTTPException:
        return HTTPException(
            status_code=404, detail=f"no {what} {name!r} on this server. Fix: use one of {sorted(known)} (GET /info/)."
        )

    def infer(self, request, datastore=None):
        """MONAI Label's inference of a datastore volume (``image``: its id) or of a file that this server's ``/infer``
        saved from an upload, after the bundle's input screening: an unknown model or image id is a 404 (no server path
        is accepted), a bad file a 400/415/422 with the screening's message (see :func:`screen_image`)."""
        model = request.get("model")
        if model not in self._infers:
            raise self._unknown("model", model, self._infers)
        image = request.get("image")
        if not isinstance(image, str) or not image:
            raise HTTPException(status_code=422, detail=NO_INPUT)
        if image in self._uploads:
            what = f"uploaded file {self._uploads[image]!r}"
        else:
            store = datastore or self.datastore()
            if image not in store.list_images():
                raise HTTPException(status_code=404, detail=_unknown_image(image))
            what = f"image '{image}'"
            image = store.get_image_uri(image)
        screen_image(image, self.settings.in_channels, what, self.settings.max_voxels)
        return super().infer({**request, "image": image}, datastore)

    def infer_upload(self, request: dict[str, Any], file: UploadFile) -> dict[str, Any]:
        """:meth:`infer` of an uploaded file, saved under the upload's own name (so that the attention map is
        ``<upload>_attention.nii.gz``) in a folder of its own, removed afterwards."""
        name = re.sub(r"[^\w.\-]+", "_", os.path.basename((file.filename or "").replace("\\", "/"))).lstrip(".")
        folder = tempfile.mkdtemp(prefix="cal_upload_")
        path = os.path.join(folder, name or "upload.nii.gz")
        try:
            with open(path, "wb") as buffer:
                shutil.copyfileobj(file.file, buffer)
            self._uploads[path] = file.filename or name
            return self.infer({**request, "image": path})
        finally:
            self._uploads.pop(path, None)
            shutil.rmtree(folder, ignore_errors=True)

    def next_sample(self, request):
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise self._unknown("strategy", strategy, self._strategies)
        return super().next_sample(request)

    def start_training(self, model: str, params: dict[str, Any] | None, run_sync: bool, enqueue: bool) -> Any:
        """``POST /train/<model>``: 404 for an unknown model; 422 when training cannot start (the message, class
        counts first, is also the first line of the failed task in ``GET /train/``); else MONAI Label's training."""
        from monailabel.endpoints.train import run_model
        from monailabel.utils.async_tasks import utils as async_tasks

        if model not in self._trainers:
            raise self._unknown("model", model, self._trainers)
        try:
            self._trainers[model].plan(params or {}, self.datastore())
        except ValueError as e:
            if not async_tasks.processes("train"):  # a running training keeps its status
                now = time.strftime("%Y-%m-%d %H:%M:%S")
                async_tasks.background_tasks.setdefault("train", []).append(
                    {"id": str(uuid.uuid4()), "status": "ERROR", "request": {"model": model, **(params or {})},
                     "start_ts": now, "end_ts": now, "details": [f"not trained: {e}"]}
                )  # fmt: skip
            raise HTTPException(status_code=422, detail=f"not trained: {e}") from None
        return run_model(model, params, run_sync, enqueue)

    def rollback(self, model: str) -> dict[str, Any]:
        """``POST /train/<model>/rollback``: stop serving what /train published (moved to ``retired/``); the bundle's
        released weights are served again."""
        if model not in self._trainers:
            raise self._unknown("model", model, self._trainers)
        published = self.settings.model_dir / "model.pt"
        retired = str(retire(published)) if published.is_file() else None
        serving = self.settings.weights()
        return {"retired": retired, "serving": str(serving) if serving else None}


NO_INPUT = (
    "no volume: send the volume's file as the multipart field 'file', or give ?image=<id> of a volume in the datastore "
    "(GET /datastore/?output=all lists them)."
)


class Output(str, Enum):
    image = "image"
    json = "json"
    all = "all"


def _json_field(text: str, what: str) -> dict[str, Any]:
    """A form field holding a JSON object; HTTP 422 naming the field otherwise."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise HTTPException(status_code=422, detail=f"{what} {text[:200]!r} is not JSON ({e}). Fix: send a JSON "
                                                    f"object, e.g. {{\"label\": 1}}.") from None  # fmt: skip
    if not isinstance(value, dict):
        raise HTTPException(status_code=422, detail=f"{what} {text[:200]!r} is not a JSON object. Fix: send one, "
                                                    f"e.g. {{\"label\": 1}}.")  # fmt: skip
    return value


# FastAPI's parameter declarations, as MONAI Label's endpoints give them
_USER = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
_ANNOTATOR = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))
_ADMIN = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))
_PARAMS_FORM = Form("{}")  # one per parameter: FastAPI keeps the parameter's name in it
_INFO_FORM = Form("{}")
_OPTIONAL_FILE = File(None)


def _instance() -> CALClassificationApp:
    from monailabel.interfaces.utils.app import app_instance

    return app_instance()


async def api_infer(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    params: str = _PARAMS_FORM,
    file: UploadFile = _OPTIONAL_FILE,
    output: Optional[Output] = None,
    user: User = _USER,
):
    """MONAI Label's ``/infer/<model>`` with the app's checks first: an unknown model is a 404, neither ``file`` nor
    ``image`` or ``params`` that are not a JSON object a 422, and the attention map is named after the upload."""
    from monailabel.endpoints.infer import send_response

    instance = _instance()
    if model not in instance._infers:
        raise instance._unknown("model", model, instance._infers)
    extra = _json_field(params, "params")
    if file is None and not image:
        raise HTTPException(status_code=422, detail=NO_INPUT)
    request = {**instance.info().get("config", {}).get("infer", {}), **extra, "model": model, "image": image}
    result = instance.infer_upload(request, file) if file is not None else instance.infer(request)
    result_file = result.get("file")
    if isinstance(result_file, str) and Path(result_file).parent.name.startswith(RESULT_PREFIX):
        background_tasks.add_task(shutil.rmtree, str(Path(result_file).parent), True)
    return send_response(instance.datastore(), result, output, background_tasks)


async def api_put_image_info(image: str, info: str = _INFO_FORM, user: User = _ANNOTATOR):
    """MONAI Label's ``PUT /datastore/image/info`` with a 422 for ``info`` that is not a JSON object."""
    from monailabel.endpoints.datastore import update_image_info

    _json_field(info, "info")
    return update_image_info(image, info, user.username)


async def api_train(
    model: str,
    params: Optional[dict] = None,
    run_sync: Optional[bool] = False,
    enqueue: Optional[bool] = False,
    user: User = _ADMIN,
):
    """MONAI Label's ``POST /train/<model>`` with the app's checks first (:meth:`CALClassificationApp.start_training`)."""
    return _instance().start_training(model, params, bool(run_sync), bool(enqueue))


async def api_rollback(model: str, user: User = _ADMIN):
    """Serve the bundle's released weights again (:meth:`CALClassificationApp.rollback`)."""
    return _instance().rollback(model)


def install_routes(api: Any) -> None:
    """Put the app's endpoints in place of MONAI Label's for the same paths and methods (the app's checks, then
    MONAI Label's code), and add ``POST /train/<model>/rollback``."""
    prefix = settings.MONAI_LABEL_API_STR
    for path, method, endpoint, tag in (
        ("/infer/{model}", "POST", api_infer, "Infer"),
        ("/datastore/image/info", "PUT", api_put_image_info, "Datastore"),
        ("/train/{model}", "POST", api_train, "Train"),
        ("/train/{model}/rollback", "POST", api_rollback, "Train"),
    ):
        route = APIRoute(prefix + path, endpoint, methods=[method], tags=[tag], summary=endpoint.__doc__.split("\n")[0])
        routes = api.router.routes
        index = next(
            (
                i
                for i, r in enumerate(routes)
                if isinstance(r, APIRoute) and r.path == route.path and method in r.methods
            ),
            None,
        )
        if index is None:
            routes.insert(0, route)
        else:
            routes[index] = route
    api.openapi_schema = None
