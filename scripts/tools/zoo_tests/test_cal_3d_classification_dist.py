# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Multi-process unit tests of the cal_3d_classification bundle for the MONAI model zoo (ci/unit_tests/), run from
the zoo's root: configs/multi_gpu_train.json, then configs/multi_gpu_evaluate.json, under ``torchrun`` with two
processes (one per GPU with 2 or more GPUs, otherwise two CPU processes with the gloo backend).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

BUNDLE_ROOT = "models/cal_3d_classification"
SPLITS = {"training": 8, "validation": 5, "test": 5}  # odd: uneven shards over 2 processes
OVERRIDE = {
    "bundle_root": BUNDLE_ROOT,
    "epochs": 1,
    "batch_size": 2,
    "num_workers": 0,
    "dataset_cache": "none",
    "log_interval": 1,
    "dist_timeout": 300,
}


def write_dataset(root, size=28, seed=0):
    """A decathlon-style datalist with random 28^3 volumes, both classes in every split."""
    rng = np.random.default_rng(seed)
    datalist = {"labels": {"0": "normal", "1": "hyperplasia"}}
    os.makedirs(os.path.join(root, "images"))
    for split, count in SPLITS.items():
        items = []
        for i in range(count):
            name = f"images/{split}_{i}.nii.gz"
            volume = (rng.random((size, size, size)) > 0.5).astype(np.float32)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), os.path.join(root, name))
            items.append({"image": name, "label": i % 2})
        datalist[split] = items
    with open(os.path.join(root, "datalist.json"), "w") as f:
        json.dump(datalist, f, indent=2)


def config_path(name):
    return os.path.join(BUNDLE_ROOT, "configs", name)


def export_overrided_config(config_file, override_dict, output_path):
    parser = ConfigParser()
    parser.read_config(config_file)
    parser.update(pairs=override_dict)
    ConfigParser.export_config_file(parser.config, output_path, indent=4)


def run_mgpu(config_file, override_dict, output_path):
    """Export the overridden config, then run it with ``torchrun`` on 2 processes (or one per GPU)."""
    export_overrided_config(config_file, override_dict, output_path)
    env = os.environ.copy()
    env["PYTHONPATH"] = BUNDLE_ROOT  # the bundle's scripts package
    n_gpu = torch.cuda.device_count()
    if n_gpu < 2:
        env["CUDA_VISIBLE_DEVICES"] = ""  # one GPU cannot host two ranks: CPU processes, gloo backend
    nproc = max(n_gpu, 2)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc_per_node={nproc}",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        output_path,
        "--meta_file",
        config_path("metadata.json"),
        "--logging_file",
        config_path("logging.conf"),
    ]
    subprocess.check_call(cmd, env=env, timeout=1200)


class TestCal3dClassificationMGPU(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.dataset_dir = os.path.join(self.tmp, "data")
        write_dataset(self.dataset_dir)
        self.override = dict(
            OVERRIDE,
            dataset_dir=self.dataset_dir,
            ckpt_dir=os.path.join(self.tmp, "models"),
            output_dir=os.path.join(self.tmp, "eval"),
        )

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_train_eval_mgpu_config(self):
        run_mgpu(
            [config_path("train.json"), config_path("multi_gpu_train.json")],
            self.override,
            os.path.join(self.tmp, "train_override.json"),
        )
        self.assertEqual(sorted(os.listdir(os.path.join(self.tmp, "models"))), ["checkpoint.pt", "model.pt"])

        run_mgpu(
            [config_path("train.json"), config_path("evaluate.json"), config_path("multi_gpu_evaluate.json")],
            self.override,
            os.path.join(self.tmp, "evaluate_override.json"),
        )
        with open(os.path.join(self.tmp, "eval", "metrics.json")) as f:
            metrics = json.load(f)
        self.assertEqual(metrics["num_cases"], SPLITS["test"])  # gathered from both processes


if __name__ == "__main__":
    unittest.main()
