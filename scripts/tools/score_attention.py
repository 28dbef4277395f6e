# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Score the attention of trained models against ground-truth masks: one ``monai.bundle run scoring`` per model on the
test split of a datalist whose items carry ``"mask"`` (the synthetic data set, ``python -m
scripts.tools.synthetic_data``), then a combined summary::

    python -m scripts.tools.score_attention --runs cal=eval/runs/cal/models/model.pt \\
        baseline=eval/runs/baseline/models/model.pt --output_dir eval/attention

Any further ``--key value`` goes to every bundle run (e.g. ``--dataset_dir``, ``--backbone``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..reports.attention_scores import summary_markdown

__all__ = ["main"]

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
SCORING_CONFIGS = (
    "configs/train.json",
    "configs/synthetic_attention.json",
    "configs/evaluate.json",
    "configs/attention_scores.json",
)


def _parse_runs(runs: Sequence[str]) -> dict[str, Path]:
    parsed = {}
    for run in runs:
        name, sep, path = run.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--runs takes NAME=PATH/TO/model.pt items, got '{run}'.")
        if not Path(path).is_file():
            raise SystemExit(f"checkpoint of run '{name}' not found: '{path}'. Train it first or fix the path.")
        parsed[name] = Path(path).resolve()
    return parsed


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Score each ``--runs NAME=model.pt`` with ``monai.bundle run scoring``, then write the combined summary."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tools.score_attention",
        description="Score the attention of trained models against ground-truth masks (see the module's doc).",
    )
    parser.add_argument("--runs", nargs="+", required=True, help="NAME=path/to/model.pt, one per model")
    parser.add_argument("--output_dir", default="eval/attention", help="results: <output_dir>/<NAME>/ and summary")
    parser.add_argument("--tolerance", type=float, default=2.0, help="pointing-game tolerance, input voxels")
    parser.add_argument("--save_maps", type=int, default=8, help="cases whose maps are saved for the montage")
    parser.add_argument("--config_file", default=None, help="bundle configs (default: train+evaluate+scoring)")
    args, overrides = parser.parse_known_args(argv)
    runs = _parse_runs(args.runs)
    out = Path(args.output_dir).resolve()
    configs = args.config_file or str([str(BUNDLE_ROOT / c) for c in SCORING_CONFIGS])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BUNDLE_ROOT), os.environ.get("PYTHONPATH")]))}
    summaries = {}
    for name, ckpt in runs.items():
        cmd = [
            sys.executable, "-m", "monai.bundle", "run", "scoring", "--config_file", configs,
            "--bundle_root", str(BUNDLE_ROOT), "--ckpt_path", str(ckpt), "--output_dir", str(out / name),
            "--score_tolerance", str(args.tolerance), "--save_maps", str(args.save_maps), *overrides,
        ]  # fmt: skip
        print(f"scoring {name}: {ckpt}", flush=True)
        subprocess.run(cmd, check=True, env=env)
        summaries[name] = json.loads((out / name / "attention_scores.json").read_text())
    rows = []
    for name in runs:
        with open(out / name / "attention_scores.csv", newline="") as f:
            rows += [{"model": name, **row} for row in csv.DictReader(f)]
    fields = list(dict.fromkeys(key for row in rows for key in row))  # models may differ in their maps
    with open(out / "attention_scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    markdown = summary_markdown(summaries)
    (out / "summary.md").write_text(markdown)
    print(markdown)
    return summaries


if __name__ == "__main__":
    main()
