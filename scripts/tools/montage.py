# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
A PNG montage of saliency maps, models side by side: for each case, axial / coronal / sagittal slices through each
model's saliency peak, the map over the image, the ground-truth mask's contour. Reads the ``maps/<case>.npz`` files
that ``python -m scripts.tools.score_attention`` (the ``scoring`` config) saves per model::

    python -m scripts.tools.montage eval/attention/cal eval/attention/baseline --names CAL baseline \\
        --map attention --cases 3 --output eval/attention/montage_attention.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..reports.plots import SaliencyPanel, save_montage

__all__ = ["load_maps", "montage_rows", "main"]


def load_maps(run_dir: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The saved maps of one scoring run: case name -> arrays (``image``, ``mask``, maps, ``label``, ``pred``...)."""
    folder = Path(run_dir) / "maps"
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise FileNotFoundError(
            f"no saved maps in '{folder}': run 'python -m scripts.tools.score_attention --runs NAME=model.pt ...' "
            "first (it saves the first --save_maps cases), and give its <output_dir>/<NAME> folder."
        )
    out = {}
    for file in files:
        with np.load(file) as data:
            out[file.name[: -len(".npz")]] = {k: data[k] for k in data.files}
    return out


def montage_rows(
    runs: Sequence[dict[str, dict[str, np.ndarray]]],
    names: Sequence[str],
    map_key: str = "attention",
    cases: Sequence[str] | None = None,
    num_cases: int = 3,
) -> list[tuple[str, list[SaliencyPanel]]]:
    """
    Montage rows for :func:`scripts.reports.plots.save_montage`: for each case (``cases``, or the first ``num_cases`` that
    every run has), one panel per run with its ``map_key`` map and prediction.
    """
    common = sorted(set.intersection(*(set(run) for run in runs)))
    chosen = list(cases) if cases else common[:num_cases]
    missing = [c for c in chosen if c not in common]
    if missing or not chosen:
        raise ValueError(f"cases {missing or chosen} are not saved in every run; saved in all: {common}.")
    rows = []
    for case in chosen:
        panels = []
        for run, name in zip(runs, names):
            data = run[case]
            if map_key not in data:
                raise KeyError(f"run '{name}' has no '{map_key}' map for case '{case}'; it has {sorted(data)}.")
            classes = [str(c) for c in data["class_names"]]
            title = f"{name} {map_key}: pred {classes[int(data['pred'])]}"
            panels.append(SaliencyPanel(title, data["image"], data[map_key], data.get("mask")))
        label = runs[0][case]["label"]
        rows.append((f"{case}\ntrue {[str(c) for c in runs[0][case]['class_names']][int(label)]}", panels))
    return rows


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m scripts.tools.montage", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="scoring output folders (<output_dir>/<NAME>), one per model")
    parser.add_argument("--names", nargs="+", default=None, help="column titles (default: the folder names)")
    parser.add_argument("--map", default="attention", help="'attention' (CAL attention map) or 'gradcam'")
    parser.add_argument("--cases", nargs="+", default=None, help="case names (default: the first --num_cases)")
    parser.add_argument("--num_cases", type=int, default=3)
    parser.add_argument("--output", default="eval/attention/montage.png", help="PNG file to write")
    parser.add_argument("--dpi", type=int, default=80, help="resolution of the PNG")
    args = parser.parse_args(argv)
    names = args.names or [Path(r).name for r in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"--names gives {len(names)} names for {len(args.runs)} runs.")
    rows = montage_rows([load_maps(r) for r in args.runs], names, args.map, args.cases, args.num_cases)
    path = save_montage(rows, args.output, dpi=args.dpi)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
