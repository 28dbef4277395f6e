# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
On/off settings typed on the command line: ``python -m monai.bundle run ... --cal false`` hands the configs the
string ``"false"`` (only ``False`` becomes a bool), which Python would read as true. Each switch must read it as off.
"""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser
from monai.data import DataLoader, ThreadDataLoader

from scripts.engine import as_bool
from tests.conftest import ROOT


def parsed(tiny_dataset, tmp_path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    settings = {"bundle_root": str(ROOT), "dataset_dir": str(tiny_dataset), "ckpt_dir": str(tmp_path / "models"),
                "output_dir": str(tmp_path / "eval"), "num_classes": 4, **overrides}  # fmt: skip
    for key, value in settings.items():
        parser[key] = value
    return parser


@pytest.mark.parametrize("text, value", [("false", False), ("False", False), ("true", True), ("TRUE", True)])
def test_as_bool_reads_command_line_text(text, value):
    assert as_bool(text) is value and as_bool(value) is value


def test_as_bool_refuses_other_text():
    with pytest.raises(ValueError, match="true/false"):
        as_bool("sometimes")


@pytest.mark.parametrize("text, expected", [("false", False), ("true", True)])
def test_switches_typed_as_text(tiny_dataset, tmp_path, text, expected):
    parser = parsed(tiny_dataset, tmp_path, cal=text, resume=text, thread_loader=text, compile=text, validate_data=text)
    assert parser.get_parsed_content("network_def").cal is expected
    loader = parser.get_parsed_content("train#dataloader")
    assert isinstance(loader, ThreadDataLoader) is expected and isinstance(loader, DataLoader)
    assert parser.get_parsed_content("train#trainer#compile") is expected
    checkpoint = parser.get_parsed_content("train#handlers")[-1]
    assert checkpoint.resume is expected
    report = parser.get_parsed_content("data_check")
    assert (report is not None) is expected  # off: the check is skipped
