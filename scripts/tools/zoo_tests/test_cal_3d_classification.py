# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Unit tests of the cal_3d_classification bundle for the MONAI model zoo (ci/unit_tests/), run from the zoo's root:
train, evaluate and infer on a tiny random data set through ``monai.bundle.ConfigWorkflow``.
"""

import json
import os
import shutil
import sys
import tempfile
import unittest

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

BUNDLE_ROOT = "models/cal_3d_classification"
SPLITS = {"training": 8, "validation": 4, "test": 4}
OVERRIDE = {
    "bundle_root": BUNDLE_ROOT,
    "epochs": 1,
    "batch_size": 2,
    "num_workers": 0,
    "dataset_cache": "none",
    "log_interval": 1,
}


def order_tests(test_name1, test_name2):
    def get_order(name):
        for i, word in enumerate(("train", "eval", "infer")):
            if word in name:
                return i
        return 3

    return get_order(test_name1) - get_order(test_name2)


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


def check_workflow(workflow, check_properties=True):
    workflow.initialize()
    if check_properties:
        result = workflow.check_properties()
        if result:
            raise ValueError(f"check properties for workflow failed: {result}")
    workflow.run()
    workflow.finalize()


class TestCal3dClassification(unittest.TestCase):
    def setUp(self):
        if BUNDLE_ROOT not in sys.path:  # the bundle's scripts package, for configs parsed before "initialize"
            sys.path.insert(1, BUNDLE_ROOT)
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

    def test_train_eval_config(self):
        trainer = ConfigWorkflow(
            workflow_type="train",
            config_file=config_path("train.json"),
            logging_file=config_path("logging.conf"),
            meta_file=config_path("metadata.json"),
            **self.override,
        )
        check_workflow(trainer)
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, "models", "model.pt")))

        evaluator = ConfigWorkflow(
            workflow_type="eval",
            config_file=[config_path("train.json"), config_path("evaluate.json")],
            logging_file=config_path("logging.conf"),
            meta_file=config_path("metadata.json"),
            **self.override,
        )
        check_workflow(evaluator)
        with open(os.path.join(self.tmp, "eval", "metrics.json")) as f:
            metrics = json.load(f)
        self.assertEqual(metrics["num_cases"], SPLITS["test"])
        for key in ("accuracy", "auc_macro"):
            self.assertTrue(0.0 <= metrics[key] <= 1.0, key)

    def test_infer_config(self):
        # weights of the configured network (the released ones are checked by the zoo's verify_bundle.py)
        parser = ConfigParser()
        parser.read_config(config_path("inference.json"))
        parser["bundle_root"] = BUNDLE_ROOT
        ckpt = os.path.join(self.tmp, "model.pt")
        torch.save(parser.get_parsed_content("network_def").state_dict(), ckpt)
        output_dir = os.path.join(self.tmp, "inference")

        inferrer = ConfigWorkflow(
            workflow_type="infer",
            config_file=config_path("inference.json"),
            logging_file=config_path("logging.conf"),
            meta_file=config_path("metadata.json"),
            bundle_root=BUNDLE_ROOT,
            dataset_dir=self.dataset_dir,
            ckpt_path=ckpt,
            output_dir=output_dir,
        )
        check_workflow(inferrer)
        with open(os.path.join(output_dir, "predictions.csv")) as f:
            rows = f.read().strip().splitlines()
        self.assertEqual(len(rows), 1 + SPLITS["test"])
        attention = nib.load(os.path.join(output_dir, "test_0_attention.nii.gz"))
        self.assertEqual(attention.shape, (28, 28, 28))


if __name__ == "__main__":
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = order_tests
    unittest.main(testLoader=loader)
