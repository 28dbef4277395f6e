# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Inference inputs and outputs that used to fail with a traceback or be silently wrong: unique case names, atomic
result files, the disk cache's key, inference datalist errors, class names, an output folder inside the input
folder; and two runs of ``python -m monai.bundle run inferring`` on random weights.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import LoadImaged

from scripts.data.datalist import class_names, inference_class_names, inference_items, read_datalist
from scripts.data.loading import build_dataset, file_state_hashing
from scripts.reports.outputs import CaseNameFormatter, atomic_write_text, separate_output_dir, unique_case_names
from tests.conftest import ROOT, SYNTHETIC_INFERENCE, TINY_OVERRIDES, run_bundle


def _nifti(path: Path, value: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(0).random((8, 8, 8), dtype=np.float32) + np.float32(value)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def _stops(call, *texts: str) -> str:
    """``call()`` ends the run (SystemExit) with one message holding ``texts`` and a fix; returns the message."""
    with pytest.raises(SystemExit) as info:
        call()
    message = str(info.value)
    assert "Fix: " in message and "\n" not in message, message
    for text in texts:
        assert text in message, message
    return message


def test_case_names_are_unique_per_input():
    images = [
        "/d/a/scan.nii.gz",
        "/d/b/scan.nii.gz",
        "/d/scan.nii.gz",
        "/d/scan.nii",
        "/d/other.nii",
        "/d/a/scan.nii.gz",
    ]
    assert unique_case_names(images) == {
        "/d/a/scan.nii.gz": "a_scan",
        "/d/b/scan.nii.gz": "b_scan",
        "/d/scan.nii.gz": "d_scan_nii_gz",
        "/d/scan.nii": "d_scan_nii",
        "/d/other.nii": "other",  # no clash: the plain name
    }  # the same path twice is one case
    assert unique_case_names(["scan.nii", "scan.nii.gz"]) == {"scan.nii": "scan_nii", "scan.nii.gz": "scan_nii_gz"}
    names = unique_case_names(["x/a/s.nii", "y/a/s.nii", "a_s.nii", "z/a_s.nii"])
    assert len(set(names.values())) == 4  # a prefixed name meeting another file's gets a counter
    formatter = CaseNameFormatter(unique_case_names(images))
    assert formatter({"filename_or_obj": "/d/scan.nii"}) == {"subject": "d_scan_nii.nii.gz", "idx": None}
    assert formatter({"filename_or_obj": "/elsewhere/x.v2.nii.gz"})["subject"] == "x.v2.nii.gz"


def test_atomic_write_keeps_the_previous_file_on_failure(tmp_path):
    path = tmp_path / "predictions.csv"
    atomic_write_text(path, "case,pred\na,1\n")
    with pytest.raises(TypeError):
        atomic_write_text(path, None)  # fails mid-write
    assert path.read_text() == "case,pred\na,1\n" and os.listdir(tmp_path) == ["predictions.csv"]


def test_disk_cache_key_follows_a_file_replaced_in_place(tmp_path):
    image = _nifti(tmp_path / "case.nii.gz")
    item = {"image": str(image), "label": 0}
    key = file_state_hashing(item)
    transform = LoadImaged("image", image_only=True)
    assert float(build_dataset([item], transform, cache="disk", cache_dir=tmp_path / "cache")[0]["image"].min()) < 1
    _nifti(image, value=10.0)  # same path, new content
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 1_000_000))
    assert file_state_hashing(item) != key
    assert float(build_dataset([item], transform, cache="disk", cache_dir=tmp_path / "cache")[0]["image"].min()) > 9


def test_inference_input_errors_name_the_input_and_the_fix(tmp_path):
    _stops(lambda: inference_items(tmp_path / "nowhere"), "--dataset_dir '", "nowhere': does not exist")
    (tmp_path / "empty").mkdir()
    _stops(lambda: inference_items(tmp_path / "empty"), "empty': is an empty folder")
    datalist = tmp_path / "datalist.json"
    datalist.write_text('{"test": [{"image": "a.nii.gz"},]}')
    _stops(lambda: inference_items(datalist), f"datalist '{datalist}': is not valid JSON")
    datalist.write_text('[{"image": "a.nii.gz"}]')
    _stops(lambda: inference_items(datalist), "is a JSON list, not an object")
    datalist.write_text(json.dumps({"labels": {"0": "a"}, "training": [], "test": [{"image": "a.nii.gz"}]}))
    _stops(
        lambda: inference_items(datalist, "tset"),
        "--datalist_split 'tset': is not a split of", "(its splits: 'training', 'test')", "Fix: choose one of them",
    )  # fmt: skip
    volume = _nifti(tmp_path / "one.nii.gz")
    assert inference_items(volume) == [{"image": str(volume)}]  # a single file is one case


def test_output_dir_inside_the_input_folder_is_refused(tmp_path):
    scans = tmp_path / "scans"
    _nifti(scans / "a.nii.gz")
    _stops(lambda: separate_output_dir(scans, scans / "out"), "--output_dir '", "is inside the input folder")
    _stops(lambda: separate_output_dir(scans, scans), "is inside the input folder")
    assert separate_output_dir(scans, tmp_path / "out") == str(scans)
    (scans / "datalist.json").write_text("{}")  # a datalist lists its cases: outputs beside it are never read
    assert separate_output_dir(scans, scans / "out") == str(scans)


def test_class_names_must_match_num_classes(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"labels": {"0": "x", "1": "y", "2": "z"}, "test": []}))
    assert inference_class_names(tmp_path, ["a", "b", "c"], 3) == ["x", "y", "z"]  # the datalist's names win
    _stops(lambda: inference_class_names(datalist, ["a", "b"], 2), "--num_classes 2: disagrees with the 3 class")
    _stops(lambda: class_names(read_datalist(datalist), 2), "--num_classes 2: disagrees", "--num_classes 3")
    scans = tmp_path / "scans"
    _nifti(scans / "a.nii.gz")
    assert inference_class_names(scans, ["a", "b"], 2) == ["a", "b"]
    _stops(lambda: inference_class_names(scans, ["a", "b", "c"], 2), "--num_classes 2: disagrees with --class_names")


# --- through python -m monai.bundle (random weights of the tiny network: no training needed) ---


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    parser = ConfigParser()
    parser.read_config([str(ROOT / f) for f in ast.literal_eval(SYNTHETIC_INFERENCE)])
    parser["bundle_root"] = str(ROOT)
    for key, value in zip(TINY_OVERRIDES[::2], TINY_OVERRIDES[1::2]):
        parser[key.lstrip("-")] = ast.literal_eval(value)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def _infer(model: Path, data: Path, out: Path, *extra: str):
    return run_bundle(
        "run", "inferring", "--config_file", SYNTHETIC_INFERENCE, "--dataset_dir", str(data),
        "--ckpt_path", str(model), "--output_dir", str(out), *TINY_OVERRIDES, *extra, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_inference_names_each_input_and_reports_bad_labels(model, tiny_dataset, tmp_path):
    data = tmp_path / "data"
    images = sorted((tiny_dataset / "images").glob("*.nii.gz"))
    for source, target in zip(images, ["a/scan.nii.gz", "b/scan.nii.gz", "scan.nii.gz"]):
        (data / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, data / target)
    nib.save(nib.load(images[3]), str(data / "scan.nii"))
    labels = {"0": "w", "1": "x", "2": "y", "3": "z"}
    test = [
        {"image": "a/scan.nii.gz", "label": 0}, {"image": "b/scan.nii.gz", "label": 1},
        {"image": "scan.nii.gz", "label": 9}, {"image": "scan.nii"},
    ]  # fmt: skip
    (data / "datalist.json").write_text(json.dumps({"labels": labels, "test": test}))
    proc = _infer(model, data, tmp_path / "out")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{data / 'scan.nii.gz'}: label 9 is outside [0, 4). Fix: use a class index 0..3" in proc.stderr
    assert "metrics cover 2 of 3 cases: 1 case(s) have no label (data_scan_nii)" in proc.stdout + proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert [r["case"] for r in rows] == ["a_scan", "b_scan", "data_scan_nii", "data_scan_nii_gz"]
    assert [r["label_name"] for r in rows] == ["w", "x", "", ""] and "prob_z" in rows[0]  # the datalist's names
    maps = sorted(p.name for p in (tmp_path / "out").glob("*_attention.nii.gz"))
    assert maps == ["a_scan_attention.nii.gz", "b_scan_attention.nii.gz", "data_scan_nii_attention.nii.gz"]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["num_cases"] == 2


@pytest.mark.slow
def test_misspelled_split_names_the_splits(model, tiny_dataset, tmp_path):
    proc = _infer(model, tiny_dataset, tmp_path / "out", "--datalist_split", "tset")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (
        f"--datalist_split 'tset': is not a split of '{tiny_dataset / 'datalist.json'}' (its splits: 'training', "
        f"'validation', 'test'). Fix: choose one of them, e.g. --datalist_split training"
    ) in proc.stderr
