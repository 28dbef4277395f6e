# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
A synthetic multimodal data set: the class depends on the image AND on the tabular values, so neither alone can
reach more than about half the cases, and a model that fuses both can reach all of them.

Each case is a synthetic volume of :mod:`scripts.tools.synthetic_data` whose ball is one of two fillings
(``image_classes``, e.g. solid or hollow), and L tabular values in raw, unequal units (an "age" around 60, a marker
around 5, ...) of which the first two decide a group: ``high`` when their standardised sum is positive, ``low``
otherwise; the others are noise. The label is ``2 * filling + group`` (``solid_low``, ``solid_high``, ``hollow_low``,
``hollow_high``). A fraction of the values is missing (null / empty cell) to exercise the missing-value rule.

    python -m scripts.tools.multimodal_data --root data/multimodal               # inline "tabular" lists
    python -m scripts.tools.multimodal_data --root data/multimodal_csv --use_csv True  # a clinical.csv keyed by case id
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.datalist import DATALIST_NAME, SPLITS
from ..data.dataset_writer import staged_folder, write_nifti
from .synthetic_data import SYNTHETIC_CLASSES, synthetic_affine, synthetic_case

__all__ = ["TABULAR_GROUPS", "TABULAR_CSV", "multimodal_class_names", "tabular_case", "generate_multimodal_dataset"]

TABULAR_GROUPS = ("low", "high")
TABULAR_CSV = "clinical.csv"
# raw units of the columns (cycled when L > 8): the network must normalise them to use them
_OFFSETS = np.array([60.0, 5.0, 120.0, 0.5, -20.0, 1000.0, 3.0, 40.0])
_SCALES = np.array([12.0, 0.5, 30.0, 0.1, 5.0, 250.0, 1.0, 8.0])


def multimodal_class_names(image_classes: Sequence[str] = ("solid", "hollow")) -> list[str]:
    """Class names in label order: ``<filling>_<group>`` for each filling and group."""
    return [f"{image}_{group}" for image in image_classes for group in TABULAR_GROUPS]


def tabular_case(rng: np.random.Generator, group: int, length: int = 8, margin: float = 0.25) -> np.ndarray:
    """
    Raw tabular values (L,) float64 of a case of ``group`` (0: low, 1: high): standard normal draws whose first
    two sum to more than ``margin`` (high) or less than ``-margin`` (low), mapped to each column's raw units.
    """
    if length < 2:
        raise ValueError(f"the multimodal data set needs at least 2 tabular values, got length={length}.")
    while True:
        z = rng.normal(size=length)
        score = z[0] + z[1]
        if abs(score) >= margin and (score > 0) == bool(group):
            break
    index = np.arange(length) % len(_OFFSETS)
    return _OFFSETS[index] + _SCALES[index] * z


def generate_multimodal_dataset(
    root: str | os.PathLike,
    size: int = 32,
    num_cases: tuple[int, int, int] = (600, 100, 100),
    seed: int = 0,
    tabular_length: int = 8,
    missing_rate: float = 0.05,
    image_classes: Sequence[str] = ("solid", "hollow"),
    use_csv: bool = False,
) -> Path:
    """
    Write the multimodal data set into ``root`` (``images/``, ``masks/``, ``datalist.json`` and, with ``use_csv``,
    ``clinical.csv``); classes balanced per split, deterministic in ``seed``. Each item carries ``"id"``; its L
    values are an inline ``"tabular"`` list, or, with ``use_csv``, a row of ``clinical.csv`` named by the datalist's
    ``"tabular_csv"``. Values are missing (null / empty) with probability ``missing_rate``. Returns the datalist.
    """
    unknown = [name for name in image_classes if name not in SYNTHETIC_CLASSES]
    if len(image_classes) != 2 or unknown:
        raise ValueError(f"image_classes must be two of {SYNTHETIC_CLASSES}, got {list(image_classes)}.")
    fillings = [SYNTHETIC_CLASSES.index(name) for name in image_classes]
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"'{root}' already holds files; choose an empty or new folder.")
    rng = np.random.default_rng(seed)
    affine = synthetic_affine(size)
    columns = [f"feature_{j}" for j in range(tabular_length)]
    names = multimodal_class_names(image_classes)
    datalist: dict = {
        "name": "cal_3d_classification synthetic multimodal",
        "description": "Synthetic volumes plus tabular values; the class is the ball's filling AND a tabular group.",
        "labels": {str(i): name for i, name in enumerate(names)},
        "tensorImageSize": "3D",
        "tabular_columns": columns,
    }
    rows = []
    with staged_folder(root, ("images", "masks")) as tmp:
        index = 0
        for split, count in zip(SPLITS, num_cases):
            items = []
            for i in range(count):
                label = i % len(names)
                image, mask = synthetic_case(rng, fillings[label // 2], size)
                values = tabular_case(rng, label % 2, tabular_length)
                missing = rng.random(tabular_length) < missing_rate
                tabular = [None if m else round(float(v), 4) for v, m in zip(values, missing)]
                name = f"case_{index:04d}"
                write_nifti(image, tmp / "images" / f"{name}.nii.gz", affine)
                write_nifti(mask, tmp / "masks" / f"{name}.nii.gz", affine)
                item = {"image": f"images/{name}.nii.gz", "label": label, "mask": f"masks/{name}.nii.gz", "id": name}
                if use_csv:
                    rows.append([name] + ["" if v is None else v for v in tabular])
                else:
                    item["tabular"] = tabular
                items.append(item)
                index += 1
            datalist[split] = items
        if use_csv:
            datalist["tabular_csv"] = TABULAR_CSV
            datalist["tabular_id_column"] = "id"
            with open(tmp / TABULAR_CSV, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["id"] + columns)
                writer.writerows(rows)
        (tmp / DATALIST_NAME).write_text(json.dumps(datalist, indent=2))
    return root / DATALIST_NAME


if __name__ == "__main__":
    import fire

    fire.Fire(generate_multimodal_dataset)
