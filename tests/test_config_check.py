# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Configuration errors stop the run with one message naming the key, the value and the fix (scripts/run/config_check.py):
a misspelled override key, bad values, unwritable folders, a batch of one for BatchNorm; and the validation AUC is
taken over the classes present.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.metrics import ROCAUCMetric, compute_roc_auc

from scripts.data.checks import validate_datalist
from scripts.reports.metrics import PresentClassesROCAUC, PresentClassesROCAUCMetric
from scripts.run.config_check import check_input_size, command_line_overrides, override_problems
from tests.conftest import ROOT, TINY_OVERRIDES, TRAIN, run_bundle

CONFIGS = [str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / "synthetic_attention.json")]


def _parser(tmp_path, dataset=None, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(CONFIGS)
    tiny = dict(zip(TINY_OVERRIDES[::2], TINY_OVERRIDES[1::2]))
    values = {key[2:]: json.loads(value) for key, value in tiny.items()}
    values.update(ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"), dataset_cache="none")
    if dataset is not None:
        values["dataset_dir"] = str(dataset)
    parser.update({**values, **overrides})
    return parser


def _stops(parser: ConfigParser, item: str, *expected: str) -> str:
    with pytest.raises(SystemExit) as info:
        parser.get_parsed_content(item)
    message = str(info.value)
    assert "Fix:" in message, message
    for text in expected:
        assert text in message, message
    return message


def test_override_parsing_and_matching():
    args = command_line_overrides(
        ["run", "training", "--config_file", "['a.json','b.json']", "--epoch", "3", "--amp=true", "--compile"]
    )
    assert args == {"run_id": "training", "config_file": ["a.json", "b.json"], "epoch": 3, "amp": "true",
                    "compile": True}  # fmt: skip
    assert command_line_overrides(["ckpt_export", "--net_id", "network_def"]) is None
    config = ConfigParser.load_config_files(CONFIGS)
    keys = {
        "epochs": 1, "config_file": "x", "backbone_args#vit#patch_size": 4, "train#handlers#0#print_lr": 1,
        "backbone_args#resnet#num_stages": 3, "image_network_def#scale": 50,  # new arguments of existing components
        "epoch": 3, "backbone_args#vit#patch_szie": 4, "train#handlers#99": 1, "epochs#x": 1,
    }  # fmt: skip
    problems = {key: near for key, _, near in override_problems(config, keys)}
    assert problems == {
        "epoch": "epochs", "backbone_args#vit#patch_szie": "backbone_args#vit#patch_size", "train#handlers#99": None,
        "epochs#x": None,
    }  # fmt: skip


def test_misspelled_override_key_stops_before_any_work(tmp_path):
    proc = run_bundle(
        "run", "training", "--config_file", TRAIN, "--ckpt_dir", str(tmp_path / "models"), "--epoch", "3",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "--epoch" in proc.stderr and "write --epochs instead of --epoch" in proc.stderr and "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "models").exists()


def test_unwritable_output_dir_stops_and_valid_nested_overrides_pass(tiny_dataset, tmp_path):
    existing_file = tmp_path / "results.txt"
    existing_file.write_text("not a folder")
    proc = run_bundle(
        "run", "training", "--config_file", TRAIN, "--dataset_dir", str(tiny_dataset),
        "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(existing_file), *TINY_OVERRIDES, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"output_dir '{existing_file}': is an existing file, not a folder. Fix:" in proc.stderr
    assert "command-line override" not in proc.stderr  # --backbone_args#vit#patch_size etc. are keys
    assert "Traceback" not in proc.stderr + proc.stdout and "Epoch[" not in proc.stdout


def test_unwritable_folders_at_config_level(tmp_path):
    (tmp_path / "file").write_text("")
    _stops(_parser(tmp_path, ckpt_dir=str(tmp_path / "file" / "models")), "config_check", "ckpt_dir '", "a file")


def test_unknown_backbone(tmp_path):
    _stops(_parser(tmp_path, backbone="resnett"), "config_check", "backbone 'resnett'", "nearest: 'resnet'")


def test_vit_patch_that_does_not_divide_the_spatial_size(tmp_path):
    _stops(
        _parser(tmp_path, spatial_size=[19, 19, 19]),
        "config_check",
        "spatial_size [19, 19, 19] with backbone 'vit'",
        "must be divisible by patch_size (4, 4, 4)",
        '--spatial_size "[20, 20, 20]"',
    )


@pytest.mark.parametrize(
    "backbone, args, size, needed",
    [("densenet", {"depth": 121}, [16, 16, 16], 29), ("densenet", {"depth": 121}, [64, 16, 64], 29)],
)
def test_input_smaller_than_the_network_takes(backbone, args, size, needed):
    """Found by building the network and running it once on zeros (meta device): the smallest size is named."""
    with pytest.raises(SystemExit) as info:
        check_input_size(backbone, args, size)
    assert f"{backbone} needs at least {needed}^3 input; got {size}" in str(info.value) and "Fix:" in str(info.value)
    check_input_size(backbone, args, [max(s, needed) for s in size])  # the size it suggests is taken


def test_the_size_check_leaves_the_random_stream_alone():
    """The check runs before set_determinism, but the released weights must not depend on it."""
    state = torch.random.get_rng_state()
    check_input_size("resnet", {"depth": 10, "num_stages": 2}, [28, 28, 28])
    with pytest.raises(SystemExit):
        check_input_size("densenet", {"depth": 121}, [8, 8, 8])
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("value", [0, -2])
def test_no_attention_maps(tmp_path, value):
    _stops(_parser(tmp_path, num_attentions=value), "config_check", f"num_attentions {value}")


def test_tabular_branch_without_its_length(tmp_path):
    _stops(_parser(tmp_path, use_tabular=True), "config_check", "use_tabular true with tabular_length 0")


def test_batch_of_one_with_batchnorm(tiny_dataset, tmp_path):
    # the default ResNet (stride 4 after two stages) on 4^3 ends on a 1x1x1 grid: one value per channel for one case
    resnet = {"backbone": "resnet", "spatial_size": [4, 4, 4], "dataset_dir": str(tiny_dataset)}
    _stops(_parser(tmp_path, **resnet, batch_size=1), "train#drop_last", "batch_size 1", "BatchNorm layer")
    # 16 training cases in batches of 3: the last batch of one is dropped with BatchNorm, kept without it
    assert _parser(tmp_path, **resnet, batch_size=3).get_parsed_content("train#dataloader").drop_last is True
    no_norm = _parser(tmp_path, dataset=tiny_dataset, batch_size=3, attention_block="conv")
    assert no_norm.get_parsed_content("train#dataloader").drop_last is False


def test_num_classes_above_the_labels_present_is_named(tiny_dataset):
    report = validate_datalist(tiny_dataset / "datalist.json", num_classes=6)
    assert report.ok
    assert any("class(es) [4, 5] of num_classes=6 have no case in 'training'" in w for w in report.warnings)


def test_validation_auc_over_the_classes_present(caplog):
    rng = np.random.default_rng(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])  # class 3 of 4 absent
    probs = torch.softmax(torch.as_tensor(rng.normal(size=(8, 4)), dtype=torch.float), dim=1)
    y = torch.nn.functional.one_hot(labels, 4)
    monai_metric, metric = ROCAUCMetric(), PresentClassesROCAUCMetric()
    for m in (monai_metric, metric):
        m(probs, y)
    assert np.isnan(monai_metric.aggregate())  # MONAI's macro AUC: NaN, which freezes the model selection
    with caplog.at_level(logging.WARNING):
        value = metric.aggregate()
    expected = np.mean([compute_roc_auc(probs[:, c], y[:, c]) for c in range(3)])
    assert value == pytest.approx(expected)
    assert "class(es) [3] have no case" in caplog.text


def test_validation_keeps_selecting_without_a_class(tmp_path):
    parser = _parser(tmp_path)
    assert isinstance(parser.get_parsed_content("validate#metrics#val_auc"), PresentClassesROCAUC)
