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

from .errors import stop
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
    "check_labels",
    "inference_class_names",
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
    path = Path(path).absolute()  # items resolve to absolute paths, whatever the working folder of later readers
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
    Items to run inference on: the ``split`` of a datalist file, of the ``datalist.json`` inside a folder, one
    NIfTI volume (``*.nii``, ``*.nii.gz``) given as a file, or, for a folder without a datalist, every NIfTI volume
    in it, sorted by name. A missing or empty folder, a datalist that is not a JSON object or lacks ``split``
    end the run with a message naming the input and the fix (:func:`scripts.errors.stop`).
    """
    path = Path(source)
    if path.is_dir() and (path / DATALIST_NAME).is_file():
        path = path / DATALIST_NAME
    if path.is_file() and path.name.endswith(_NIFTI):
        return [{"image": str(path)}]
    if path.is_file():
        _check_inference_datalist(path, split)
        return load_split(path, split)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.name.endswith(_NIFTI))
        if images:
            return [{"image": str(p)} for p in images]
    if not path.exists():
        problem = "does not exist"
    elif path.is_dir() and not any(path.iterdir()):
        problem = "is an empty folder"
    else:
        problem = f"holds no NIfTI volume (*.nii, *.nii.gz) and no '{DATALIST_NAME}'"
    stop(f"--dataset_dir '{source}'", problem, _FIX_INPUT)


_NIFTI = (".nii", ".nii.gz")
_FIX_INPUT = (
    f"point --dataset_dir to a folder of NIfTI volumes (*.nii, *.nii.gz), a folder with a '{DATALIST_NAME}', a "
    f"datalist JSON file, or one NIfTI volume"
)


def _check_inference_datalist(path: Path, split: str) -> None:
    """End the run with a clear message when ``path`` is not a datalist with a list of items under ``split``."""
    what = f"datalist '{path}'"
    try:
        content = json.loads(path.read_text())
    except UnicodeDecodeError:
        stop(what, "is not a text (JSON) file", _FIX_INPUT)
    except ValueError as e:
        stop(what, f"is not valid JSON ({e})", "correct the JSON syntax at that place (e.g. python -m json.tool)")
    except OSError as e:
        stop(what, f"cannot be read ({e.strerror or e})", "check the file's permissions")
    if not isinstance(content, dict):
        stop(
            what,
            f"is a JSON {type(content).__name__}, not an object",
            f'write {{"{split}": [{{"image": "case.nii.gz"}}, ...]}}',
        )
    if split not in content:
        present = [k for k, v in content.items() if isinstance(v, list)]
        stop(
            f"--datalist_split '{split}'",
            f"is not a split of '{path}' (its splits: {', '.join(map(repr, present)) or 'none'})",
            f"choose one of them, e.g. --datalist_split {present[0]}" if present else f"list the cases under '{split}'",
        )
    items = content[split]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        stop(
            what,
            f"split '{split}' is not a list of items (objects)",
            f'write "{split}": [{{"image": "case.nii.gz"}}, ...]',
        )


def class_names(datalist: Mapping[str, Any], num_classes: int) -> list[str]:
    """
    Class names from a parsed datalist's ``labels`` mapping (:func:`read_datalist`), ``class_i`` where none; a
    ``labels`` that names other classes than ``0 .. num_classes-1`` ends the run naming both (:func:`check_labels`).
    """
    labels = datalist.get("labels") or {}
    check_labels(labels, num_classes, datalist.get("path", "the datalist"))
    return [str(labels.get(str(i), f"class_{i}")) for i in range(num_classes)]


def check_labels(labels: object, num_classes: int, datalist: str | os.PathLike) -> None:
    """Stop when a datalist's ``labels`` (``{"0": name, ...}``) names classes other than ``0 .. num_classes-1``."""
    if not labels:
        return
    expected = {str(i) for i in range(int(num_classes))}
    if not isinstance(labels, dict) or not set(map(str, labels)) <= expected or len(labels) != len(expected):
        count = len(labels) if isinstance(labels, (dict, list)) else "?"
        stop(
            f"--num_classes {num_classes}",
            f"disagrees with the {count} class names of 'labels' in '{datalist}' ({labels})",
            f"set --num_classes to the number of classes of the data (e.g. --num_classes {count}), or write 'labels' "
            f'as {{"0": "name", ..., "{int(num_classes) - 1}": "name"}}',
        )


def inference_class_names(
    source: str | os.PathLike, class_names: list[str] | tuple[str, ...], num_classes: int
) -> list[str]:
    """
    The class names inference writes: the ``labels`` of the datalist it reads (``source``: a datalist file or a
    folder with one) when it has them, else ``class_names``. Either must name exactly ``num_classes`` classes:
    otherwise the run ends naming both (the CSV would have the wrong width).
    """
    path = Path(source)
    path = path / DATALIST_NAME if path.is_dir() else path
    labels = {}
    if path.is_file() and not path.name.endswith(_NIFTI):
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError):
            content = {}  # inference_items reports it
        labels = content.get("labels") if isinstance(content, dict) else None
    if labels:
        check_labels(labels, num_classes, path)
        return [str(labels[k]) for k in sorted(map(str, labels), key=int)]
    names = [str(name) for name in class_names]
    if len(names) != int(num_classes):
        stop(
            f"--num_classes {num_classes}",
            f"disagrees with --class_names {names} ({len(names)} names)",
            f"give one name per class: --num_classes {len(names)}, or {num_classes} names in --class_names",
        )
    return names
