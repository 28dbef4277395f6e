# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The released weights (``models/model.pt``, listed in large_files.yml): they load into inference.json's network,
give class probabilities for a volume, and reproduce the test metrics recorded in ``eval_metrics`` of the metadata
on AdrenalMNIST3D. That train.json's defaults train them again byte for byte is checked outside pytest (a full
training, minutes): ``python -m scripts.tools.large_files check_training``, a step of ``.ci/run``; here its
verdict is checked with the training replaced by a file of known bytes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from scripts.tools import large_files
from scripts.tools.large_files import file_hash, released_entry
from tests.conftest import ROOT, run_bundle

WEIGHTS = ROOT / "models" / "model.pt"
EMBEDDED = ROOT / "docs" / "data" / "adrenalmnist3d.npz"


@pytest.fixture(scope="module")
def released() -> dict:
    """large_files.yml's entry of models/model.pt, when the file in models/ is that release (not retrained)."""
    entry = released_entry(ROOT)
    if not WEIGHTS.is_file():
        pytest.skip("models/model.pt is absent: fetch it with `python -m scripts.tools.large_files download`")
    if file_hash(WEIGHTS, entry["hash_type"]) != entry["hash_val"]:
        pytest.skip("models/model.pt is not the released file (retrained here?); `git checkout models/model.pt`")
    return entry


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


def _fake_training(payload: bytes, calls: list):
    """A stand-in for check_training's subprocess: writes ``payload`` as the trained weights under --bundle_root."""

    def run(cmd, **kwargs):
        calls.append(cmd)
        out = Path(cmd[cmd.index("--bundle_root") + 1])
        (out / "models").mkdir(parents=True, exist_ok=True)
        (out / "models" / "model.pt").write_bytes(payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def _bundle(root: Path, released: bytes) -> Path:
    """A bundle folder whose large_files.yml lists the md5 of ``released`` for models/model.pt."""
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text('{"pytorch_version": "2.13.0"}')
    (root / "large_files.yml").write_text(
        'large_files:\n  - path: "models/model.pt"\n    url: "https://example.org/model.pt"\n'
        f'    hash_val: "{hashlib.md5(released).hexdigest()}"\n    hash_type: "md5"\n'
    )
    return root


def test_check_training_passes_on_large_files_yml_hash_and_trains_outside_the_checkout(tmp_path, monkeypatch, capsys):
    """The reproduction check takes the expected hash from large_files.yml, passes when the trained file has it, and
    trains in a temporary folder outside the bundle, removed afterwards."""
    bundle, calls = _bundle(tmp_path / "bundle", b"released weights"), []
    monkeypatch.setattr(large_files.subprocess, "run", _fake_training(b"released weights", calls))
    assert large_files.check_training(bundle) == hashlib.md5(b"released weights").hexdigest()
    assert "OK" in capsys.readouterr().out
    out = Path(calls[0][calls[0].index("--bundle_root") + 1])
    assert bundle not in out.parents and not out.exists()
    assert sorted(p.name for p in bundle.iterdir()) == ["configs", "large_files.yml"]  # nothing written there


def test_check_training_mismatch_exits_with_both_hashes(tmp_path, monkeypatch):
    monkeypatch.setattr(large_files.subprocess, "run", _fake_training(b"other weights", []))
    with pytest.raises(SystemExit) as info:
        large_files.check_training(_bundle(tmp_path, b"released weights"))
    message = str(info.value.code)
    assert message.startswith("check_training: MISMATCH")
    assert (
        hashlib.md5(b"released weights").hexdigest() in message and hashlib.md5(b"other weights").hexdigest() in message
    )
