# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Reading datalists.

A datalist is a decathlon-style JSON file ``{"training": [...], "validation": [...], "test": [...]}`` whose items
are ``{"image": "relative/path.nii.gz", "label": 2}`` (paths relative to the datalist's folder; a one-hot label,
``[0, 0, 1]``, is read as its class index); an optional ``"labels": {"0": "name", ...}`` maps class indices to
names.

A run reads the file once (:func:`read_datalist`, the configs' ``parsed_datalist``); the splits
(:func:`split_items`), the class names (:func:`class_names`) and the data check take what they need from that.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.data.decathlon_datalist import _append_paths

from ..run.errors import stop
from .dataset_writer import DATALIST_NAME, SPLITS
from .tabular import attach_tabular

__all__ = [
    "DATALIST_NAME",
    "SPLITS",
    "ensure_datalist",
    "read_datalist",
    "one_hot_index",
    "split_items",
    "load_split",
    "inference_items",
    "class_names",
    "check_labels",
    "inference_class_names",
]


def ensure_datalist(dataset_dir: str | os.PathLike, datalist: str = DATALIST_NAME) -> str:
    """
    Path of ``dataset_dir/datalist``. A folder that does not exist (with the nearest existing name beside it, for a
    misspelt one), is empty, or holds files but no datalist ends the run naming the folder and the fix
    (:func:`scripts.run.errors.stop`).
    """
    root = Path(dataset_dir)
    path = root / datalist
    if path.is_file():
        return str(path)
    if not root.exists():
        near = _nearest_folder(root)
        problem = "does not exist" + (f" (nearest existing folder: '{near}')" if near else "")
    elif not root.is_dir():
        problem = "is a file, not a folder"
    else:
        volumes = [p for p in (*root.glob("*"), *root.glob("*/*")) if p.name.endswith(_NIFTI)]
        if volumes:
            problem = f"holds {len(volumes)} NIfTI volume(s) but no '{datalist}' that says which are training cases"
        elif any(root.iterdir()):
            problem = f"holds files but no '{datalist}'"
        else:
            problem = "is an empty folder"
    stop(f"--dataset_dir '{root}'", problem, _FIX_DATASET.format(datalist=datalist))


_FIX_DATASET = (
    "point --dataset_dir to a folder with a {datalist} "
    '({{"training": [{{"image": "case.nii.gz", "label": 0}}, ...], "validation": [...], "test": [...]}}, paths '
    "relative to the folder), convert MedMNIST data with 'python -m scripts.tools.convert_medmnist', or leave "
    "--dataset_dir at its default to use the embedded data"
)


def _nearest_folder(path: Path) -> str | None:
    """The existing folder beside a missing ``path`` whose name is closest to its name, if any is close."""
    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    if parent != path.parent:
        return None
    try:
        names = [p.name for p in parent.iterdir() if p.is_dir()]
    except OSError:
        return None
    match = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return str(parent / match[0]) if match else None


def read_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """
    Parse a datalist file once: its JSON object, each split's items resolved as MONAI's
    ``load_decathlon_datalist`` resolves them (``"image"`` made absolute from the datalist's folder, other entries
    too when they name an existing file, e.g. ``"mask"``; a test split of bare paths becomes ``{"image": path}``
    items), a one-hot ``"label"`` (``[0, 1, 0]``) made its class index (``1``), with their ``"tabular"`` values
    from the datalist's ``"tabular_csv"`` when it names one (:mod:`scripts.data.tabular`), and ``"path"``, the file's
    path. Items that are not objects, and labels that are neither, are kept as they are, for the data check
    (:mod:`scripts.data.checks`) to report. A file that is not a JSON object ends the run naming it and the fix.
    """
    path = Path(path).absolute()  # items resolve to absolute paths, whatever the working folder of later readers
    what = f"datalist '{path}'"
    try:
        content = json.loads(path.read_text())
    except UnicodeDecodeError:
        stop(what, "cannot be read as JSON (it is not a text file)", "give the datalist's JSON file")
    except ValueError as e:
        stop(what, f"cannot be read as JSON ({e})", "correct the JSON syntax at that place (e.g. python -m json.tool)")
    except OSError as e:
        stop(what, f"cannot be read as JSON ({e.strerror or e})", "check the path and the file's permissions")
    if not isinstance(content, dict):
        stop(
            what,
            f"is a JSON {type(content).__name__}, not an object",
            'write {"training": [...], "validation": [...], "test": [...]}',
        )
    parsed = {**content, "path": str(path)}
    for split in SPLITS:
        items = content.get(split)
        if not isinstance(items, list):
            continue
        if split == "test":
            items = [{"image": i} if isinstance(i, str) else i for i in items]
        resolved = [_append_paths(path.parent, False, [dict(i)])[0] if isinstance(i, dict) else i for i in items]
        resolved = [_class_index(i) if isinstance(i, dict) else i for i in resolved]
        parsed[split] = attach_tabular(resolved, content, path.parent)
    return parsed


def one_hot_index(label: Any) -> int | None:
    """The class index of a one-hot label (a list of 0/1 numbers with a single 1), None for anything else."""
    if not isinstance(label, (list, tuple)) or not label:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v in (0, 1) for v in label):
        return None
    ones = [i for i, v in enumerate(label) if v == 1]
    return ones[0] if len(ones) == 1 else None


def _class_index(item: dict, key: str = "label") -> dict:
    index = one_hot_index(item.get(key))
    return item if index is None else {**item, key: index}


def split_items(datalist: Mapping[str, Any], split: str) -> list[dict]:
    """
    The items of one split of a datalist parsed by :func:`read_datalist` (a list of item dicts, copied); a
    missing split ends the run naming the datalist, its splits and the fix.
    """
    items = datalist.get(split)
    if not isinstance(items, list):
        present = [s for s in SPLITS if isinstance(datalist.get(s), list)]
        stop(
            f"datalist '{datalist.get('path', '?')}'",
            f"has no '{split}' split (its splits: {', '.join(map(repr, present)) or 'none'})",
            f'list the {split} cases under "{split}": [{{"image": "case.nii.gz", "label": 0}}, ...]',
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
    end the run with a message naming the input and the fix (:func:`scripts.run.errors.stop`).
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
