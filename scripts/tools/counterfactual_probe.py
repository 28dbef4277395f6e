# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
What a trained CAL network's attention and counterfactual look like, per case of a split, for the comparison
(:mod:`scripts.tools.compare`) to log per row and seed:

- ``attention_mass``: the share of the attention map's sum (mean of the M maps, trilinear to the input size, scaled
  to [0, 1] per case: :func:`scripts.reports.attention_scores.energy_fraction`) inside the structure, the voxels above
  ``foreground`` (AdrenalMNIST3D's volumes are shape masks, so the foreground is the gland);
- ``crop_share``: the volume share of the test-time crop box (:func:`scripts.recipe.crop_boxes` at the recipe's
  validation threshold 0.1 and padding 0.05), how focused the attention is;
- ``cos_counterfactual``: the cosine between the feature matrix under the learned attention, f, and under the
  counterfactual attention of the run's kind, f̄ (1: the counterfactual pools the same features; ``random`` on a
  coarse grid is close to a global average);
- ``cf_margin_sd``: the standard deviation over cases of the counterfactual prediction's margin (the true class's
  logit of Y(Ā) minus the largest other one): near 0 when Y(Ā) carries no information about the case.

Each figure is the mean over the split's cases (``cf_margin_sd`` the spread). Usage, for one trained run::

    python -m scripts.tools.counterfactual_probe --ckpt_path eval/compare/x/cal/seed0/models/model.pt \\
        --dataset_dir data/adrenalmnist3d -- --counterfactual random
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["PROBES", "probe_network", "probe_run", "main"]

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
PROBES = ["attention_mass", "crop_share", "cos_counterfactual", "cf_margin_sd"]


def _case_figures(
    network: torch.nn.Module, image: torch.Tensor, label: int, counterfactual: str, foreground: float, seed: int
) -> dict[str, float]:
    """The probe's figures for one preprocessed image (1, C, D, H, W) of class ``label``."""
    from scripts.attention import attention_map
    from scripts.cal_net import counterfactual_attention
    from scripts.recipe import crop_boxes
    from scripts.reports.attention_scores import energy_fraction

    features = network.backbone(image)
    attentions = network.attention(features)
    size = image.shape[2:]
    saliency = attention_map(attentions, size)[0, 0]
    mass = energy_fraction(saliency, image[0, 0] > foreground)
    box = crop_boxes(attentions.mean(dim=1, keepdim=True), size, 0.1, 0.05)[0]
    crop_share = float((box[:, 1] - box[:, 0]).prod()) / float(torch.tensor(size).prod())
    factual = network.bap.pool_features(features, attentions)
    fake = counterfactual_attention(attentions, counterfactual, torch.Generator().manual_seed(seed))
    counter = network.bap.pool_features(features, fake)
    cos = float(F.cosine_similarity(factual, counter, dim=1)[0])
    logits = network.classify(counter)[0]
    others = torch.cat([logits[:label], logits[label + 1 :]])
    return {"attention_mass": mass, "crop_share": crop_share, "cos_counterfactual": cos,
            "margin": float(logits[label] - others.max())}  # fmt: skip


@torch.no_grad()
def probe_network(
    network: torch.nn.Module,
    cases: Sequence[tuple[torch.Tensor, int]],
    counterfactual: str = "random",
    foreground: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:
    """
    The :data:`PROBES` of a :class:`scripts.cal_net.CALNet` (eval mode) over ``cases``: (image (C, D, H, W) after
    preprocessing, class index) pairs. The counterfactual of each case is drawn from a generator seeded with
    ``seed`` plus the case's index, so two networks are probed with the same draws.
    """
    network.eval()
    per_case = [
        _case_figures(network, image[None].float(), int(label), counterfactual, foreground, seed + i)
        for i, (image, label) in enumerate(cases)
    ]
    result = {key: statistics.mean(c[key] for c in per_case) for key in PROBES[:3]}
    margins = [c["margin"] for c in per_case]
    result["cf_margin_sd"] = statistics.stdev(margins) if len(margins) > 1 else 0.0
    return result


def probe_run(
    ckpt_path: str | Path,
    dataset_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    config_files: Sequence[str] = ("configs/train.json",),
    split: str = "test",
    foreground: float = 0.0,
) -> dict[str, float]:
    """
    Build the network and the validation preprocessing of the bundle's ``config_files`` (relative to the bundle)
    with ``overrides`` (a run's), load ``ckpt_path`` and probe the ``split`` of ``dataset_dir``'s datalist.
    """
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    from scripts.run.checkpoints import load_weights

    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / c) for c in config_files])
    parser.update({"bundle_root": str(BUNDLE_ROOT), "dataset_dir": str(dataset_dir), **dict(overrides or {})})
    network = parser.get_parsed_content("network_def")
    load_weights(ckpt_path, network)
    items = parser.get_parsed_content("parsed_datalist")[split]
    transform = Compose(parser.get_parsed_content("preprocessing"))
    cases = []
    for item in items:
        data = transform({"image": item["image"]})
        cases.append((torch.as_tensor(data["image"]), int(item["label"])))
    return probe_network(network, cases, parser.get_parsed_content("counterfactual"), foreground)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    from scripts.tools.compare import parse_overrides

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ckpt_path", required=True, help="the trained run's model.pt")
    parser.add_argument("--dataset_dir", required=True, help="a folder with a datalist.json")
    parser.add_argument("--split", default="test", help="the datalist split to probe (default test)")
    parser.add_argument("--foreground", type=float, default=0.0, help="voxels above it are the structure (default 0)")
    parser.add_argument("overrides", nargs="*", help="after --: the run's overrides, '--key value' pairs")
    args = parser.parse_args(argv)
    result = probe_run(args.ckpt_path, args.dataset_dir, parse_overrides(args.overrides), split=args.split,
                       foreground=args.foreground)  # fmt: skip
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
