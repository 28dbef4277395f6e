# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
On/off settings: plain JSON booleans in the configs, read directly by the items that use them (``@cal``), and
optional blocks switched with MONAI's ``_disabled_``. On the command line only ``True``/``False`` become bools
(``python -m monai.bundle run ... --cal false`` would hand the configs the text ``"false"``, which Python reads as
true), so the configuration check stops such a value where it enters, naming the fix.
"""

from __future__ import annotations

import json

import pytest
from monai.bundle import ConfigParser
from monai.data import DataLoader, ThreadDataLoader

from scripts.run.config_check import override_problems
from tests.conftest import ROOT, TINY_OVERRIDES, TRAIN, run_bundle

CONFIGS = ROOT / "configs"
SWITCHES = ("cal", "balanced_sampling", "spatial_augmentation", "attention_augment", "tta", "tta_flip", "resume",
            "thread_loader", "compile", "validate_data", "amp", "channels_last", "deterministic")  # fmt: skip


def parsed(tiny_dataset, tmp_path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    settings = {"bundle_root": str(ROOT), "dataset_dir": str(tiny_dataset), "ckpt_dir": str(tmp_path / "models"),
                "output_dir": str(tmp_path / "eval"), "num_classes": 4, **overrides}  # fmt: skip
    for key, value in settings.items():
        parser[key] = value
    return parser


def test_switches_are_json_booleans():
    configs = {p.name: json.loads(p.read_text()) for p in CONFIGS.glob("*.json") if p.name != "metadata.json"}
    train = configs["train.json"]
    assert all(isinstance(train[name], bool) for name in SWITCHES)
    assert all("switches" not in config for config in configs.values())
    assert isinstance(configs["evaluate.json"]["plots"], bool)
    assert isinstance(configs["multi_gpu_train.json"]["sync_batchnorm"], bool)


@pytest.mark.parametrize("value", [False, True])
def test_every_switch_reaches_its_item(tiny_dataset, tmp_path, value):
    parser = parsed(tiny_dataset, tmp_path, center_loss_weight=0.0, **dict.fromkeys(SWITCHES, value))
    net = parser.get_parsed_content("network_def")
    assert net.cal is value and net.return_features is value  # return_features follows attention_augment
    assert parser.get_parsed_content("train#inferer").enabled is value
    tta = parser.get_parsed_content("validate#inferer")
    assert tta.enabled is value and tta.flip is value
    assert len(parser.get_parsed_content("spatial_augmentation_transforms")) == int(value)  # _disabled_
    assert (parser.get_parsed_content("train#sampler") is not None) is value
    loader = parser.get_parsed_content("train#dataloader")
    assert isinstance(loader, ThreadDataLoader) is value and isinstance(loader, DataLoader)
    assert parser.get_parsed_content("train#trainer#compile") is value
    checkpoint = parser.get_parsed_content("train#handlers")[-1]
    assert checkpoint.resume is value
    report = parser.get_parsed_content("data_check")
    assert (report is not None) is value  # off: the check is skipped


@pytest.mark.parametrize("text", ["false", "true", "no", "0"])
def test_switch_typed_as_text_is_named_with_its_fix(text):
    config = ConfigParser.load_config_files([str(CONFIGS / "train.json")])
    problems = override_problems(config, {"cal": text, "epochs": 2, "tta": False})
    assert [key for key, _, _ in problems] == ["cal"]
    _, problem, instead = problems[0]
    expected = "False" if text in ("false", "no", "0") else "True"
    assert f"'{text}'" in problem and instead == f"cal {expected}"


@pytest.mark.slow
def test_switch_typed_as_text_stops_the_command_line(tiny_dataset, tmp_path):
    proc = run_bundle(
        "run", "training", "--config_file", TRAIN, "--dataset_dir", str(tiny_dataset), "--ckpt_dir",
        str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"), "--cal", "false", *TINY_OVERRIDES,
        check=False, timeout=180,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in log, log[-3000:]
    assert "--cal" in log and "write --cal False instead of --cal" in log, log[-3000:]
    assert not (tmp_path / "models").exists()
