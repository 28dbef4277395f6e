# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The benchmark command runs at tiny sizes and reports every figure; its measuring helpers are sound. No timing
is asserted."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from scripts.tools.benchmark import (
    SEED_VIT_B,
    TARGETS,
    _arguments,
    _rows,
    format_table,
    interleaved_times,
    step_peak_bytes,
)
from tests.conftest import run_command

TINY_ARGS = {
    "vit": {"patch_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2},
    "resnet": {"depth": 10, "widen_factor": 0.125, "conv1_t_stride": 1, "no_max_pool": True},
}


def test_step_peak_bytes_follows_allocations_and_frees_on_cpu():
    def step():
        a = torch.ones(1_000_000)  # 4 MB
        b = torch.ones(2_000_000)  # 8 MB, both alive: the peak
        del a
        c = torch.ones(500_000)  # 2 MB, after a was freed
        return b, c

    assert step_peak_bytes(step, torch.device("cpu")) == 12_000_000


def test_interleaved_times_alternate_the_order():
    calls = []
    times = interleaved_times(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 1, 3, torch.device("cpu")
    )
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(t) for t in times.values()] == [3, 3]


@pytest.mark.slow
def test_benchmark_command_prints_all_figures(tmp_path):
    cmd = [
        sys.executable, "-m", "scripts.tools.benchmark", "--backbone", "vit", "resnet", "--spatial_size", "16",
        "--batch_size", "2", "--num_attentions", "4", "--warmup", "1", "--repeats", "2", "--data_steps", "2",
        "--backbone_args", json.dumps(TINY_ARGS), "--profile", str(tmp_path / "profile"),
        "--output", str(tmp_path / "benchmark.json"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = run_command(cmd, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report == json.loads((tmp_path / "benchmark.json").read_text())
    assert report["settings"]["spatial_size"] == [16, 16, 16] and report["settings"]["targets"] == TARGETS
    assert [r["backbone"] for r in report["results"]] == ["vit", "resnet"]
    for r in report["results"]:
        for key in ("train_step_s", "inference_s", "peak_memory_bytes", "forward_backward_peak_bytes"):
            assert set(r[key]) == {"cal", "baseline"} and all(v > 0 for v in r[key].values())
        for key in ("train_step_ratio", "inference_ratio", "peak_memory_ratio", "forward_backward_peak_ratio"):
            assert r[key] > 0
        assert 0 < r["data_wait_fraction"] < 1
        assert all(r["samples_per_s"][k] > 0 for k in ("train", "inference", "train_with_default_loader"))
        assert set(r["targets_met"]) == set(TARGETS)
        assert len(r["raw_s"]["train"]["cal"]) == 2 and len(r["raw_s"]["data_wait"]) == 2  # one per data step
        assert all((tmp_path / "profile" / f"{r['backbone']}_{v}_train.txt").is_file() for v in ("cal", "baseline"))
        assert r["profile"]["train_cal_extra_ms_by_operator"]
    table = format_table(report["results"]).splitlines()
    assert table[0].startswith("| network | input |") and table[-1].startswith("| resnet | 16x16x16 |")
    assert "\n".join(table) in proc.stderr  # the command prints it


def test_benchmark_rows_are_the_speed_pages_networks():
    """--rows: the released network at train.json's size, the 0.5.0 study's 64^3 ResNet and the seed's ViT-B."""
    rows = _rows(_arguments(["--rows", "released", "resnet64", "vit_b64"]))
    released, resnet64, vit = rows
    assert released[1] == resnet64[1] == "resnet" and released[3] == [28, 28, 28] and resnet64[3] == [64, 64, 64]
    assert {k: resnet64[2][k] for k in ("conv1_t_size", "conv1_t_stride", "num_stages")} == {
        "conv1_t_size": 5, "conv1_t_stride": 4, "num_stages": released[2]["num_stages"]
    }  # fmt: skip
    assert vit[1:] == ("vit", SEED_VIT_B, [64, 64, 64])
    assert [r[0] for r in _rows(_arguments(["--backbone", "resnet", "--spatial_size", "16"]))] == ["resnet"]


def test_benchmark_refuses_a_count_of_zero_with_a_usage_message():
    proc = run_command([sys.executable, "-m", "scripts.tools.benchmark", "--data_steps", "0"])
    assert proc.returncode == 2 and "--data_steps must be 1 or more, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(300)
def test_input_size_benchmark_measures_each_step_in_its_own_process(tmp_path):
    """python -m scripts.tools.benchmark_inputs on a tiny volume: a row per step with time and peak memory."""
    cmd = [
        sys.executable, "-m", "scripts.tools.benchmark_inputs", "--sizes", "30x30x28", "--data_dir", str(tmp_path),
        "--output", str(tmp_path / "inputs.json"),
    ]  # fmt: skip
    proc = run_command(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report == json.loads((tmp_path / "inputs.json").read_text())
    assert [(r["input"], r["step"]) for r in report["rows"]] == [("30x30x28", "preprocessing"), ("30x30x28", "infer")]
    for row in report["rows"]:
        assert "error" not in row, row
        assert row["seconds"] > 0 and row["peak_rss_mb"] >= row["rss_before_mb"] > 0
        assert row["network_input"] == [28, 28, 28]
    assert (tmp_path / "ct_30x30x28.nii.gz").is_file()
    assert "| 30x30x28 | infer |" in proc.stderr and "load average" in proc.stderr
