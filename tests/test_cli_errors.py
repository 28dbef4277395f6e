# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Bad inputs through ``python -m monai.bundle run``: each ends with one message naming the input and the fix, exit
status 1 and no traceback (or, for a one-hot label, is read as it was meant), and evaluation and inference name the
test cases that are also training cases. The mechanism behind it (scripts/run/errors.py) is tested on its own too: any
error a bundle module raises inside MONAI's instantiation reaches the user as such a message.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from scripts.run.errors import _RAISE, BundleInputError, bad_input_error
from tests.conftest import EVALUATE, ROOT, SYNTHETIC_INFERENCE, TINY_OVERRIDES, TRAIN, run_bundle

TIMEOUT_S = 180  # one tiny run takes seconds


def _run(*args: str) -> tuple[int, str]:
    proc = run_bundle("run", *args, *TINY_OVERRIDES, check=False, timeout=TIMEOUT_S)
    return proc.returncode, proc.stdout + proc.stderr


def _training(data: Path, out: Path, *extra: str) -> tuple[int, str]:
    return _run(
        "training", "--config_file", TRAIN, "--dataset_dir", str(data), "--ckpt_dir", str(out / "models"),
        "--output_dir", str(out / "eval"), *extra,
    )  # fmt: skip


def _stopped(code: int, log: str, *expected: str) -> None:
    assert code == 1, log[-3000:]
    assert "Traceback" not in log and "Failed to instantiate" not in log, log[-3000:]
    assert "Fix:" in log, log[-3000:]
    for text in expected:
        assert text in log, log[-3000:]


def _absolute_datalist(source: Path, target: Path, edit=None) -> Path:
    """``source``'s datalist written into ``target`` with absolute image paths, after ``edit(datalist)``."""
    datalist = json.loads((source / "datalist.json").read_text())
    for split in ("training", "validation", "test"):
        for item in datalist[split]:
            item["image"] = str(source / item["image"])
            item.pop("mask", None)
    if edit is not None:
        edit(datalist)
    target.mkdir(parents=True, exist_ok=True)
    (target / "datalist.json").write_text(json.dumps(datalist))
    return target


# --- the mechanism -----------------------------------------------------------------------------------------------


def test_every_error_a_bundle_module_raises_is_one_the_exit_hook_recognises():
    """Each ``raise SomeError(...)`` in scripts/*.py starts its line as errors._RAISE expects (a bare re-raise passes
    the original on), so that no bad input a component reports can reach the user as a traceback."""
    missed = []
    for path in sorted((ROOT / "scripts").glob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                if not _RAISE.match(lines[node.lineno - 1].strip()):
                    missed.append(f"{path.name}:{node.lineno}")
    assert missed == []


def _parse_error(tmp_path: Path, item: str, **overrides) -> BaseException:
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / "synthetic_attention.json")])
    parser.update({"bundle_root": str(tmp_path), **overrides})
    with pytest.raises(BaseException) as info:
        parser.get_parsed_content(item)
    return info.value


def test_an_error_raised_by_a_component_becomes_the_stop_message(tmp_path):
    wrapped = _parse_error(tmp_path, "amp_kwargs", amp_dtype="float8")
    assert isinstance(wrapped, RuntimeError)  # MONAI's "Failed to instantiate component ..."
    message = bad_input_error(wrapped).message
    assert message.startswith("config item 'amp_kwargs': amp_dtype must be one of ('bfloat16', 'float16'), got ")
    assert message.endswith("Fix: correct the value or file it names and run again (README.md's Settings table lists "
                            "the keys)")  # fmt: skip
    stopped = _parse_error(tmp_path, "datalist", dataset_dir=str(tmp_path / "nowhere"))
    assert isinstance(stopped, BundleInputError) and bad_input_error(stopped) is stopped  # passes MONAI as it is


def test_other_errors_keep_their_traceback(tmp_path):
    """An error not raised by the bundle's own checks (here Python's, in an expression) is not disguised."""
    error = _parse_error(tmp_path, "broken", broken="$1 / 0")
    assert isinstance(error.__cause__, ZeroDivisionError) and bad_input_error(error) is None
    assert bad_input_error(ValueError("raised outside any component")) is None


@pytest.mark.slow
def test_a_component_error_ends_without_a_traceback_through_the_cli(tiny_dataset, tmp_path):
    code, log = _training(tiny_dataset, tmp_path, "--dataset_cache", "bogus")
    _stopped(code, log, "config item '", "unknown dataset_cache 'bogus'")
    assert not (tmp_path / "models").exists()


# --- the five rows of issue 22 -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_misspelt_data_folder(tiny_dataset, tmp_path):
    misspelt = tiny_dataset.parent / (tiny_dataset.name + "s")
    code, log = _training(misspelt, tmp_path)
    _stopped(code, log, f"--dataset_dir '{misspelt}': does not exist (nearest existing folder: '{tiny_dataset}')")
    assert "but has no" not in log and not misspelt.exists()


@pytest.mark.slow
def test_a_folder_of_images_without_a_datalist(tiny_dataset, tmp_path):
    images = tiny_dataset / "images"
    code, log = _training(images, tmp_path)
    _stopped(code, log, f"--dataset_dir '{images}': holds 32 NIfTI volume(s) but no 'datalist.json'", "datalist")
    assert not (images / "datalist.json").exists()


@pytest.fixture(scope="module")
def one_hot_run(tiny_dataset, tmp_path_factory) -> dict:
    """One epoch of training on the tiny data set with one-hot labels: the model the overlap tests evaluate."""
    out = tmp_path_factory.mktemp("one_hot")

    def one_hot(datalist: dict) -> None:
        for split in ("training", "validation", "test"):
            for item in datalist[split]:
                item["label"] = [int(c == item["label"]) for c in range(4)]

    data = _absolute_datalist(tiny_dataset, out / "data", one_hot)
    code, log = _training(data, out, "--epochs", "1")
    return {"out": out, "code": code, "log": log}


@pytest.mark.slow
def test_one_hot_labels_are_read_as_class_indices(one_hot_run):
    assert one_hot_run["code"] == 0, one_hot_run["log"][-3000:]
    assert "Traceback" not in one_hot_run["log"] and "24 cases, no problems" in one_hot_run["log"]
    assert (one_hot_run["out"] / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_densenet_on_an_input_too_small_for_it(tiny_dataset, tmp_path):
    code, log = _training(tiny_dataset, tmp_path, "--backbone", "densenet")
    _stopped(code, log, "densenet needs at least 29^3 input; got [16, 16, 16]", '--spatial_size "[29, 29, 29]"')
    assert "data check" not in log  # stopped by the configuration check, before any data is read


@pytest.mark.slow
@pytest.mark.parametrize("workflow", ["evaluating", "inferring"])
def test_a_test_case_that_is_a_training_case_is_named(one_hot_run, tiny_dataset, tmp_path, workflow):
    def overlap(datalist: dict) -> None:
        datalist["test"][0] = dict(datalist["training"][0])

    data = _absolute_datalist(tiny_dataset, tmp_path / "data", overlap)
    models = one_hot_run["out"] / "models"
    if workflow == "evaluating":
        args = ("--config_file", EVALUATE, "--ckpt_dir", str(models))
    else:
        args = ("--config_file", SYNTHETIC_INFERENCE, "--ckpt_path", str(models / "model.pt"))
    code, log = _run(workflow, *args, "--dataset_dir", str(data), "--output_dir", str(tmp_path / "out"))
    assert code == 0 and "Traceback" not in log, log[-3000:]
    case = str(tiny_dataset / json.loads((tiny_dataset / "datalist.json").read_text())["training"][0]["image"])
    warning = f"test[0] '{case}' is the same file as training[0] '{case}', a case the model was trained on"
    assert re.search(r"WARNING.*" + re.escape(warning), log), log[-3000:]
    assert (tmp_path / "out" / ("metrics.json" if workflow == "evaluating" else "predictions.csv")).is_file()
