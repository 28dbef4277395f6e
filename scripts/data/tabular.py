# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Tabular (clinical / genomic) values next to the images: reading them from a datalist or a CSV, the training
split's normalisation statistics, and the transform that turns an item's values into the network's second input.

Two ways to give a case its L values (both may be used in one datalist; an item's own list wins):

- in the item: ``{"image": "case1.nii.gz", "label": 0, "tabular": [63.0, 1.2, null, ...]}``;
- in a CSV keyed by case id, named at the datalist's top level (the path relative to the datalist's folder)::

      {"tabular_csv": "clinical.csv", "tabular_columns": ["age", "psa", "gene_a"], "tabular_id_column": "id",
       "training": [{"image": "images/case1.nii.gz", "label": 0, "id": "case1"}, ...], ...}

  ``tabular_columns`` (default: every column but the id column) fixes the vector's order; ``tabular_id_column``
  defaults to ``"id"``; an item's id is its ``"id"``, or else its image file name without the suffix.

Missing values: ``null`` / ``NaN`` in a list, or an empty / ``NA`` / ``NaN`` cell, become NaN; the network replaces
them by the training split's mean and flags them (see :class:`scripts.tabular_net.TabularEncoder`).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from ..reports.outputs import case_name

__all__ = [
    "MISSING_TOKENS",
    "tabular_branch_length",
    "case_id",
    "tabular_vector",
    "read_tabular_csv",
    "attach_tabular",
    "tabular_statistics",
    "TabularVectord",
]

MISSING_TOKENS = ("", "na", "nan", "n/a", "null", "none")


def tabular_branch_length(use_tabular: bool, tabular_length: int) -> int:
    """
    L, the length of the network's tabular input: ``tabular_length`` when ``use_tabular``, else 0 (image only).
    Turning the branch on without a length is an error rather than a silent image-only model.
    """
    if not use_tabular:
        return 0
    if int(tabular_length) < 1:
        raise ValueError(
            f"use_tabular is on but tabular_length is {tabular_length}: set --tabular_length to the number of "
            f"tabular values per case."
        )
    return int(tabular_length)


def case_id(item: Mapping[str, Any]) -> str:
    """A datalist item's id: its ``"id"``, else its image's file name without the image suffix."""
    if item.get("id") is not None:
        return str(item["id"])
    meta = getattr(item.get("image"), "meta", {})  # after LoadImaged the path is in the image's meta data
    return case_name(meta.get("filename_or_obj", item.get("image", "")))


def _to_float(value: Any, case: str, position: str) -> float:
    if value is None or (isinstance(value, str) and value.strip().lower() in MISSING_TOKENS):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"case '{case}': tabular value {position} is {value!r}, not a number; write a number, or leave it empty "
            f"(null in JSON) when it is missing."
        ) from None
    if math.isinf(number):
        raise ValueError(
            f"case '{case}': tabular value {position} is infinite; give a finite number or leave it empty."
        )
    return number


def tabular_vector(values: Any, length: int, case: str = "?") -> np.ndarray:
    """
    The L tabular values of one case as float32 (L,), missing ones (None, NaN, empty / ``NA`` strings) as NaN.
    Raises a ValueError naming ``case`` when the values are absent, not numbers, infinite, or not ``length`` long.
    """
    if values is None:
        raise ValueError(
            f"case '{case}' has no tabular values but the model uses {length}: give the item a \"tabular\" list, or "
            f"a row in the datalist's \"tabular_csv\" (see the README's multimodal section)."
        )
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray, torch.Tensor)):
        values = [values]
    flat = np.asarray(values, dtype=object).reshape(-1)
    if len(flat) != length:
        raise ValueError(
            f"case '{case}' has {len(flat)} tabular values, the model expects tabular_length={length}; fix the "
            f"case's values or set --tabular_length."
        )
    return np.array([_to_float(v, case, f"#{i}") for i, v in enumerate(flat)], dtype=np.float32)


def read_tabular_csv(
    path: str | os.PathLike, columns: Sequence[str] | None = None, id_column: str = "id"
) -> tuple[list[str], dict[str, list[float]]]:
    """
    Read a CSV with one row per case: returns ``(columns, {case id: [L floats, NaN where missing]})``.
    ``columns`` picks and orders the value columns (default: all but ``id_column``, in file order).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tabular CSV '{path}' (the datalist's \"tabular_csv\") does not exist.")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        if id_column not in header:
            raise ValueError(
                f"tabular CSV '{path}' has no id column '{id_column}' (columns: {header}); add it or set the "
                f'datalist\'s "tabular_id_column".'
            )
        columns = [c for c in header if c != id_column] if columns is None else list(columns)
        absent = [c for c in columns if c not in header]
        if absent:
            raise ValueError(f"tabular CSV '{path}' lacks the columns {absent} named in \"tabular_columns\".")
        table: dict[str, list[float]] = {}
        for row in reader:
            case = str(row[id_column]).strip()
            if case in table:
                raise ValueError(f"tabular CSV '{path}' has case id '{case}' twice; keep one row per case.")
            table[case] = [_to_float(row[c], case, f"'{c}'") for c in columns]
    return columns, table


def attach_tabular(items: list[dict], datalist: Mapping[str, Any], base_dir: str | os.PathLike) -> list[dict]:
    """
    Give every item without its own ``"tabular"`` list the values of its row in the ``"tabular_csv"`` named by the
    parsed ``datalist`` (its path relative to ``base_dir``; looked up by :func:`case_id`). A datalist without
    ``"tabular_csv"`` leaves the items as they are. Items that are not dicts are left for the data check.
    """
    if not datalist.get("tabular_csv"):
        return items
    csv_path = Path(base_dir) / datalist["tabular_csv"]
    id_column = datalist.get("tabular_id_column", "id")
    _, table = read_tabular_csv(csv_path, datalist.get("tabular_columns"), id_column)
    for item in items:
        if not isinstance(item, dict) or item.get("tabular") is not None:
            continue
        case = case_id(item)
        if case not in table:
            raise ValueError(
                f"case '{case}' (image {item.get('image')}) has no row in '{csv_path}' (id column '{id_column}'); "
                f'add its row, or give the item its own "tabular" list or the "id" of its row.'
            )
        item["tabular"] = list(table[case])
    return items


def tabular_statistics(items: Sequence[Mapping[str, Any]], length: int, key: str = "tabular") -> dict[str, list]:
    """
    Per-column mean and standard deviation of the items' tabular values, NaN (missing) ignored: the training
    split's normalisation, returned as ``{"mean": [L], "std": [L]}`` for :class:`scripts.tabular_net.TabularEncoder`.
    ``length`` 0 (the tabular branch off) gives ``{}`` without reading anything. A column with no value gets mean 0
    and std 1; a constant column gets std 1.
    """
    if length <= 0:
        return {}
    if not items:
        raise ValueError("no training cases to compute the tabular normalisation statistics from.")
    values = np.stack([tabular_vector(item.get(key), length, case_id(item)) for item in items])
    observed = ~np.isnan(values)
    empty = [i for i in range(length) if not observed[:, i].any()]
    if empty:
        warnings.warn(f"tabular columns {empty} have no value in the training split: normalised with mean 0, std 1.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the empty columns' NaN, replaced below
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
    mean = np.where(np.isnan(mean), 0.0, mean)
    std = np.where(np.isnan(std) | (std < 1e-8), 1.0, std)
    return {"mean": mean.astype(float).tolist(), "std": std.astype(float).tolist()}


class TabularVectord(MapTransform):
    """
    Dictionary transform: ``data[key]`` (a list of L numbers, None / NaN where missing) -> float32 tensor (L,),
    the network's second input. ``length`` 0 means the tabular branch is off: the data are left as they are.
    A case without values, with non-numbers or with another length fails with an error naming the case.
    """

    def __init__(self, keys: KeysCollection = "tabular", length: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.length = int(length)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.length <= 0:
            return d
        for key in self.keys:
            if key not in d and self.allow_missing_keys:
                continue
            d[key] = torch.from_numpy(tabular_vector(d.get(key), self.length, case_id(d)))
        return d
