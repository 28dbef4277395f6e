# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
On/off settings typed on the command line: ``python -m monai.bundle run ... --cal false`` hands the configs the
string ``"false"`` (only ``False`` becomes a bool), which Python would read as true. The configs convert every
switch once, in their ``switches`` item (:func:`scripts.run.engine.read_switches`), and the code gets plain bools.
"""

from __future__ import annotations

import json
import re

import pytest
from monai.bundle import ConfigParser
from monai.data import DataLoader, ThreadDataLoader

from scripts.run.engine import read_switches
from tests.conftest import ROOT

CONFIGS = ROOT / "configs"


def parsed(tiny_dataset, tmp_path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    settings = {"bundle_root": str(ROOT), "dataset_dir": str(tiny_dataset), "ckpt_dir": str(tmp_path / "models"),
                "output_dir": str(tmp_path / "eval"), "num_classes": 4, **overrides}  # fmt: skip
    for key, value in settings.items():
        parser[key] = value
    return parser


@pytest.mark.parametrize(
    "value, expected",
    [("false", False), ("False", False), ("true", True), ("TRUE", True), ("0", False), ("yes", True),
     (False, False), (True, True), (0, False), (1, True), (None, False)],
)  # fmt: skip
def test_read_switches_converts_command_line_values(value, expected):
    assert read_switches(cal=value) == {"cal": expected}
    with pytest.raises(SystemExit, match=r"--cal 'sometimes': not a true/false switch value. Fix: use --cal true"):
        read_switches(tta=value, cal="sometimes")


@pytest.mark.parametrize("text, expected", [("false", False), ("true", True)])
def test_switches_typed_as_text(tiny_dataset, tmp_path, text, expected):
    names = ("cal", "balanced_sampling", "spatial_augmentation", "attention_augment", "tta", "tta_flip", "resume",
             "thread_loader", "compile", "validate_data", "amp", "channels_last", "deterministic")  # fmt: skip
    parser = parsed(tiny_dataset, tmp_path, center_loss_weight=0.0, **dict.fromkeys(names, text))
    switches = parser.get_parsed_content("switches")
    assert all(switches[name] is expected for name in names)
    net = parser.get_parsed_content("network_def")
    assert net.cal is expected and net.return_features is expected  # return_features follows attention_augment
    assert parser.get_parsed_content("train#inferer").enabled is expected
    tta = parser.get_parsed_content("validate#inferer")
    assert tta.enabled is expected and tta.flip is expected
    assert len(parser.get_parsed_content("train#spatial_augmentation")) == int(expected)
    assert (parser.get_parsed_content("train#sampler") is not None) is expected
    loader = parser.get_parsed_content("train#dataloader")
    assert isinstance(loader, ThreadDataLoader) is expected and isinstance(loader, DataLoader)
    assert parser.get_parsed_content("train#trainer#compile") is expected
    checkpoint = parser.get_parsed_content("train#handlers")[-1]
    assert checkpoint.resume is expected
    report = parser.get_parsed_content("data_check")
    assert (report is not None) is expected  # off: the check is skipped


def test_unclear_switch_names_the_setting(tiny_dataset, tmp_path):
    """The error passes through MONAI's instantiation as one message (SystemExit), not a wrapped traceback."""
    parser = parsed(tiny_dataset, tmp_path, cal="sometimes")
    with pytest.raises(SystemExit) as error:
        parser.get_parsed_content("network_def")
    assert str(error.value) == "--cal 'sometimes': not a true/false switch value. Fix: use --cal true or --cal false"


def _strings(node, key=""):
    """(id, text) of every string in a config, ids joined with '#'."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{key}#{k}" if key else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{key}#{i}")
    elif isinstance(node, str):
        yield key, node


def test_switch_values_are_read_only_through_switches():
    """A config item that refers to a switch value directly (``@cal``) would hand the code unconverted text."""
    configs = {path.name: json.loads(path.read_text()) for path in sorted(CONFIGS.glob("*.json"))}
    configs.pop("metadata.json")
    names = set()
    for config in configs.values():
        names |= {k for k in config.get("switches", {}) if not k.startswith("_")}
        names |= {k.split("#", 1)[1] for k in config if k.startswith("switches#")}
    assert {"cal", "tta", "use_tabular", "sync_batchnorm", "plots"} <= names
    pattern = re.compile(r"@(%s)\b(?!#)" % "|".join(sorted(names)))
    direct = [
        (name, key, text)
        for name, config in configs.items()
        for key, text in _strings(config)
        if pattern.search(text) and not key.startswith("switches")
    ]
    assert direct == []
