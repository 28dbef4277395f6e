# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Data checks that run before any training or inference time is spent.

:func:`validate_datalist` takes a decathlon-style datalist (parsed by :func:`scripts.data.datalist.read_datalist`, or
its file) and checks every case of the chosen splits: the image
file exists, MONAI's ``LoadImage`` reads it, it is a 3D volume with ``in_channels`` channels and finite voxels; the
label is an integer in ``[0, num_classes)``; no case is listed twice (same file, or same voxels under another
name); no split is empty; and, when ``tabular_length`` is set, the item's ``"tabular"`` entry is a list of that many
finite numbers. It returns a :class:`ValidationReport` whose :meth:`~ValidationReport.message` lists every problem
with its case and its fix. A class present in validation/test but absent from training is a warning.

The bundle calls :func:`require_valid_datalist` (train.json, evaluate.json) and :func:`screen_items` /
:func:`exit_if_failed` (inference.json, where bad cases are reported and the good ones still run).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch
from monai.transforms import LoadImage

from ..reports.outputs import atomic_write_text, case_name, unique_case_names
from ..run.errors import BundleInputError
from .datalist import DATALIST_NAME, read_datalist
from .transforms import image_shape, voxel_limit_problem

__all__ = [
    "Problem",
    "ValidationReport",
    "DataValidationError",
    "ImageCheck",
    "check_image",
    "validate_items",
    "validate_datalist",
    "check_datalist",
    "require_valid_datalist",
    "Screening",
    "screen_items",
    "exit_if_failed",
]

logger = logging.getLogger(__name__)

TABULAR_KEY = "tabular"
ERRORS_FILE = "errors.csv"
_FIX_PATH = "correct the path (relative to the datalist's folder) or remove the case"
_FIX_UNREADABLE = "re-export or re-copy the file (check that it opens in a viewer), or remove the case"
_FIX_DUPLICATE = "list each case once, in one split only"
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass
class Problem:
    """One bad case: where it is (``training[3]``), the image as written in the datalist, what is wrong, the fix."""

    where: str
    case: str
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where} '{self.case}': {self.reason}. Fix: {self.fix}."


@dataclass
class ValidationReport:
    """Outcome of a data check: ``errors`` (each a :class:`Problem`), ``warnings`` and the number of cases seen."""

    source: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    num_cases: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def message(self) -> str:
        """One message listing every problem, one per line, with a summary line first."""
        if self.ok:
            return f"data check of {self.source}: {self.num_cases} cases, no problems."
        per_where = Counter(p.where.split("[")[0] for p in self.errors)
        lines = [
            f"Data check of {self.source} failed: {len(self.errors)} problem(s) "
            f"({', '.join(f'{k} {v}' for k, v in per_where.items())}) among {self.num_cases} case(s). Nothing was run. "
            f"Fix the data and run again:"
        ]
        lines += [f"  {p}" for p in self.errors]
        missing = sum(p.reason.startswith("file not found") for p in self.errors)
        if self.num_cases and missing > self.num_cases / 2:
            lines.append(
                "  Most images are missing: check --dataset_dir; image paths are relative to the datalist's folder."
            )
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append("  (--validate_data False skips this check; the run then stops at the first bad case.)")
        return "\n".join(lines)


class DataValidationError(ValueError):
    """Raised by :func:`check_datalist`; ``report`` holds every problem found."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.message())
        self.report = report


@dataclass
class ImageCheck:
    """What :func:`check_image` found: ``problems`` as ``(reason, fix)`` pairs, and a digest of the voxels."""

    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    digest: str | None = None


def _paths(image: Any) -> list[str] | None:
    if isinstance(image, (str, os.PathLike)):
        return [os.fspath(image)]
    if isinstance(image, Sequence) and image and all(isinstance(p, (str, os.PathLike)) for p in image):
        return [os.fspath(p) for p in image]
    return None


def _as_written(image: Any, base_dir: str | os.PathLike | None) -> str:
    """An image entry as the datalist wrote it: relative to the datalist's folder when it lies inside it."""
    text = str(image)
    if base_dir is None or not isinstance(image, (str, os.PathLike)) or not os.path.isabs(text):
        return text
    relative = os.path.relpath(text, os.fspath(base_dir))
    return text if relative.startswith("..") else relative


def check_image(
    image: str | os.PathLike | Sequence[str],
    in_channels: int = 1,
    loader: LoadImage | None = None,
    max_voxels: int | None = None,
):
    """
    Check one image the way the bundle will read it (``LoadImage(image_only=True, ensure_channel_first=True)``):
    it exists, it is readable, it is a 3D volume (C, D, H, W) with ``in_channels`` channels and no NaN/Inf voxels,
    and (``max_voxels``) not larger than that per channel: from the file's header before loading where it has one
    (:func:`scripts.data.transforms.image_shape`). ``image`` is a path or a list of paths (one image). Returns an
    :class:`ImageCheck`.
    """
    result = ImageCheck()
    paths = _paths(image)
    if paths is None:
        result.problems.append((f"image entry {image!r} is not a file path", "give the image's path as a string"))
        return result
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        result.problems.append((f"file not found ({', '.join(missing)})", _FIX_PATH))
        return result
    too_large = voxel_limit_problem(image_shape(paths[0]) if len(paths) == 1 else None, max_voxels)
    if too_large:
        result.problems.append(too_large)
        return result
    loader = loader or LoadImage(image_only=True, ensure_channel_first=True)
    try:
        data = loader(paths[0] if len(paths) == 1 else paths)
    except Exception as e:  # any reader error: corrupt, truncated, not an image
        detail = " ".join(str(e).split())[:300]
        result.problems.append((f"unreadable image ({type(e).__name__}: {detail})", _FIX_UNREADABLE))
        return result
    array = data.as_tensor() if hasattr(data, "as_tensor") else torch.as_tensor(data)
    too_large = voxel_limit_problem(tuple(array.shape), max_voxels, channel_first=True)
    if too_large:  # a format without a header read above
        result.problems.append(too_large)
        return result
    spatial = tuple(array.shape[1:])
    if len(spatial) != 3 or min(spatial) < 2:
        kind = "a single slice" if len(spatial) == 3 else f"{len(spatial)}D"
        result.problems.append(
            (
                f"not a 3D volume: spatial shape {spatial} ({kind})",
                "give one 3D volume (D, H, W) per case; stack 2D slices into a volume first",
            )
        )
    elif array.shape[0] != in_channels:
        result.problems.append(
            (
                f"{array.shape[0]} channels, the network takes in_channels={in_channels}",
                f"give {in_channels}-channel volumes, or set --in_channels {array.shape[0]} if that is intended",
            )
        )
    finite = torch.isfinite(array) if array.is_floating_point() else torch.ones_like(array, dtype=torch.bool)
    if not bool(finite.all()):
        nans = int(torch.isnan(array).sum())
        result.problems.append(
            (
                f"{nans} NaN and {int((~finite).sum()) - nans} infinite voxels (an intensity beyond float32's range, "
                f"+-{_FLOAT32_MAX:.3g}, reads as infinite)",
                "replace them (e.g. with the background value) when exporting the volume, or rescale the intensities",
            )
        )
    elif array.numel() and array.is_floating_point() and _overflows(array):
        low, high = float(array.min()), float(array.max())
        result.problems.append(
            (
                f"intensities span [{low:.3g}, {high:.3g}]: a range beyond float32's (+-{_FLOAT32_MAX:.3g}), so "
                f"scaling them to [0, 1] overflows and the loss turns NaN",
                "rescale the intensities (e.g. to their physical units) when exporting the volume",
            )
        )
    elif array.numel() and bool((array == array.reshape(-1)[0]).all()):
        result.warnings.append(f"image is constant (every voxel {float(array.reshape(-1)[0]):g})")
    digest = hashlib.sha1(str((tuple(array.shape), str(array.dtype))).encode())
    digest.update(array.contiguous().numpy().tobytes())
    result.digest = digest.hexdigest()
    return result


def _overflows(array: torch.Tensor) -> bool:
    """Whether float32 arithmetic on ``array``'s intensities overflows: their range (max - min) is not finite."""
    low, high = array.min().float(), array.max().float()
    return not bool(torch.isfinite(high - low))


def _label_problem(label: Any, num_classes: int | None) -> tuple[str, str] | None:
    top = "0..num_classes-1" if num_classes is None else f"0..{num_classes - 1}"
    if isinstance(label, bool) or not isinstance(label, Integral):
        return (f"label {label!r} is not an integer class index", f"write the class index as an integer {top}")
    if label < 0 or (num_classes is not None and label >= num_classes):
        return (
            f"label {label} is " + ("negative" if num_classes is None else f"outside [0, {num_classes})"),
            f"use a class index {top}, or set --num_classes to the number of classes",
        )
    return None


def _tabular_problem(item: Mapping, tabular_length: int) -> tuple[str, str] | None:
    """A problem of the item's tabular vector; missing values (None or NaN) are allowed: they are imputed."""
    fix = f"give '{TABULAR_KEY}' as a list of {tabular_length} numbers (null for a missing value) for every case"
    if TABULAR_KEY not in item:
        return (f"no '{TABULAR_KEY}' vector", fix)
    values = item[TABULAR_KEY]
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        return (f"'{TABULAR_KEY}' is {type(values).__name__}, not a list of numbers", fix)
    values = list(values)
    if not all(v is None or (isinstance(v, Real) and not isinstance(v, bool)) for v in values):
        return (f"'{TABULAR_KEY}' holds values that are not numbers", fix)
    if len(values) != tabular_length:
        return (f"'{TABULAR_KEY}' has {len(values)} values, expected {tabular_length}", fix)
    if any(v is not None and math.isinf(v) for v in values):
        return (f"'{TABULAR_KEY}' holds infinite values", "replace them with the measured value, or null if unknown")
    return None


def _resolve(item: Any, image_key: str, base_dir: str | os.PathLike | None) -> Any:
    """The item's image entry, its paths resolved against ``base_dir`` (None for an item without one)."""
    image = item.get(image_key) if isinstance(item, Mapping) else None
    paths = _paths(image)
    if paths is None or base_dir is None:
        return image
    paths = [os.path.normpath(os.path.join(os.fspath(base_dir), p)) for p in paths]
    return paths[0] if isinstance(image, (str, os.PathLike)) else paths


def _check_images(
    images: Sequence[Any], in_channels: int, num_workers: int | None, max_voxels: int | None = None
) -> list[ImageCheck | None]:
    """:func:`check_image` of each image (None for None), in up to ``num_workers`` threads (default: up to 4)."""
    workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
    local = threading.local()  # one loader per thread

    def check(image: Any) -> ImageCheck | None:
        if image is None:
            return None
        if not hasattr(local, "loader"):
            local.loader = LoadImage(image_only=True, ensure_channel_first=True)
        return check_image(image, in_channels=in_channels, loader=local.loader, max_voxels=max_voxels)

    if workers > 1 and len(images) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(check, images))
    return [check(image) for image in images]


def _duplicates_in(
    items: Sequence[Any],
    split: str,
    report: ValidationReport,
    seen: Mapping[str, str],
    base_dir: str | os.PathLike,
    image_key: str,
    num_workers: int | None,
    warn: bool = False,
) -> None:
    """
    Report each item of a split that is not otherwise checked (e.g. ``test`` at training) whose file or voxels
    are those of a checked case in ``seen``; its other problems (missing, unreadable file) are not this run's.
    With ``warn``, each is a warning that the checked case was also a training case (evaluation, inference).
    """
    images = [_resolve(item, image_key, base_dir) for item in items]
    for index, (item, image, result) in enumerate(zip(items, images, _check_images(images, 1, num_workers))):
        for key in _case_keys(image, result):
            if key in seen:
                what = "the same file as" if not key.startswith("voxels:") else "identical voxels to"
                if warn:
                    name = _as_written(item.get(image_key), base_dir)
                    same = "is the same file as" if not key.startswith("voxels:") else "has the same voxels as"
                    report.warnings.append(_overlap_warning(seen[key], same, f"{split}[{index}] '{name}'"))
                else:
                    reason = f"{what} {seen[key]} (the '{split}' split must hold cases the model never saw)"
                    problem = Problem(f"{split}[{index}]", str(item.get(image_key)), reason, _FIX_DUPLICATE)
                    report.errors.append(problem)
                break


def _case_keys(image: Any, result: ImageCheck | None) -> list[str]:
    """What identifies a case across splits: its file path and, when it could be read, a digest of its voxels."""
    if result is None:
        return []
    return [str(image)] + ([f"voxels:{result.digest}"] if result.digest else [])


def _overlap_warning(case: str, what: str, training_case: str) -> str:
    return (
        f"{case} {what} {training_case}, a case the model was trained on, so its metrics are optimistic; "
        f"fix: list each case in one split only"
    )


def validate_items(
    items: Sequence[Mapping],
    split: str,
    report: ValidationReport,
    num_classes: int | None = None,
    in_channels: int = 1,
    labelled: bool = True,
    tabular_length: int | None = None,
    base_dir: str | os.PathLike | None = None,
    image_key: str = "image",
    label_key: str = "label",
    seen: dict[str, str] | None = None,
    num_workers: int | None = None,
    max_voxels: int | None = None,
) -> list[ImageCheck | None]:
    """
    Check the items of one split and add their problems to ``report``. Image paths are resolved against
    ``base_dir`` when given (datalist paths are relative to the datalist's folder). ``seen`` maps file paths and
    voxel digests to the case that first had them, across splits, to find duplicates (None: no duplicate check).
    Returns one :class:`ImageCheck` per item (None for an item without an image entry).
    """
    report.num_cases += len(items)
    images = [_resolve(item, image_key, base_dir) for item in items]
    checks = _check_images(images, in_channels, num_workers, max_voxels)

    for index, (item, image, result) in enumerate(zip(items, images, checks)):
        where = f"{split}[{index}]"
        if not isinstance(item, Mapping):
            report.errors.append(Problem(where, repr(item)[:80], "item is not an object", "write {'image': ...}"))
            continue
        name = _as_written(item.get(image_key, "?"), base_dir)
        problems: list[tuple[str, str]] = []
        if result is None:
            problems.append((f"no '{image_key}' entry", f"give each case an '{image_key}' path"))
        else:
            problems += result.problems
            report.warnings += [f"{where} '{name}': {w}" for w in result.warnings]
            keys = _case_keys(image, result)
            for key in keys if seen is not None else []:
                if key in seen:
                    what = "the same file as" if not key.startswith("voxels:") else "identical voxels to"
                    problems.append((f"{what} {seen[key]}", _FIX_DUPLICATE))
                    break
            for key in keys if seen is not None else []:
                seen.setdefault(key, f"{where} '{name}'")
        if labelled:
            if label_key not in item:
                problems.append((f"no '{label_key}'", f"give each case a '{label_key}' (class index)"))
            else:
                problem = _label_problem(item[label_key], num_classes)
                problems += [problem] if problem else []
        if tabular_length is not None:
            problem = _tabular_problem(item, tabular_length)
            problems += [problem] if problem else []
        report.errors += [Problem(where, name, reason, fix) for reason, fix in problems]
    return checks


def _labels(items: Sequence[Any], label_key: str) -> set:
    """The labels of ``items`` that can be class indices (hashable; a list label is reported by the check)."""
    labels = (i.get(label_key) for i in items if isinstance(i, Mapping))
    return {label for label in labels if label is None or isinstance(label, (Integral, Real, str))}


def validate_datalist(
    datalist: Mapping[str, Any] | str | os.PathLike,
    splits: Sequence[str] = ("training", "validation"),
    num_classes: int | None = None,
    in_channels: int = 1,
    tabular_length: int | None = None,
    reference_split: str | None = "training",
    image_key: str = "image",
    label_key: str = "label",
    num_workers: int | None = None,
    compare_splits: Sequence[str] = ("test",),
    overlap_splits: Sequence[str] = (),
    max_voxels: int | None = None,
) -> ValidationReport:
    """
    Check the ``splits`` of a decathlon-style datalist (see the module docstring for the checks).

    Args:
        datalist: the datalist parsed by :func:`scripts.data.datalist.read_datalist` (what the bundle passes: the
            file is read once per run), or its file, read here; image paths in the file are relative to its folder.
        splits: the splits to check; each must exist and be non-empty.
        num_classes: labels must lie in ``[0, num_classes)``; None checks only that they are non-negative integers.
        in_channels: the number of channels each image must have.
        tabular_length: when set, each item must have ``"tabular"`` (its own, or its row of the datalist's
            ``"tabular_csv"``): a list of this many numbers, None or NaN marking a missing value.
        reference_split: the split whose classes the others should contain (a class missing there is a warning);
            read from the datalist even when not in ``splits``; None skips the warning.
        compare_splits: splits not in ``splits`` whose cases must not be any checked case (same file or identical
            voxels): at training, a test case also in training or validation is an error. Only that is checked in
            them; a split missing from the datalist is skipped.
        overlap_splits: splits not in ``splits`` (``training`` at evaluation) whose cases the checked ones should
            not be (same file or identical voxels): each such case is a warning naming both (the metrics of a case
            the model was trained on are optimistic). A split missing from the datalist is skipped.
        num_workers: threads reading images (default: up to 4).
        max_voxels: a case with more voxels per channel is an error (read from the file's header where it has one).
    """
    if not isinstance(datalist, Mapping):
        try:
            datalist = read_datalist(datalist)
        except (OSError, ValueError, BundleInputError) as e:
            report = ValidationReport(source=f"'{datalist}'")
            report.errors.append(Problem("datalist", str(datalist), str(e), "fix the datalist file or its tabular CSV"))
            return report
    content = datalist
    source = str(content.get("path", "datalist"))
    report = ValidationReport(source=f"'{source}'")
    base_dir = Path(source).parent
    seen: dict[str, str] = {}
    for split in splits:
        items = content.get(split)
        if not isinstance(items, list) or not items:
            what = "missing" if items is None else ("empty" if isinstance(items, list) else "not a list")
            report.errors.append(
                Problem("datalist", source, f"split '{split}' is {what}", f"list the {split} cases under it")
            )
            continue
        validate_items(
            items, split, report, num_classes=num_classes, in_channels=in_channels, labelled=True,
            tabular_length=tabular_length, base_dir=base_dir, image_key=image_key, label_key=label_key, seen=seen,
            num_workers=num_workers, max_voxels=max_voxels,
        )  # fmt: skip
    for split in compare_splits:
        items = content.get(split)
        if split not in splits and isinstance(items, list):
            _duplicates_in(items, split, report, seen, base_dir, image_key, num_workers)
    for split in overlap_splits:
        items = content.get(split)
        if split not in splits and isinstance(items, list):
            _duplicates_in(items, split, report, seen, base_dir, image_key, num_workers, warn=True)
    if reference_split is not None and isinstance(content.get(reference_split), list):
        known = _labels(content[reference_split], label_key)
        for split in splits:
            if split == reference_split or not isinstance(content.get(split), list):
                continue
            absent = sorted(
                _labels(content[split], label_key) - known, key=lambda v: (not isinstance(v, Integral), str(v))
            )
            absent = [a for a in absent if _label_problem(a, num_classes) is None]
            if absent:
                report.warnings.append(
                    f"class(es) {absent} appear in '{split}' but not in '{reference_split}': the model cannot learn "
                    f"them; move some of those cases into '{reference_split}'"
                )
    if num_classes is not None:  # a --num_classes above the labels present: say so, not a NaN AUC later
        present = {
            split: _labels(content[split], label_key)
            for split in splits
            if isinstance(content.get(split), list) and content[split]
        }
        for split, labels in present.items():
            elsewhere = (
                set().union(*(v for k, v in present.items() if k != split)) if split == reference_split else set()
            )
            absent = [c for c in range(int(num_classes)) if c not in labels and c not in elsewhere]
            if absent:  # (a class of the other splits missing from the reference split is warned above)
                report.warnings.append(
                    f"class(es) {absent} of num_classes={num_classes} have no case in '{split}'; fix: set "
                    f"--num_classes to the number of classes of the data, or add cases of those classes"
                )
    return report


def check_datalist(datalist: Mapping[str, Any] | str | os.PathLike, **kwargs: Any) -> ValidationReport:
    """:func:`validate_datalist`, raising :class:`DataValidationError` when there is any error; logs warnings."""
    report = validate_datalist(datalist, **kwargs)
    for warning in report.warnings:
        logger.warning(warning)
    if not report.ok:
        raise DataValidationError(report)
    logger.info(report.message())
    return report


def require_valid_datalist(
    datalist: Mapping[str, Any] | str | os.PathLike, enabled: bool = True, **kwargs: Any
) -> ValidationReport | None:
    """
    The bundle's data check (train.json, evaluate.json): :func:`check_datalist`, ending the program with the
    report's message and exit status 1 when the data has errors, before a network is built or trained.
    ``enabled=False`` (``--validate_data False``) skips it.
    """
    if not enabled:
        logger.info("data check skipped (validate_data is false).")
        return None
    try:
        return check_datalist(datalist, **kwargs)
    except DataValidationError as e:
        raise BundleInputError(str(e)) from None


@dataclass
class Screening:
    """Inference items split by :func:`screen_items`: ``good`` items, and ``failed`` rows (case, image, error)."""

    good: list[dict]
    failed: list[dict[str, str]] = field(default_factory=list)


def screen_items(
    items: Sequence[Mapping],
    in_channels: int = 1,
    enabled: bool = True,
    tabular_length: int | None = None,
    image_key: str = "image",
    num_workers: int | None = None,
    num_classes: int | None = None,
    label_key: str = "label",
    max_voxels: int | None = None,
    source: str | os.PathLike | None = None,
    split: str = "test",
) -> Screening:
    """
    Check inference items (the same image twice is allowed) and keep the good ones, so that a bad case does not
    stop the others. Each failed case becomes ``{"case", "image", "error"}`` (``case``: its name from
    :func:`scripts.reports.outputs.unique_case_names`); the error names the reason and the fix. With ``tabular_length``
    set, each item's ``"tabular"`` vector is checked too; with ``max_voxels``, each image's size (a larger one fails
    its case). Labels (from a datalist) are checked when present: one not an integer in ``[0, num_classes)`` fails
    its case; when some items have a label and others none, the others get label -1 (their predictions are
    written, the metrics leave them out with a warning).
    When ``source`` (what inference reads, see :func:`scripts.data.datalist.inference_items`) is a datalist with a
    ``training`` split and ``split`` is another, a case that is also a training case (same file or identical
    voxels) is a warning naming both.
    """
    if not enabled:
        return Screening(good=[dict(i) for i in items])
    report = ValidationReport(source="inference input")
    checks = validate_items(
        items, "input", report, in_channels=in_channels, labelled=False, tabular_length=tabular_length,
        image_key=image_key, seen=None, num_workers=num_workers, max_voxels=max_voxels,
    )  # fmt: skip
    if source is not None and split != "training":
        _training_overlap(items, checks, source, split, report, image_key, num_workers)
    bad: dict[int, list[str]] = {}
    for problem in report.errors:
        index = int(problem.where.split("[")[1].rstrip("]"))
        bad.setdefault(index, []).append(f"{problem.reason}. Fix: {problem.fix}.")
    mappings = [item if isinstance(item, Mapping) else {} for item in items]
    labelled = any(label_key in item for item in mappings)
    for index, item in enumerate(mappings):
        problem = _label_problem(item[label_key], num_classes) if label_key in item else None
        if problem:
            bad.setdefault(index, []).append(f"{problem[0]}. Fix: {problem[1]}.")
    names = unique_case_names(str(item.get(image_key, "")) for item in mappings)
    good, failed = [], []
    for index, (item, _) in enumerate(zip(mappings, checks)):
        if index in bad:
            image = str(item.get(image_key, ""))
            failed.append({"case": names.get(os.path.normpath(image), case_name(image)), "image": image,
                           "error": " ".join(bad[index])})  # fmt: skip
            logger.error(f"skipping {image}: {' '.join(bad[index])}")
        else:
            good.append({**({label_key: -1} if labelled else {}), **item})
    for warning in report.warnings:
        logger.warning(warning)
    return Screening(good=good, failed=failed)


def _training_overlap(
    items: Sequence[Any],
    checks: Sequence[ImageCheck | None],
    source: str | os.PathLike,
    split: str,
    report: ValidationReport,
    image_key: str,
    num_workers: int | None,
) -> None:
    """Warn (in ``report``) about each of ``items`` that is a case of the ``training`` split of ``source``."""
    path = Path(source)
    path = path / DATALIST_NAME if path.is_dir() else path
    if not path.is_file() or path.name.endswith((".nii", ".nii.gz")):
        return
    try:
        training = read_datalist(path).get("training")
    except (OSError, ValueError, BundleInputError):  # inference_items reports an unreadable datalist
        return
    if not isinstance(training, list):
        return
    seen: dict[str, str] = {}
    for index, (item, check) in enumerate(zip(items, checks)):
        image = item.get(image_key) if isinstance(item, Mapping) else None
        if _paths(image) is None:
            continue
        resolved = os.path.normpath(image) if isinstance(image, (str, os.PathLike)) else image
        for key in _case_keys(resolved, check):
            seen.setdefault(key, f"{split}[{index}] '{_as_written(image, path.parent)}'")
    _duplicates_in(training, "training", report, seen, path.parent, image_key, num_workers, warn=True)


def exit_if_failed(screening: Screening, output_dir: str | os.PathLike, errors_file: str = ERRORS_FILE) -> None:
    """
    After inference: write ``output_dir/errors_file`` (``case, image, error``; only the header when every case
    succeeded) and, when some case failed, end the program with exit status 1 and a message naming them.
    """
    output_dir = Path(output_dir)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["case", "image", "error"])
    writer.writeheader()
    writer.writerows(screening.failed)
    atomic_write_text(output_dir / errors_file, text.getvalue())  # a failed re-run keeps the last whole file
    if screening.failed:
        total = len(screening.good) + len(screening.failed)
        others = f"the other {len(screening.good)} have their predictions" if screening.good else "no case could run"
        lines = [
            f"inference failed for {len(screening.failed)} of {total} case(s); {others}. "
            f"Failed cases are listed in {output_dir / errors_file}:"
        ]
        lines += [f"  {row['image']}: {row['error']}" for row in screening.failed]
        raise BundleInputError("\n".join(lines))
