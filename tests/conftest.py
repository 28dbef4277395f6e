# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Shared fixtures: a tiny synthetic data set, tiny network overrides and a runner of ``python -m monai.bundle``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# The tests train, evaluate and infer on the synthetic fixture: configs/synthetic_attention.json on top of each
# workflow's config (command-line lists of config files, relative to ROOT).
TRAIN = "['configs/train.json','configs/synthetic_attention.json']"
EVALUATE = "['configs/train.json','configs/synthetic_attention.json','configs/evaluate.json']"
SYNTHETIC_INFERENCE = "['configs/inference.json','configs/synthetic_attention.json']"

# A 16^3 data set and a one-block ViT: a whole bundle run takes seconds on a CPU.
TINY_OVERRIDES = [
    "--spatial_size", "[16,16,16]",
    "--backbone_args#vit#patch_size", "4",
    "--backbone_args#vit#hidden_size", "16",
    "--backbone_args#vit#mlp_dim", "32",
    "--backbone_args#vit#num_layers", "1",
    "--backbone_args#vit#num_heads", "2",
    "--num_attentions", "4",
    "--batch_size", "4",
]  # fmt: skip


def run_bundle(*args: str, cwd: Path = ROOT, check: bool = True, env: dict | None = None):
    """Run ``python -m monai.bundle <args>`` in a subprocess; fail the test with its output when it fails."""
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=full_env)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed with {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 16^3 synthetic data set (16 training, 8 validation, 8 test cases) with its datalist."""
    from scripts.tools.synthetic_data import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_synthetic_dataset(root, size=16, num_cases=(16, 8, 8), seed=0)
    return root
