# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The synthetic multimodal data set: the label needs both the image and the tabular values."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest

from scripts.data.datalist import load_split
from scripts.data.tabular import tabular_statistics
from scripts.tools.multimodal_data import generate_multimodal_dataset, multimodal_class_names, tabular_case

_OFFSETS = np.array([60.0, 5.0, 120.0, 0.5, -20.0, 1000.0, 3.0, 40.0])
_SCALES = np.array([12.0, 0.5, 30.0, 0.1, 5.0, 250.0, 1.0, 8.0])


def group_of(values) -> int:
    """The rule the generator follows: high when the first two standardised values sum to > 0."""
    z = (np.asarray(values[:2], dtype=float) - _OFFSETS[:2]) / _SCALES[:2]
    return int(z.sum() > 0)


def test_tabular_case_follows_the_group_rule():
    rng = np.random.default_rng(0)
    for group in (0, 1) * 20:
        assert group_of(tabular_case(rng, group, 6)) == group
    with pytest.raises(ValueError, match="at least 2"):
        tabular_case(rng, 0, 1)


def test_dataset_labels_combine_filling_and_group(tmp_path):
    path = generate_multimodal_dataset(tmp_path / "mm", size=12, num_cases=(40, 8, 8), missing_rate=0.1, seed=2)
    datalist = json.loads(path.read_text())
    assert list(datalist["labels"].values()) == multimodal_class_names() == [
        "solid_low", "solid_high", "hollow_low", "hollow_high"
    ]  # fmt: skip
    items = datalist["training"]
    assert [sum(i["label"] == k for i in items) for k in range(4)] == [10] * 4  # balanced
    values = [v for i in items for v in i["tabular"]]
    assert 0 < sum(v is None for v in values) < 0.25 * len(values)  # some values are missing
    for item in items:
        if None not in item["tabular"][:2]:
            assert group_of(item["tabular"]) == item["label"] % 2
        assert nib.load(path.parent / item["image"]).shape == (12, 12, 12)
    # neither modality alone decides the label: each filling and each group holds two classes
    assert {i["label"] // 2 for i in items} == {0, 1} and {i["label"] % 2 for i in items} == {0, 1}


def test_csv_variant_gives_the_same_values(tmp_path):
    inline = generate_multimodal_dataset(tmp_path / "inline", size=8, num_cases=(8, 4, 4), missing_rate=0.2)
    as_csv = generate_multimodal_dataset(tmp_path / "csv", size=8, num_cases=(8, 4, 4), missing_rate=0.2, use_csv=True)
    assert (as_csv.parent / "clinical.csv").is_file()
    assert "tabular" not in json.loads(as_csv.read_text())["training"][0]
    for split in ("training", "test"):
        a, b = load_split(inline, split), load_split(as_csv, split)
        for x, y in zip(a, b):
            assert x["id"] == y["id"] and x["label"] == y["label"]
            assert [math.nan if v is None else v for v in x["tabular"]] == pytest.approx(y["tabular"], nan_ok=True)
    stats = tabular_statistics(load_split(as_csv, "training"), 8)
    assert len(stats["mean"]) == 8 and all(s > 0 for s in stats["std"])


def test_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds files"):
        generate_multimodal_dataset(tmp_path / "mm", size=8, num_cases=(4, 4, 4))
    assert [p.name for p in (tmp_path / "mm").iterdir()] == ["notes.txt"]
    assert not list(tmp_path.glob(".mm-*"))
    with pytest.raises(ValueError, match="two of"):
        generate_multimodal_dataset(tmp_path / "other", image_classes=("solid", "round"))
