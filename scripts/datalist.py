# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Reading datalists.

A datalist is a decathlon-style JSON file ``{"training": [...], "validation": [...], "test": [...]}`` whose items
are ``{"image": "relative/path.nii.gz", "label": 2}`` (paths relative to the datalist's folder); an optional
``"labels": {"0": "name", ...}`` maps class indices to names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from monai.data import load_decathlon_datalist

from .tabular import attach_tabular

__all__ = ["DATALIST_NAME", "SPLITS", "ensure_datalist", "load_split", "inference_items", "class_names"]

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


def load_split(datalist: str | os.PathLike, split: str) -> list[dict]:
    """
    Items of one split of a datalist, image (and mask) paths made absolute from the datalist's folder; items get
    their ``"tabular"`` values from the datalist's ``"tabular_csv"`` when it names one (:mod:`scripts.tabular`).
    """
    return attach_tabular(load_decathlon_datalist(datalist, is_segmentation=False, data_list_key=split), datalist)


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


def class_names(datalist: str | os.PathLike, num_classes: int) -> list[str]:
    """Class names from the datalist's ``labels`` mapping, or ``class_0 ...`` where it has none."""
    labels = json.loads(Path(datalist).read_text()).get("labels", {})
    return [str(labels.get(str(i), f"class_{i}")) for i in range(num_classes)]
