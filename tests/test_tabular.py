# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Tabular values from datalists and CSVs, the missing-value rule, the training split's statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from scripts.cal_net import CALNet
from scripts.data.datalist import load_split
from scripts.data.tabular import (
    TabularVectord,
    attach_tabular,
    case_id,
    read_tabular_csv,
    tabular_branch_length,
    tabular_statistics,
    tabular_vector,
)
from scripts.run.handlers import TabularStatisticsHandler

TINY_VIT = {"patch_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2}


def test_tabular_vector_missing_values_become_nan():
    values = tabular_vector([1, None, "", "NA", "nan", float("nan"), "2.5"], 7, "c1")
    assert values.dtype == np.float32 and values.shape == (7,)
    assert values[0] == 1.0 and values[6] == 2.5
    assert np.isnan(values[1:6]).all()


@pytest.mark.parametrize(
    "values, match",
    [
        ([1.0, 2.0], "case 'c7' has 2 tabular values, the model expects tabular_length=3"),
        ([1.0, "high", 2.0], "case 'c7': tabular value #1 is 'high', not a number"),
        ([1.0, float("inf"), 2.0], "case 'c7': tabular value #1 is infinite"),
        (None, "case 'c7' has no tabular values but the model uses 3"),
    ],
)
def test_tabular_vector_errors_name_the_case_and_the_fix(values, match):
    with pytest.raises(ValueError, match=match):
        tabular_vector(values, 3, "c7")


def test_case_id_from_item_id_or_image_name():
    assert case_id({"id": "p01", "image": "/x/case_3.nii.gz"}) == "p01"
    assert case_id({"image": "/x/case_3.nii.gz"}) == "case_3"


def write_csv_dataset(root, rows, columns=None, items=None):
    (root / "clinical.csv").write_text(rows)
    datalist = {
        "tabular_csv": "clinical.csv",
        "training": items or [{"image": "a.nii.gz", "label": 0, "id": "p1"}, {"image": "p2.nii.gz", "label": 1}],
    }
    if columns is not None:
        datalist["tabular_columns"] = columns
    (root / "datalist.json").write_text(json.dumps(datalist))
    return root / "datalist.json"


def test_load_split_reads_tabular_csv_by_id_with_named_columns(tmp_path):
    path = write_csv_dataset(tmp_path, "id,age,psa,gene\np1,61,4.2,\np2,NA,5.0,1\n", columns=["psa", "age"])
    items = load_split(path, "training")
    assert items[0]["tabular"] == [4.2, 61.0]  # the order of "tabular_columns"
    assert items[1]["tabular"][0] == 5.0 and math.isnan(items[1]["tabular"][1])  # id from the image name; NA
    assert items[0]["image"] == str(tmp_path / "a.nii.gz")
    assert read_tabular_csv(tmp_path / "clinical.csv")[0] == ["age", "psa", "gene"]  # default: all but the id


def test_an_items_own_values_win_over_the_csv(tmp_path):
    items = [{"image": "a.nii.gz", "label": 0, "id": "p1", "tabular": [9, 9]}]
    path = write_csv_dataset(tmp_path, "id,age,psa\np1,61,4.2\n", items=items)
    assert load_split(path, "training")[0]["tabular"] == [9, 9]


def test_a_case_without_a_csv_row_is_named(tmp_path):
    path = write_csv_dataset(tmp_path, "id,age\np1,61\n")
    with pytest.raises(ValueError, match="case 'p2' .* has no row in .*clinical.csv"):
        load_split(path, "training")


@pytest.mark.parametrize(
    "rows, columns, match",
    [
        ("case,age\np1,61\n", None, "no id column 'id'"),
        ("id,age\np1,61\n", ["age", "bmi"], r"lacks the columns \['bmi'\]"),
        ("id,age\np1,61\np1,62\n", None, "case id 'p1' twice"),
        ("id,age\np1,old\np2,3\n", None, "case 'p1': tabular value 'age' is 'old', not a number"),
    ],
)
def test_bad_csv_is_reported(tmp_path, rows, columns, match):
    path = write_csv_dataset(tmp_path, rows, columns=columns)
    with pytest.raises(ValueError, match=match):
        load_split(path, "training")


def test_datalist_without_csv_is_left_alone(tmp_path):
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": 0}]}))
    items = [{"image": "a.nii.gz", "label": 0}]
    assert attach_tabular(items, {"training": items}, tmp_path) == [{"image": "a.nii.gz", "label": 0}]


def test_statistics_ignore_missing_values_and_guard_degenerate_columns():
    items = [
        {"tabular": [1.0, 5.0, None, 3.0]},
        {"tabular": [3.0, 5.0, None, float("nan")]},
        {"tabular": [None, 5.0, None, 7.0]},
    ]
    with pytest.warns(UserWarning, match=r"columns \[2\] have no value"):
        stats = tabular_statistics(items, 4)
    np.testing.assert_allclose(stats["mean"], [2.0, 5.0, 0.0, 5.0])
    np.testing.assert_allclose(stats["std"], [1.0, 1.0, 1.0, 2.0])  # constant and empty columns: std 1
    assert tabular_statistics(items, 0) == {}  # the branch is off: nothing read


def test_tabular_vectord_makes_the_network_input():
    transform = TabularVectord(keys="tabular", length=3)
    out = transform({"image": "/d/case_9.nii.gz", "tabular": [1, None, 2]})
    assert isinstance(out["tabular"], torch.Tensor) and out["tabular"].dtype == torch.float32
    assert out["tabular"].shape == (3,) and torch.isnan(out["tabular"][1])
    with pytest.raises(ValueError, match="case 'case_9' has no tabular values"):
        transform({"image": "/d/case_9.nii.gz"})
    data = {"image": "x", "tabular": [1, 2]}
    assert TabularVectord(length=0)(data) == data  # the branch is off: untouched


def test_branch_length_switch():
    assert tabular_branch_length(False, 8) == 0
    assert tabular_branch_length(True, 8) == 8
    with pytest.raises(ValueError, match="set --tabular_length"):
        tabular_branch_length(True, 0)


def test_statistics_handler_sets_the_networks_buffers():
    items = [{"tabular": [10.0, None]}, {"tabular": [30.0, 4.0]}]
    net = CALNet(2, spatial_size=16, backbone_kwargs=TINY_VIT, num_attentions=2, tabular_features=2)
    TabularStatisticsHandler(net, items)()
    torch.testing.assert_close(net.tabular.mean, torch.tensor([20.0, 4.0]))
    torch.testing.assert_close(net.tabular.std, torch.tensor([10.0, 1.0]))
    assert {"tabular.mean", "tabular.std"} <= set(net.state_dict())  # saved with the weights
    image_only = CALNet(2, spatial_size=16, backbone_kwargs=TINY_VIT, num_attentions=2)
    TabularStatisticsHandler(image_only, items)()  # no tabular branch: nothing to do
    assert not any(k.startswith("tabular") for k in image_only.state_dict())
