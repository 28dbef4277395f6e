# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Datalists and the embedded default data set.

A datalist is a decathlon-style JSON file ``{"training": [...], "validation": [...], "test": [...]}`` whose items
are ``{"image": "relative/path.nii.gz", "label": 2}`` (paths relative to the datalist's folder); an optional
``"labels": {"0": "name", ...}`` maps class indices to names.

The default data set is synthetic and generated deterministically on first use: each volume is an ellipsoidal
"organ" with a smooth texture, a few fuzzy distractor blobs, and one small ball whose filling is the class
(solid, hollow, striped or checkered). A mask of that structure is written beside each volume, so attention
maps can be scored against the region that decides the class.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from monai.data import NibabelWriter, load_decathlon_datalist

from .tabular import attach_tabular

__all__ = [
    "DATALIST_NAME",
    "SYNTHETIC_CLASSES",
    "synthetic_case",
    "synthetic_affine",
    "write_nifti",
    "staged_folder",
    "generate_synthetic_dataset",
    "ensure_datalist",
    "load_split",
    "inference_items",
    "class_names",
]

DATALIST_NAME = "datalist.json"
SYNTHETIC_CLASSES = ("solid", "hollow", "striped", "checkered")
SPLITS = ("training", "validation", "test")


def _structure(label: int, grid: np.ndarray, center: np.ndarray, radius: float, rng: np.random.Generator):
    """
    The class-``label`` structure on a (3, D, H, W) grid: a ball of ``radius`` voxels at ``center`` whose filling
    is the class. Returns ``(mask, bright)``: the ball, and the voxels of it drawn bright.
    """
    offset = grid - center[:, None, None, None]
    dist = np.sqrt((offset**2).sum(0))
    mask = dist <= radius
    period = max(2, int(round(radius / 3)))
    if label == 0:  # solid
        bright = mask
    elif label == 1:  # hollow: a shell
        bright = mask & (dist >= radius - period)
    elif label == 2:  # striped: slabs across a random axis
        axis = rng.integers(3)
        bright = mask & ((np.floor(offset[axis] / period) % 2) == 0)
    elif label == 3:  # checkered: alternating cubes
        bright = mask & ((np.floor(offset / period).sum(0) % 2) == 0)
    else:
        raise ValueError(f"synthetic label must be in [0, {len(SYNTHETIC_CLASSES)}), got {label}.")
    return mask, bright


def synthetic_case(rng: np.random.Generator, label: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """
    One synthetic volume of class ``label`` and the mask of its discriminative structure.

    Returns:
        image: float32 (size, size, size), intensities roughly in [0, 1].
        mask: uint8 (size, size, size), 1 on the structure that decides the class.
    """
    axis = np.arange(size, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"))
    scale = size / 32.0
    centre = np.full(3, (size - 1) / 2.0, dtype=np.float32)
    radii = rng.uniform(0.36, 0.46, 3) * size
    body = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0
    texture = sum(
        rng.uniform(0.02, 0.06) * np.cos((rng.uniform(0.1, 0.5, 3)[:, None, None, None] / scale * grid).sum(0) + p)
        for p in rng.uniform(0, 2 * np.pi, 4)
    )
    image = (0.35 + texture) * body

    def inside_body(margin: float) -> np.ndarray:
        while True:
            point = rng.uniform(margin, size - 1 - margin, 3).astype(np.float32)
            if body[tuple(np.round(point).astype(int))]:
                return point

    for _ in range(rng.integers(2, 5)):  # fuzzy distractors, as bright as the structure but without its shape
        point, sigma = inside_body(4 * scale), rng.uniform(1.5, 2.5) * scale
        image = image + rng.uniform(0.3, 0.45) * np.exp(
            -((grid - point[:, None, None, None]) ** 2).sum(0) / (2 * sigma**2)
        )
    radius = rng.uniform(5.5, 6.5) * scale
    mask, bright = _structure(label, grid, inside_body(radius + 2 * scale), radius, rng)
    image[bright] = rng.uniform(0.9, 1.0)
    image = image + rng.normal(0.0, 0.05, image.shape)
    return image.astype(np.float32), mask.astype(np.uint8)


def synthetic_affine(size: int) -> np.ndarray:
    """The synthetic volumes' 4x4 affine: 1.5 mm voxels, origin shifted so that the volume is centred on 0."""
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    affine[:3, 3] = -0.75 * (size - 1)
    return affine


def write_nifti(array: np.ndarray, path: str | os.PathLike, affine: np.ndarray | None = None) -> None:
    """Write a (D, H, W) ``array`` as NIfTI at ``path`` with MONAI's ``NibabelWriter``, keeping its dtype."""
    affine = np.eye(4) if affine is None else affine
    writer = NibabelWriter(output_dtype=array.dtype)
    writer.set_data_array(array, channel_dim=None)
    writer.set_metadata({"affine": affine, "original_affine": affine}, resample=False)
    writer.write(str(path), verbose=False)


@contextmanager
def staged_folder(root: str | os.PathLike, subfolders: tuple[str, ...] = ("images",)) -> Iterator[Path]:
    """
    Build a data set in a temporary folder beside ``root`` (with ``subfolders`` made) and move it to ``root`` when
    the block ends without error, so an interrupted run never leaves a partial data set; an error removes the
    temporary folder. ``root`` must not exist or be empty; if another process fills it meanwhile, its copy is
    kept and ``FileExistsError`` is raised.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        for name in subfolders:
            (tmp / name).mkdir()
        yield tmp
        if root.exists() and not any(root.iterdir()):
            root.rmdir()
        try:
            tmp.rename(root)
        except OSError:
            raise FileExistsError(f"'{root}' already holds files; choose an empty or new folder.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def generate_synthetic_dataset(
    root: str | os.PathLike,
    size: int = 32,
    num_cases: tuple[int, int, int] = (600, 100, 100),
    seed: int = 0,
) -> Path:
    """
    Write the synthetic data set into ``root``: ``images/``, ``masks/`` and ``datalist.json`` with training,
    validation and test splits of ``num_cases`` cases each, classes balanced. The volumes carry a non-trivial
    affine (1.5 mm voxels, shifted origin) so that geometry handling is exercised. The same ``seed`` gives the
    same files. The data set is built in a temporary folder beside ``root`` and moved into place, so an
    interrupted run never leaves a partial data set. Returns the datalist's path.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    affine = synthetic_affine(size)
    datalist: dict = {
        "name": "cal_3d_classification synthetic balls",
        "description": "Synthetic 3D volumes; the class is the filling of one small ball among distractor blobs.",
        "labels": {str(i): name for i, name in enumerate(SYNTHETIC_CLASSES)},
        "tensorImageSize": "3D",
    }
    try:
        with staged_folder(root, ("images", "masks")) as tmp:
            index = 0
            for split, count in zip(SPLITS, num_cases):
                items = []
                for i in range(count):
                    label = i % len(SYNTHETIC_CLASSES)
                    image, mask = synthetic_case(rng, label, size)
                    name = f"case_{index:04d}"
                    write_nifti(image, tmp / "images" / f"{name}.nii.gz", affine)
                    write_nifti(mask, tmp / "masks" / f"{name}.nii.gz", affine)
                    items.append({"image": f"images/{name}.nii.gz", "label": label, "mask": f"masks/{name}.nii.gz"})
                    index += 1
                datalist[split] = items
            (tmp / DATALIST_NAME).write_text(json.dumps(datalist, indent=2))
    except FileExistsError:  # another process generated it first (e.g. the other ranks of torchrun): keep its copy
        if not (root / DATALIST_NAME).is_file():
            raise
    return root / DATALIST_NAME


def ensure_datalist(
    dataset_dir: str | os.PathLike,
    datalist: str = DATALIST_NAME,
    generate: bool = True,
    hint: str = "",
    **synthetic_kwargs,
) -> str:
    """
    Path of ``dataset_dir/datalist``. When ``dataset_dir`` does not exist or is empty and ``generate`` is set, the
    synthetic default data set is generated there first (``synthetic_kwargs`` go to
    :func:`generate_synthetic_dataset`); otherwise a missing datalist is an error, which ends with ``hint`` (how to
    get the data set). A folder with files but no datalist is always an error, since its files are somebody's data.
    """
    root = Path(dataset_dir)
    path = root / datalist
    if path.is_file():
        return str(path)
    if not root.exists() or not any(root.iterdir()):
        if generate:
            return str(generate_synthetic_dataset(root, **synthetic_kwargs))
        raise FileNotFoundError(f"no data set at '{root}' (no '{datalist}'). {hint}".strip())
    raise FileNotFoundError(
        f"'{root}' holds files but no '{datalist}'. Write a datalist there ({{\"training\": [{{\"image\": "
        f'"case.nii.gz", "label": 0}}, ...], "validation": [...], "test": [...]}}, paths relative to the '
        f"folder), point --dataset_dir to an empty folder to get the synthetic data set, or convert MedMNIST data "
        f"with 'python -m scripts.medmnist'."
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
