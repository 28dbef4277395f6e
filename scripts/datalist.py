# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Reading datalists.

A datalist is a decathlon-style JSON file ``{"training": [...], "validation": [...], "test": [...]}`` whose items
are ``{"image": "relative/path.nii.gz", "label": 2}`` (paths relative to the datalist's folder); an optional
``"labels": {"0": "name", ...}`` maps class indices to names.

A run reads the file once (:func:`read_datalist`, the configs' ``parsed_datalist``); the splits
(:func:`split_items`), the class names (:func:`class_names`) and the data check take what they need from that.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.data.decathlon_datalist import _append_paths

from .tabular import attach_tabular

__all__ = [
    "DATALIST_NAME",
    "SPLITS",
    "ensure_datalist",
    "read_datalist",
    "split_items",
    "load_split",
    "inference_items",
    "class_names",
]

DATALIST_NAME = "datalist.json"
SPLITS = ("training", "validation", "test")


def ensure_datalist(dataset_dir: str | os.PathLike, datalist: str = DATALIST_NAME) -> str:
    """Path of ``dataset_dir/datalist``; a clear error naming the folder and the fix when there is none."""
    root = Path(dataset_dir)
    path = root / datalist
    if path.is_file():
        return str(path)
    what = "does not exist" if not root.exists() else ("is empty" if not any(root.iterdir()) else "holds files")
    raise FileNotFoundError(
        f"no data set at '{root}': the folder {what} but has no '{datalist}'. Fix: point --dataset_dir to a folder "
        f'with a datalist ({{"training": [{{"image": "case.nii.gz", "label": 0}}, ...], "validation": [...], '
        f'"test": [...]}}, paths relative to the folder), convert MedMNIST data with '
        f"'python -m scripts.tools.convert_medmnist', or leave --dataset_dir at its default to use the embedded data."
    )


def read_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """
    Parse a datalist file once: its JSON object, each split's items resolved as MONAI's
    ``load_decathlon_datalist`` resolves them (``"image"`` made absolute from the datalist's folder, other entries
    too when they name an existing file, e.g. ``"mask"``; a test split of bare paths becomes ``{"image": path}``
    items), with their ``"tabular"`` values from the datalist's ``"tabular_csv"`` when it names one
    (:mod:`scripts.tabular`), and ``"path"``, the file's path. Items that are not objects are kept as they are,
    for the data check (:mod:`scripts.validation`) to report.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"datalist '{path}' cannot be read as JSON ({e}); fix the file.") from None
    if not isinstance(content, dict):
        raise ValueError(f'datalist \'{path}\' is not a JSON object; write {{"training": [...], "validation": [...]}}.')
    parsed = {**content, "path": str(path)}
    for split in SPLITS:
        items = content.get(split)
        if not isinstance(items, list):
            continue
        if split == "test":
            items = [{"image": i} if isinstance(i, str) else i for i in items]
        resolved = [_append_paths(path.parent, False, [dict(i)])[0] if isinstance(i, dict) else i for i in items]
        parsed[split] = attach_tabular(resolved, content, path.parent)
    return parsed


def split_items(datalist: Mapping[str, Any], split: str) -> list[dict]:
    """The items of one split of a datalist parsed by :func:`read_datalist` (a list of item dicts, copied)."""
    items = datalist.get(split)
    if not isinstance(items, list):
        raise ValueError(
            f"datalist '{datalist.get('path', '?')}' has no '{split}' split: list the {split} cases under it."
        )
    return [dict(i) if isinstance(i, Mapping) else i for i in items]


def load_split(datalist: str | os.PathLike, split: str) -> list[dict]:
    """The items of one split of a datalist file: :func:`split_items` of :func:`read_datalist`, for one-off reads."""
    return split_items(read_datalist(datalist), split)


def inference_items(source: str | os.PathLike, split: str = "test") -> list[dict]:
    """
    Items to run inference on: the ``split`` of a datalist file, of the ``datalist.json`` inside a folder, or,
    for a folder without a datalist, every NIfTI volume (``*.nii``, ``*.nii.gz``) in it, sorted by name.
    """
    path = Path(source)
    if path.is_dir() and (path / DATALIST_NAME).is_file():
        path = path / DATALIST_NAME
    if path.is_file():
        return load_split(path, split)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.name.endswith((".nii", ".nii.gz")))
        if images:
            return [{"image": str(p)} for p in images]
    raise FileNotFoundError(
        f"no input found at '{source}': give a datalist JSON file, a folder with a '{DATALIST_NAME}', or a folder "
        f"of NIfTI volumes (*.nii, *.nii.gz)."
    )


def class_names(datalist: Mapping[str, Any], num_classes: int) -> list[str]:
    """Class names from a parsed datalist's ``labels`` mapping (:func:`read_datalist`), ``class_i`` where none."""
    labels = datalist.get("labels") or {}
    return [str(labels.get(str(i), f"class_{i}")) for i in range(num_classes)]
