# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The MedMNIST converter on a tiny .npz made here, then a training and an evaluation run on its output."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scripts.data.medmnist import MEDMNIST_3D_LABELS, convert_npz, subset_name
from scripts.tools.convert_medmnist import main
from tests.conftest import SHARED, TINY_OVERRIDES, run_bundle

SIZES = {"train": 8, "val": 4, "test": 4}


def _tiny_npz(path: Path, size: int = 8, seed: int = 0, **replace) -> dict[str, np.ndarray]:
    """A MedMNIST-style .npz: binary uint8 volumes (N, size, size, size), labels (N, 1), both classes per split."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = (rng.random((n, size, size, size)) > 0.5).astype(np.uint8) * 255
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    arrays.update(replace)
    np.savez(path, **arrays)
    return arrays


def test_converts_volumes_labels_and_official_splits(tmp_path):
    arrays = _tiny_npz(tmp_path / "adrenalmnist3d.npz")
    datalist_path = convert_npz(tmp_path / "adrenalmnist3d.npz", tmp_path / "out")
    datalist = json.loads(datalist_path.read_text())
    assert datalist["labels"] == {"0": "normal", "1": "hyperplasia"}
    for split, prefix in (("training", "train"), ("validation", "val"), ("test", "test")):
        items = datalist[split]
        assert len(items) == SIZES[prefix]
        assert [item["label"] for item in items] == arrays[f"{prefix}_labels"][:, 0].tolist()
        for i, item in enumerate(items):
            image = nib.load(tmp_path / "out" / item["image"])
            assert image.shape == (8, 8, 8)
            np.testing.assert_array_equal(np.asarray(image.dataobj), arrays[f"{prefix}_images"][i])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")]  # no temporary folder left


def test_label_names_of_the_six_3d_subsets():
    assert set(MEDMNIST_3D_LABELS) == {
        "organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d", "synapsemnist3d",
    }  # fmt: skip
    assert len(MEDMNIST_3D_LABELS["organmnist3d"]) == 11 and MEDMNIST_3D_LABELS["organmnist3d"][0] == "liver"
    assert MEDMNIST_3D_LABELS["fracturemnist3d"][2] == "displaced rib fracture"
    assert MEDMNIST_3D_LABELS["vesselmnist3d"] == ("vessel", "aneurysm")
    assert subset_name("/x/AdrenalMNIST3D_64.npz") == "adrenalmnist3d" and subset_name("vesselmnist3d.npz")


def test_unknown_subset_and_explicit_names(tmp_path):
    _tiny_npz(tmp_path / "mydata.npz")
    names = json.loads(convert_npz(tmp_path / "mydata.npz", tmp_path / "a").read_text())["labels"]
    assert names == {"0": "class_0", "1": "class_1"}
    path = convert_npz(tmp_path / "mydata.npz", tmp_path / "b", class_names=["no", "yes"])
    assert json.loads(path.read_text())["labels"] == {"0": "no", "1": "yes"}
    with pytest.raises(ValueError, match="class names"):
        convert_npz(tmp_path / "mydata.npz", tmp_path / "c", class_names=["only"])


def test_bad_inputs_name_the_problem(tmp_path):
    _tiny_npz(tmp_path / "flat.npz", train_images=np.zeros((8, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="2D MedMNIST"):
        convert_npz(tmp_path / "flat.npz", tmp_path / "o1")
    np.savez(tmp_path / "partial.npz", train_images=np.zeros((2, 4, 4, 4)), train_labels=np.zeros((2, 1)))
    with pytest.raises(KeyError, match="val_images"):
        convert_npz(tmp_path / "partial.npz", tmp_path / "o2")
    with pytest.raises(FileNotFoundError, match="adrenalmnist3d"):
        convert_npz(tmp_path / "missing.npz", tmp_path / "o3")
    _tiny_npz(tmp_path / "adrenalmnist3d.npz")
    convert_npz(tmp_path / "adrenalmnist3d.npz", tmp_path / "o4")
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_npz(tmp_path / "adrenalmnist3d.npz", tmp_path / "o4")
    convert_npz(tmp_path / "adrenalmnist3d.npz", tmp_path / "o4", overwrite=True)


@pytest.mark.slow
def test_command_output_trains_and_evaluates_through_the_configs(tmp_path, capsys):
    _tiny_npz(tmp_path / "nodulemnist3d.npz", size=16)
    main(["--npz", str(tmp_path / "nodulemnist3d.npz"), "--output_dir", str(tmp_path / "data")])
    assert "--num_classes 2" in capsys.readouterr().out
    args = ["--dataset_dir", str(tmp_path / "data"), "--ckpt_dir", str(tmp_path / "models"),
            "--output_dir", str(tmp_path / "eval"), "--num_classes", "2", *TINY_OVERRIDES]  # fmt: skip
    run_bundle("run", "training", "--config_file", "configs/train.json", "--epochs", "1", "--class_weights", "auto",
               "--val_key_metric", "val_auc", *args)  # fmt: skip
    run_bundle("run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']", *args)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_cases"] == SIZES["test"] and set(metrics["per_class"]) == {"benign", "malignant"}


@pytest.mark.skipif(not (SHARED / "data/medmnist3d").is_dir(), reason="../shared/data/medmnist3d absent")
def test_real_adrenal_file_converts(tmp_path):
    path = convert_npz(SHARED / "data/medmnist3d/adrenalmnist3d.npz", tmp_path / "adrenal")
    datalist = json.loads(path.read_text())
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [1188, 98, 298]
    assert sum(item["label"] for item in datalist["test"]) == 69
