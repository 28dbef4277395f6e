# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Saliency maps at the network's input size: the CAL attention map, and Grad-CAM on the last feature map for any
classifier (with or without attention maps), so that two models can be compared on a common saliency.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from monai.inferers import Inferer
from monai.visualize import GradCAM
from torch import nn

from ..attention import attention_map
from ..run.distributed import unwrap_network

__all__ = ["normalize_per_case", "grad_cam", "SaliencyInferer"]

_CAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def normalize_per_case(maps: torch.Tensor) -> torch.Tensor:
    """
    Scale maps (B, 1, ...) to [0, 1] per case, min -> 0 and max -> 1; a constant map becomes all zeros.
    (MONAI's default Grad-CAM normaliser maps max -> 0, which suits display colour maps, not scoring.)
    """
    flat = maps.float().flatten(1)
    low = flat.amin(dim=1).view(-1, *[1] * (maps.ndim - 1))
    high = flat.amax(dim=1).view(-1, *[1] * (maps.ndim - 1))
    return (maps.float() - low) / (high - low).clamp_min(1e-12)


def _cam(network: nn.Module, layer: str) -> GradCAM:
    """One GradCAM per (network, layer): MONAI's hooks stay registered on the network, so they are made once."""
    cams = _CAMS.setdefault(network, {})
    if layer not in cams:
        if layer not in dict(network.named_modules()):
            names = [name for name, _ in network.named_modules() if name and "." not in name]
            raise ValueError(f"Grad-CAM layer '{layer}' is not a module of the network; top-level modules: {names}.")
        cams[layer] = GradCAM(nn_module=network, target_layers=layer, postprocessing=normalize_per_case)
    return cams[layer]


def grad_cam(
    network: nn.Module, inputs: torch.Tensor, layer: str = "backbone", class_idx: torch.Tensor | None = None
) -> torch.Tensor:
    """
    Grad-CAM (Selvaraju et al., ICCV 2017) of ``inputs`` (B, C, D, H, W) on the output of the module named
    ``layer`` (for :class:`scripts.cal_net.CALNet`, ``"backbone"``: the last feature map), for class ``class_idx``
    (B,) per case (default: the predicted class). Uses :class:`monai.visualize.GradCAM`, case by case (its class
    score sums over the batch otherwise), with gradients enabled even inside an evaluator's ``no_grad``.
    Returns (B, 1, D, H, W): ReLU of the gradient-weighted feature map, upsampled (trilinear) to the input's
    size and scaled to [0, 1] per case (:func:`normalize_per_case`).
    """
    cam = _cam(network, layer)
    maps = []
    with torch.enable_grad():
        for i in range(inputs.shape[0]):
            idx = None if class_idx is None else int(class_idx[i])
            case = inputs[i : i + 1].detach().requires_grad_(True)  # lets MONAI's full backward hook fire quietly
            maps.append(cam(case, class_idx=idx))
    network.zero_grad(set_to_none=True)
    return torch.cat(maps).detach()


class SaliencyInferer(Inferer):
    """
    Returns ``{"logits": (B, num_classes), "attention": (B, 1, D, H, W), "gradcam": (B, 1, D, H, W)}`` for
    images (B, C, D, H, W): the CAL attention map (:func:`scripts.attention.attention_map`: mean of the M maps,
    trilinear to the input size, [0, 1] per case) when the network has ``forward_attention``, and Grad-CAM of the
    predicted class on ``gradcam_layer`` (:func:`grad_cam`) unless it is None. Every map is at the network's
    input size, in the preprocessed image's voxel grid.
    """

    def __init__(self, gradcam_layer: str | None = "backbone") -> None:
        super().__init__()
        self.gradcam_layer = gradcam_layer

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        module = unwrap_network(network)
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            if hasattr(module, "forward_attention"):
                out["logits"], attentions = module.forward_attention(inputs)
                out["attention"] = attention_map(attentions, inputs.shape[2:])
            else:
                out["logits"] = module(inputs, *args, **kwargs)
        if self.gradcam_layer:
            out["gradcam"] = grad_cam(module, inputs, self.gradcam_layer, out["logits"].argmax(dim=1))
        return out
