# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Training writes the same weights whatever thread count the machine offers: ``num_threads`` (train.json) pins
PyTorch's intra-op threads, so ``OMP_NUM_THREADS=1`` (a one-CPU container, a cluster job) and 3 threads train the
same bytes. The full reproduction of the released weights runs outside pytest: ``python -m
scripts.tools.large_files check_training`` (README, Reproducibility; a step of ``.ci/run``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scripts.run.engine import set_num_threads
from scripts.run.errors import BundleInputError
from scripts.tools.large_files import file_hash
from tests.conftest import run_bundle


def _train(data: Path, out: Path, threads: str, *extra: str) -> str:
    """Train train.json's default network for one epoch on the tiny data set with ``OMP_NUM_THREADS=threads``."""
    run_bundle(
        "run", "training", "--config_file", "configs/train.json", "--dataset_dir", str(data),
        "--ckpt_dir", str(out / "models"), "--output_dir", str(out / "eval"),
        "--num_classes", "4", "--spatial_size", "[16,16,16]", "--batch_size", "4", "--epochs", "1", *extra,
        env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": ""}, timeout=120,
    )  # fmt: skip
    return file_hash(out / "models" / "model.pt")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_training_writes_the_same_weights_with_one_or_three_threads(tiny_dataset, tmp_path):
    """A one-epoch training under OMP_NUM_THREADS=1 and 3 writes the same bytes (unpinned, ``--num_threads 0``,
    these two runs write different weights on an x86 CPU)."""
    one, three = (_train(tiny_dataset, tmp_path / f"threads_{n}", n) for n in ("1", "3"))
    assert one == three, "num_threads no longer pins the CPU thread count: weights depend on OMP_NUM_THREADS"


@pytest.mark.parametrize("value", [0, "0", None, "null"])
def test_zero_or_null_leaves_pytorchs_thread_count(value):
    assert set_num_threads(value) == torch.get_num_threads()


def test_a_count_pins_the_threads():
    before = torch.get_num_threads()
    try:
        assert set_num_threads("3") == 3 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", [-1, "two", 1.5, True])
def test_a_bad_count_is_refused_naming_the_setting(value):
    before = torch.get_num_threads()
    with pytest.raises(BundleInputError, match="--num_threads"):
        set_num_threads(value)
    assert torch.get_num_threads() == before
