# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The bundle's embedded default data set: AdrenalMNIST3D at 28^3 (MedMNIST v2, CC BY 4.0, ``docs/data/``; licence and
citation in ``docs/data_license.txt``), converted into NIfTI volumes and a datalist on first use, with no download.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .datalist import DATALIST_NAME
from .medmnist import convert_npz

__all__ = ["prepare_default_data"]

logger = logging.getLogger(__name__)


def prepare_default_data(
    dataset_dir: str | os.PathLike, default_dir: str | os.PathLike, embedded_npz: str | os.PathLike
) -> str:
    """
    ``dataset_dir``, ready to read. When it is the bundle's default folder (``default_dir``) and holds no datalist
    yet, the embedded ``embedded_npz`` is converted into it first (official splits and class names, see
    :func:`scripts.data.medmnist.convert_npz`). Any other folder is the user's and is returned untouched: nothing is ever
    written into it.
    """
    root, default = Path(dataset_dir), Path(default_dir)
    if (root / DATALIST_NAME).is_file() or root.resolve() != default.resolve():
        return str(root)
    logger.info(f"building the default data set in '{root}' from the embedded '{embedded_npz}' (first use)")
    try:
        convert_npz(embedded_npz, root)
    except FileExistsError:  # another process (e.g. a torchrun rank) built it meanwhile: use its copy
        if not (root / DATALIST_NAME).is_file():
            raise
    return str(root)
