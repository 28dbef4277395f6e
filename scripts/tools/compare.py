# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Does CAL help? Train the same network as the baseline (CAL off), with CAL, and with CAL plus the original recipe
(centre loss, attention-guided crop/drop, test-time crop averaging), on the same data, split, seeds, augmentation
and budget, N seeds each; evaluate every run on the test split; write the table (mean ± std over seeds) as Markdown
and CSV, the per-run figures as CSV, and a plot::

    python -m scripts.tools.compare --dataset_dir data/adrenal28 --output_dir runs/adrenal28 --seeds 3 -- \\
        --num_classes 2 --spatial_size "[28,28,28]" --backbone resnet --epochs 8

Everything after ``--`` is passed to every run as ``monai.bundle`` overrides (``--key value`` pairs, parsed as on
the ``monai.bundle`` command line). Each run is the bundle's ``training`` workflow (``configs/train.json``) then its
``evaluating`` workflow (``configs/evaluate.json`` merged on it), executed with ``monai.bundle.run`` in this
process (the bundle's own configs, no second training loop; one import of torch and MONAI for all runs). A run's
output goes to ``<output_dir>/<row>/seed<k>/{train,evaluate}.log`` and its equivalent command lines to
``commands.sh`` beside them; its checkpoint stays in ``<row>/seed<k>/models/model.pt`` and its test results in
``metrics.json`` and ``predictions.csv`` there. A finished run (``result.json`` present) is not repeated, so an
interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import shlex
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "ROWS",
    "METRICS",
    "parse_overrides",
    "run_one",
    "summarize",
    "write_markdown",
    "write_plot",
    "compare",
    "main",
]

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["configs/train.json"]
EVALUATE = ["configs/train.json", "configs/evaluate.json"]

# Row name -> (label, overrides).
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("baseline (CAL off)", {"cal": False}),
    "cal": ("CAL (seed recipe)", {"cal": True}),
    "cal_recipe": (
        "CAL + full recipe",
        {"cal": True, "center_loss_weight": 1.0, "attention_augment": True, "tta": True},
    ),
}
METRICS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "f1_macro": "macro F1",
    "auc_macro": "macro AUC",
}


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
    as their stream, so their output in later runs lands in those runs' logs too.
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
    try:
        yield streams
    finally:
        sys.stdout, sys.stderr = streams[0].console, streams[1].console


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


def run_one(row: str, seed: int, dataset_dir: Path, output_dir: Path, overrides: dict[str, Any]) -> dict:
    """Train and evaluate one (row, seed); returns its test metrics and wall times (reused when already there)."""
    run_dir = output_dir / row / f"seed{seed}"
    result_file = run_dir / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    common = {
        "dataset_dir": str(dataset_dir),
        "ckpt_dir": str(run_dir / "models"),
        "output_dir": str(run_dir),
        "seed": seed,
        **ROWS[row][1],
        **overrides,
    }
    commands = [_command("training", TRAIN, common), _command("evaluating", EVALUATE, common)]
    (run_dir / "commands.sh").write_text("# from the bundle's folder\n" + "\n".join(commands) + "\n")
    train_s = _bundle("training", TRAIN, common, run_dir / "train.log")
    eval_s = _bundle("evaluating", EVALUATE, common, run_dir / "evaluate.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = {"row": row, "seed": seed, **{k: metrics[k] for k in METRICS}, "train_s": train_s, "eval_s": eval_s}
    result_file.write_text(json.dumps(result, indent=2))
    return result


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarize(results: Sequence[dict], rows: Sequence[str]) -> list[dict]:
    """
    Per row: number of seeds, mean and std of every metric, mean training time, and the difference to the
    baseline paired by seed (``<metric>_diff_mean``, ``<metric>_diff_std``; NaN for the baseline itself).
    """
    base = {r["seed"]: r for r in results if r["row"] == "baseline"}
    summary = []
    for row in rows:
        runs = [r for r in results if r["row"] == row]
        if not runs:
            continue
        entry: dict = {"row": row, "label": ROWS[row][0], "seeds": len(runs)}
        for key in METRICS:
            values = [r[key] for r in runs if r[key] is not None]
            entry[f"{key}_mean"], entry[f"{key}_std"] = _mean_std(values) if values else (math.nan, math.nan)
            diffs = [
                r[key] - base[r["seed"]][key]
                for r in runs
                if row != "baseline" and r["seed"] in base and None not in (r[key], base[r["seed"]][key])
            ]
            entry[f"{key}_diff_mean"], entry[f"{key}_diff_std"] = _mean_std(diffs) if diffs else (math.nan, math.nan)
        entry["train_min_mean"] = sum(r["train_s"] for r in runs) / len(runs) / 60
        summary.append(entry)
    return summary


def write_markdown(summary: Sequence[dict], path: Path, title: str = "") -> str:
    """
    The summary as Markdown: test metrics (mean ± sample std over seeds) per row, then each row's difference to
    the baseline, paired by seed.
    """
    header = "| row | seeds | " + " | ".join(f"test {name}" for name in METRICS.values()) + " | train min/run |"
    lines = ([f"**{title}**", ""] if title else []) + [header, "|" + " --- |" * (len(METRICS) + 3)]
    for s in summary:
        cells = [f"{s[f'{k}_mean']:.3f} ± {s[f'{k}_std']:.3f}" for k in METRICS]
        lines.append(f"| {s['label']} | {s['seeds']} | " + " | ".join(cells) + f" | {s['train_min_mean']:.1f} |")
    paired = [s for s in summary if not math.isnan(s["accuracy_diff_mean"])]
    if paired:
        lines += ["", "| difference to the baseline (same seed) | " + " | ".join(METRICS.values()) + " |"]
        lines.append("|" + " --- |" * (len(METRICS) + 1))
        for s in paired:
            cells = [f"{s[f'{k}_diff_mean']:+.3f} ± {s[f'{k}_diff_std']:.3f}" for k in METRICS]
            lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def write_csv(rows: Sequence[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_plot(results: Sequence[dict], rows: Sequence[str], path: Path, title: str = "") -> None:
    """One panel per metric and row: every seed's test value as a dot, the mean as a tick with ± std whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows if any(r["row"] == row for r in results)]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 3.4), squeeze=False)
    colours = ["#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for ax, (key, name) in zip(axes[0], METRICS.items()):
        for i, row in enumerate(rows):
            values = [r[key] for r in results if r["row"] == row and r[key] is not None]
            if not values:
                continue
            mean, std = _mean_std(values)
            colour = colours[i % len(colours)]
            ax.errorbar(i, mean, yerr=std, fmt="_", markersize=22, color=colour, capsize=5, elinewidth=1.5)
            ax.scatter([i + 0.12] * len(values), values, color=colour, s=14, alpha=0.7, zorder=3)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([ROWS[r][0].replace(" (", "\n(").replace(" + ", "\n+ ") for r in rows], fontsize=7)
        ax.set_title(name, fontsize=9)
        low = min((r[key] for r in results if r[key] is not None), default=0.0)
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(r[key] for r in results if r[key] is not None) + 0.05))
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
    rows: Sequence[str] = tuple(ROWS),
    first_seed: int = 0,
    overrides: Sequence[str] | dict[str, Any] = (),
    title: str = "",
) -> list[dict]:
    """
    Train and evaluate every row for seeds ``first_seed .. first_seed + seeds - 1`` (seed-major, so that an
    early stop still leaves comparable rows), then write ``comparison.md``, ``comparison.csv`` (mean/std per row),
    ``runs.csv`` (one line per run) and ``comparison.png`` into ``output_dir``. Returns the summary.
    """
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}: choose from {list(ROWS)}.")
    dataset_dir, output_dir = Path(dataset_dir).resolve(), Path(output_dir).resolve()
    if not (dataset_dir / "datalist.json").is_file():
        raise FileNotFoundError(
            f"no datalist.json in '{dataset_dir}': convert data first (python -m scripts.tools.convert_medmnist) or "
            f"give a folder with a datalist."
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides) if isinstance(overrides, dict) else parse_overrides(overrides)
    start = time.perf_counter()
    results = []
    with _redirected():
        for seed in range(first_seed, first_seed + seeds):
            for row in rows:
                result = run_one(row, seed, dataset_dir, output_dir, overrides)
                results.append(result)
                figures = ", ".join(f"{k}={result[k]:.3f}" for k in METRICS if result[k] is not None)
                print(f"[{time.perf_counter() - start:7.0f} s] {row} seed {seed}: {figures}", flush=True)
    summary = summarize(results, rows)
    write_csv(results, output_dir / "runs.csv")
    write_csv(summary, output_dir / "comparison.csv")
    text = write_markdown(summary, output_dir / "comparison.md", title)
    write_plot(results, rows, output_dir / "comparison.png", title)
    print(text)
    print(f"wall time {(time.perf_counter() - start) / 60:.1f} min; results in {output_dir}")
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tools.compare",
        description="Baseline vs CAL vs CAL + full recipe, N seeds each, through the bundle's configs. Arguments "
        "after '--' are monai.bundle overrides given to every run (e.g. -- --num_classes 2 --epochs 8).",
    )
    parser.add_argument(
        "--dataset_dir", required=True, help="folder with datalist.json (e.g. from scripts.tools.convert_medmnist)"
    )
    parser.add_argument("--output_dir", required=True, help="folder for every run's checkpoint, logs and the table")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per row (default 3)")
    parser.add_argument("--first_seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows, from {list(ROWS)}")
    parser.add_argument("--title", default="", help="title of the table and the plot")
    args = parser.parse_args(own)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "command.txt").write_text(
        " ".join(["python -m scripts.tools.compare", *(_quote(a) for a in argv)]) + "\n"
    )
    compare(args.dataset_dir, args.output_dir, args.seeds, args.rows.split(","), args.first_seed, overrides, args.title)


if __name__ == "__main__":
    main()
