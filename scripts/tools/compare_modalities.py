# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Fused (image + tabular) vs image-only vs tabular-only: the same bundle, data, seed and budget, trained and
evaluated three times through the bundle's own configs, test-split metrics side by side.

    python -m scripts.tools.multimodal_data --root data/multimodal
    python -m scripts.tools.compare_modalities --dataset_dir data/multimodal --output_dir eval/multimodal

Extra ``--key value`` pairs override the configs as with ``python -m monai.bundle run`` (e.g. ``--epochs 5``).
Writes ``<output_dir>/<mode>/models/model.pt``, ``<output_dir>/<mode>/eval/metrics.json`` and
``<output_dir>/comparison.json``, and prints a table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import run

__all__ = ["MODES", "compare_modalities", "format_table"]

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
# the config switches of each model; everything else is shared
MODES: dict[str, dict[str, Any]] = {
    "fused": {"use_tabular": True, "use_image": True},
    "image": {"use_tabular": False, "use_image": True},
    "tabular": {"use_tabular": True, "use_image": False},
}


def _configs(root: Path) -> tuple[str, list[str], str]:
    train = str(root / "configs" / "train.json")
    return train, [train, str(root / "configs" / "evaluate.json")], str(root / "configs" / "metadata.json")


def compare_modalities(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    tabular_length: int = 8,
    modes: Sequence[str] = ("fused", "image", "tabular"),
    bundle_root: str | os.PathLike = BUNDLE_ROOT,
    logging_file: str | None = None,
    **overrides: Any,
) -> dict[str, dict[str, Any]]:
    """
    Train and evaluate one model per mode of :data:`MODES` on ``dataset_dir`` (a datalist with tabular values,
    e.g. from :mod:`scripts.tools.multimodal_data`), with ``overrides`` applied to every run. Returns, per mode, the
    test split's ``accuracy``, ``f1_macro``, ``auc_macro`` and ``num_cases``, also written to
    ``<output_dir>/comparison.json``.
    """
    root = Path(bundle_root)
    out = Path(output_dir)
    train, evaluate, meta = _configs(root)
    if "num_classes" not in overrides:  # the data set's classes, not train.json's default (the released model's)
        labels = json.loads((Path(dataset_dir) / "datalist.json").read_text()).get("labels") or {}
        if labels:
            overrides = {"num_classes": len(labels), **overrides}
    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode '{mode}', choose from {sorted(MODES)}.")
        settings = {
            "bundle_root": str(root),
            "dataset_dir": str(dataset_dir),
            "ckpt_dir": str(out / mode / "models"),
            "output_dir": str(out / mode / "eval"),
            "tabular_length": tabular_length,
            **MODES[mode],
            **overrides,
        }
        run("training", config_file=train, meta_file=meta, logging_file=logging_file, **settings)
        run("evaluating", config_file=evaluate, meta_file=meta, logging_file=logging_file, **settings)
        metrics = json.loads((out / mode / "eval" / "metrics.json").read_text())
        results[mode] = {k: metrics[k] for k in ("accuracy", "f1_macro", "auc_macro", "num_cases")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(results, indent=2))
    return results


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table of :func:`compare_modalities`' results."""

    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = ["| model | test accuracy | test macro F1 | test macro AUC | cases |", "| --- | --- | --- | --- | --- |"]
    for mode, m in results.items():
        lines.append(
            f"| {mode} | {cell(m['accuracy'])} | {cell(m['f1_macro'])} | {cell(m['auc_macro'])} | {m['num_cases']} |"
        )
    return "\n".join(lines)


def main(dataset_dir: str, output_dir: str = "eval/multimodal", **kwargs: Any) -> None:
    """Command line entry: run :func:`compare_modalities` and print the table."""
    print(format_table(compare_modalities(dataset_dir, output_dir, **kwargs)))


if __name__ == "__main__":
    import fire

    fire.Fire(main)
