# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""End-to-end: the README's commands through ``python -m monai.bundle``, at tiny sizes, checking what they write."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import EVALUATE, SYNTHETIC_INFERENCE, TINY_OVERRIDES, TRAIN, run_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    """Train for two epochs with the headline command (``run training``); return the run's folders."""
    out = tmp_path_factory.mktemp("run")
    dirs = {"data": tiny_dataset, "models": out / "models", "eval": out / "eval"}
    proc = run_bundle(
        "run", "training", "--config_file", TRAIN, "--logging_file", "configs/logging.conf",
        "--dataset_dir", str(tiny_dataset), "--ckpt_dir", str(dirs["models"]), "--output_dir", str(dirs["eval"]),
        "--epochs", "2", "--log_interval", "2", *TINY_OVERRIDES,
    )  # fmt: skip
    dirs["log"] = proc.stdout + proc.stderr
    return dirs


def test_training_writes_best_model_and_logs(trained):
    log = trained["log"]
    assert "Epoch[2] Complete" in log and "val_f1" in log and "val_auc" in log and "val_accuracy" in log
    assert "train_loss" in log  # progress on the console
    state = torch.load(trained["models"] / "model.pt", map_location="cpu", weights_only=True)
    assert "fc.weight" in state and state["fc.weight"].shape == (4, 4 * 16)
    assert list((trained["eval"] / "train").glob("events.out.tfevents.*"))  # TensorBoard


def test_run_without_id_trains_too(tiny_dataset, tmp_path):
    run_bundle(
        "run", "--config_file", TRAIN, "--dataset_dir", str(tiny_dataset),
        "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"), "--epochs", "1",
        "--cal", "False", "--backbone", "resnet", "--backbone_args#resnet#widen_factor", "0.125", *TINY_OVERRIDES,
    )  # fmt: skip
    assert (tmp_path / "models" / "model.pt").is_file()


def test_evaluation_writes_metrics_and_per_case_csv(trained, tmp_path):
    run_bundle(
        "run", "evaluating", "--config_file", EVALUATE, "--dataset_dir", str(trained["data"]),
        "--ckpt_dir", str(trained["models"]), "--output_dir", str(tmp_path), *TINY_OVERRIDES,
    )  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_cases"] == 8
    for key in ("accuracy", "f1_macro", "auc_macro", "balanced_accuracy"):
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0
    assert set(metrics["per_class"]) == {"solid", "hollow", "striped", "checkered"}
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert len(rows) == 8
    assert set(rows[0]) >= {"case", "label", "pred", "prob_solid", "prob_checkered"}
    probs = np.array([[float(r[f"prob_{c}"]) for c in ("solid", "hollow", "striped", "checkered")] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    accuracy = np.mean([r["label"] == r["pred"] for r in rows])
    assert accuracy == pytest.approx(metrics["accuracy"])
    for picture in ("roc.png", "confusion_matrix.png"):  # next to metrics.json
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture


def test_inference_writes_csv_and_attention_in_image_geometry(trained, tmp_path):
    # a plain folder of volumes, no datalist: the user's usual case
    folder = tmp_path / "scans"
    folder.mkdir()
    items = json.loads((trained["data"] / "datalist.json").read_text())["test"][:3]
    for item in items:
        (folder / Path(item["image"]).name).symlink_to(trained["data"] / item["image"])
    out = tmp_path / "out"
    run_bundle(
        "run", "inferring", "--config_file", SYNTHETIC_INFERENCE, "--dataset_dir", str(folder),
        "--ckpt_path", str(trained["models"] / "model.pt"), "--output_dir", str(out), *TINY_OVERRIDES,
    )  # fmt: skip
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["case"] for r in rows] == sorted(Path(i["image"]).name[: -len(".nii.gz")] for i in items)
    assert "label" not in rows[0] and {"pred", "pred_name", "prob_solid"} <= set(rows[0])
    assert not (out / "roc.png").exists()  # no labels, no ROC
    for row in rows:
        image = nib.load(folder / f"{row['case']}.nii.gz")
        attention = nib.load(out / f"{row['case']}_attention.nii.gz")
        assert attention.shape == image.shape
        np.testing.assert_allclose(attention.affine, image.affine, atol=1e-5)
        values = attention.get_fdata()
        assert values.min() >= -1e-5 and values.max() <= 1 + 1e-5 and values.max() > values.min()
