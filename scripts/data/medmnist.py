# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Convert a MedMNIST 3D ``.npz`` file (the ``medmnist`` package's format: ``train_images``, ``train_labels``,
``val_images``, ... with images (N, D, H, W) and labels (N, 1)) into NIfTI volumes and the bundle's datalist,
keeping the official training/validation/test splits and the class names::

    python -m scripts.tools.convert_medmnist --npz adrenalmnist3d.npz --output_dir data/adrenal28

then train and evaluate through the normal configs::

    python -m monai.bundle run training --config_file configs/train.json --dataset_dir data/adrenal28 \\
        --num_classes 2 --spatial_size "[28,28,28]"

MedMNIST: Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
classification", Scientific Data 10, 41 (2023); data CC BY 4.0. The ``medmnist`` package is not needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from .dataset_writer import DATALIST_NAME, staged_folder, write_nifti

__all__ = ["MEDMNIST_3D_LABELS", "subset_name", "convert_npz"]

# Class names of the six MedMNIST v2 3D subsets, as in the medmnist package's INFO[...]["label"].
MEDMNIST_3D_LABELS: dict[str, tuple[str, ...]] = {
    "organmnist3d": (
        "liver",
        "kidney-right",
        "kidney-left",
        "femur-right",
        "femur-left",
        "bladder",
        "heart",
        "lung-right",
        "lung-left",
        "spleen",
        "pancreas",
    ),
    "nodulemnist3d": ("benign", "malignant"),
    "adrenalmnist3d": ("normal", "hyperplasia"),
    "fracturemnist3d": ("buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"),
    "vesselmnist3d": ("vessel", "aneurysm"),
    "synapsemnist3d": ("inhibitory synapse", "excitatory synapse"),
}
SPLITS = {"training": "train", "validation": "val", "test": "test"}


def subset_name(path: str | os.PathLike) -> str:
    """The MedMNIST subset a file holds, from its name: ``adrenalmnist3d_64.npz`` -> ``adrenalmnist3d``."""
    return re.sub(r"(_\d+)?\.npz$", "", Path(path).name.lower())


def _load(npz: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The three splits' (images (N, D, H, W), labels (N,)) from the file, checked."""
    if not npz.is_file():
        raise FileNotFoundError(f"no MedMNIST file at '{npz}': give the path of a .npz such as adrenalmnist3d.npz.")
    splits = {}
    with np.load(npz) as data:
        for split, prefix in SPLITS.items():
            keys = (f"{prefix}_images", f"{prefix}_labels")
            missing = [k for k in keys if k not in data]
            if missing:
                raise KeyError(
                    f"'{npz}' lacks {missing} (has {sorted(data.keys())}): a MedMNIST .npz holds train_, val_ and "
                    f"test_images/labels."
                )
            images, labels = data[keys[0]], data[keys[1]]
            if images.ndim == 5 and images.shape[-1] == 1:  # a trailing channel axis
                images = images[..., 0]
            if images.ndim != 4:
                raise ValueError(
                    f"{keys[0]} in '{npz}' has shape {images.shape}; a 3D subset has (N, D, H, W). 2D MedMNIST "
                    f"subsets are not volumes and do not fit this bundle."
                )
            if labels.ndim == 2 and labels.shape[1] > 1:
                raise ValueError(
                    f"{keys[1]} in '{npz}' has shape {labels.shape}: multi-label data is not supported "
                    f"(one class per case)."
                )
            labels = labels.reshape(-1).astype(np.int64)
            if len(labels) != len(images):
                raise ValueError(f"'{npz}': {len(images)} {keys[0]} but {len(labels)} {keys[1]}.")
            splits[split] = (images, labels)
    return splits


def convert_npz(
    npz: str | os.PathLike,
    output_dir: str | os.PathLike,
    subset: str | None = None,
    class_names: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """
    Write ``output_dir/images/<split>_<index>.nii.gz`` (the volumes as stored, uint8, identity affine) and
    ``output_dir/datalist.json`` (``training``/``validation``/``test`` = MedMNIST's train/val/test, ``labels`` =
    the class names) from a MedMNIST 3D ``.npz``. Class names come from ``class_names``, else from the known
    subsets (``subset``, or the file name), else ``class_<i>``. The folder is built beside ``output_dir`` and
    moved into place, so an interrupted run leaves nothing half-written. Returns the datalist's path.
    """
    npz, root = Path(npz), Path(output_dir)
    splits = _load(npz)
    subset = subset or subset_name(npz)
    num_classes = int(max(labels.max() for _, labels in splits.values())) + 1
    names = list(class_names or MEDMNIST_3D_LABELS.get(subset, [f"class_{i}" for i in range(num_classes)]))
    if num_classes > len(names):
        raise ValueError(
            f"'{npz}' has labels up to {num_classes - 1} but {len(names)} class names {names}: check --subset or "
            f"give --class_names."
        )
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"'{root}' is not empty: choose another --output_dir or pass --overwrite.")
        shutil.rmtree(root)
    datalist: dict = {
        "name": subset,
        "description": f"MedMNIST {subset} converted from {npz.name} (official splits). Yang et al., Scientific "
        f"Data 10, 41 (2023); CC BY 4.0.",
        "labels": {str(i): name for i, name in enumerate(names)},
        "tensorImageSize": "3D",
        "numTraining": len(splits["training"][1]),
    }
    with staged_folder(root) as tmp:
        for split, (images, labels) in splits.items():
            items = []
            for i, (image, label) in enumerate(zip(images, labels)):
                name = f"images/{SPLITS[split]}_{i:04d}.nii.gz"
                write_nifti(np.ascontiguousarray(image), tmp / name)  # identity affine: 1 mm voxels
                items.append({"image": name, "label": int(label)})
            datalist[split] = items
        (tmp / DATALIST_NAME).write_text(json.dumps(datalist, indent=2))
    return root / DATALIST_NAME
