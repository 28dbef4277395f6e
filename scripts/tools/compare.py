# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Does CAL help? Train the same network four ways on the same data, split, seeds, augmentation and budget, N seeds
each: the baseline (CAL off, plain cross-entropy), the baseline + the original recipe (CAL off; centre loss,
attention-guided crop/drop, test-time crop averaging), CAL (the seed's recipe) and CAL + the original recipe.
Every row sets all four switches (``cal``, ``center_loss_weight``, ``attention_augment``, ``tta``), so that the
rows do not depend on ``configs/train.json``'s defaults. On AdrenalMNIST3D (the bundle's default data and network)::

    python -m scripts.tools.compare --dataset_dir data/adrenalmnist3d --output_dir eval/compare/adrenal28 --seeds 10

Everything after ``--`` is passed to every run as ``monai.bundle`` overrides (``--key value`` pairs, parsed as on
the ``monai.bundle`` command line); ``--config`` merges further config files on ``configs/train.json`` (e.g.
``configs/synthetic_attention.json``). Each run is the bundle's ``training`` workflow then its ``evaluating``
workflow (``configs/evaluate.json`` merged on it) on the test split and again on the validation split, executed
with ``monai.bundle.run`` in this process (the bundle's own configs, no second training loop; one import of torch
and MONAI for all runs). A run's output goes to ``<output_dir>/<row>/seed<k>/{train,evaluate,evaluate_validation}.log``
and its equivalent command lines to ``commands.sh`` beside them; its checkpoint stays in
``<row>/seed<k>/models/model.pt``, its test results in ``metrics.json`` and ``predictions.csv`` there and its
validation results in ``validation/``. A finished step is not repeated (``result.json`` marks a trained and tested
run, ``validation/predictions.csv`` its validation predictions), so an interrupted comparison resumes where it
stopped. ``--records runs.csv`` takes the runs of an earlier comparison from its ``runs.csv`` (e.g. one committed to
``docs/results/``) instead of running them again, so that a new row can be paired with recorded ones; this holds only
while the bundle still trains those runs byte for byte (rerun one recorded seed to check).

The tables (``comparison.md``; ``comparison.csv`` one line per row, ``paired.csv`` one line per comparison and
metric, ``runs.csv`` one line per run; ``comparison.png``) give each row's test metrics as mean ± sample standard
deviation over seeds, the paired differences (same seed = same pair) of each row to the baseline and of CAL +
recipe to baseline + recipe with a 95% paired bootstrap confidence interval and a Wilcoxon signed-rank p-value
(:mod:`scripts.tools.paired_stats`), and, for binary tasks, the thresholded metrics at a threshold chosen on the
validation split (:mod:`scripts.tools.thresholds`) beside the argmax ones. Each row also gets its validation macro
AUC (what a recipe is chosen on, never the test split) and the median epoch whose checkpoint was kept (a budget
that ends while runs still improve shows as a best epoch at the last one).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import shlex
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from .counterfactual_probe import PROBES

__all__ = [
    "ROWS",
    "COMPARISONS",
    "METRICS",
    "THRESHOLD_METRICS",
    "parse_overrides",
    "run_one",
    "read_records",
    "best_epoch",
    "summarize",
    "paired",
    "write_markdown",
    "write_plot",
    "compare",
    "main",
]

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["configs/train.json"]
EVALUATE = ["configs/evaluate.json"]  # merged on TRAIN (and on the extra config files)

# The original recipe's switches (DESIGN.md section 1), and the same switches off.
RECIPE = {"center_loss_weight": 1.0, "attention_augment": True, "tta": True}
NO_RECIPE = {"center_loss_weight": 0.0, "attention_augment": False, "tta": False}
# The original optimiser (DESIGN.md section 1): SGD, momentum 0.9, weight decay 1e-5, lr x 0.9 every 2 epochs.
ORIGINAL_OPTIMISER = {
    "optimizer": {"_target_": "torch.optim.SGD", "params": "$@network.parameters()", "lr": "@learning_rate",
                  "momentum": 0.9, "weight_decay": 1e-5},
    "lr_scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "optimizer": "@optimizer", "step_size": 2,
                     "gamma": 0.9},
}  # fmt: skip
# Row name -> (label, overrides). Every row sets every switch, so that no row depends on train.json's defaults. The
# "no effect" rows are CAL with the effect term at weight 0: the same loss terms and weights, the same random draws
# (the counterfactual draws from its own generator), so CAL minus its "no effect" row is the counterfactual alone.
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("baseline (CAL off)", {"cal": False, **NO_RECIPE}),
    "baseline_recipe": ("baseline + recipe (CAL off)", {"cal": False, **RECIPE}),
    "cal": ("CAL (seed recipe)", {"cal": True, **NO_RECIPE}),
    "cal_recipe": ("CAL + recipe", {"cal": True, **RECIPE}),
    "cal_no_effect": ("CAL, effect weight 0", {"cal": True, **NO_RECIPE, "effect_weight": 0.0}),
    "cal_recipe_no_effect": ("CAL + recipe, effect weight 0", {"cal": True, **RECIPE, "effect_weight": 0.0}),
    # variants of the seed's CAL: other counterfactuals, the original optimiser
    "cal_shuffle": ("CAL, shuffled counterfactual", {"cal": True, **NO_RECIPE, "counterfactual": "shuffle"}),
    "cal_reversed": ("CAL, reversed counterfactual", {"cal": True, **NO_RECIPE, "counterfactual": "reversed"}),
    "cal_sparse": ("CAL, sparse counterfactual", {"cal": True, **NO_RECIPE, "counterfactual": "sparse"}),
    "cal_sgd": ("CAL, original optimiser (SGD)", {"cal": True, **NO_RECIPE, **ORIGINAL_OPTIMISER}),
}
# The rows a comparison runs unless --rows says otherwise.
DEFAULT_ROWS = ["baseline", "baseline_recipe", "cal", "cal_recipe", "cal_no_effect", "cal_recipe_no_effect"]
# What a run was selected on: its validation macro AUC (the checkpoint's, on the validation split) and its epoch.
SELECTION = ["val_auc_macro", "best_epoch"]
# Paired comparisons (row, reference): every row against the baseline, the counterfactual alone (CAL against the
# same loss with the effect at weight 0), CAL's effect within the recipe, and each variant against the seed's CAL.
COMPARISONS: list[tuple[str, str]] = [
    ("baseline_recipe", "baseline"),
    ("cal", "baseline"),
    ("cal_recipe", "baseline"),
    ("cal_no_effect", "baseline"),
    ("cal", "cal_no_effect"),
    ("cal_recipe", "cal_recipe_no_effect"),
    ("cal_recipe", "baseline_recipe"),
    ("cal_shuffle", "cal"),
    ("cal_reversed", "cal"),
    ("cal_sparse", "cal"),
    ("cal_sgd", "cal"),
]
METRICS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "f1_macro": "macro F1",
    "auc_macro": "macro AUC",
}
# Binary tasks: test metrics at the threshold chosen on the validation split (scripts.tools.thresholds).
THRESHOLD_METRICS = {
    "balanced_accuracy_thr": "balanced accuracy, val threshold",
    "f1_macro_thr": "macro F1, val threshold",
}
# The attention and counterfactual figures of each run (scripts.tools.counterfactual_probe).
PROBE_NAMES = {
    "attention_mass": "attention mass in structure",
    "crop_share": "crop box share",
    "cos_counterfactual": "cos(f, f_cf)",
    "cf_margin_sd": "counterfactual margin sd",
}
# The metrics of the paired-difference table.
PAIRED_METRICS = ["auc_macro", "f1_macro", "balanced_accuracy", "f1_macro_thr", "balanced_accuracy_thr",
                  "val_auc_macro", "attention_mass"]  # fmt: skip
# Names of the paired table's columns that are not test metrics: what a variant is chosen on.
SELECTION_NAMES = {"val_auc_macro": "val macro AUC", "attention_mass": "attention mass in structure"}
# Evaluating on the validation split instead of the test split (configs/evaluate.json reads validate#dataset#data).
VALIDATION_SPLIT = {"validate#dataset#data": "@val_datalist", "data_check#splits": ["validation"]}


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """
    ``["--key", "value", ...]`` -> ``{"key": value}``, values parsed as ``python -m monai.bundle`` parses them
    (Python literals: ``"[28,28,28]"`` is a list, ``"0.5"`` a float, ``"False"`` a bool, other words strings).
    """
    from fire.parser import DefaultParseValue

    args = list(args)
    if len(args) % 2 or any(not key.startswith("--") for key in args[::2]):
        raise ValueError(f"overrides must be '--key value' pairs, got {args}.")
    return {key[2:]: DefaultParseValue(value) for key, value in zip(args[::2], args[1::2])}


def _quote(arg: str) -> str:
    """A shell word for ``arg``: as is when safe, in double quotes when that suffices (``"[28,28,28]"``)."""
    if shlex.quote(arg) == arg:
        return arg
    return f'"{arg}"' if not set(arg) & set('"$`\\!') else shlex.quote(arg)


def _command(run_id: str, config_file: Sequence[str], overrides: dict[str, Any]) -> str:
    """The ``python -m monai.bundle`` command line equivalent to one in-process run."""
    files = config_file[0] if len(config_file) == 1 else "[" + ",".join(f"'{f}'" for f in config_file) + "]"
    args = ["python", "-m", "monai.bundle", "run", run_id, "--config_file", files]
    for key, value in overrides.items():
        args += [f"--{key}", str(value).replace(" ", "") if isinstance(value, (list, tuple, dict)) else str(value)]
    return " ".join(_quote(a) for a in args)


class _Redirect(io.TextIOBase):
    """
    Stand-in for ``sys.stdout``/``sys.stderr`` during a comparison: what is written goes to the current run's log
    file while a run is on, to the console otherwise. Log handlers that MONAI creates during a run keep this object
    as their stream, so their output in later runs lands in those runs' logs too; console handlers that existed
    before the comparison (e.g. StatsHandler's, when a bundle ran earlier in the same process) are pointed at it
    for the comparison's duration.
    """

    def __init__(self, console: TextIO) -> None:
        super().__init__()
        self.console = console
        self.log: TextIO | None = None

    def write(self, text: str) -> int:
        return (self.log or self.console).write(text)

    def flush(self) -> None:
        (self.log or self.console).flush()


@contextlib.contextmanager
def _redirected() -> Iterator[tuple[_Redirect, _Redirect]]:
    """Install the :class:`_Redirect` streams for the duration of a comparison."""
    streams = _Redirect(sys.stdout), _Redirect(sys.stderr)
    sys.stdout, sys.stderr = streams
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    console = [h for lg in loggers for h in lg.handlers if type(h) is logging.StreamHandler]
    before = [h.stream for h in console]
    for handler in console:
        handler.stream = streams[1] if handler.stream in (streams[1].console, sys.__stderr__) else streams[0]
    try:
        yield streams
    finally:
        sys.stdout, sys.stderr = streams[0].console, streams[1].console
        for handler, stream in zip(console, before):
            handler.stream = stream


def _bundle(run_id: str, config_file: Sequence[str], overrides: dict[str, Any], log: Path) -> float:
    """
    Run the bundle's ``run_id`` workflow with ``monai.bundle.run`` (config files relative to the bundle, its
    ``configs/logging.conf``), its output into ``log``; returns the wall time.
    """
    from monai.bundle import run

    start = time.perf_counter()
    streams = [s for s in (sys.stdout, sys.stderr) if isinstance(s, _Redirect)]
    with open(log, "w") as f:
        for stream in streams:
            stream.log = f
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="parsing config_file")  # the bundle's configs are trusted
                run(
                    run_id,
                    config_file=[str(BUNDLE_ROOT / c) for c in config_file],
                    logging_file=str(BUNDLE_ROOT / "configs" / "logging.conf"),
                    bundle_root=str(BUNDLE_ROOT),
                    **overrides,
                )
        except Exception as e:
            traceback.print_exc()
            raise RuntimeError(f"the bundle's '{run_id}' run failed ({e!r}); its log is {log}.") from e
        finally:
            for stream in streams:
                stream.flush()
                stream.log = None
    return time.perf_counter() - start


def _configs(extra: Sequence[str]) -> tuple[list[str], list[str]]:
    """Config files of training and of evaluation: train.json, then ``extra``, then (evaluation) evaluate.json."""
    train = TRAIN + list(extra)
    return train, train + EVALUATE


def run_one(
    row: str, seed: int, dataset_dir: Path, output_dir: Path, overrides: dict[str, Any], configs: Sequence[str] = ()
) -> dict:
    """
    Train one (row, seed), evaluate it on the test split and on the validation split; returns its test metrics, its
    thresholded test metrics at the validation-chosen threshold (None for a multi-class task) and its wall times.
    Steps already done are not repeated: ``result.json`` marks a trained and tested run, ``validation/`` its
    validation predictions.
    """
    from .counterfactual_probe import probe_run
    from .thresholds import validation_threshold_metrics

    run_dir = output_dir / row / f"seed{seed}"
    val_dir = run_dir / "validation"
    result_file = run_dir / "result.json"
    train_files, eval_files = _configs(configs)
    common = {
        "dataset_dir": str(dataset_dir),
        "ckpt_dir": str(run_dir / "models"),
        "output_dir": str(run_dir),
        "seed": seed,
        **ROWS[row][1],
        **overrides,
    }
    on_validation = {**common, **VALIDATION_SPLIT, "output_dir": str(val_dir)}
    result = json.loads(result_file.read_text()) if result_file.is_file() else None
    if result is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        commands = [
            _command("training", train_files, common),
            _command("evaluating", eval_files, common),
            "# the validation split's predictions (for the validation-chosen threshold)",
            _command("evaluating", eval_files, on_validation),
        ]
        (run_dir / "commands.sh").write_text("# from the bundle's folder\n" + "\n".join(commands) + "\n")
        train_s = _bundle("training", train_files, common, run_dir / "train.log")
        eval_s = _bundle("evaluating", eval_files, common, run_dir / "evaluate.log")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        result = {"row": row, "seed": seed, **{k: metrics[k] for k in METRICS}, "train_s": train_s, "eval_s": eval_s}
        result_file.write_text(json.dumps(result, indent=2))
    if not (val_dir / "predictions.csv").is_file() or "val_eval_s" not in result:
        result["val_eval_s"] = _bundle("evaluating", eval_files, on_validation, run_dir / "evaluate_validation.log")
        result_file.write_text(json.dumps(result, indent=2))
    if any(key not in result for key in PROBES):  # attention and counterfactual figures on the test split
        result.update(probe_run(run_dir / "models" / "model.pt", dataset_dir, common, train_files))
        result_file.write_text(json.dumps(result, indent=2))
    thresholded = validation_threshold_metrics(val_dir / "predictions.csv", run_dir / "predictions.csv")
    result["val_auc_macro"] = json.loads((val_dir / "metrics.json").read_text())["auc_macro"]
    result["best_epoch"] = best_epoch(run_dir / "train.log")
    result["threshold"] = None if thresholded is None else thresholded["threshold"]
    for key in ("accuracy", "balanced_accuracy", "f1_macro"):
        result[f"{key}_thr"] = None if thresholded is None else thresholded[key]
    order = ["row", "seed", *METRICS, "threshold", "accuracy_thr", *THRESHOLD_METRICS, *SELECTION, *PROBES, "train_s",
             "eval_s"]  # fmt: skip
    return {key: result[key] for key in order + ["val_eval_s"]}


def best_epoch(train_log: Path) -> int | None:
    """
    The epoch whose checkpoint a training run kept: the last ``Key metric: val_<name> best value: ... at epoch: N``
    line that MONAI's evaluator logs in ``train_log`` (None when there is none). A best epoch at the very end says the
    run was still improving when its epoch budget ran out.
    """
    found = re.findall(r"Key metric: val_\w+ best value: \S+ at epoch: (\d+)", train_log.read_text())
    return int(found[-1]) if found else None


def _known(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def _mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of the known values (NaN for none)."""
    values = _known(values)
    if not values:
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _pairs(results: Sequence[dict], row: str, reference: str, key: str) -> tuple[list, list]:
    """``key`` of ``row`` and of ``reference`` for the seeds that both have, in seed order."""
    treated = {r["seed"]: r.get(key) for r in results if r["row"] == row}
    base = {r["seed"]: r.get(key) for r in results if r["row"] == reference}
    seeds = sorted(set(treated) & set(base))
    return [treated[s] for s in seeds], [base[s] for s in seeds]


def paired(results: Sequence[dict], rows: Sequence[str]) -> list[dict]:
    """
    One entry per comparison of :data:`COMPARISONS` whose rows both ran and per metric of the paired table: the
    seed-paired difference ``row - reference`` (:func:`scripts.tools.paired_stats.paired_difference`: mean, sd,
    bootstrap and t confidence intervals, Wilcoxon and t-test p-values). Metrics no run has (the thresholded ones
    of a multi-class task) are left out.
    """
    from .paired_stats import paired_difference

    entries = []
    for row, reference in COMPARISONS:
        if row not in rows or reference not in rows:
            continue
        for key in PAIRED_METRICS:
            treated, base = _pairs(results, row, reference, key)
            if not _known(treated):
                continue
            entries.append(
                {
                    "row": row,
                    "reference": reference,
                    "comparison": f"{ROWS[row][0]} - {ROWS[reference][0]}",
                    "metric": key,
                    **paired_difference(treated, base).as_dict(),
                }
            )
    return entries


def summarize(results: Sequence[dict], rows: Sequence[str], differences: Sequence[dict] = ()) -> list[dict]:
    """
    Per row: number of seeds, mean and std of every metric (argmax and validation-threshold ones, and the threshold),
    mean training and evaluation time (test and validation evaluations together), and, from ``differences``
    (:func:`paired`), the row's paired difference to the baseline (``<metric>_diff_mean``, ``_diff_ci_low``,
    ``_diff_ci_high``, ``_diff_p``; NaN for the baseline itself and for metrics without one).
    """
    summary = []
    for row in rows:
        runs = [r for r in results if r["row"] == row]
        if not runs:
            continue
        entry: dict = {"row": row, "label": ROWS[row][0], "seeds": len(runs)}
        for key in [*METRICS, *THRESHOLD_METRICS, "threshold"]:
            entry[f"{key}_mean"], entry[f"{key}_std"] = _mean_std([r[key] for r in runs])
        entry["val_auc_macro_mean"], entry["val_auc_macro_std"] = _mean_std([r.get("val_auc_macro") for r in runs])
        for key in PROBES:
            entry[f"{key}_mean"], entry[f"{key}_std"] = _mean_std([r.get(key) for r in runs])
        epochs = _known([r.get("best_epoch") for r in runs])
        entry["best_epoch_median"] = statistics.median(epochs) if epochs else math.nan
        entry["train_min_mean"] = sum(r["train_s"] for r in runs) / len(runs) / 60
        entry["eval_min_mean"] = sum(r["eval_s"] + r["val_eval_s"] for r in runs) / len(runs) / 60
        to_baseline = {d["metric"]: d for d in differences if d["row"] == row and d["reference"] == "baseline"}
        for key in PAIRED_METRICS:
            d = to_baseline.get(key, {})
            for name, field in (("mean", "mean"), ("ci_low", "ci_low"), ("ci_high", "ci_high"), ("p", "p_value")):
                entry[f"{key}_diff_{name}"] = d.get(field, math.nan)
        summary.append(entry)
    return summary


def _names() -> dict[str, str]:
    return {**METRICS, **THRESHOLD_METRICS}


def _has_thresholds(summary: Sequence[dict]) -> bool:
    return any(not math.isnan(s["f1_macro_thr_mean"]) for s in summary)


def write_markdown(summary: Sequence[dict], differences: Sequence[dict], path: Path, title: str = "") -> str:
    """
    The comparison as Markdown: test metrics (mean ± sample std over seeds) per row, at argmax and, for binary
    tasks, at the validation-chosen threshold, with the time per run; then the paired differences with their 95%
    bootstrap confidence intervals and Wilcoxon p-values; then how to read them.
    """
    thresholds = _has_thresholds(summary)
    keys = list(METRICS) + (list(THRESHOLD_METRICS) + ["threshold"] if thresholds else [])
    names = {**_names(), "threshold": "val threshold"}
    columns = [names[k] if k == "threshold" else f"test {names[k]}" for k in keys]
    header = "| row | seeds | " + " | ".join(columns) + " | val macro AUC | best epoch | train min/run | eval min/run |"
    lines = ([f"**{title}**", ""] if title else []) + [header, "|" + " --- |" * (len(keys) + 6)]
    for s in summary:
        cells = [f"{s[f'{k}_mean']:.3f} ± {s[f'{k}_std']:.3f}" for k in keys]
        cells += [f"{s['val_auc_macro_mean']:.3f} ± {s['val_auc_macro_std']:.3f}", f"{s['best_epoch_median']:g}"]
        times = f" | {s['train_min_mean']:.1f} | {s['eval_min_mean']:.1f} |"
        lines.append(f"| {s['label']} | {s['seeds']} | " + " | ".join(cells) + times)
    lines += ["", "| row | " + " | ".join(PROBE_NAMES.values()) + " |", "|" + " --- |" * (len(PROBE_NAMES) + 1)]
    for s in summary:
        cells = [f"{s[f'{k}_mean']:.3f} ± {s[f'{k}_std']:.3f}" for k in PROBE_NAMES]
        lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    metrics = [k for k in PAIRED_METRICS if any(d["metric"] == k for d in differences)]
    if differences:
        header = (
            "| paired difference (same seed), mean [95% CI] p | "
            + " | ".join({**_names(), **SELECTION_NAMES}[k] for k in metrics)
            + " |"
        )
        lines += ["", header]
        lines.append("|" + " --- |" * (len(metrics) + 1))
        for comparison in dict.fromkeys(d["comparison"] for d in differences):
            by_metric = {d["metric"]: d for d in differences if d["comparison"] == comparison}
            cells = []
            for k in metrics:
                d = by_metric.get(k)
                cells.append(
                    ""
                    if d is None
                    else f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] p {d['p_value']:.3f}"
                )
            lines.append(f"| {comparison} | " + " | ".join(cells) + " |")
        pairs = sorted({d["n"] for d in differences})
        lines += [
            "",
            f"Paired over {'/'.join(map(str, pairs))} seeds. CI: paired bootstrap (BCa, 9999 resamples) of the mean "
            "difference; p: two-sided Wilcoxon signed-rank test (exact for small samples; with n pairs of one sign "
            "the smallest p is 2/2^n, 0.0625 for 5 seeds: 6 or more seeds are needed to go below 0.05). Student-t "
            "intervals and paired t-test p-values are in paired.csv.",
        ]
    lines += [
        "",
        "Attention and counterfactual, on the test split (scripts.tools.counterfactual_probe): attention mass in "
        "structure, the share of the attention map inside the foreground (voxels above 0); crop box share, the "
        "volume share of the test-time crop box (threshold 0.1); cos(f, f_cf), the cosine between the feature matrix "
        "under the learned and under the run's counterfactual attention; counterfactual margin sd, the spread over "
        "cases of Y(counterfactual)'s true-class margin.",
    ]
    lines += [
        "",
        "Val macro AUC: the kept checkpoint's macro AUC on the validation split, what a recipe is chosen on. Best "
        "epoch: the median over seeds of the epoch whose checkpoint was kept (best validation key metric).",
    ]
    if thresholds:
        lines += [
            "",
            "Val threshold: the threshold on the second class's probability that maximises macro F1 on the "
            "validation split (ties: nearest 0.5), chosen per run and applied unchanged to its test split.",
        ]
    else:
        lines += ["", "Multi-class task: thresholded metrics at argmax only (no single validation threshold)."]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def read_records(paths: Sequence[str | os.PathLike]) -> dict[tuple[str, int], dict]:
    """
    The runs of earlier comparisons' ``runs.csv`` files, keyed by (row, seed), with the values :func:`run_one`
    returns: numbers as floats (``seed`` and ``best_epoch`` as ints), empty cells as None. A later file's run
    replaces an earlier one's.
    """
    records = {}
    for path in paths:
        with open(path, newline="") as f:
            for line in csv.DictReader(f):
                run = {k: (v if k == "row" else None if v == "" else float(v)) for k, v in line.items()}
                for key in ("seed", "best_epoch"):
                    run[key] = None if run.get(key) is None else int(run[key])
                records[(run["row"], run["seed"])] = run
    return records


def write_csv(rows: Sequence[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_plot(results: Sequence[dict], rows: Sequence[str], path: Path, title: str = "") -> None:
    """
    One panel per metric (the validation-threshold ones too, for binary tasks) and row: every seed's test value as a
    dot, the mean as a tick with ± std whiskers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows if any(r["row"] == row for r in results)]
    names = {k: v for k, v in _names().items() if _known([r[k] for r in results])}
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 3.6), squeeze=False)
    colours = {"baseline": "#7f7f7f", "baseline_recipe": "#2ca02c", "cal": "#1f77b4", "cal_recipe": "#d62728"}
    for ax, (key, name) in zip(axes[0], names.items()):
        everything = _known([r[key] for r in results])
        for i, row in enumerate(rows):
            values = _known([r[key] for r in results if r["row"] == row])
            if not values:
                continue
            mean, std = _mean_std(values)
            colour = colours.get(row, "#9467bd")
            ax.errorbar(i, mean, yerr=std, fmt="_", markersize=22, color=colour, capsize=5, elinewidth=1.5)
            ax.scatter([i + 0.12] * len(values), values, color=colour, s=14, alpha=0.7, zorder=3)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([ROWS[r][0].replace(" (", "\n(").replace(" + ", "\n+ ") for r in rows], fontsize=6)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_ylim(max(0.0, min(everything) - 0.05), min(1.0, max(everything) + 0.05))
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    seeds: int = 3,
    rows: Sequence[str] = tuple(DEFAULT_ROWS),
    first_seed: int = 0,
    overrides: Sequence[str] | dict[str, Any] = (),
    title: str = "",
    configs: Sequence[str] = (),
    records: Sequence[str | os.PathLike] = (),
) -> list[dict]:
    """
    Train and evaluate every row for seeds ``first_seed .. first_seed + seeds - 1`` (seed-major, so that an
    early stop still leaves comparable rows), taking a (row, seed) found in one of the ``records`` files (an earlier
    comparison's ``runs.csv``) from there instead of running it, then write ``comparison.md``, ``comparison.csv``
    (one line per row), ``paired.csv`` (one line per comparison and metric), ``runs.csv`` (one line per run) and
    ``comparison.png`` into ``output_dir``. ``configs``: config files merged on ``configs/train.json`` in every run
    (paths relative to the bundle's folder, or absolute). Returns the summary.
    """
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}: choose from {list(ROWS)}.")
    missing = [c for c in configs if not (BUNDLE_ROOT / c).is_file()]
    if missing:
        raise FileNotFoundError(f"config files {missing} not found (paths are relative to '{BUNDLE_ROOT}').")
    dataset_dir, output_dir = Path(dataset_dir).resolve(), Path(output_dir).resolve()
    _ensure_data(dataset_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides) if isinstance(overrides, dict) else parse_overrides(overrides)
    recorded = read_records(records)
    start = time.perf_counter()
    results = []
    with _redirected():
        for seed in range(first_seed, first_seed + seeds):
            for row in rows:
                result = recorded.get((row, seed)) or run_one(row, seed, dataset_dir, output_dir, overrides, configs)
                results.append(result)
                figures = ", ".join(f"{k}={result[k]:.3f}" for k in _names() if result[k] is not None)
                source = " (recorded)" if (row, seed) in recorded else ""
                print(f"[{time.perf_counter() - start:7.0f} s] {row} seed {seed}{source}: {figures}", flush=True)
    differences = paired(results, rows)
    summary = summarize(results, rows, differences)
    write_csv(results, output_dir / "runs.csv")
    write_csv(summary, output_dir / "comparison.csv")
    if differences:
        write_csv(differences, output_dir / "paired.csv")
    text = write_markdown(summary, differences, output_dir / "comparison.md", title)
    write_plot(results, rows, output_dir / "comparison.png", title)
    print(text)
    print(f"wall time {(time.perf_counter() - start) / 60:.1f} min; results in {output_dir}")
    return summary


def _ensure_data(dataset_dir: Path) -> None:
    """
    A clear error when ``dataset_dir`` has no datalist; the bundle's default folder (``data/adrenalmnist3d``) is
    built from the embedded AdrenalMNIST3D first, as ``configs/train.json`` does on first use.
    """
    from ..data.datalist import DATALIST_NAME
    from ..data.default_data import prepare_default_data

    default = BUNDLE_ROOT / "data" / "adrenalmnist3d"
    if dataset_dir == default.resolve():
        prepare_default_data(dataset_dir, default, BUNDLE_ROOT / "docs" / "data" / "adrenalmnist3d.npz")
    if not (dataset_dir / DATALIST_NAME).is_file():
        raise FileNotFoundError(
            f"no {DATALIST_NAME} in '{dataset_dir}': convert data first (python -m scripts.tools.convert_medmnist), "
            f"give a folder with a datalist, or use the bundle's default data ('{default}', built on first use)."
        )


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tools.compare",
        description="Baseline, baseline + recipe, CAL and CAL + recipe, N seeds each, through the bundle's configs, "
        "with seed-paired statistics. Arguments after '--' are monai.bundle overrides given to every run (e.g. -- "
        "--epochs 8).",
    )
    parser.add_argument(
        "--dataset_dir",
        required=True,
        help="folder with datalist.json (e.g. from scripts.tools.convert_medmnist); data/adrenalmnist3d, the "
        "bundle's default, is built from the embedded AdrenalMNIST3D on first use",
    )
    parser.add_argument("--output_dir", required=True, help="folder for every run's checkpoint, logs and the table")
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="number of seeds per row (default 3; the Wilcoxon test needs 6 or more to reach p < 0.05)",
    )
    parser.add_argument("--first_seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--rows",
        default=",".join(DEFAULT_ROWS),
        help=f"comma-separated rows (default {DEFAULT_ROWS}), from {list(ROWS)}",
    )
    parser.add_argument("--title", default="", help="title of the table and the plot")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="config file merged on configs/train.json in every run, relative to the bundle's folder (repeatable; "
        "e.g. configs/synthetic_attention.json)",
    )
    parser.add_argument(
        "--records",
        action="append",
        default=[],
        help="an earlier comparison's runs.csv whose runs are taken instead of run again (repeatable), e.g. "
        "docs/results/adrenal28_v3/runs.csv to pair a new row with the recorded CAL runs",
    )
    args = parser.parse_args(own)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "command.txt").write_text(
        " ".join(["python -m scripts.tools.compare", *(_quote(a) for a in argv)]) + "\n"
    )
    rows = args.rows.split(",")
    compare(
        args.dataset_dir,
        args.output_dir,
        args.seeds,
        rows,
        args.first_seed,
        overrides,
        args.title,
        args.config,
        args.records,
    )


if __name__ == "__main__":
    main()
