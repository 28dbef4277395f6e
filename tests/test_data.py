# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scripts.data.datalist import class_names, inference_items, load_split, one_hot_index, read_datalist, split_items
from scripts.tools.synthetic_data import SYNTHETIC_CLASSES, generate_synthetic_dataset, synthetic_case


@pytest.mark.parametrize("label", range(len(SYNTHETIC_CLASSES)))
def test_synthetic_case_is_deterministic_and_masked(label):
    image, mask = synthetic_case(np.random.default_rng(3), label, size=24)
    again, mask_again = synthetic_case(np.random.default_rng(3), label, size=24)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(mask, mask_again)
    assert image.shape == mask.shape == (24, 24, 24) and image.dtype == np.float32
    assert 50 < mask.sum() < 24**3 / 4  # one small structure
    # the structure's brightest voxels (>= 0.9 before noise) lie inside its mask
    assert image[mask > 0].max() > image[mask == 0].max() - 0.2


def test_classes_differ_inside_the_mask_only_by_their_filling():
    rng = np.random.default_rng(0)
    fractions = []
    for label in range(len(SYNTHETIC_CLASSES)):
        image, mask = synthetic_case(rng, label, size=32)
        fractions.append(float((image[mask > 0] > 0.8).mean()))
    solid, hollow, striped, checkered = fractions
    assert solid > 0.9 and hollow < 0.85 and 0.2 < striped < 0.8 and 0.2 < checkered < 0.8


def test_generate_dataset_layout_and_determinism(tmp_path):
    first = generate_synthetic_dataset(tmp_path / "a", size=12, num_cases=(8, 4, 4), seed=1)
    second = generate_synthetic_dataset(tmp_path / "b", size=12, num_cases=(8, 4, 4), seed=1)
    datalist = json.loads(first.read_text())
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [8, 4, 4]
    assert {item["label"] for item in datalist["training"]} == set(range(len(SYNTHETIC_CLASSES)))
    item = datalist["test"][0]
    img_a, img_b = nib.load(first.parent / item["image"]), nib.load(second.parent / item["image"])
    np.testing.assert_array_equal(img_a.get_fdata(), img_b.get_fdata())
    assert img_a.shape == (12, 12, 12)
    np.testing.assert_allclose(np.diag(img_a.affine)[:3], [1.5, 1.5, 1.5])
    assert nib.load(first.parent / item["mask"]).get_fdata().sum() > 0
    assert not list(tmp_path.glob(".a-*"))  # the temporary build folder is gone


@pytest.mark.parametrize(
    "state, problem",
    [
        ("missing", "does not exist (nearest existing folder: '{root}/adrenal28x')"),
        ("empty", "is an empty folder"),
        ("files", "holds files but no 'datalist.json'"),
        ("volumes", "holds 1 NIfTI volume(s) but no 'datalist.json' that says which are training cases"),
    ],
)
def test_a_named_folder_without_datalist_is_an_error_and_stays_untouched(tmp_path, state, problem):
    """A mistyped --dataset_dir stops with the fix; nothing (no synthetic or default data) is written there."""
    from monai.bundle import ConfigParser

    from tests.conftest import ROOT

    folder = tmp_path / "adrenal28"
    (tmp_path / "adrenal28x").mkdir()  # the folder meant: a misspelt name is pointed to it
    if state != "missing":
        folder.mkdir()
    if state == "files":
        (folder / "notes.txt").write_text("")
    if state == "volumes":
        (folder / "scan.nii.gz").write_bytes(b"")
    before = sorted(tmp_path.rglob("*"))
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    parser["bundle_root"] = str(tmp_path)
    parser["dataset_dir"] = str(folder)
    with pytest.raises(SystemExit) as error:
        parser.get_parsed_content("datalist")
    message = str(error.value)
    assert message.startswith(f"--dataset_dir '{folder}': {problem.format(root=tmp_path)}. Fix: point --dataset_dir")
    assert "does not exist but" not in message
    assert sorted(tmp_path.rglob("*")) == before


def test_a_one_hot_label_is_read_as_its_class_index(tmp_path):
    items = [{"image": "a.nii.gz", "label": [0, 0, 1, 0]}, {"image": "b.nii.gz", "label": [1.0, 0.0]}]
    odd = [{"image": "c.nii.gz", "label": [0, 1, 1]}, {"image": "d.nii.gz", "label": [0.2, 0.8]}]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items + odd, "test": items}))
    parsed = read_datalist(tmp_path / "datalist.json")
    assert [i["label"] for i in parsed["training"]] == [2, 0, [0, 1, 1], [0.2, 0.8]]  # the others: the data check's
    assert [i["label"] for i in parsed["test"]] == [2, 0]
    assert one_hot_index([0, 1]) == 1 and one_hot_index([True, False]) is None and one_hot_index([]) is None


def test_split_problems_name_the_datalist_and_the_fix(tmp_path):
    (tmp_path / "datalist.json").write_text('{"training": [}')
    with pytest.raises(SystemExit, match=r"datalist.json': cannot be read as JSON \(.*\)\. Fix: correct the JSON"):
        read_datalist(tmp_path / "datalist.json")
    (tmp_path / "datalist.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="is a JSON list, not an object. Fix:"):
        read_datalist(tmp_path / "datalist.json")


def test_default_data_is_built_from_the_embedded_file_on_first_use(tmp_path):
    """The default --dataset_dir is converted from the AdrenalMNIST3D file shipped in docs/data (official splits,
    class names), once; the second read finds it."""
    from scripts.data.default_data import prepare_default_data
    from tests.conftest import ROOT

    default = tmp_path / "data" / "adrenalmnist3d"
    npz = ROOT / "docs" / "data" / "adrenalmnist3d.npz"
    assert prepare_default_data(default, default, npz) == str(default)
    datalist = json.loads((default / "datalist.json").read_text())
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [1188, 98, 298]
    assert datalist["labels"] == {"0": "normal", "1": "hyperplasia"}
    stamp = (default / "datalist.json").stat().st_mtime_ns
    assert prepare_default_data(default, default, npz) == str(default)
    assert (default / "datalist.json").stat().st_mtime_ns == stamp  # found, not rebuilt


def test_load_split_resolves_paths(tiny_dataset):
    items = load_split(tiny_dataset / "datalist.json", "validation")
    assert len(items) == 8
    assert items[0]["image"].startswith(str(tiny_dataset)) and items[0]["mask"].startswith(str(tiny_dataset))
    assert class_names(read_datalist(tiny_dataset / "datalist.json"), 4) == list(SYNTHETIC_CLASSES)


def test_read_datalist_parses_every_split_once(tiny_dataset):
    parsed = read_datalist(tiny_dataset / "datalist.json")
    assert parsed["path"] == str(tiny_dataset / "datalist.json")
    for split in ("training", "validation", "test"):
        assert split_items(parsed, split) == load_split(tiny_dataset / "datalist.json", split)
    assert all(item["image"].startswith(str(tiny_dataset)) for item in split_items(parsed, "test"))
    with pytest.raises(
        SystemExit, match="has no 'extra' split \\(its splits: 'training', 'validation', 'test'\\). Fix:"
    ):
        split_items(parsed, "extra")


def test_class_names_fall_back_to_indices(tmp_path):
    (tmp_path / "datalist.json").write_text(json.dumps({"training": []}))
    assert class_names(read_datalist(tmp_path / "datalist.json"), 2) == ["class_0", "class_1"]


def test_inference_items_from_datalist_folder_and_file(tiny_dataset, tmp_path):
    assert len(inference_items(tiny_dataset)) == 8
    assert len(inference_items(tiny_dataset / "datalist.json", "training")) == 16
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("b.nii.gz", "a.nii", "notes.txt"):
        (folder / name).write_bytes(b"")
    assert [item["image"] for item in inference_items(folder)] == [str(folder / "a.nii"), str(folder / "b.nii.gz")]
    with pytest.raises(SystemExit, match="nothing': does not exist. Fix: point --dataset_dir to"):
        inference_items(tmp_path / "nothing")


def test_a_relative_datalist_path_resolves_each_image_once(tiny_dataset, monkeypatch):
    """The README's commands run from the bundle's folder with bundle_root '.', so the datalist's path is relative:
    its images must resolve once (absolute), for the data check as for the loaders."""
    from scripts.data.checks import require_valid_datalist
    from scripts.data.datalist import read_datalist

    monkeypatch.chdir(tiny_dataset.parent)
    parsed = read_datalist(f"{tiny_dataset.name}/datalist.json")
    assert all(Path(i["image"]).is_absolute() and Path(i["image"]).is_file() for i in parsed["training"])
    report = require_valid_datalist(parsed, splits=["training", "validation"], num_classes=4, in_channels=1)
    assert report is not None and not report.errors
