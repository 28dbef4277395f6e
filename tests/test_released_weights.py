# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The released weights (``models/model.pt``, listed in large_files.yml): they load into inference.json's network,
give class probabilities for a volume, and reproduce the test metrics recorded in ``eval_metrics`` of the metadata
on AdrenalMNIST3D (when ``../shared/data`` holds it).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from scripts.tools.large_files import file_hash, read_large_files
from tests.conftest import ROOT, run_bundle

WEIGHTS = ROOT / "models" / "model.pt"
EMBEDDED = ROOT / "docs" / "data" / "adrenalmnist3d.npz"


@pytest.fixture(scope="module")
def released() -> dict:
    """large_files.yml's entry of models/model.pt, when the file in models/ is that release (not retrained)."""
    entry = next(e for e in read_large_files(ROOT) if e["path"] == "models/model.pt")
    if not WEIGHTS.is_file():
        pytest.skip("models/model.pt is absent: fetch it with `python -m scripts.tools.large_files download`")
    if file_hash(WEIGHTS, entry["hash_type"]) != entry["hash_val"]:
        pytest.skip("models/model.pt is not the released file (retrained here?); `git checkout models/model.pt`")
    return entry


@pytest.mark.slow
def test_default_training_writes_the_released_weights_byte_for_byte(tmp_path):
    """README quick start, command 1: train.json's defaults on the embedded data train the released model; on a CPU
    with the PyTorch that trained it, the file is the released one byte for byte (large_files.yml's hash)."""
    entry = next(e for e in read_large_files(ROOT) if e["path"] == "models/model.pt")
    trained_with = _metadata()["pytorch_version"]
    if torch.__version__.split("+")[0] != trained_with or torch.cuda.is_available():
        pytest.skip(f"byte-for-byte needs the CPU build of torch {trained_with} (this is {torch.__version__})")
    run_bundle(
        "run", "training", "--config_file", "configs/train.json",
        "--bundle_root", str(tmp_path), "--embedded_data", str(EMBEDDED),
        timeout=1800,  # the real training: about 4 min on an idle 2-core CPU, far longer on a loaded one
    )  # fmt: skip
    assert (tmp_path / "data" / "adrenalmnist3d" / "datalist.json").is_file()  # built from the embedded file
    assert file_hash(tmp_path / "models" / "model.pt", entry["hash_type"]) == entry["hash_val"]


def _metadata() -> dict:
    return json.loads((ROOT / "configs" / "metadata.json").read_text())


def test_released_weights_load_into_inference_network(released):
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    parser["bundle_root"] = str(ROOT)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))  # strict: every key and shape
    volume = torch.zeros(1, 1, *parser["spatial_size"])
    volume[..., 8:20, 10:18, 9:19] = 1.0  # a blob in the middle, like an AdrenalMNIST3D shape mask
    with torch.no_grad():
        probs = torch.softmax(net.eval()(volume), dim=1)
    assert probs.shape == (1, len(parser["class_names"])) and float(probs.sum()) == pytest.approx(1.0, abs=1e-5)


def test_metadata_records_the_released_metrics(released):
    metrics = _metadata()["eval_metrics"]
    for key in ("test_accuracy", "test_balanced_accuracy", "test_f1_macro", "test_auc_macro"):
        assert 0.5 < metrics[key] <= 1.0, key


@pytest.mark.slow
def test_released_weights_reproduce_their_test_metrics(released, tmp_path):
    """The model card's evaluation command on the embedded data's official test split gives the metadata's
    eval_metrics."""
    run_bundle(
        "run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']",
        "--bundle_root", str(tmp_path), "--embedded_data", str(EMBEDDED),
        "--ckpt_dir", str(ROOT / "models"), "--output_dir", str(tmp_path / "eval"),
    )  # fmt: skip
    measured = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    recorded = _metadata()["eval_metrics"]
    assert measured["num_cases"] == 298
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro"):
        np.testing.assert_allclose(measured[key], recorded[f"test_{key}"], atol=1e-3, err_msg=key)
