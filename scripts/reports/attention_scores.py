# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Attention quality, scored against ground-truth masks of the discriminative region.

Two scores per case and saliency map, both computed at the network's input size, the mask going through the same
geometric preprocessing as the image (orientation, resize with nearest interpolation):

- **energy fraction**: the share of the map's sum inside the mask (maps are scaled to [0, 1] per case first);
  a uniform map scores the mask's volume fraction;
- **pointing game** (Zhang et al., ECCV 2016): a hit when the map's maximum lies inside the mask, or within
  ``tolerance`` voxels of it.

``configs/attention_scores.json`` runs them as the ``scoring`` workflow on a datalist whose items carry ``"mask"``
(the synthetic data set does); ``python -m scripts.tools.score_attention`` scores several models and summarises.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import min_version, optional_import

from ..data.datalist import split_items
from ..run.distributed import get_rank
from ..run.handlers import case_name

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = [
    "MAP_DESCRIPTIONS",
    "energy_fraction",
    "peak_distance",
    "pointing_game",
    "score_case",
    "summarize",
    "summary_markdown",
    "masked_items",
    "AttentionScoreReport",
]

MAP_DESCRIPTIONS = {
    "attention": "CAL attention map: mean of the M attention maps, trilinear to the input size, [0, 1] per case",
    "gradcam": "Grad-CAM of the predicted class on the backbone's last feature map, trilinear to the input size, "
    "[0, 1] per case",
}


def _volume(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A (D, H, W) float tensor from a (D, H, W) or (1, D, H, W) array."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x.detach().cpu()).float()
    return t[0] if t.ndim == 4 else t


def energy_fraction(saliency: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> float:
    """
    Share of a non-negative map's sum inside ``mask`` (both (D, H, W) or (1, D, H, W), same size), in [0, 1].
    A map that is zero everywhere carries no localisation: it scores like a uniform map, the mask's volume fraction.
    """
    s, m = _volume(saliency), _volume(mask) > 0.5
    if s.shape != m.shape:
        raise ValueError(f"saliency {tuple(s.shape)} and mask {tuple(m.shape)} must have the same size.")
    if s.min() < 0:
        raise ValueError("energy_fraction needs a non-negative map; scale it to [0, 1] first.")
    total = float(s.sum())
    return float(m.float().mean()) if total <= 0 else float(s[m].sum()) / total


def peak_distance(saliency: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> float:
    """
    Euclidean distance, in voxels, from the map's maximum (the first one in C order on ties) to the nearest mask
    voxel: 0 when the peak is inside the mask, ``inf`` for a constant map (it has no peak) or an empty mask.
    """
    s, m = _volume(saliency), _volume(mask) > 0.5
    if s.shape != m.shape:
        raise ValueError(f"saliency {tuple(s.shape)} and mask {tuple(m.shape)} must have the same size.")
    if not bool(m.any()) or float(s.max()) <= float(s.min()):
        return math.inf
    peak = torch.tensor(np.unravel_index(int(s.argmax()), tuple(s.shape)), dtype=torch.float32)
    return float((m.nonzero().float() - peak).norm(dim=1).min())


def pointing_game(saliency: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray, tolerance: float = 0.0) -> bool:
    """A hit when the map's maximum is inside ``mask`` or within ``tolerance`` voxels of it (:func:`peak_distance`)."""
    return peak_distance(saliency, mask) <= tolerance


def score_case(
    maps: Mapping[str, torch.Tensor | np.ndarray], mask: torch.Tensor | np.ndarray, tolerance: float = 0.0
) -> dict[str, float]:
    """
    Scores of one case's maps (name -> (D, H, W) map in [0, 1]) against its mask: ``mask_fraction`` and, per map,
    ``<name>_energy``, ``<name>_peak_distance``, ``<name>_hit`` (strict pointing game) and ``<name>_hit_tol``
    (within ``tolerance`` voxels), hits as 0.0 / 1.0, and ``<name>_empty`` (1.0 for a constant map, e.g. a Grad-CAM
    that the ReLU zeroes everywhere: it points nowhere and scores the mask's volume fraction in energy).
    """
    row = {"mask_fraction": float((_volume(mask) > 0.5).float().mean())}
    for name, saliency in maps.items():
        distance = peak_distance(saliency, mask)
        row[f"{name}_energy"] = energy_fraction(saliency, mask)
        row[f"{name}_peak_distance"] = distance
        row[f"{name}_hit"] = float(distance <= 0.0)
        row[f"{name}_hit_tol"] = float(distance <= tolerance)
        s = _volume(saliency)
        row[f"{name}_empty"] = float(float(s.max()) <= float(s.min()))
    return row


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def summarize(
    rows: Sequence[Mapping[str, Any]], map_names: Sequence[str], class_names: Sequence[str], tolerance: float
) -> dict[str, Any]:
    """
    Mean and standard deviation (over cases) of every score in ``rows`` (from :func:`score_case`, plus ``label``
    and ``correct``), overall and per true class. Returns a JSON-ready dict.
    """
    keys = {
        "energy_fraction": "energy",
        "pointing_game": "hit",
        "pointing_game_tolerance": "hit_tol",
        "empty_map": "empty",
    }

    def block(subset: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {
            "num_cases": len(subset),
            "accuracy": _stats([r["correct"] for r in subset]),
            "mask_fraction": _stats([r["mask_fraction"] for r in subset]),
            "maps": {m: {k: _stats([r[f"{m}_{s}"] for r in subset]) for k, s in keys.items()} for m in map_names},
        }

    summary = {"tolerance_voxels": tolerance, "map_descriptions": {m: MAP_DESCRIPTIONS.get(m, m) for m in map_names}}
    summary.update(block(rows))
    summary["per_class"] = {
        name: block([r for r in rows if r["label"] == i])
        for i, name in enumerate(class_names)
        if any(r["label"] == i for r in rows)
    }
    return summary


def _fmt(stats: Mapping[str, float]) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def summary_markdown(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown tables (overall, then per class) of one or more models' :func:`summarize` results, keyed by model."""
    first = next(iter(summaries.values()))
    tol = first["tolerance_voxels"]
    lines = [
        f"| model | saliency map | energy in mask | pointing game | pointing game (≤ {tol:g} voxels) | empty maps "
        "| accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, s in summaries.items():
        for m, scores in s["maps"].items():
            lines.append(
                f"| {model} | {m} | {_fmt(scores['energy_fraction'])} | {_fmt(scores['pointing_game'])} | "
                f"{_fmt(scores['pointing_game_tolerance'])} | {scores['empty_map']['mean']:.2f} | "
                f"{s['accuracy']['mean']:.3f} |"
            )
    classes = list(first["per_class"])
    lines += [
        "",
        "Per class (energy in mask / pointing game):",
        "",
        "| model | saliency map | " + " | ".join(classes) + " |",
        "| --- | --- | " + " | ".join("---" for _ in classes) + " |",
    ]
    for model, s in summaries.items():
        for m in s["maps"]:
            cells = []
            for c in classes:
                scores = s["per_class"][c]["maps"][m]
                cells.append(f"{scores['energy_fraction']['mean']:.3f} / {scores['pointing_game']['mean']:.3f}")
            lines.append(f"| {model} | {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{first['num_cases']} cases; mean ± standard deviation over cases. The mask covers "
        f"{_fmt(first['mask_fraction'])} of the volume: a uniform map's energy in the mask, and about a random "
        "peak's pointing-game hit rate. An empty map (constant, e.g. a Grad-CAM zeroed everywhere by its ReLU) "
        "has no peak: a pointing-game miss, and the volume fraction as energy.",
    ]
    for m, text in first["map_descriptions"].items():
        lines.append(f"- `{m}`: {text}.")
    return "\n".join(lines) + "\n"


def masked_items(datalist: Mapping[str, Any], split: str = "test") -> list[dict]:
    """
    Items of ``split`` of a parsed ``datalist`` (see :func:`scripts.data.datalist.read_datalist`), each checked to carry
    a ``"mask"`` file: scoring attention needs the ground-truth mask of the discriminative region per case.
    """
    items = split_items(datalist, split)
    source = datalist.get("path", "the datalist")
    if not items:
        raise ValueError(f"split '{split}' of '{source}' is empty: choose another split with --score_split.")
    for item in items:
        case = case_name(item["image"])
        if "mask" not in item:
            raise ValueError(
                f"case '{case}' in split '{split}' of '{source}' has no \"mask\": attention scores need a "
                f'ground-truth mask per case ("mask": "masks/{case}.nii.gz", same grid as the image); the '
                "embedded synthetic data set has them."
            )
        if not Path(item["mask"]).is_file():
            raise FileNotFoundError(f"mask of case '{case}' not found: '{item['mask']}'. Fix the path in the datalist.")
    return items


def _field(output: Mapping, batch: Mapping, key: str) -> Any:
    return output[key] if key in output else batch.get(key)


class AttentionScoreReport:
    """
    Scores every case's saliency maps (the engine output's ``map_keys``, e.g. from
    :class:`scripts.reports.saliency.SaliencyInferer`) against its mask when an evaluation epoch completes, and writes in
    ``output_dir`` (rank 0, rows gathered across ranks):

    - ``attention_scores.csv``: one row per case (``case``, ``label``, ``pred``, ``correct``, ``mask_fraction``
      and :func:`score_case`'s columns per map);
    - ``attention_scores.json`` / ``attention_scores.md``: :func:`summarize` and its Markdown tables;
    - ``maps/<case>.npz`` for the first ``save_maps`` cases: ``image``, ``mask`` and the maps at the network's
      input size, with ``label``, ``pred`` and ``class_names``, for ``python -m scripts.tools.montage``.

    Args:
        output_dir: folder of the files, created when missing.
        class_names: names of the classes, in index order.
        tolerance: the pointing game's tolerance, in voxels of the network input.
        save_maps: how many cases' maps to save.
        map_keys: keys of the (1, D, H, W) maps in the engine's output; missing ones are skipped.
        mask_key, pred_key, label_key, image_key: keys of the mask (in the batch), class probabilities, true class
            and image (whose ``filename_or_obj`` meta names the case).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        tolerance: float = 0.0,
        save_maps: int = 8,
        map_keys: Sequence[str] = ("attention", "gradcam"),
        mask_key: str = "mask",
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.tolerance = float(tolerance)
        self.save_maps = int(save_maps)
        self.map_keys = list(map_keys)
        self.mask_key, self.pred_key, self.label_key, self.image_key = mask_key, pred_key, label_key, image_key
        self.logger = logging.getLogger(self.__class__.__name__)
        self.summary: dict[str, Any] | None = None
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine | None = None) -> None:
        self.rows = []

    def _collect(self, engine: Engine) -> None:
        outputs, batches = engine.state.output, engine.state.batch
        if isinstance(outputs, dict):  # engine run without decollation
            from monai.data import decollate_batch

            outputs, batches = decollate_batch(outputs), decollate_batch(batches)
        for output, batch in zip(outputs, batches):
            image = _field(output, batch, self.image_key)
            name = case_name(getattr(image, "meta", {}).get("filename_or_obj", f"case_{len(self.rows)}"))
            mask = _field(output, batch, self.mask_key)
            if mask is None:
                raise KeyError(f"case '{name}' has no '{self.mask_key}' in the engine's output or batch.")
            maps = {k: output[k] for k in self.map_keys if k in output}
            if not maps:
                raise KeyError(f"case '{name}': none of the saliency maps {self.map_keys} is in the engine's output.")
            if not bool((_volume(mask) > 0.5).any()):
                raise ValueError(f"the mask of case '{name}' is empty at the network's input size: check the mask.")
            prob = torch.as_tensor(output[self.pred_key]).reshape(-1)
            label, pred = int(torch.as_tensor(output[self.label_key]).reshape(-1)[0]), int(prob.argmax())
            row: dict[str, Any] = {"case": name, "label": label, "label_name": self.class_names[label]}
            row.update({"pred": pred, "pred_name": self.class_names[pred], "correct": float(label == pred)})
            row.update(score_case(maps, mask, self.tolerance))
            self.rows.append(row)
            if len(self.rows) <= self.save_maps:
                self._save_maps(name, image, mask, maps, label, pred)

    def _save_maps(self, name: str, image: Any, mask: Any, maps: Mapping[str, Any], label: int, pred: int) -> None:
        folder = self.output_dir / "maps"
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {k: _volume(v).numpy().astype(np.float32) for k, v in {"image": image, **maps}.items()}
        arrays["mask"] = (_volume(mask).numpy() > 0.5).astype(np.uint8)
        np.savez_compressed(
            folder / f"{name}.npz", label=label, pred=pred, class_names=np.array(self.class_names), **arrays
        )

    def _write(self, engine: Engine) -> None:
        rows = self.rows
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            gathered: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
            if get_rank() != 0:
                return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        map_names = [k for k in self.map_keys if rows and f"{k}_energy" in rows[0]]
        with open(self.output_dir / "attention_scores.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["case"])
            writer.writeheader()
            writer.writerows(rows)
        self.summary = summarize(rows, map_names, self.class_names, self.tolerance)
        (self.output_dir / "attention_scores.json").write_text(json.dumps(self.summary, indent=2))
        (self.output_dir / "attention_scores.md").write_text(summary_markdown({"model": self.summary}))
        text = ", ".join(
            f"{m}: energy {self.summary['maps'][m]['energy_fraction']['mean']:.3f}, "
            f"pointing {self.summary['maps'][m]['pointing_game']['mean']:.3f}"
            for m in map_names
        )
        self.logger.info(f"attention scores ({len(rows)} cases) -> {self.output_dir}: {text}")
