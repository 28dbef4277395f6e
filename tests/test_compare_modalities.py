# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The multimodal claim, measured: on data whose label needs the image AND the tabular values, the fused model beats
the image-only and the tabular-only model on test accuracy. Same data, seed and budget; tiny sizes (16^3, a
two-block ViT, 160 training cases, 20 epochs), about a minute on a 2-core CPU.
"""

from __future__ import annotations

import json

import pytest

from scripts.tools.compare_modalities import compare_modalities, format_table
from scripts.tools.multimodal_data import generate_multimodal_dataset

pytestmark = pytest.mark.slow

# 16^3 volumes: solid vs striped balls are told apart reliably at this size (hollow needs 32^3).
SMALL = {  # the multimodal study's setup: a small ViT and the seed's CAL recipe (train.json's recipe switched off)
    "backbone": "vit",
    "cal": True,
    "center_loss_weight": 0.0,
    "attention_augment": False,
    "tta": False,
    "class_weights": None,
    "spatial_augmentation": False,
    "val_key_metric": "val_f1",
    "spatial_size": [16, 16, 16],
    "backbone_args#vit#patch_size": 4,
    "backbone_args#vit#hidden_size": 32,
    "backbone_args#vit#mlp_dim": 64,
    "backbone_args#vit#num_layers": 2,
    "backbone_args#vit#num_heads": 4,
    "num_attentions": 4,
    "batch_size": 8,
    "learning_rate": 0.001,
    "epochs": 20,
    "dataset_cache": "memory",  # the volumes are loaded once, not every epoch
}
# With the filling and the group independent and balanced, a single-modality model is right on about half the
# cases at best (chance on the other modality's half of the label); the fused model can be right on all.
MARGIN = 0.15


def test_fused_beats_image_only_and_tabular_only(tmp_path):
    data = generate_multimodal_dataset(
        tmp_path / "data", size=16, num_cases=(160, 64, 64), seed=0, image_classes=("solid", "striped")
    )
    results = compare_modalities(data.parent, tmp_path / "compare", tabular_length=8, **SMALL)
    print("\n" + format_table(results))
    assert json.loads((tmp_path / "compare" / "comparison.json").read_text()) == results
    fused, image, tabular = (results[m]["accuracy"] for m in ("fused", "image", "tabular"))
    assert all(results[m]["num_cases"] == 64 for m in results)
    assert fused >= 0.7, results
    assert fused >= image + MARGIN and fused >= tabular + MARGIN, results
    # each single-modality model stays near the half of the label it can see
    assert image <= 0.7 and tabular <= 0.7, results
