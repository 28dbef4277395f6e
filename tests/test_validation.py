# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The data check: one real broken file (or datalist entry) per category, and the message a user gets."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scripts.data.checks import (
    DataValidationError,
    check_datalist,
    exit_if_failed,
    require_valid_datalist,
    screen_items,
    validate_datalist,
)
from scripts.data.datalist import read_datalist

NUM_CLASSES = 3


def _nifti(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return str(path)


def _volume(seed: int, shape=(8, 8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.fixture
def data(tmp_path) -> Path:
    """A clean datalist: 6 training, 3 validation, 3 test cases (every class in every split)."""
    datalist: dict = {}
    index = 0
    for split, count in (("training", 6), ("validation", 3), ("test", 3)):
        datalist[split] = []
        for i in range(count):
            _nifti(tmp_path / "images" / f"case{index}.nii.gz", _volume(index))
            datalist[split].append({"image": f"images/case{index}.nii.gz", "label": i % NUM_CLASSES})
            index += 1
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    return tmp_path


def _edit(root: Path, split: str, index: int, **item) -> Path:
    """Replace keys of one item of the datalist (a value None deletes the key); return the datalist's path."""
    path = root / "datalist.json"
    datalist = json.loads(path.read_text())
    for key, value in item.items():
        if value is None:
            datalist[split][index].pop(key, None)
        else:
            datalist[split][index][key] = value
    path.write_text(json.dumps(datalist))
    return path


def _check(root: Path, **kwargs):
    kwargs.setdefault("num_classes", NUM_CLASSES)
    return validate_datalist(root / "datalist.json", **kwargs)


def _only_error(report, where: str, reason: str, fix: str) -> None:
    assert len(report.errors) == 1, report.message()
    problem = report.errors[0]
    assert problem.where == where and reason in problem.reason and fix in problem.fix, str(problem)


def test_clean_data_passes(data):
    report = _check(data, splits=("training", "validation", "test"))
    assert report.ok and report.num_cases == 12 and not report.warnings, report.message()


def test_missing_file(data):
    _edit(data, "training", 1, image="images/nowhere.nii.gz")
    report = _check(data)
    _only_error(report, "training[1]", "file not found", "correct the path")
    assert str(data / "images" / "nowhere.nii.gz") in report.errors[0].reason  # the path that was looked for


def test_volume_above_the_size_limit_is_refused_before_training(data):
    _nifti(data / "images" / "case4.nii.gz", _volume(4, shape=(16, 16, 16)))  # 4,096 voxels; the others 512
    report = _check(data, max_voxels=1000)
    _only_error(report, "training[4]", "16x16x16 = 4,096 voxels, more than max_voxels=1,000", "raise max_voxels")
    assert _check(data).ok  # no limit given: accepted


def test_truncated_nifti(data):
    path = data / "images" / "case2.nii.gz"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    _only_error(_check(data), "training[2]", "unreadable image (EOFError", "re-export or re-copy the file")


def test_file_that_is_not_an_image(data):
    (data / "images" / "case3.nii.gz").write_bytes(b"this is a text file, not a NIfTI volume\n")
    _only_error(_check(data), "training[3]", "unreadable image", "re-export or re-copy the file")


@pytest.mark.parametrize(
    "shape, reason",
    [((8, 8), "spatial shape (8, 8) (2D)"), ((8, 8, 1), "(a single slice)")],
    ids=["2d", "single-slice"],
)
def test_image_that_is_not_3d(data, shape, reason):
    _nifti(data / "images" / "case0.nii.gz", _volume(0, shape))
    _only_error(_check(data), "training[0]", reason, "give one 3D volume")


def test_wrong_number_of_channels(data):
    _nifti(data / "images" / "case4.nii.gz", _volume(4, (8, 8, 8, 3)))
    report = _check(data)
    _only_error(report, "training[4]", "3 channels, the network takes in_channels=1", "--in_channels 3")
    assert _check(data, in_channels=3).errors  # and the others are then wrong


@pytest.mark.parametrize("value, reason", [(np.nan, "2 NaN and 0 infinite"), (np.inf, "0 NaN and 2 infinite")])
def test_non_finite_voxels(data, value, reason):
    array = _volume(5)
    array[1, 2, 3] = array[4, 5, 6] = value
    _nifti(data / "images" / "case5.nii.gz", array)
    _only_error(_check(data), "training[5]", reason, "replace them")


@pytest.mark.parametrize(
    "label, reason, fix",
    [
        (None, "no 'label'", "give each case a 'label'"),
        ("1", "label '1' is not an integer", "as an integer 0..2"),
        (1.5, "label 1.5 is not an integer", "as an integer 0..2"),
        (True, "label True is not an integer", "as an integer 0..2"),
        (3, "label 3 is outside [0, 3)", "--num_classes"),
        (-1, "label -1 is outside [0, 3)", "use a class index 0..2"),
    ],
    ids=["missing", "string", "float", "bool", "too-large", "negative"],
)
def test_bad_labels(data, label, reason, fix):
    if label is None:
        _edit(data, "validation", 1, label=None)
    else:
        _edit(data, "validation", 1, label=label)
    _only_error(_check(data), "validation[1]", reason, fix)


def test_same_file_listed_twice(data):
    _edit(data, "validation", 0, image="images/case1.nii.gz")
    _only_error(_check(data), "validation[0]", "the same file as training[1]", "list each case once")


def test_same_voxels_under_another_name(data):
    shutil.copy(data / "images" / "case0.nii.gz", data / "images" / "copy.nii.gz")
    _edit(data, "validation", 2, image="images/copy.nii.gz")
    _only_error(_check(data), "validation[2]", "identical voxels to training[0] 'images/case0.nii.gz'", "once")


def test_test_case_in_training_is_reported_at_training(data):
    shutil.copy(data / "images" / "case3.nii.gz", data / "images" / "copy.nii.gz")
    _edit(data, "test", 0, image="images/copy.nii.gz")  # voxels of training[3] under another name
    _edit(data, "test", 1, image="images/case7.nii.gz")  # the same file as validation[1]
    report = _check(data)  # training and validation only, as train.json checks
    assert [p.where for p in report.errors] == ["test[0]", "test[1]"], report.message()
    assert "identical voxels to training[3] 'images/case3.nii.gz'" in report.errors[0].reason
    assert "the same file as validation[1] 'images/case7.nii.gz'" in report.errors[1].reason
    assert all(p.fix == "list each case once, in one split only" for p in report.errors)
    assert _check(data, compare_splits=()).ok


def test_intensities_beyond_float32_range(data):
    array = _volume(5).astype(np.float64)
    array[0, 0, 0], array[1, 1, 1] = 3e38, -3e38  # each fits float32, their range (max - min) does not
    _nifti(data / "images" / "case5.nii.gz", array)
    _only_error(_check(data), "training[5]", "intensities span [-3e+38, 3e+38]", "rescale the intensities")
    array[0, 0, 0] = 1e39  # beyond float32: read as infinite
    _nifti(data / "images" / "case5.nii.gz", array)
    _only_error(_check(data), "training[5]", "1 infinite voxels (an intensity beyond float32's range", "rescale")


@pytest.mark.parametrize("content, reason", [([], "is empty"), (None, "is missing")], ids=["empty", "absent"])
def test_empty_or_missing_split(data, content, reason):
    datalist = json.loads((data / "datalist.json").read_text())
    if content is None:
        del datalist["validation"]
    else:
        datalist["validation"] = content
    (data / "datalist.json").write_text(json.dumps(datalist))
    _only_error(_check(data), "datalist", f"split 'validation' {reason}", "list the validation cases")


def test_class_absent_from_training_is_a_warning(data):
    for index in (2, 5):  # the two class-2 cases of training become class 1
        _edit(data, "training", index, label=1)
    report = _check(data, splits=("training", "validation", "test"))
    assert report.ok, report.message()
    assert len(report.warnings) == 2  # validation and test both hold class 2
    assert "class(es) [2] appear in 'validation' but not in 'training'" in report.warnings[0]
    assert check_datalist(data / "datalist.json", num_classes=NUM_CLASSES).ok  # no exception for a warning
    # the evaluation check (test split only) still compares against the training split
    assert "not in 'training'" in _check(data, splits=("test",)).warnings[0]


@pytest.mark.parametrize(
    "tabular, reason, fix",
    [
        ([0.1, 0.2], "'tabular' has 2 values, expected 4", "'tabular' as a list of 4 numbers"),
        (None, "no 'tabular' vector", "'tabular' as a list of 4 numbers"),
        ("1,2,3,4", "'tabular' is str, not a list of numbers", "'tabular' as a list of 4 numbers"),
        ([1, 2, "x", 4], "values that are not numbers", "'tabular' as a list of 4 numbers"),
        ([1, 2, float("inf"), 4], "infinite values", "null if unknown"),
    ],
    ids=["wrong-length", "missing", "string", "non-number", "infinite"],
)
def test_tabular_vector(data, tabular, reason, fix):
    datalist = json.loads((data / "datalist.json").read_text())
    for split in ("training", "validation"):
        for item in datalist[split]:
            item["tabular"] = [0.0, 1.0, 2.0, 3.0]
    (data / "datalist.json").write_text(json.dumps(datalist))
    assert _check(data, tabular_length=4).ok
    _edit(data, "training", 0, tabular=tabular)
    _only_error(_check(data, tabular_length=4), "training[0]", reason, fix)
    assert _check(data).ok  # without tabular input the key is not checked


def test_tabular_missing_values_are_allowed(data):
    """null / NaN mark a missing value, imputed by the tabular branch (training-split mean): not an error."""
    datalist = json.loads((data / "datalist.json").read_text())
    for split in ("training", "validation"):
        for item in datalist[split]:
            item["tabular"] = [0.0, None, 2.0, float("nan")]
    (data / "datalist.json").write_text(json.dumps(datalist))
    assert _check(data, tabular_length=4).ok


def test_tabular_values_from_the_datalists_csv_are_checked(data):
    datalist = json.loads((data / "datalist.json").read_text())
    datalist.update({"tabular_csv": "clinical.csv", "tabular_columns": ["a", "b"]})
    rows = ["id,a,b"]
    for split in ("training", "validation", "test"):  # the datalist is read whole: every case needs its row
        for i, item in enumerate(datalist[split]):
            item["id"] = f"{split}{i}"
            rows.append(f"{split}{i},1.0,{'' if i == 0 else 2.0}")
    (data / "datalist.json").write_text(json.dumps(datalist))
    (data / "clinical.csv").write_text("\n".join(rows) + "\n")
    assert _check(data, tabular_length=2).ok  # an empty cell is a missing value
    report = _check(data, tabular_length=3)
    assert not report.ok and "'tabular' has 2 values, expected 3" in report.message()
    (data / "clinical.csv").write_text("\n".join(rows[:-1]) + "\n")  # the last test case loses its row
    _only_error(_check(data, tabular_length=2), "datalist", "case 'test2' (image", "fix the datalist file")


def test_the_parsed_datalist_is_checked_without_reading_the_file_again(data):
    parsed = read_datalist(data / "datalist.json")
    (data / "datalist.json").write_text("not json")
    report = validate_datalist(parsed, num_classes=NUM_CLASSES, splits=("training",))
    assert report.ok and report.num_cases == 6, report.message()
    assert "cannot be read as JSON" in _check(data).errors[0].reason


def test_one_message_lists_every_bad_case(data):
    (data / "images" / "case2.nii.gz").write_bytes(b"broken")
    _nifti(data / "images" / "case6.nii.gz", _volume(6, (8, 8)))
    _edit(data, "training", 0, image="images/nowhere.nii.gz")
    _edit(data, "training", 4, label=9)
    with pytest.raises(DataValidationError) as info:
        check_datalist(data / "datalist.json", num_classes=NUM_CLASSES)
    message = str(info.value)
    assert message.startswith(f"Data check of '{data / 'datalist.json'}' failed: 4 problem(s)")
    lines = message.splitlines()
    for where, case, fix in [
        ("training[0]", "images/nowhere.nii.gz", "correct the path"),
        ("training[2]", "images/case2.nii.gz", "re-export"),
        ("training[4]", "images/case4.nii.gz", "--num_classes"),
        ("validation[0]", "images/case6.nii.gz", "3D volume"),
    ]:
        assert any(line.strip().startswith(f"{where} '{case}'") and "Fix: " in line and fix in line for line in lines)


def test_bundle_entry_exits_with_the_message(data, caplog):
    _edit(data, "training", 0, label=7)
    with pytest.raises(SystemExit) as info:
        require_valid_datalist(data / "datalist.json", num_classes=NUM_CLASSES)
    assert "training[0] 'images/case0.nii.gz': label 7 is outside [0, 3)" in str(info.value.code)
    assert require_valid_datalist(data / "datalist.json", enabled=False, num_classes=NUM_CLASSES) is None


def test_screen_items_keeps_the_good_cases(data):
    (data / "images" / "case1.nii.gz").write_bytes(b"broken")
    _nifti(data / "images" / "case3.nii.gz", _volume(3, (8, 8)))
    items = [{"image": str(p)} for p in sorted((data / "images").glob("*.nii.gz"))]
    items.append({"image": str(data / "images" / "gone.nii.gz")})
    items.append({"image": str(data / "images" / "case0.nii.gz")})  # the same scan twice is fine at inference
    screening = screen_items(items)
    assert [Path(i["image"]).name for i in screening.good] == [
        f"case{i}.nii.gz" for i in (0, 10, 11, 2, 4, 5, 6, 7, 8, 9, 0)
    ]
    assert [(row["case"], row["error"].split(" (")[0]) for row in screening.failed] == [
        ("case1", "unreadable image"),
        ("case3", "not a 3D volume: spatial shape"),
        ("gone", "file not found"),
    ]
    assert all("Fix: " in row["error"] for row in screening.failed)
    assert len(screen_items(items, enabled=False).good) == len(items)
    labelled = [{"image": str(data / "images" / f"case{i}.nii.gz"), "label": label} for i, label in [(0, 1), (2, 9)]]
    labelled.append({"image": str(data / "images" / "case4.nii.gz")})
    screening = screen_items(labelled, num_classes=NUM_CLASSES)  # a bad label fails its case only
    assert [row["error"] for row in screening.failed] == [
        "label 9 is outside [0, 3). Fix: use a class index 0..2, or set --num_classes to the number of classes."
    ]
    assert [i["label"] for i in screening.good] == [1, -1]  # an unlabelled case runs, left out of the metrics
    tabular = [{"image": str(data / "images" / "case0.nii.gz"), "tabular": [1.0]}]
    assert "'tabular' has 1 values, expected 2" in screen_items(tabular, tabular_length=2).failed[0]["error"]


def test_exit_if_failed_writes_the_errors_file(tmp_path, data):
    (data / "images" / "case1.nii.gz").write_bytes(b"broken")
    screening = screen_items([{"image": str(data / "images" / f"case{i}.nii.gz")} for i in range(3)])
    with pytest.raises(SystemExit) as info:
        exit_if_failed(screening, tmp_path)
    assert "inference failed for 1 of 3 case(s); the other 2 have their predictions" in str(info.value.code)
    rows = list(csv.DictReader(open(tmp_path / "errors.csv")))
    assert [r["case"] for r in rows] == ["case1"] and "unreadable image" in rows[0]["error"]
    exit_if_failed(screen_items([{"image": str(data / "images" / "case0.nii.gz")}]), tmp_path)  # no exit
    assert list(csv.DictReader(open(tmp_path / "errors.csv"))) == []


def test_evaluated_cases_shared_with_training_are_named_in_a_warning(data):
    """Evaluation checks the test split and warns, naming both cases, about any case also in training."""
    shutil.copy(data / "images" / "case3.nii.gz", data / "images" / "copy.nii.gz")
    _edit(data, "test", 0, image="images/copy.nii.gz")  # voxels of training[3] under another name
    _edit(data, "test", 1, image="images/case1.nii.gz")  # the same file as training[1]
    report = _check(data, splits=["test"], overlap_splits=["training"])
    assert report.ok, report.message()  # a warning: the metrics are still computed
    assert report.warnings == [
        "test[1] 'images/case1.nii.gz' is the same file as training[1] 'images/case1.nii.gz', a case the model was "
        "trained on, so its metrics are optimistic; fix: list each case in one split only",
        "test[0] 'images/copy.nii.gz' has the same voxels as training[3] 'images/case3.nii.gz', a case the model was "
        "trained on, so its metrics are optimistic; fix: list each case in one split only",
    ]
    assert not _check(data, splits=["test"]).warnings  # only when asked (evaluate.json asks)


def test_inference_on_a_datalist_warns_about_its_training_cases(data, caplog):
    _edit(data, "test", 2, image="images/case0.nii.gz")
    items = read_datalist(data / "datalist.json")["test"]
    with caplog.at_level("WARNING"):
        screening = screen_items(items, source=data, split="test")
    assert len(screening.good) == 3 and not screening.failed  # every case still runs
    assert "test[2] 'images/case0.nii.gz' is the same file as training[0] 'images/case0.nii.gz'" in caplog.text
    caplog.clear()
    screen_items(items, source=data / "images" / "case0.nii.gz", split="test")  # no datalist: nothing to compare
    screen_items(read_datalist(data / "datalist.json")["training"], source=data, split="training")
    assert "trained on" not in caplog.text


def test_a_label_list_that_is_not_one_hot_is_reported_not_a_crash(data):
    """One-hot labels are read as indices (scripts.data.datalist); any other list is a data error naming the case."""
    _edit(data, "training", 0, label=[0, 1, 0])
    _edit(data, "training", 1, label=[0.5, 0.5])
    _edit(data, "validation", 0, label=[1, 1, 0])
    report = _check(data)
    assert [p.where for p in report.errors] == ["training[1]", "validation[0]"], report.message()
    assert "label [0.5, 0.5] is not an integer class index" in report.errors[0].reason
