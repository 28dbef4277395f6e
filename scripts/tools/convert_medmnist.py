# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Convert a MedMNIST 3D ``.npz`` into NIfTI volumes and the bundle's datalist (official splits, class names)::

    python -m scripts.tools.convert_medmnist --npz organmnist3d.npz --output_dir data/organ28

(the conversion is :func:`scripts.data.medmnist.convert_npz`, which also builds the embedded default data set).
"""

from __future__ import annotations

import argparse
import json

from monai.transforms import LoadImage

from ..data.medmnist import MEDMNIST_3D_LABELS, SPLITS, convert_npz

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tools.convert_medmnist",
        description="Convert a MedMNIST 3D .npz into NIfTI volumes and a datalist.",
    )
    parser.add_argument("--npz", required=True, help="the MedMNIST .npz file, e.g. adrenalmnist3d.npz")
    parser.add_argument("--output_dir", required=True, help="folder to write images/ and datalist.json into")
    parser.add_argument("--subset", help=f"subset name for the class names (default: from the file name); known: "
                        f"{', '.join(MEDMNIST_3D_LABELS)}")  # fmt: skip
    parser.add_argument("--class_names", nargs="+", help="class names in label order (overrides --subset)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir")
    args = parser.parse_args(argv)
    path = convert_npz(args.npz, args.output_dir, args.subset, args.class_names, args.overwrite)
    datalist = json.loads(path.read_text())
    counts = ", ".join(f"{split} {len(datalist[split])}" for split in SPLITS)
    print(f"wrote {path} ({counts}; classes {list(datalist['labels'].values())})")
    shape = LoadImage(image_only=True)(str(path.parent / datalist["training"][0]["image"])).shape
    print(
        f"train: python -m monai.bundle run training --config_file configs/train.json --dataset_dir {path.parent} "
        f"--num_classes {len(datalist['labels'])} --spatial_size \"{list(shape)}\""
    )


if __name__ == "__main__":
    main()
