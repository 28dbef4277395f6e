# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Model-zoo conformance: the metadata against the network and inference.json (the schema check is in
test_configs.py), large_files.yml in the zoo's format and its download helper.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile

import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out

from scripts.tools.large_files import LARGE_FILES, PLACEHOLDER, download, hashes, read_large_files
from tests.conftest import ROOT, run_bundle

META = ROOT / "configs" / "metadata.json"
INFERENCE = ROOT / "configs" / "inference.json"


def _metadata() -> dict:
    return json.loads(META.read_text())


def test_verify_net_in_out_command_passes():
    proc = run_bundle(
        "verify_net_in_out", "network_def", "--meta_file", str(META), "--config_file", str(INFERENCE),
        "--bundle_root", str(ROOT), "--device", "cpu",
    )  # fmt: skip
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


def test_verify_net_in_out_rejects_a_wrong_class_count():
    """The check has teeth: metadata that promises another number of classes than the network gives fails."""
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(
            net_id="network_def", meta_file=str(META), config_file=str(INFERENCE), device="cpu",
            bundle_root=str(ROOT), **{"_meta_#network_data_format#outputs#pred#num_channels": 3},
        )  # fmt: skip


def test_metadata_is_complete():
    meta = _metadata()
    for key in ("schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "required_packages_version", "name", "task", "description", "authors", "copyright", "data_source",
                "data_type", "image_classes", "label_classes", "pred_classes", "eval_metrics", "intended_use",
                "references", "network_data_format"):  # fmt: skip
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    # a display name, as the zoo's bundles have; MONAI Label types a bundle as a classifier from the word in its name
    assert meta["name"] == "CAL 3D classification" and "classification" in meta["name"].lower()
    assert any("Counterfactual Attention Learning" in r for r in meta["references"])
    assert any("MONAI" in r for r in meta["references"]) and any("16x16 Words" in r for r in meta["references"])
    for tensor in ("inputs", "outputs"):
        for spec in meta["network_data_format"][tensor].values():
            for key in ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "channel_def"):
                assert key in spec, (tensor, key)


def test_metadata_matches_inference_config():
    """Switching inference.json to another model is a change of values; the metadata must change with it."""
    meta, parser = _metadata(), ConfigParser()
    parser.read_config(str(INFERENCE))
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == parser["in_channels"]
    assert image["spatial_shape"] == parser["spatial_size"]
    for section in ("outputs", "post_processed_outputs"):
        pred = meta["network_data_format"][section]["pred"]
        assert pred["num_channels"] == parser["num_classes"]
        assert [pred["channel_def"][str(i)] for i in range(parser["num_classes"])] == parser["class_names"]
    assert meta["network_data_format"]["post_processed_outputs"]["pred"]["value_range"] == [0, 1]


def test_network_output_is_a_class_vector():
    """The metadata's output (no spatial axes, num_classes channels, float32) is what the eval network returns."""
    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser["bundle_root"] = str(ROOT)
    net = parser.get_parsed_content("network_def").eval()
    pred = _metadata()["network_data_format"]["outputs"]["pred"]
    with torch.no_grad():
        out = net(torch.rand(2, parser["in_channels"], *parser["spatial_size"]))
    assert out.shape == (2, pred["num_channels"], *pred["spatial_shape"])
    assert str(out.dtype) == f"torch.{pred['dtype']}"


def test_large_files_follow_the_model_zoo_format():
    entries = read_large_files(ROOT)
    assert {e["path"] for e in entries} == {"models/model.pt"}
    for entry in entries:
        assert entry["url"].startswith("https://") and entry["url"].endswith("/" + entry["path"].split("/")[-1])
        assert entry["hash_type"] == "md5"
    # the model zoo's CI reads the file with MONAI's ConfigParser, as here
    parser = ConfigParser()
    parser.read_config(str(ROOT / LARGE_FILES))
    assert len(parser["large_files"]) == len(entries)


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_large_files_are_ignored_by_git_or_tracked_with_their_hash():
    """A listed file is either kept out of git, or (the small released model.pt) tracked as the listed version."""
    for entry in read_large_files(ROOT):
        git = {"cwd": ROOT, "capture_output": True, "timeout": 60}
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", entry["path"]], **git)
        if tracked.returncode == 0:
            blob = subprocess.run(["git", "show", f"HEAD:{entry['path']}"], **git).stdout
            assert hashlib.md5(blob).hexdigest() == entry["hash_val"], f"{entry['path']} in git is not the listed one"
        else:
            proc = subprocess.run(["git", "check-ignore", "-q", entry["path"]], **git)
            assert proc.returncode == 0, f"{entry['path']} is neither tracked nor in .gitignore"


def _bundle_with_release(tmp_path, payload: bytes, hash_val: str) -> tuple:
    release = tmp_path / "release"
    release.mkdir()
    (release / "model.pt").write_bytes(payload)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / LARGE_FILES).write_text(
        "# comment kept\nlarge_files:\n"
        f'  - path: "models/model.pt"\n    url: "{(release / "model.pt").as_uri()}"\n'
        f'    hash_val: "{hash_val}"\n    hash_type: "md5"\n'
    )
    return bundle, release


def test_download_places_the_file_and_checks_its_hash(tmp_path):
    payload = b"weights" * 1000
    bundle, _ = _bundle_with_release(tmp_path, payload, hashlib.md5(payload).hexdigest())
    assert download(bundle) == [str(bundle / "models" / "model.pt")]
    assert (bundle / "models" / "model.pt").read_bytes() == payload


def test_download_refuses_a_wrong_hash(tmp_path):
    bundle, _ = _bundle_with_release(tmp_path, b"weights", "0" * 32)
    with pytest.raises(Exception, match="md5 hash check of downloaded file failed"):
        download(bundle)
    assert not (bundle / "models" / "model.pt").exists()


def test_download_of_an_unreleased_file_says_what_to_do(tmp_path):
    (tmp_path / LARGE_FILES).write_text((ROOT / LARGE_FILES).read_text())
    assert PLACEHOLDER in (tmp_path / LARGE_FILES).read_text()
    with pytest.raises(ValueError, match="not released yet.*run training"):
        download(tmp_path)


def test_hashes_are_written_into_large_files(tmp_path):
    payload = b"trained weights"
    bundle, _ = _bundle_with_release(tmp_path, payload, "")
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(payload)
    assert hashes(bundle) == {"models/model.pt": hashlib.md5(payload).hexdigest()}
    hashes(bundle, write=True)
    text = (bundle / LARGE_FILES).read_text()
    assert text.startswith("# comment kept\n") and f'hash_val: "{hashlib.md5(payload).hexdigest()}"' in text
    assert read_large_files(bundle)[0]["hash_val"] == hashlib.md5(payload).hexdigest()


def _pip_dry_run(python_version: str, requirements: list[str]) -> subprocess.CompletedProcess:
    """``pip install --dry-run`` of ``requirements`` as binary wheels for another Python (no install, no deps)."""
    with tempfile.TemporaryDirectory() as target:  # pip before 24 takes --python-version only with --target
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed",
               "--only-binary=:all:", "--python-version", python_version, "--target", target, *requirements]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("python_version", ["3.10", "3.11"])
def test_metadata_pins_install_on_python_310_and_311(python_version):
    """The model zoo's premerge job installs the metadata's ``==`` pins on Python 3.10: each must have a wheel for
    3.10 and for 3.11 (a resolver dry run against the package registry)."""
    meta = json.loads(META.read_text())
    pins = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    pins.update(meta.get("required_packages_version", {}))
    pins.update(meta.get("optional_packages_version", {}))
    if _pip_dry_run(python_version, ["pip"]).returncode != 0:
        pytest.skip("the package registry cannot be reached (pip's dry run of pip failed)")
    proc = _pip_dry_run(python_version, [f"{name}=={version}" for name, version in pins.items()])
    assert proc.returncode == 0, proc.stderr[-3000:]
