# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Attention maps at inference: an inferer that returns the logits together with the CAL attention map."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from torch import nn

from .run.distributed import unwrap_network

__all__ = ["AttentionInferer", "attention_map"]


def attention_map(attentions: torch.Tensor, size: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """
    One map per case from M attention maps (B, M, d, h, w): their mean, resized (trilinear) to ``size`` and
    scaled to [0, 1] per case. Returns (B, 1, *size).
    """
    amap = F.interpolate(attentions.float().mean(dim=1, keepdim=True), size=size, mode="trilinear", align_corners=False)
    low = amap.flatten(1).amin(dim=1).view(-1, 1, 1, 1, 1)
    high = amap.flatten(1).amax(dim=1).view(-1, 1, 1, 1, 1)
    return (amap - low) / (high - low).clamp_min(1e-12)


class AttentionInferer(Inferer):
    """
    Runs ``network.forward_attention`` (see :class:`scripts.cal_net.CALNet`) and returns
    ``{"logits": (B, num_classes), "attention": (B, 1, D, H, W)}``, the attention map at the input's size
    (:func:`attention_map`), ready to be inverted to the image's space and saved. Extra inputs (the tabular values
    of a multimodal network, passed by ``PrepareBatchExtraInput``) go to the network too. A network without
    ``forward_attention`` (a plain classifier, or the tabular-only model) gives ``{"logits": ...}`` only.
    """

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        module = unwrap_network(network)
        if not hasattr(module, "forward_attention"):
            return {"logits": network(inputs, *args, **kwargs)}
        logits, attentions = module.forward_attention(inputs, *args, **kwargs)
        return {"logits": logits, "attention": attention_map(attentions, inputs.shape[2:])}
