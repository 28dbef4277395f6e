# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The model-zoo pull request (``python -m scripts.tools.zoo_pr``): its layout, large_files.yml, the 1 MB rule, and
what the zoo's CI runs offline on it: ``verify_metadata`` (local schema copy), ``verify_net_in_out``, the
TorchScript ``ckpt_export`` of the released weights, and the zoo-format unit tests in ``ci/unit_tests``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.tools import zoo_pr
from scripts.tools.large_files import PLACEHOLDER, download, file_hash, read_large_files
from tests.conftest import ROOT, SHARED, run_bundle

NAME = "cal_3d_classification"
WEIGHTS_URL = (ROOT / "models" / "model.pt").as_uri()  # a file:// address: the download check runs offline


@pytest.fixture(scope="module")
def pr(tmp_path_factory) -> Path:
    """The pull-request folder, built once for the module."""
    out = tmp_path_factory.mktemp("zoo_pr")
    zoo_pr.build(out, WEIGHTS_URL)
    return out


def _bundle(pr: Path) -> Path:
    return pr / "models" / NAME


def _meta(pr: Path) -> str:
    return str(_bundle(pr) / "configs" / "metadata.json")


def _inference(pr: Path) -> str:
    return str(_bundle(pr) / "configs" / "inference.json")


def test_layout_holds_the_bundle_only(pr):
    bundle = _bundle(pr)
    assert sorted(p.name for p in pr.iterdir()) == ["ci", "models"]
    assert sorted(p.name for p in bundle.iterdir()) == ["LICENSE", "configs", "docs", "large_files.yml", "scripts"]
    assert sorted(p.name for p in (pr / "ci" / "unit_tests").iterdir()) == [f"test_{NAME}.py", f"test_{NAME}_dist.py"]
    for path in ("configs/train.json", "configs/evaluate.json", "configs/inference.json", "configs/metadata.json",
                 "configs/multi_gpu_train.json", "configs/multi_gpu_evaluate.json", "configs/logging.conf",
                 "docs/README.md", "docs/data_license.txt", "docs/data/adrenalmnist3d.npz", "scripts/__init__.py",
                 "scripts/cal_net.py"):  # fmt: skip
        assert (bundle / path).is_file(), path
    assert (bundle / "docs" / "images").is_dir()
    assert (bundle / "configs" / "metadata.json").read_bytes() == (ROOT / "configs" / "metadata.json").read_bytes()
    files = [p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()]
    for forbidden in ("models/", "scripts/tools/", "__pycache__", ".pyc", "tests/", ".ci/", "requirements"):
        assert not [f for f in files if forbidden in f], forbidden
    assert "README.md" not in files and "metadata.json" not in files  # the project's README, the top-level copy


def test_configs_reach_no_tool_left_out():
    """The pull request leaves scripts/tools out: nothing the configs run may live there."""
    for config in sorted((ROOT / "configs").glob("*.json")):
        assert "scripts.tools" not in config.read_text(), config.name


def test_large_files_name_the_given_url_and_the_local_md5(pr, tmp_path):
    bundle = _bundle(pr)
    text = (bundle / "large_files.yml").read_text()
    assert PLACEHOLDER not in text
    (entry,) = read_large_files(bundle)
    assert entry == {"path": "models/model.pt", "url": WEIGHTS_URL, "hash_type": "md5",
                     "hash_val": file_hash(ROOT / "models" / "model.pt")}  # fmt: skip
    # the zoo downloads the listed files before verifying: the url and hash check out
    (tmp_path / "large_files.yml").write_text(text)
    download(tmp_path)
    assert (tmp_path / "models" / "model.pt").read_bytes() == (ROOT / "models" / "model.pt").read_bytes()


def test_every_file_is_under_one_megabyte(pr):
    assert [p for p in pr.rglob("*") if p.is_file() and p.stat().st_size > zoo_pr.MAX_BYTES] == []


def test_a_file_over_the_limit_is_refused_and_nothing_written(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo_pr, "MAX_BYTES", 200 * 1024)  # the embedded data set (~270 kB) is then too large
    with pytest.raises(zoo_pr.ZooPRError, match=r"over 1 MB.*docs/data/adrenalmnist3d\.npz"):
        zoo_pr.build(tmp_path, WEIGHTS_URL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["", "models/model.pt", "https://github.com/OWNER/cal_3d_classification/x/model.pt"])
def test_an_unreleased_or_relative_url_is_refused(url, tmp_path):
    with pytest.raises(zoo_pr.ZooPRError, match="weights_url"):
        zoo_pr.build(tmp_path, url)


def test_an_existing_bundle_folder_is_kept_unless_overwrite(pr):
    with pytest.raises(zoo_pr.ZooPRError, match="exists"):
        zoo_pr.build(pr, WEIGHTS_URL)


# the zoo's settings (its setup.cfg, pyproject.toml and runtests.sh --codeformat), given on the command line so that
# this repository's own settings do not apply
ZOO_FLAKE8 = ["--select=B,C,E,F,N,P,T4,W,B9", "--max-line-length=120",
              "--ignore=E203,E501,E741,W503,W504,C408,N812,B023,B905,B028,B907,C419",
              "--per-file-ignores=__init__.py:F401"]  # fmt: skip
ZOO_ISORT = ["--profile=black", "--line-length=120", "--project=models"]
ZOO_BLACK = ["--line-length=120", "--skip-magic-trailing-comma"]


@pytest.mark.parametrize("tool", ["black", "isort", "flake8"])
def test_pr_passes_the_zoo_codeformat(pr, tool):
    """The zoo's code-format job runs over every file of the zoo, this pull request's included."""
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} not installed (requirements-dev.txt)")
    if tool == "flake8" and importlib.util.find_spec("bugbear") is None:
        pytest.skip("flake8-bugbear not installed (requirements-dev.txt): the zoo's B checks would not run")
    args = {"black": [*ZOO_BLACK, "--check"], "isort": [*ZOO_ISORT, "--check-only"], "flake8": ZOO_FLAKE8}[tool]
    isolated = pr.parent / f"{pr.name}_{tool}"  # a copy away from the tmp tree's other files
    shutil.copytree(pr, isolated, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", tool, *args, "models", "ci"], cwd=isolated, capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(not (SHARED / "schemas").is_dir(), reason="../shared/schemas (the offline metadata schema) absent")
def test_verify_metadata(pr):
    schema = str(SHARED / "schemas" / "meta_schema_20240725.json")
    run_bundle("verify_metadata", "--meta_file", _meta(pr), "--filepath", schema, cwd=_bundle(pr))


@pytest.mark.slow
def test_verify_net_in_out(pr):
    proc = run_bundle(
        "verify_net_in_out", "network_def", "--meta_file", _meta(pr), "--config_file", _inference(pr),
        "--bundle_root", str(_bundle(pr)), "--device", "cpu", cwd=_bundle(pr),
    )  # fmt: skip
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_torchscript_export_of_the_released_weights(pr, tmp_path):
    """The zoo's verify_torchscript: ckpt_export of models/model.pt (here the repository's copy) with the PR's
    configs and scripts."""
    ts = tmp_path / "verify_model.ts"
    run_bundle(
        "ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(ROOT / "models" / "model.pt"),
        "--meta_file", _meta(pr), "--config_file", _inference(pr), "--bundle_root", str(_bundle(pr)), cwd=_bundle(pr),
    )  # fmt: skip
    net = torch.jit.load(str(ts), map_location="cpu").eval()
    meta = json.loads(Path(_meta(pr)).read_text())["network_data_format"]
    with torch.no_grad():
        out = net(torch.rand(1, 1, *meta["inputs"]["image"]["spatial_shape"]))
    assert out.shape == (1, meta["outputs"]["pred"]["num_channels"])


def _run_zoo_tests(pr: Path, test_file: str, timeout: int) -> None:
    """pytest on one file of ci/unit_tests from the PR's root (as the zoo runs them from its root)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # the bundle's scripts come from models/cal_3d_classification, not this repository
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"ci/unit_tests/{test_file}"]
    proc = subprocess.run(cmd, cwd=pr, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]


@pytest.mark.slow
def test_zoo_unit_tests_pass(pr):
    _run_zoo_tests(pr, f"test_{NAME}.py", timeout=900)


@pytest.mark.slow
def test_zoo_distributed_unit_tests_pass(pr):
    _run_zoo_tests(pr, f"test_{NAME}_dist.py", timeout=900)
