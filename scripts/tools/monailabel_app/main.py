# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
MONAI Label app serving this bundle's classifier, with the whole labelling loop (README, "Serve the bundle with MONAI
Label"):

* ``POST /infer/cal_3d_classification`` with a volume (an upload, or ``?image=<id>`` of the datastore) answers the
  predicted class and the class probabilities (JSON, ``output=json``), and the attention map as a NIfTI volume in the
  input's geometry, the map the bundle's ``inferring`` writes as ``<case>_attention.nii.gz`` (``output=image``, or
  both as multipart with ``output=all``, what 3D Slicer asks for).
* Bad requests are answered 4xx with the bundle's own input screening message (:func:`scripts.validation.screen_items`):
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

import copy
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
from pathlib import Path
from typing import Any

import monailabel
import numpy as np
import torch
from fastapi import HTTPException
from monai.bundle import ConfigParser
from monai.transforms import Compose
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
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
        meta = json.loads((self.bundle / "configs" / "metadata.json").read_text())
        # the model's id in MONAI Label's URLs: the metadata's display name as an identifier ("cal_3d_classification")
        self.name = re.sub(r"\W+", "_", str(meta.get("name", self.bundle.name))).strip("_").lower()
        self.version = meta.get("version")
        self.description = meta.get("description", "")
        self.model_dir = Path(app_dir) / "model" / self.name  # where /train publishes its weights
        parser = self.parser("inference.json")
        self.num_classes = int(parser.get_parsed_content("num_classes"))
        self.in_channels = int(parser.get_parsed_content("in_channels"))
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


def screen_image(path: str, in_channels: int, what: str) -> None:
    """
    The bundle's input screening (:func:`scripts.validation.screen_items`) of one image; raises the HTTP error a
    client should get: 400 empty file, 415 unreadable (no reader takes it: not an image), 422 readable but not a
    single-channel 3D volume with finite voxels. ``what`` names the image in the message.
    """
    from scripts.validation import screen_items

    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise HTTPException(
            status_code=400, detail=f"{what}: the file is empty (0 bytes). Fix: send the volume's file."
        )
    screening = screen_items([{"image": path}], in_channels=in_channels, num_workers=1)
    if screening.failed:
        error = screening.failed[0]["error"]
        status = 415 if error.startswith("unreadable image") else 404 if error.startswith("file not found") else 422
        raise HTTPException(status_code=status, detail=f"{what}: {error}")


class ClassLabelDatastore(LocalDatastore):
    """
    MONAI Label's local datastore where a volume's class is its image info ``label`` (index; ``class_name`` is added):
    a volume with a class is labelled, and a class that is not one of the model's is refused with HTTP 422.
    """

    def __init__(self, *args: Any, settings_: BundleSettings, **kwargs: Any) -> None:
        self.settings = settings_
        super().__init__(*args, **kwargs)

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
        """The attention NIfTI that the bundle's SaveImaged wrote, moved out of the request's folder."""
        written = sorted(Path(self._state.output_dir).glob("*.nii*"))
        if not written:
            return None  # a network without attention maps (the tabular-only model)
        suffix = "".join(written[0].suffixes[-2:]) if written[0].name.endswith(".nii.gz") else written[0].suffix
        stem = written[0].name[: -len(suffix)]
        handle, target = tempfile.mkstemp(prefix=f"{stem}_", suffix=suffix)
        os.close(handle)
        shutil.move(str(written[0]), target)
        return target

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
                    screen_image(uri, self.task.settings.in_channels, f"image '{image_id}'")
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


def split_validation(labels: dict[str, int], share: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """
    Training and validation image ids: ``share`` of the volumes (at least one) for validation, taken class by class
    in turn, never a class's last volume, so that every class stays in training. Deterministic for a given set.
    """
    rng = random.Random(seed)
    groups: dict[int, list[str]] = {}
    for image_id in sorted(labels):
        groups.setdefault(labels[image_id], []).append(image_id)
    for ids in groups.values():
        rng.shuffle(ids)
    wanted = max(1, round(share * len(labels)))
    validation: list[str] = []
    while len(validation) < wanted:
        takers = [c for c in sorted(groups) if len(groups[c]) > 1]
        if not takers:
            break
        for c in takers[: wanted - len(validation)]:
            validation.append(groups[c].pop())
    if not validation and len(labels) > 1:  # one volume per class: the largest class gives one anyway
        validation.append(groups[max(groups, key=lambda c: len(groups[c]))].pop())
    training = [i for ids in groups.values() for i in ids]
    return sorted(training), sorted(validation)


class BundleTrainingTask(TrainTask):
    """
    ``/train``: the labelled volumes of the datastore as a datalist (``training`` / ``validation``, class names under
    ``labels``), then the bundle's training workflow on it in a subprocess (``python -m monai.bundle run training``
    with configs/train.json, the app's extra configs and overrides): its data check first, its log as progress.
    Weights go to ``<app>/model/<name>/train/``; the best ``model.pt`` is published one level up when it succeeds.
    Request parameters: ``max_epochs`` (or ``epochs``), ``val_split``.
    """

    def __init__(self, settings_: BundleSettings) -> None:
        super().__init__("the bundle's training workflow (configs/train.json) on the volumes labelled in the datastore")
        self.settings = settings_

    def config(self) -> dict[str, Any]:
        return {"max_epochs": self.settings.epochs or 0, "val_split": self.settings.val_split}

    def stats(self) -> dict[str, Any]:
        path = self.settings.model_dir / "train_stats.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def __call__(self, request, datastore: Datastore):
        if not isinstance(datastore, ClassLabelDatastore):
            raise RuntimeError("training needs the app's local datastore (the classes are its image info).")
        labels = datastore.class_labels()
        if len(labels) < 2:
            raise RuntimeError(
                f"training needs at least 2 volumes with a class; the datastore has {len(labels)}. Fix: set classes "
                f'with PUT /datastore/image/info?image=<id> and info={{"label": <class>}}.'
            )
        share = float(request.get("val_split") or self.settings.val_split)
        training, validation = split_validation(labels, share)
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
        epochs = request.get("max_epochs") or request.get("epochs") or self.settings.epochs
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
        if epochs:
            args["epochs"] = int(epochs)
        (work / "args.json").write_text(json.dumps(args, indent=2))
        print(
            f"training on {len(training)} volumes, validating on {len(validation)} "
            f"(datalist {work / 'datalist.json'}; epochs {args.get('epochs', 'as in train.json')})",
            flush=True,
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.settings.bundle), os.environ.get("PYTHONPATH", "")]),
        }
        start = time.time()
        cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--args_file", str(work / "args.json")]
        proc = subprocess.run(cmd, cwd=str(self.settings.bundle), env=env, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"the bundle's training failed (exit status {proc.returncode}); see the lines above.")
        best = work / "model.pt"
        if not best.is_file():
            raise RuntimeError(f"the bundle's training wrote no {best}: was there a validation epoch (val_interval)?")
        target = self.settings.model_dir / "model.pt"
        tmp = target.with_name(".model.pt.tmp")
        shutil.copyfile(best, tmp)
        os.replace(tmp, target)  # /infer reloads when the file changes
        stats = {
            "published": str(target),
            "epochs": args.get("epochs"),
            "training": len(training),
            "validation": len(validation),
            "seconds": round(time.time() - start, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        (self.settings.model_dir / "train_stats.json").write_text(json.dumps(stats, indent=2))
        print(f"published {target}: /infer serves the new weights", flush=True)
        return stats


class CALClassificationApp(MONAILabelApp):
    """Serves one classification bundle (``--conf bundle``, default: this bundle) under its metadata name."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.settings = BundleSettings(conf, app_dir)
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
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
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

    def infer(self, request, datastore=None):
        """MONAI Label's inference after the bundle's input screening: an unknown image id is a 404, a bad file a
        400/415/422 with the screening's message (see :func:`screen_image`)."""
        image = request.get("image")
        if isinstance(image, str):
            if os.path.exists(image):
                what = "uploaded file"
            else:
                store = datastore or self.datastore()
                if image not in store.list_images():
                    raise HTTPException(status_code=404, detail=_unknown_image(image))
                what = f"image '{image}'"
                image = store.get_image_uri(image)
            screen_image(image, self.settings.in_channels, what)
        return super().infer(copy.copy(request), datastore)
