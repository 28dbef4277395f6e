# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
End-to-end: the multimodal path (image + tabular values from a CSV) through ``python -m monai.bundle``: training,
evaluating, inferring and TorchScript export with two inputs, and the tabular-only mode; at tiny sizes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import list_data_collate

from scripts.data.datalist import load_split
from scripts.data.tabular import tabular_statistics
from scripts.tools.multimodal_data import generate_multimodal_dataset, multimodal_class_names
from tests.conftest import EVALUATE, ROOT, SYNTHETIC_INFERENCE, TINY_OVERRIDES, TRAIN, run_bundle

pytestmark = pytest.mark.slow
MULTIMODAL = ["--use_tabular", "True", "--tabular_length", "8"]
CLASSES = multimodal_class_names()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """16^3 multimodal cases whose tabular values sit in a clinical.csv keyed by case id, 20% missing."""
    root = tmp_path_factory.mktemp("mm") / "data"
    generate_multimodal_dataset(root, size=16, num_cases=(16, 8, 8), seed=0, missing_rate=0.2, use_csv=True)
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("mm_run")
    dirs = {"models": out / "models", "eval": out / "eval"}
    proc = run_bundle(
        "run", "training", "--config_file", TRAIN, "--logging_file", "configs/logging.conf",
        "--dataset_dir", str(dataset), "--ckpt_dir", str(dirs["models"]), "--output_dir", str(dirs["eval"]),
        "--epochs", "2", *MULTIMODAL, *TINY_OVERRIDES,
    )  # fmt: skip
    dirs["log"] = proc.stdout + proc.stderr
    return dirs


def test_training_saves_the_training_splits_statistics_with_the_model(trained, dataset):
    assert "Epoch[2] Complete" in trained["log"] and "tabular normalisation from 16 training cases" in trained["log"]
    state = torch.load(trained["models"] / "model.pt", map_location="cpu", weights_only=True)
    expected = tabular_statistics(load_split(dataset / "datalist.json", "training"), 8)
    torch.testing.assert_close(state["tabular.mean"], torch.tensor(expected["mean"], dtype=torch.float))
    torch.testing.assert_close(state["tabular.std"], torch.tensor(expected["std"], dtype=torch.float))
    assert state["fc.weight"].shape == (4, 4 * 16) and state["tabular_fc.weight"].shape == (4, 16)


def test_evaluation_of_the_multimodal_model(trained, dataset, tmp_path):
    run_bundle(
        "run", "evaluating", "--config_file", EVALUATE, "--dataset_dir", str(dataset),
        "--ckpt_dir", str(trained["models"]), "--output_dir", str(tmp_path), *MULTIMODAL, *TINY_OVERRIDES,
        "--class_names", json.dumps(CLASSES).replace('"', "'"),
    )  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_cases"] == 8 and set(metrics["per_class"]) == set(CLASSES)
    assert len(list(csv.DictReader(open(tmp_path / "predictions.csv")))) == 8


def test_inference_and_two_input_torchscript_agree(trained, dataset, tmp_path):
    """Inference (statistics from model.pt) and the exported TorchScript (statistics inside) give the same
    probabilities, with missing values in the test cases."""
    out = tmp_path / "out"
    common = [*MULTIMODAL, *TINY_OVERRIDES, "--class_names", json.dumps(CLASSES).replace('"', "'")]
    run_bundle(
        "run", "inferring", "--config_file", SYNTHETIC_INFERENCE, "--dataset_dir", str(dataset),
        "--ckpt_path", str(trained["models"] / "model.pt"), "--output_dir", str(out), *common,
    )  # fmt: skip
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    items = load_split(dataset / "datalist.json", "test")
    assert [r["case"] for r in rows] == [i["id"] for i in items]
    assert any(np.isnan(i["tabular"]).any() for i in items)  # the missing-value rule is exercised
    for row in rows:
        image = nib.load(dataset / "images" / f"{row['case']}.nii.gz")
        attention = nib.load(out / f"{row['case']}_attention.nii.gz")
        assert attention.shape == image.shape

    ts_path = tmp_path / "model.ts"
    run_bundle(
        "ckpt_export", "network_def", "--filepath", str(ts_path), "--ckpt_file", str(trained["models"] / "model.pt"),
        "--meta_file", "configs/metadata.json", "--config_file", SYNTHETIC_INFERENCE, *common,
    )  # fmt: skip
    scripted = torch.jit.load(str(ts_path), map_location="cpu").eval()
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / f) for f in ("inference.json", "synthetic_attention.json")])
    parser.update({"bundle_root": str(ROOT), "spatial_size": [16, 16, 16], "use_tabular": True, "tabular_length": 8})
    batch = list_data_collate([parser.get_parsed_content("preprocessing")(item) for item in items])
    with torch.no_grad():
        probs = torch.softmax(scripted(batch["image"].as_tensor(), batch["tabular"]), dim=1)
    expected = torch.tensor([[float(r[f"prob_{c}"]) for c in CLASSES] for r in rows])
    torch.testing.assert_close(probs, expected, atol=1e-4, rtol=0)


def test_tabular_only_model_trains_and_infers(dataset, tmp_path):
    tabular_only = [*MULTIMODAL, "--use_image", "False", *TINY_OVERRIDES]
    run_bundle(
        "run", "training", "--config_file", TRAIN, "--dataset_dir", str(dataset),
        "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"), "--epochs", "1", *tabular_only,
    )  # fmt: skip
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert state and all(k.startswith("tabular") for k in state)  # no image branch at all
    out = tmp_path / "out"
    run_bundle(
        "run", "inferring", "--config_file", SYNTHETIC_INFERENCE, "--dataset_dir", str(dataset),
        "--ckpt_path", str(tmp_path / "models" / "model.pt"), "--output_dir", str(out), *tabular_only,
    )  # fmt: skip
    assert len(list(csv.DictReader(open(out / "predictions.csv")))) == 8
    assert not list(out.glob("*_attention.nii.gz"))  # no image branch, no attention map


def test_switches_are_off_by_default_and_config_values():
    for config in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(str(ROOT / "configs" / config))
        parser["bundle_root"] = str(ROOT)
        assert parser["use_tabular"] is False and parser["tabular_length"] == 0 and parser["use_image"] is True
        assert parser.get_parsed_content("network_def").tabular is None
        parser.update({"use_tabular": True})
        with pytest.raises(Exception) as error:  # MONAI wraps the component's error in its own
            parser.get_parsed_content("network_def", lazy=False)
        assert "set --tabular_length" in f"{error.value} {error.value.__cause__}"
