# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Writing a data set folder: NIfTI volumes through MONAI's writer, and a folder that appears whole or not at all,
with its datalist (:data:`DATALIST_NAME`, splits :data:`SPLITS`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from monai.data import NibabelWriter

__all__ = ["DATALIST_NAME", "SPLITS", "write_nifti", "staged_folder"]

DATALIST_NAME = "datalist.json"
SPLITS = ("training", "validation", "test")


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
