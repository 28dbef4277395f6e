# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
End-to-end reliability through ``python -m monai.bundle``: bad data stops training and evaluation before they
start, inference reports bad cases and keeps the good ones, a training SIGKILLed at a given iteration resumes,
and two runs with the same seed give the same numbers.
"""

from __future__ import annotations

import csv
import json
import re
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests import crash
from tests.conftest import EVALUATE, SYNTHETIC_INFERENCE, TINY_OVERRIDES, TRAIN, run_bundle

pytestmark = pytest.mark.slow


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run", "training", "--config_file", TRAIN, "--logging_file", "configs/logging.conf",
        "--dataset_dir", str(data), "--ckpt_dir", str(out / "models"), "--output_dir", str(out / "eval"),
        *TINY_OVERRIDES, *extra,
    ]  # fmt: skip


def _copy_datalist(source: Path, target: Path) -> dict:
    """The datalist of ``source`` written into ``target`` with absolute image paths; returns it."""
    target.mkdir(parents=True, exist_ok=True)
    datalist = json.loads((source / "datalist.json").read_text())
    for split in ("training", "validation", "test"):
        for item in datalist[split]:
            item["image"] = str(source / item["image"])
    (target / "datalist.json").write_text(json.dumps(datalist))
    return datalist


def _broken(folder: Path, source: Path, kind: str) -> Path:
    """A real broken file named after ``kind``, made from the valid volume ``source``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.nii.gz"
    image = nib.load(source)
    array = np.asarray(image.dataobj, dtype=np.float32)
    if kind == "truncated":
        content = source.read_bytes()
        path.write_bytes(content[: len(content) // 2])
    elif kind == "not_nifti":
        path.write_bytes(b"<html>404 Not Found</html>\n")
    elif kind == "flat2d":
        nib.save(nib.Nifti1Image(array[:, :, 0], image.affine), str(path))
    elif kind == "nan":
        array[3, 4, 5] = np.nan
        nib.save(nib.Nifti1Image(array, image.affine), str(path))
    elif kind == "rgb":
        nib.save(nib.Nifti1Image(np.stack([array] * 3, axis=-1), image.affine), str(path))
    elif kind == "missing":
        path.symlink_to(folder / "nowhere.nii.gz")  # a dangling link: listed in the folder, no file behind it
    return path


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> dict:
    """Two epochs of training with the default seed: the run the other tests compare with or infer from."""
    out = tmp_path_factory.mktemp("trained")
    proc = run_bundle(*_train_args(tiny_dataset, out, "--epochs", "2"))
    return {"data": tiny_dataset, "out": out, "log": proc.stdout + proc.stderr}


def test_training_stops_on_bad_data_before_any_training(tiny_dataset, tmp_path):
    datalist = _copy_datalist(tiny_dataset, tmp_path / "data")
    train = datalist["training"]
    first = Path(train[0]["image"])
    train[1]["image"] = str(tmp_path / "data" / "images" / "gone.nii.gz")
    train[2]["image"] = str(_broken(tmp_path / "data" / "images", first, "truncated"))
    train[3]["image"] = str(_broken(tmp_path / "data" / "images", first, "flat2d"))
    train[4]["image"] = str(_broken(tmp_path / "data" / "images", first, "nan"))
    train[5]["label"] = 9
    datalist["validation"][0]["image"] = train[6]["image"]  # the same case in two splits
    (tmp_path / "data" / "datalist.json").write_text(json.dumps(datalist))

    proc = run_bundle(*_train_args(tmp_path / "data", tmp_path / "run", "--epochs", "1"), check=False)
    assert proc.returncode == 1
    message = proc.stderr
    assert "failed: 6 problem(s) (training 5, validation 1) among 24 case(s). Nothing was run." in message
    for expected in [
        "training[1] '", "gone.nii.gz': file not found",
        "training[2] '", "truncated.nii.gz': unreadable image (EOFError",
        "training[3] '", "flat2d.nii.gz': not a 3D volume: spatial shape (16, 16) (2D)",
        "training[4] '", "nan.nii.gz': 1 NaN and 0 infinite voxels",
        "training[5] '", "label 9 is outside [0, 4)",
        "validation[0] '", "the same file as training[6]",
    ]:  # fmt: skip
        assert expected in message, expected
    log = proc.stdout
    assert "Epoch[" not in log and "Engine run starting" not in log  # the trainer never started
    assert not (tmp_path / "run" / "models").exists()


def test_evaluation_checks_the_test_split(tiny_dataset, tmp_path):
    datalist = _copy_datalist(tiny_dataset, tmp_path / "data")
    datalist["test"][2]["image"] = str(_broken(tmp_path / "data", Path(datalist["test"][0]["image"]), "not_nifti"))
    (tmp_path / "data" / "datalist.json").write_text(json.dumps(datalist))
    proc = run_bundle(
        "run", "evaluating", "--config_file", EVALUATE, "--dataset_dir", str(tmp_path / "data"),
        "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"), *TINY_OVERRIDES, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "problem(s) (test 1) among 8 case(s)" in proc.stderr
    assert "test[2] '" in proc.stderr and "not_nifti.nii.gz': unreadable image" in proc.stderr


def test_inference_reports_bad_cases_and_keeps_the_good_ones(trained, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    good = [
        trained["data"] / item["image"]
        for item in json.loads((trained["data"] / "datalist.json").read_text())["test"][:3]
    ]
    for path in good:
        (scans / path.name).symlink_to(path)
    kinds = ["missing", "not_nifti", "truncated", "flat2d", "nan", "rgb"]
    for kind in kinds:
        _broken(scans, good[0], kind)
    out = tmp_path / "out"
    proc = run_bundle(
        "run", "inferring", "--config_file", SYNTHETIC_INFERENCE, "--dataset_dir", str(scans),
        "--ckpt_path", str(trained["out"] / "models" / "model.pt"), "--output_dir", str(out), *TINY_OVERRIDES,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1  # some cases failed
    assert "inference failed for 6 of 9 case(s); the other 3 have their predictions." in proc.stderr
    rows = {r["case"]: r for r in csv.DictReader(open(out / "predictions.csv"))}
    assert set(rows) == {p.name[: -len(".nii.gz")] for p in good} | set(kinds)
    for path in good:
        row = rows[path.name[: -len(".nii.gz")]]
        assert row["error"] == "" and row["pred_name"] in {"solid", "hollow", "striped", "checkered"}
        attention = nib.load(out / f"{path.name[: -len('.nii.gz')]}_attention.nii.gz")
        assert attention.shape == nib.load(path).shape
    reasons = {
        "missing": "file not found", "not_nifti": "unreadable image", "truncated": "unreadable image (EOFError",
        "flat2d": "not a 3D volume", "nan": "1 NaN and 0 infinite voxels", "rgb": "3 channels",
    }  # fmt: skip
    for kind, reason in reasons.items():
        assert rows[kind]["pred"] == "" and reason in rows[kind]["error"] and "Fix: " in rows[kind]["error"], kind
        assert not (out / f"{kind}_attention.nii.gz").exists()
    errors = list(csv.DictReader(open(out / "errors.csv")))
    assert sorted(r["case"] for r in errors) == sorted(kinds)


def _trainer_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["trainer"]


def test_training_killed_mid_epoch_resumes_to_the_same_number_of_epochs(tiny_dataset, tmp_path):
    epochs, per_epoch = 6, 8  # 16 training cases, batch 2
    crash_at = per_epoch + 3  # inside epoch 2
    args = _train_args(
        tiny_dataset, tmp_path, "--epochs", str(epochs), "--batch_size", "2", "--checkpoint_interval", "1"
    )
    checkpoint = tmp_path / "models" / "checkpoint.pt"
    # the same run with tests/crash.py's handler appended: SIGKILLed right after iteration crash_at's checkpoint
    (tmp_path / "crash.json").write_text(json.dumps(crash.overlay(crash_at)))
    crashing = args.copy()
    crashing[crashing.index("--config_file") + 1] = f"{TRAIN[:-1]},'{tmp_path / 'crash.json'}']"
    killed = run_bundle(*crashing, check=False)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert f"CrashAt: killing the training at iteration {crash_at}" in killed.stdout
    state = _trainer_state(checkpoint)  # a complete, loadable checkpoint after the kill
    done = state["iteration"]
    assert done == crash_at

    resumed = run_bundle(*args, "--resume", "True")
    log = resumed.stdout + resumed.stderr
    assert f"resumed from {checkpoint}: {done // per_epoch} of {epochs} epochs and {done} iterations done" in log
    completed = [int(e) for e in re.findall(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete", log)]
    assert completed == list(range(done // per_epoch + 1, epochs + 1))  # the rest of the run, not a new one
    final = _trainer_state(checkpoint)
    assert (final["iteration"], final["max_epochs"]) == (epochs * per_epoch, epochs)  # as an uninterrupted run
    assert "fc.weight" in torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert not list((tmp_path / "models").glob(".*.tmp"))


def _validation_metrics(log: str) -> list[str]:
    return re.findall(r"Epoch\[\d+\] Metrics -- (val_.*)", log)


def test_same_seed_same_metrics_and_weights(trained, tmp_path):
    again = run_bundle(*_train_args(trained["data"], tmp_path, "--epochs", "2"))
    first, second = _validation_metrics(trained["log"]), _validation_metrics(again.stdout + again.stderr)
    assert len(first) == 2 and first == second
    for name in ("model.pt", "checkpoint.pt"):
        a = torch.load(trained["out"] / "models" / name, weights_only=True)
        b = torch.load(tmp_path / "models" / name, weights_only=True)
        a, b = a.get("model", a), b.get("model", b)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_resume_from_an_epoch_boundary_is_bitwise_equal(trained, tmp_path):
    """Killed in epoch 2 (after epoch 1's checkpoint) and resumed: the same weights as the uninterrupted run."""
    (tmp_path / "crash.json").write_text(json.dumps(crash.overlay(5)))  # 16 cases, batch 4: inside epoch 2
    args = _train_args(trained["data"], tmp_path, "--epochs", "2")
    crashing = args.copy()
    crashing[crashing.index("--config_file") + 1] = f"{TRAIN[:-1]},'{tmp_path / 'crash.json'}']"
    assert run_bundle(*crashing, check=False).returncode == -signal.SIGKILL
    assert _trainer_state(tmp_path / "models" / "checkpoint.pt")["iteration"] == 4
    resumed = run_bundle(*args, "--resume", "True")
    assert _validation_metrics(resumed.stdout + resumed.stderr) == _validation_metrics(trained["log"])[1:]
    for name in ("model.pt", "checkpoint.pt"):
        a = torch.load(trained["out"] / "models" / name, weights_only=True)
        b = torch.load(tmp_path / "models" / name, weights_only=True)
        a, b = a.get("model", a), b.get("model", b)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def _assert_one_message(proc, path, problem: str) -> None:
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    assert f"{path}: {problem}" in proc.stderr and "Fix: " in proc.stderr, proc.stderr[-3000:]
    for text in (proc.stdout, proc.stderr):
        assert "Traceback" not in text and "weights_only=False" not in text, text[-3000:]


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("garbage", "is not a readable PyTorch checkpoint"),
        ("code", "carries pickled code"),
        ("other_network", "weights of another network"),
        ("missing", "no such file"),
        ("folder", "is a folder, not a checkpoint file"),
    ],
)
def test_checkpoint_problems_at_evaluation_and_inference(trained, tmp_path, kind, problem):
    path = tmp_path / "model.pt"
    extra: list[str] = []
    if kind == "garbage":
        path.write_bytes(b"<html>404 Not Found</html>\n" * 8)
    elif kind == "code":
        torch.save({"fc.weight": crash.CrashAt(1)}, path)  # unpickling would import and build an object
    elif kind == "other_network":
        path = trained["out"] / "models" / "model.pt"
        extra = ["--num_attentions", "8"]  # the model has 4 attention maps
        problem += " ("
    elif kind == "folder":
        path = trained["out"] / "models"
    if kind in ("missing", "folder"):  # evaluation
        args = ["run", "evaluating", "--config_file", EVALUATE, "--dataset_dir", str(trained["data"])]
    else:
        args = ["run", "inferring", "--config_file", SYNTHETIC_INFERENCE, "--dataset_dir", str(trained["data"])]
    proc = run_bundle(
        *args, "--ckpt_path", str(path), "--output_dir", str(tmp_path / "out"), *TINY_OVERRIDES, *extra, check=False
    )
    _assert_one_message(proc, path, problem)
    if kind == "other_network":
        assert "they were trained with --num_attentions 4 (this config: 8)" in proc.stderr
        assert "Fix: pass the overrides their training used (--num_attentions 4" in proc.stderr


def test_resume_with_another_network_and_batch_size_is_refused(trained, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "checkpoint.pt").write_bytes((trained["out"] / "models" / "checkpoint.pt").read_bytes())
    args = _train_args(trained["data"], tmp_path, "--epochs", "3", "--resume", "True")
    proc = run_bundle(*args, "--num_attentions", "2", "--batch_size", "2", check=False)
    _assert_one_message(proc, tmp_path / "models" / "checkpoint.pt", "was saved by a run with other settings")
    assert "--num_attentions 4 (this run: 2), --batch_size 4 (this run: 2)" in proc.stderr
    assert "Fix: resume with --num_attentions 4 --batch_size 4" in proc.stderr


def test_non_finite_loss_stops_training_and_writes_nothing(trained, tmp_path):
    proc = run_bundle(*_train_args(trained["data"], tmp_path, "--epochs", "2", "--learning_rate", "1e30"), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert re.search(r"training loss at epoch 1, iteration \d+ \(\d+ of the epoch\): (nan|inf)", proc.stderr)
    assert "--learning_rate" in proc.stderr and "Fix: " in proc.stderr
    assert (proc.stdout + proc.stderr).count("contains NaN or Inf") == 1  # ignite's warning, once
    assert not (tmp_path / "models" / "model.pt").exists() and not (tmp_path / "models" / "checkpoint.pt").exists()
