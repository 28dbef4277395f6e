# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The configs parse, expose the ids MONAI's tools and MONAI Label rely on, and the metadata is valid."""

from __future__ import annotations

import filecmp

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from tests.conftest import ROOT, SHARED, run_bundle

CONFIGS = ROOT / "configs"
TRAIN = str(CONFIGS / "train.json")
EVALUATE = [TRAIN, str(CONFIGS / "evaluate.json")]
INFERENCE = str(CONFIGS / "inference.json")
META = str(CONFIGS / "metadata.json")


def test_layout():
    for path in ("configs/train.json", "configs/evaluate.json", "configs/inference.json", "configs/logging.conf",
                 "configs/metadata.json", "metadata.json", "docs/README.md", "README.md", "LICENSE",
                 "scripts/__init__.py", "scripts/cal_net.py", "models", ".ci/run"):  # fmt: skip
        assert (ROOT / path).exists(), path


def test_top_level_metadata_is_identical():
    assert filecmp.cmp(ROOT / "metadata.json", CONFIGS / "metadata.json", shallow=False)


@pytest.mark.parametrize(
    "files, workflow_type",
    [(TRAIN, "train"), (EVALUATE, "infer"), (INFERENCE, "infer")],
    ids=["train", "eval", "infer"],
)
def test_workflow_properties(files, workflow_type, tiny_dataset):
    workflow = ConfigWorkflow(
        config_file=files,
        meta_file=META,
        workflow_type=workflow_type,
        dataset_dir=str(tiny_dataset),
        num_classes=4,
        class_names=["solid", "hollow", "striped", "checkered"],
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def test_evaluate_and_multi_value_overrides_are_config_values():
    parser = ConfigParser()
    parser.read_config(TRAIN)
    for key in ("backbone", "num_attentions", "num_classes", "cal", "factual_weight", "effect_weight",
                "counterfactual", "epochs", "learning_rate", "batch_size", "spatial_size", "dataset_dir", "seed",
                "val_key_metric"):  # fmt: skip
        assert key in parser, key
    assert parser["train"]["trainer"]["max_epochs"] == "@epochs"


def test_inference_exposes_monai_label_ids():
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    for key in ("network_def", "preprocessing", "postprocessing", "inferer", "dataset_dir", "device", "bundle_root"):
        assert key in parser, key


def test_inference_builds_the_network_training_trains():
    """One model: inference.json's network and class count are train.json's, with no overlay, so the model.pt that
    training writes loads for evaluation and inference."""
    train, infer = ConfigParser(), ConfigParser()
    train.read_config(str(CONFIGS / "train.json"))
    infer.read_config(str(CONFIGS / "inference.json"))
    for p in (train, infer):
        p["bundle_root"] = str(ROOT)
    a, b = train.get_parsed_content("network_def"), infer.get_parsed_content("network_def")
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(a.state_dict()[k].shape == b.state_dict()[k].shape for k in a.state_dict())
    for key in ("num_classes", "in_channels", "spatial_size", "backbone", "num_attentions", "pool", "attention_block",
                "embedded_data", "default_dataset_dir"):  # fmt: skip
        assert train[key] == infer[key], key
    assert train["backbone_args"][train["backbone"]] == infer["backbone_args"][infer["backbone"]]
    assert len(infer["class_names"]) == infer["num_classes"]


@pytest.mark.skipif(not (SHARED / "schemas").is_dir(), reason="../shared/schemas (the offline metadata schema) absent")
def test_verify_metadata_offline():
    run_bundle("verify_metadata", "--meta_file", META, "--filepath", str(SHARED / "schemas/meta_schema_20240725.json"))


def _parsed(files, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(files)
    parser["bundle_root"] = str(ROOT)
    for key, value in overrides.items():
        parser[key] = value
    parser.parse()
    return parser


def test_defaults_are_the_released_recipe(tiny_dataset):
    """train.json's defaults train the released model: the seed's CAL (the counterfactual term on, the original
    recipe's centre loss, attention crop/drop and test-time crops off) with the imbalance options, on a 7x7x7 attention
    grid at 28^3 (the class count is the tiny set's here)."""
    parser = _parsed(TRAIN, dataset_dir=str(tiny_dataset), num_classes=4)
    net = parser.get_parsed_content("network_def")
    assert net.cal is True and net.return_features is False and net.bap.counterfactual == "random"
    with torch.no_grad():
        attentions = net.eval().forward_attention(torch.zeros(1, 1, 28, 28, 28))[1]
    assert attentions.shape == (1, parser["num_attentions"], 7, 7, 7)
    assert parser.get_parsed_content("train#inferer").enabled is False
    assert parser.get_parsed_content("validate#inferer").enabled is False
    loss = parser.get_parsed_content("loss")
    assert loss.center_loss is None and loss.class_weights is not None
    assert (loss.factual_weight, loss.effect_weight) == (pytest.approx(1 / 3), 1.0)
    assert len(parser.get_parsed_content("spatial_augmentation_transforms")) == 1
    assert parser["backbone"] == "resnet" and parser["spatial_size"] == [28, 28, 28]


def test_synthetic_overlay_turns_the_recipe_off(tiny_dataset):
    parser = _parsed([TRAIN, str(CONFIGS / "synthetic_attention.json")], dataset_dir=str(tiny_dataset))
    net = parser.get_parsed_content("network_def")
    assert net.cal is True and net.return_features is False
    assert parser.get_parsed_content("train#inferer").enabled is False
    assert parser.get_parsed_content("validate#inferer").enabled is False
    loss = parser.get_parsed_content("loss")
    assert loss.center_loss is None and loss.class_weights is None
    assert parser.get_parsed_content("train#sampler") is None
    assert parser.get_parsed_content("train#dataloader#shuffle") is True
    assert parser.get_parsed_content("spatial_augmentation_transforms") == []


def test_options_switch_on(tiny_dataset):
    switches = {"balanced_sampling": True, "spatial_augmentation": True, "attention_augment": True,
                "tta": True, "center_loss_weight": 1.0, "class_weights": "auto", "cal": False}  # fmt: skip
    parser = _parsed([TRAIN, str(CONFIGS / "synthetic_attention.json")], dataset_dir=str(tiny_dataset), **switches)
    net = parser.get_parsed_content("network_def")
    assert net.cal is False and net.return_features is True
    assert parser.get_parsed_content("train#inferer").enabled is True
    assert parser.get_parsed_content("validate#inferer").enabled is True
    loss = parser.get_parsed_content("loss")
    assert loss.center_loss is not None and loss.class_weights.tolist() == [1.0, 1.0, 1.0, 1.0]  # balanced data
    assert parser.get_parsed_content("train#sampler") is not None
    assert parser.get_parsed_content("train#dataloader#shuffle") is False
    assert [type(t).__name__ for t in parser.get_parsed_content("spatial_augmentation_transforms")] == ["RandAffined"]
