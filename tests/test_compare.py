# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The comparison command end to end at tiny sizes (four rows, two seeds, one epoch, through the bundle's configs on
the synthetic fixture made binary), and its tables from fixed run results.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics

import pytest

from scripts.tools.compare import (
    COMPARISONS,
    DEFAULT_ROWS,
    METRICS,
    ROWS,
    _redirected,
    best_epoch,
    main,
    paired,
    summarize,
    write_csv,
    write_markdown,
)
from tests.conftest import TINY_OVERRIDES

SWITCHES = ("cal", "center_loss_weight", "attention_augment", "tta")


@pytest.fixture(scope="module")
def binary_dataset(tiny_dataset, tmp_path_factory):
    """The tiny synthetic set with its four classes folded into two (label % 2): a binary task, as AdrenalMNIST3D."""
    datalist = json.loads((tiny_dataset / "datalist.json").read_text())
    root = tmp_path_factory.mktemp("binary")
    folded = {"labels": {"0": "even", "1": "odd"}}
    for split in ("training", "validation", "test"):
        folded[split] = [
            {"image": str(tiny_dataset / item["image"]), "label": int(item["label"]) % 2} for item in datalist[split]
        ]
    (root / "datalist.json").write_text(json.dumps(folded))
    return root


def test_every_row_sets_every_switch():
    assert DEFAULT_ROWS == ["baseline", "baseline_recipe", "cal", "cal_recipe", "cal_no_effect", "cal_recipe_no_effect"]
    for _, overrides in ROWS.values():
        assert set(SWITCHES) <= set(overrides)
    # baseline + recipe is CAL + recipe without the counterfactual
    assert {**ROWS["baseline_recipe"][1], "cal": True} == ROWS["cal_recipe"][1]
    assert ("cal_recipe", "baseline_recipe") in COMPARISONS
    # the counterfactual alone: each CAL row against the same row with the effect term at weight 0
    for row in ("cal", "cal_recipe"):
        assert {**ROWS[row][1], "effect_weight": 0.0} == ROWS[f"{row}_no_effect"][1]
        assert (row, f"{row}_no_effect") in COMPARISONS
    # every variant differs from the seed's CAL in one setting and is compared with it
    for row in ("cal_shuffle", "cal_reversed", "cal_sparse", "cal_sgd"):
        assert (row, "cal") in COMPARISONS
        assert {k: v for k, v in ROWS[row][1].items() if ROWS["cal"][1].get(k) != v}.keys() <= {
            "counterfactual",
            "optimizer",
            "lr_scheduler",
        }


@pytest.mark.slow
def test_compare_trains_evaluates_and_tabulates(binary_dataset, tmp_path):
    out = tmp_path / "cmp"
    rows = ["baseline", "baseline_recipe", "cal", "cal_recipe", "cal_no_effect"]
    argv = ["--dataset_dir", str(binary_dataset), "--output_dir", str(out), "--seeds", "2", "--title", "tiny",
            "--rows", ",".join(rows), "--config", "configs/synthetic_attention.json", "--",
            "--epochs", "1", "--num_classes", "2", "--class_names", "['even','odd']", *TINY_OVERRIDES]  # fmt: skip
    main(argv)
    runs = list(csv.DictReader(open(out / "runs.csv")))
    assert [(r["row"], r["seed"]) for r in runs] == [(row, str(seed)) for seed in (0, 1) for row in rows]
    for run in runs:
        run_dir = out / run["row"] / f"seed{run['seed']}"
        assert (run_dir / "models" / "model.pt").is_file() and (run_dir / "predictions.csv").is_file()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["num_cases"] == 8 and float(run["accuracy"]) == pytest.approx(metrics["accuracy"])
        # the validation split's predictions, and the threshold chosen on them
        assert json.loads((run_dir / "validation" / "metrics.json").read_text())["num_cases"] == 8
        assert 0 < float(run["threshold"]) < 1 and 0 <= float(run["f1_macro_thr"]) <= 1
        # what a recipe is chosen on: the kept checkpoint's validation AUC and epoch
        assert float(run["val_auc_macro"]) == pytest.approx(
            json.loads((run_dir / "validation" / "metrics.json").read_text())["auc_macro"]
        )
        assert run["best_epoch"] == "1"
        # the attention and counterfactual probes of the test split
        assert 0 <= float(run["attention_mass"]) <= 1 and 0 < float(run["crop_share"]) <= 1
        assert -1 <= float(run["cos_counterfactual"]) <= 1 and float(run["cf_margin_sd"]) >= 0
    # each row ran its own settings, and says how to repeat it with the bundle's command line
    baseline = (out / "baseline/seed0/commands.sh").read_text()
    for option in ("--cal False", "--center_loss_weight 0.0", "--attention_augment False", "--tta False"):
        assert option in baseline
    recipe = (out / "baseline_recipe/seed1/commands.sh").read_text()
    assert (
        "run evaluating --config_file" in recipe
        and "configs/synthetic_attention.json','configs/evaluate.json']" in recipe
    )
    for option in ("--cal False", "--attention_augment True", "--center_loss_weight 1.0", "--tta True", "--seed 1"):
        assert option in recipe
    assert '"--validate#dataset#data" @val_datalist' in recipe and '"--data_check#splits" "[\'validation\']"' in recipe
    assert "Epoch[1] Complete" in (out / "cal_recipe/seed1/train.log").read_text()
    summary = {r["row"]: r for r in csv.DictReader(open(out / "comparison.csv"))}
    assert set(summary) == set(rows)
    for row, entry in summary.items():
        values = [float(r["auc_macro"]) for r in runs if r["row"] == row]
        assert float(entry["auc_macro_mean"]) == pytest.approx(statistics.mean(values))
        assert float(entry["auc_macro_std"]) == pytest.approx(statistics.stdev(values))
    differences = list(csv.DictReader(open(out / "paired.csv")))
    assert {(d["row"], d["reference"]) for d in differences} == {
        (row, reference) for row, reference in COMPARISONS if row in rows and reference in rows
    }
    for d in differences:
        assert int(d["n"]) == 2
        key = d["metric"]
        treated = [float(r[key]) for r in runs if r["row"] == d["row"]]
        base = [float(r[key]) for r in runs if r["row"] == d["reference"]]
        assert float(d["mean"]) == pytest.approx(statistics.mean(t - b for t, b in zip(treated, base)), abs=1e-9)
    table = (out / "comparison.md").read_text()
    assert all(name in table for name in METRICS.values()) and "CAL + recipe" in table and "±" in table
    assert "baseline + recipe (CAL off)" in table and "paired difference" in table and "Wilcoxon" in table
    assert "macro F1, val threshold" in table and "| CAL, effect weight 0 |" in table
    assert "attention mass in structure" in table and "crop box share" in table
    assert (out / "comparison.png").stat().st_size > 1000
    assert (out / "command.txt").read_text().startswith("python -m scripts.tools.compare")
    # a second call reuses the finished runs instead of training or evaluating again
    stamps = [(out / "cal/seed0" / f).stat().st_mtime for f in ("models/model.pt", "validation/predictions.csv")]
    main(argv)
    assert [
        (out / "cal/seed0" / f).stat().st_mtime for f in ("models/model.pt", "validation/predictions.csv")
    ] == stamps


def test_best_epoch_is_the_last_validation_key_metric_epoch(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "INFO - Key metric: val_auc best value: 0.7 at epoch: 2\n"
        "INFO - Key metric: train_accuracy best value: 0.9 at epoch: 5\n"
        "INFO - Key metric: val_auc best value: 0.8 at epoch: 4\n"
    )
    assert best_epoch(log) == 4  # the training metric's line is not the kept checkpoint
    log.write_text("INFO - Epoch[1] Complete.\n")
    assert best_epoch(log) is None


def _result(row, seed, auc, f1, thr=None):
    values = {"accuracy": f1, "balanced_accuracy": f1, "f1_macro": f1, "auc_macro": auc}
    thresholded = {"threshold": thr, "accuracy_thr": thr and f1, "balanced_accuracy_thr": thr and f1}
    return {"row": row, "seed": seed, **values, **thresholded, "f1_macro_thr": thr and f1,
            "train_s": 60.0, "eval_s": 6.0, "val_eval_s": 6.0}  # fmt: skip


def test_tables_from_fixed_results(tmp_path):
    gains = {"baseline": 0.0, "baseline_recipe": 0.01, "cal": 0.02, "cal_recipe": 0.03}
    results = [
        _result(row, seed, 0.8 + gain + 0.01 * seed, 0.6 + gain) for seed in range(6) for row, gain in gains.items()
    ]
    differences = paired(results, list(ROWS))
    cal = {d["metric"]: d for d in differences if d["row"] == "cal" and d["reference"] == "baseline"}
    assert cal["auc_macro"]["mean"] == pytest.approx(0.02) and cal["auc_macro"]["n"] == 6
    assert cal["auc_macro"]["ci_low"] == pytest.approx(0.02) and cal["auc_macro"]["p_value"] == pytest.approx(2 / 64)
    assert "f1_macro_thr" not in cal  # a multi-class task: argmax only
    summary = summarize(results, list(ROWS), differences)
    assert summary[2]["auc_macro_diff_mean"] == pytest.approx(0.02) and math.isnan(summary[0]["auc_macro_diff_mean"])
    assert summary[0]["eval_min_mean"] == pytest.approx(0.2)
    text = write_markdown(summary, differences, tmp_path / "c.md")
    assert "| CAL + recipe - baseline + recipe (CAL off) | +0.020 [+0.020, +0.020] p 0.031 |" in text
    assert "argmax only" in text and "val threshold" not in text


def test_recorded_runs_are_paired_without_running_again(tmp_path, monkeypatch):
    """--records: a new row is paired with an earlier comparison's runs.csv; recorded runs are not trained again."""
    keys = ["accuracy_thr", "val_auc_macro", "best_epoch", "attention_mass", "crop_share", "cos_counterfactual",
            "cf_margin_sd"]  # fmt: skip
    recorded = [{**_result("cal", seed, 0.80 + 0.01 * seed, 0.6, 0.5), **dict.fromkeys(keys, 0.5), "best_epoch": 7}
                for seed in range(6)]  # fmt: skip
    recorded[0]["threshold"] = None  # an empty cell reads back as None
    write_csv(recorded, tmp_path / "runs.csv")
    ran = []

    def fake_run(row, seed, *args):
        ran.append((row, seed))
        return {**recorded[seed], "row": row, "auc_macro": recorded[seed]["auc_macro"] + 0.02}

    monkeypatch.setattr("scripts.tools.compare.run_one", fake_run)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "datalist.json").write_text("{}")
    main(["--dataset_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"), "--seeds", "6",
          "--rows", "cal,cal_sparse", "--records", str(tmp_path / "runs.csv")])  # fmt: skip
    assert ran == [("cal_sparse", seed) for seed in range(6)]
    runs = list(csv.DictReader(open(tmp_path / "out" / "runs.csv")))
    assert [(r["row"], r["seed"]) for r in runs] == [(row, str(s)) for s in range(6) for row in ("cal", "cal_sparse")]
    assert runs[0]["threshold"] == "" and runs[0]["best_epoch"] == "7"
    sparse = {d["metric"]: d for d in csv.DictReader(open(tmp_path / "out" / "paired.csv")) if d["row"] == "cal_sparse"}
    assert float(sparse["auc_macro"]["mean"]) == pytest.approx(0.02) and sparse["auc_macro"]["n"] == "6"
    assert "--records" in (tmp_path / "out" / "command.txt").read_text()


def test_console_loggers_made_before_a_comparison_write_into_its_run_logs():
    # StatsHandler's logger keeps the stdout it first saw: a bundle run earlier in the same process must not send
    # the epoch metrics (and the "Key metric ... at epoch" line the best epoch is read from) past the run's log
    logger = logging.getLogger("test_compare.earlier_console_logger")
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    logger.propagate, console = False, handler.stream
    try:
        with _redirected() as (stdout, _):
            stdout.log = io.StringIO()
            logger.warning("Key metric: val_auc best value: 0.9 at epoch: 3")
            assert "at epoch: 3" in stdout.log.getvalue()
        assert handler.stream is console and console.getvalue() == ""
    finally:
        logger.removeHandler(handler)
