# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The synthetic data set: the tests' tiny fixture and the attention-scoring set with ground-truth masks.

Each volume is an ellipsoidal "organ" with a smooth texture, a few fuzzy distractor blobs, and one small ball whose
filling is the class (solid, hollow, striped or checkered). A mask of that structure is written beside each volume,
so attention maps can be scored against the region that decides the class. It is generated only on request::

    python -m scripts.tools.synthetic_data --output_dir data/synthetic
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.datalist import DATALIST_NAME, SPLITS
from ..data.dataset_writer import staged_folder, write_nifti

__all__ = ["SYNTHETIC_CLASSES", "synthetic_case", "synthetic_affine", "generate_synthetic_dataset", "main"]

SYNTHETIC_CLASSES = ("solid", "hollow", "striped", "checkered")


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


def generate_synthetic_dataset(
    root: str | os.PathLike, size: int = 32, num_cases: tuple[int, int, int] = (600, 100, 100), seed: int = 0
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


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line: write the synthetic data set into a new or empty ``--output_dir``."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tools.synthetic_data", description="Write the synthetic data set."
    )
    parser.add_argument("--output_dir", required=True, help="a new or empty folder for images/, masks/, datalist.json")
    parser.add_argument("--size", type=int, default=32, help="edge of the cubic volumes, voxels")
    parser.add_argument("--num_cases", type=int, nargs=3, default=(600, 100, 100), help="training validation test")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = generate_synthetic_dataset(args.output_dir, args.size, tuple(args.num_cases), args.seed)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
