# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Training curves of one training run, as two small PNG files: the training loss (mean over each epoch's
iterations) and a validation metric per epoch, read from the run's TensorBoard event files (``log_dir``, by default
``eval/train/``)::

    python -m scripts.tools.plot_curves --log_dir eval/train --output_dir docs/images

writes ``<output_dir>/training_loss.png`` and ``<output_dir>/validation_auc.png`` (``--metric val_f1`` ...: another
validation metric, ``validation_<name>.png``) and prints the values per epoch. The pictures are 256-colour PNGs.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

__all__ = ["read_scalars", "epoch_means", "save_curve", "main"]


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float, float]]]:
    """Every scalar tag in the event files under ``log_dir``: tag -> [(step, value, wall_time), ...], by step."""
    files = sorted(Path(log_dir).glob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files in '{log_dir}': train first, or give the run's log_dir.")
    scalars: dict[str, dict[int, tuple[float, float]]] = {}
    for file in files:
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: (e.value, e.wall_time) for e in acc.Scalars(tag)})
    return {tag: [(step, *values[step]) for step in sorted(values)] for tag, values in scalars.items()}


def epoch_means(
    iteration_values: Sequence[tuple[int, float, float]], epoch_ends: Sequence[tuple[int, float, float]]
) -> list[float]:
    """
    Mean of per-iteration values over each epoch. An epoch's iterations are those logged after the previous epoch's
    end and up to its own, the epoch ends being the wall times of a per-epoch tag (``epoch_ends``, e.g. the trainer's
    ``train_accuracy``, logged when an epoch completes); iterations of an epoch still running are left out.
    """
    times = np.array([t for _, _, t in iteration_values])
    values = np.array([v for _, v, _ in iteration_values], dtype=np.float64)
    means, start = [], -np.inf
    for _, _, end in epoch_ends:
        inside = (times > start) & (times <= end)
        means.append(float(values[inside].mean()) if inside.any() else float("nan"))
        start = end
    return means


def save_curve(
    epochs: Sequence[int],
    values: Sequence[float],
    ylabel: str,
    title: str,
    path: str | Path,
    mark_best: str | None = None,
    dpi: int = 80,
) -> Path:
    """One curve against the epoch, saved as a 256-colour PNG; ``mark_best`` ("max"/"min") circles the best epoch."""
    fig = Figure(figsize=(4.0, 3.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(epochs, values, marker="o", markersize=3, linewidth=1.2, color="tab:blue")
    if mark_best:
        best = int(np.argmax(values) if mark_best == "max" else np.argmin(values))
        ax.plot([epochs[best]], [values[best]], marker="o", markersize=9, fillstyle="none", color="tab:red")
        ax.annotate(
            f"epoch {epochs[best]}: {values[best]:.3f}",
            (epochs[best], values[best]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=8,
            color="tab:red",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.set_xticks(list(epochs))
    ax.grid(True, linewidth=0.4, alpha=0.5)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        image.convert("RGB").quantize(256).save(path, format="PNG", optimize=True)
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, list[float]]:
    """Read the run's event files, print the per-epoch values and write the two pictures."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.tools.plot_curves", description="Training-loss and validation curves of one run."
    )
    parser.add_argument("--log_dir", default="eval/train", help="the run's TensorBoard folder (train.json's log_dir)")
    parser.add_argument("--output_dir", default="eval/curves", help="where the PNG files go")
    parser.add_argument("--metric", default="val_auc", help="validation tag to plot (val_auc, val_f1, val_accuracy)")
    parser.add_argument("--loss_tag", default="train_loss", help="per-iteration training loss tag")
    parser.add_argument("--epoch_tag", default="train_accuracy", help="a tag logged once per epoch, at its end")
    args = parser.parse_args(argv)
    scalars = read_scalars(args.log_dir)
    for tag in (args.metric, args.loss_tag, args.epoch_tag):
        if tag not in scalars:
            raise SystemExit(f"tag '{tag}' not in '{args.log_dir}' (found: {', '.join(sorted(scalars))}).")
    val = {step: value for step, value, _ in scalars[args.metric]}
    ends = [end for end in scalars[args.epoch_tag] if end[0] in val]  # epochs that were validated
    epochs = [step for step, _, _ in ends]
    metric = [val[epoch] for epoch in epochs]
    loss = epoch_means(scalars[args.loss_tag], scalars[args.epoch_tag])
    loss = [loss[i] for i, end in enumerate(scalars[args.epoch_tag]) if end[0] in val]
    name = args.metric[4:] if args.metric.startswith("val_") else args.metric
    out = Path(args.output_dir)
    save_curve(epochs, loss, "training loss (epoch mean)", "Training loss", out / "training_loss.png", mark_best=None)
    label = {"auc": "AUC (macro)", "f1": "macro F1", "accuracy": "accuracy"}.get(name, name)
    save_curve(epochs, metric, f"validation {label}", f"Validation {label}", out / f"validation_{name}.png", "max")
    print("epoch\ttrain_loss\t" + args.metric)
    for epoch, loss_value, value in zip(epochs, loss, metric):
        print(f"{epoch}\t{loss_value:.4f}\t{value:.4f}")
    return {"epoch": epochs, "train_loss": loss, args.metric: metric}


if __name__ == "__main__":
    main()
