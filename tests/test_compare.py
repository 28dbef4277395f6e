# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The comparison command end to end at tiny sizes: three rows, two seeds, one epoch, through the bundle's configs."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from scripts.tools.compare import METRICS, main
from tests.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow


def test_compare_trains_evaluates_and_tabulates(tiny_dataset, tmp_path):
    out = tmp_path / "cmp"
    argv = ["--dataset_dir", str(tiny_dataset), "--output_dir", str(out), "--seeds", "2", "--title", "tiny",
            "--", "--epochs", "1", *TINY_OVERRIDES]  # fmt: skip
    main(argv)
    runs = list(csv.DictReader(open(out / "runs.csv")))
    assert [(r["row"], r["seed"]) for r in runs] == [
        (row, str(seed)) for seed in (0, 1) for row in ("baseline", "cal", "cal_recipe")
    ]
    for run in runs:
        run_dir = out / run["row"] / f"seed{run['seed']}"
        assert (run_dir / "models" / "model.pt").is_file() and (run_dir / "predictions.csv").is_file()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["num_cases"] == 8 and float(run["accuracy"]) == pytest.approx(metrics["accuracy"])
    # each row ran its own settings, and says how to repeat it with the bundle's command line
    assert "--cal False" in (out / "baseline/seed0/commands.sh").read_text()
    recipe = (out / "cal_recipe/seed1/commands.sh").read_text()
    assert "run evaluating --config_file" in recipe and "configs/evaluate.json" in recipe
    for option in ("--cal True", "--attention_augment True", "--center_loss_weight 1.0", "--tta True", "--seed 1"):
        assert option in recipe
    assert "Epoch[1] Complete" in (out / "cal_recipe/seed1/train.log").read_text()
    summary = {r["row"]: r for r in csv.DictReader(open(out / "comparison.csv"))}
    assert set(summary) == {"baseline", "cal", "cal_recipe"}
    for row, entry in summary.items():
        values = [float(r["auc_macro"]) for r in runs if r["row"] == row]
        assert float(entry["auc_macro_mean"]) == pytest.approx(statistics.mean(values))
        assert float(entry["auc_macro_std"]) == pytest.approx(statistics.stdev(values))
    table = (out / "comparison.md").read_text()
    assert all(name in table for name in METRICS.values()) and "CAL + full recipe" in table and "±" in table
    assert "difference to the baseline" in table
    assert (out / "comparison.png").stat().st_size > 1000
    assert (out / "command.txt").read_text().startswith("python -m scripts.tools.compare")
    # a second call reuses the finished runs instead of training again
    stamp = (out / "cal/seed0/models/model.pt").stat().st_mtime
    main(argv)
    assert (out / "cal/seed0/models/model.pt").stat().st_mtime == stamp


def test_compare_rejects_unknown_rows_and_missing_data(tmp_path):
    with pytest.raises(SystemExit):
        main(["--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown rows"):
        main(["--dataset_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--rows", "baseline,magic"])
    with pytest.raises(FileNotFoundError, match="scripts.tools.convert_medmnist"):
        main(["--dataset_dir", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "o")])
