# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Attention scores on maps with known answers, and the scoring + montage commands end to end at tiny sizes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from scripts.data.datalist import read_datalist
from scripts.reports.attention_scores import (
    energy_fraction,
    masked_items,
    peak_distance,
    pointing_game,
    score_case,
    summarize,
    summary_markdown,
)
from scripts.tools.score_attention import main
from tests.conftest import ROOT, TINY_OVERRIDES, TRAIN, run_bundle


@pytest.fixture
def cube() -> torch.Tensor:
    """An 8^3 mask with the cube [2, 6)^3 set: 64 of 512 voxels."""
    mask = torch.zeros(8, 8, 8)
    mask[2:6, 2:6, 2:6] = 1
    return mask


def test_energy_fraction_known_answers(cube):
    assert energy_fraction(cube, cube) == pytest.approx(1.0)
    assert energy_fraction(torch.ones(8, 8, 8), cube) == pytest.approx(64 / 512)  # uniform: the volume fraction
    half = cube.clone()
    half[0:4, 0:4, 6:8] = 1  # 32 voxels outside, each twice the weight of one inside
    half[0:4, 0:4, 6:8] *= 2
    assert energy_fraction(half, cube) == pytest.approx(0.5)
    assert energy_fraction(torch.zeros(1, 8, 8, 8), cube[None]) == pytest.approx(64 / 512)  # no localisation
    with pytest.raises(ValueError, match="non-negative"):
        energy_fraction(cube - 0.5, cube)
    with pytest.raises(ValueError, match="same size"):
        energy_fraction(torch.ones(4, 4, 4), cube)


def test_pointing_game_and_tolerance(cube):
    saliency = torch.zeros(8, 8, 8)
    saliency[3, 4, 5] = 1.0  # inside
    assert peak_distance(saliency, cube) == 0.0 and pointing_game(saliency, cube)
    saliency = torch.zeros(8, 8, 8)
    saliency[3, 3, 7] = 1.0  # 2 voxels beyond the face z = 5
    assert peak_distance(saliency, cube) == pytest.approx(2.0)
    assert not pointing_game(saliency, cube) and not pointing_game(saliency, cube, tolerance=1.5)
    assert pointing_game(saliency, cube, tolerance=2.0)
    saliency = torch.zeros(8, 8, 8)
    saliency[7, 7, 3] = 1.0  # diagonal from the edge (5, 5, 3)
    assert peak_distance(saliency, cube) == pytest.approx(math.sqrt(8))
    ties = torch.zeros(8, 8, 8)
    ties[0, 0, 0] = ties[3, 3, 3] = 1.0  # first maximum in C order decides: outside
    assert not pointing_game(ties, cube)
    assert peak_distance(torch.full((8, 8, 8), 0.3), cube) == math.inf  # a constant map has no peak
    assert not pointing_game(torch.full((8, 8, 8), 0.3), cube, tolerance=100)


def test_score_case_and_summary(cube):
    inside, outside = torch.zeros(8, 8, 8), torch.zeros(8, 8, 8)
    inside[4, 4, 4] = outside[0, 0, 7] = 1.0
    rows = []
    for label, good in ((0, True), (0, False), (1, True), (1, True)):
        row = score_case({"attention": inside if good else outside, "gradcam": outside}, cube, tolerance=1.0)
        rows.append({"label": label, "correct": float(good), **row})
    assert rows[0]["mask_fraction"] == pytest.approx(0.125)
    assert rows[0]["attention_hit"] == 1.0 and rows[1]["attention_hit"] == 0.0 and rows[0]["gradcam_energy"] == 0.0
    assert rows[0]["attention_empty"] == 0.0
    empty = score_case({"gradcam": torch.zeros(8, 8, 8)}, cube, tolerance=100.0)  # e.g. a Grad-CAM zeroed by ReLU
    assert empty["gradcam_empty"] == 1.0 and empty["gradcam_hit_tol"] == 0.0
    assert empty["gradcam_energy"] == pytest.approx(empty["mask_fraction"])
    summary = summarize(rows, ["attention", "gradcam"], ["a", "b", "c"], tolerance=1.0)
    assert summary["num_cases"] == 4 and summary["accuracy"]["mean"] == pytest.approx(0.75)
    assert summary["maps"]["attention"]["pointing_game"]["mean"] == pytest.approx(0.75)
    assert summary["maps"]["attention"]["energy_fraction"]["std"] == pytest.approx(0.5)  # sample std of 1,0,1,1
    assert summary["maps"]["gradcam"]["pointing_game"]["mean"] == 0.0
    assert summary["maps"]["gradcam"]["empty_map"]["mean"] == 0.0
    assert set(summary["per_class"]) == {"a", "b"}  # a class without cases is left out
    assert summary["per_class"]["a"]["maps"]["attention"]["pointing_game"]["mean"] == pytest.approx(0.5)
    assert summary["per_class"]["b"]["num_cases"] == 2
    text = summary_markdown({"CAL": summary, "baseline": summary})
    assert "| CAL | attention | 1.000 ± 0.000" not in text and "| CAL | attention | 0.750 ± 0.500 |" in text
    assert "≤ 1 voxels" in text and "| baseline | gradcam |" in text


def test_masked_items_checks_masks(tiny_dataset, tmp_path):
    assert len(masked_items(read_datalist(tiny_dataset / "datalist.json"), "test")) == 8
    datalist = json.loads((tiny_dataset / "datalist.json").read_text())
    datalist["test"] = [
        {k: str(tiny_dataset / v) if k != "label" else v for k, v in i.items()} for i in datalist["test"]
    ]
    datalist["test"][1].pop("mask")
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    with pytest.raises(ValueError, match=r"case_0025.*has no \"mask\""):
        masked_items(read_datalist(tmp_path / "datalist.json"), "test")
    datalist["test"] = [{"image": str(tiny_dataset / "images/case_0024.nii.gz"), "label": 0, "mask": "nowhere.nii"}]
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    with pytest.raises(FileNotFoundError, match="mask of case 'case_0024'"):
        masked_items(read_datalist(tmp_path / "datalist.json"), "test")


def test_scoring_config_parses():
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / c) for c in ("train.json", "evaluate.json", "attention_scores.json")])
    for key in ("scoring", "score_split", "score_tolerance", "save_maps", "gradcam_layer", "mask_preprocessing"):
        assert key in parser, key
    parser["bundle_root"] = str(ROOT)
    inferer = parser.get_parsed_content("validate#inferer")
    assert type(inferer).__name__ == "SaliencyInferer" and inferer.gradcam_layer == "backbone"


@pytest.mark.slow
def test_scoring_and_montage_commands_end_to_end(tiny_dataset, tmp_path):
    """Two tiny models (CAL and baseline), scored by the command, then drawn side by side."""
    ckpts = {}
    for name, cal in (("cal", "True"), ("baseline", "False")):
        run_bundle(
            "run", "training", "--config_file", TRAIN, "--dataset_dir", str(tiny_dataset),
            "--ckpt_dir", str(tmp_path / name), "--output_dir", str(tmp_path / name), "--epochs", "1",
            "--cal", cal, *TINY_OVERRIDES,
        )  # fmt: skip
        ckpts[name] = tmp_path / name / "model.pt"
    assert ckpts["cal"].read_bytes() != ckpts["baseline"].read_bytes()  # `--cal False` did switch CAL off
    out = tmp_path / "attention"
    summaries = main(
        ["--runs", *(f"{k}={v}" for k, v in ckpts.items()), "--output_dir", str(out), "--tolerance", "1.5",
         "--save_maps", "3", "--dataset_dir", str(tiny_dataset), *TINY_OVERRIDES]
    )  # fmt: skip
    assert list(summaries) == ["cal", "baseline"]
    for name in ckpts:
        summary = json.loads((out / name / "attention_scores.json").read_text())
        assert summary["num_cases"] == 8 and summary["tolerance_voxels"] == 1.5
        for m in ("attention", "gradcam"):
            scores = summary["maps"][m]
            assert 0.0 <= scores["energy_fraction"]["mean"] <= 1.0
            assert scores["pointing_game"]["mean"] <= scores["pointing_game_tolerance"]["mean"]
        saved = sorted(p.name for p in (out / name / "maps").glob("*.npz"))
        assert saved == ["case_0024.npz", "case_0025.npz", "case_0026.npz"]
        with np.load(out / name / "maps" / saved[0]) as data:
            assert data["attention"].shape == data["gradcam"].shape == data["mask"].shape == (16, 16, 16)
            assert data["image"][data["mask"] > 0].mean() > data["image"][data["mask"] == 0].mean()  # aligned
    rows = list(csv.DictReader(open(out / "attention_scores.csv")))
    assert len(rows) == 16 and {"model", "case", "attention_energy", "gradcam_hit_tol"} <= set(rows[0])
    assert "| cal | attention |" in (out / "summary.md").read_text()

    from scripts.tools.montage import main as montage

    png = montage([str(out / "cal"), str(out / "baseline"), "--names", "CAL", "baseline", "--map", "gradcam",
                   "--num_cases", "2", "--output", str(tmp_path / "montage.png")])  # fmt: skip
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not saved in every run"):
        montage([str(out / "cal"), "--cases", "case_0031", "--output", str(tmp_path / "x.png")])
