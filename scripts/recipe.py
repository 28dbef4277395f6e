# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The original CAL recipe's attention-guided data augmentation, in 3D (Rao et al., ICCV 2021, after WS-DAN).

- Training: per case, two of the M attention maps are drawn with probability proportional to the square root of
  their spatial sum; the first one **crops** the input to the bounding box of its voxels at or above θ·max
  (θ ~ U(0.4, 0.6), box padded by 10% of the input size and resized back to it), the second one **drops** the
  voxels where it is at or above θ·max (θ ~ U(0.2, 0.5)). Both copies go through a second forward pass:
  :class:`AttentionAugmentInferer` returns their logits beside the raw ones, for :class:`scripts.losses.CALLoss`.
- Test time: :class:`AttentionCropInferer` averages the logits of the raw input with those of crops guided by the
  mean attention map (the original validates with one crop at θ 0.1 and padding 5%; its final test adds crops at
  θ 0.3 and 0.2 with padding 10%, and the same on a flipped copy).

Attention maps are expected non-negative (the ``conv_bn_relu`` attention block); negative values are clipped.
Random draws use torch's global generator, which ``monai.utils.set_determinism`` seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from torch import nn

from .attention import attention_map
from .cal_net import CALOutput, cal_output
from .data.loading import plain_tensor
from .run.distributed import unwrap_network

__all__ = [
    "select_attention_maps",
    "crop_boxes",
    "attention_crop",
    "attention_drop",
    "AttentionAugmentInferer",
    "AttentionCropInferer",
]


def _uniform(low: float, high: float, n: int, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=device)


def _thetas(theta: float | Sequence[float], n: int, device: torch.device) -> torch.Tensor:
    """Per-case thresholds (n,): a fixed fraction, or drawn uniformly from a ``(low, high)`` range."""
    if isinstance(theta, (int, float)):
        return torch.full((n,), float(theta), device=device)
    low, high = (float(t) for t in theta)
    return _uniform(low, high, n, device)


def select_attention_maps(attentions: torch.Tensor, num: int = 2) -> torch.Tensor:
    """
    Draw ``num`` of the M maps of each case (with replacement), map m with probability ∝ sqrt(sum of A[m]) as in
    the original code. ``attentions`` (B, M, d, h, w) -> (B, num, d, h, w).
    """
    a = attentions.detach().clamp_min(0)
    weights = torch.sqrt(a.sum(dim=(2, 3, 4)) + 1e-6)  # (B, M), never all zero
    index = torch.multinomial(weights, num, replacement=True)  # (B, num)
    return a[torch.arange(a.shape[0], device=a.device)[:, None], index]


def _upsampled_masks(maps: torch.Tensor, size: Sequence[int], thetas: torch.Tensor) -> torch.Tensor:
    """
    Voxels of each map (B, 1, d, h, w), resized (trilinear) to ``size``, at or above θ times the resized map's
    maximum (so that the peak voxel is always in), zero voxels never: bool (B, 1, *size).
    """
    maps = maps.detach().float().clamp_min(0)
    resized = F.interpolate(maps, size=tuple(size), mode="trilinear", align_corners=False)
    threshold = thetas.view(-1, 1, 1, 1, 1) * resized.amax(dim=(1, 2, 3, 4), keepdim=True)
    return (resized >= threshold) & (resized > 0)


def crop_boxes(
    maps: torch.Tensor, size: Sequence[int], theta: float | Sequence[float], padding: float = 0.1
) -> torch.Tensor:
    """
    Boxes around the attended voxels: for each case, the bounding box of the voxels where its map (B, 1, d, h, w),
    resized to ``size`` (D, H, W), is at or above θ·max, widened by ``padding`` times the size on each side
    and clipped to the volume. ``theta`` is a fraction or a ``(low, high)`` range to draw it from per case.
    Returns (B, 3, 2) integers ``[[z0, z1], [y0, y1], [x0, x1]]``, ends exclusive; an all-zero map gives the
    whole volume.
    """
    b = maps.shape[0]
    mask = _upsampled_masks(maps, size, _thetas(theta, b, maps.device))
    boxes = torch.zeros(b, 3, 2, dtype=torch.long)
    for i in range(b):
        voxels = mask[i, 0].nonzero()
        for axis, extent in enumerate(size):
            if voxels.numel() == 0:
                boxes[i, axis] = torch.tensor([0, extent])
                continue
            pad = padding * extent
            low = max(math.floor(float(voxels[:, axis].min()) - pad), 0)
            high = min(math.ceil(float(voxels[:, axis].max()) + 1 + pad), extent)
            boxes[i, axis] = torch.tensor([low, high])
    return boxes


def attention_crop(
    images: torch.Tensor, maps: torch.Tensor, theta: float | Sequence[float], padding: float = 0.1
) -> torch.Tensor:
    """
    Crop each image (B, C, D, H, W) to its :func:`crop_boxes` box under ``maps`` (B, 1, d, h, w) and resize the
    crop back to (D, H, W) (trilinear). Returns a tensor shaped like ``images``.
    """
    size = images.shape[2:]
    boxes = crop_boxes(maps, size, theta, padding)
    crops = []
    for i in range(images.shape[0]):
        (z0, z1), (y0, y1), (x0, x1) = boxes[i].tolist()
        crop = images[i : i + 1, :, z0:z1, y0:y1, x0:x1]
        crops.append(F.interpolate(crop, size=tuple(size), mode="trilinear", align_corners=False))
    return torch.cat(crops).to(images.dtype)


def attention_drop(images: torch.Tensor, maps: torch.Tensor, theta: float | Sequence[float]) -> torch.Tensor:
    """
    Zero the voxels of each image (B, C, D, H, W) where its map (B, 1, d, h, w), resized to the image, is at or
    above θ·max: the most attended part is hidden. Returns a tensor shaped like ``images``.
    """
    mask = _upsampled_masks(maps, images.shape[2:], _thetas(theta, images.shape[0], images.device))
    return images * (~mask).to(images.dtype)


class AttentionAugmentInferer(Inferer):
    """
    Training inferer of the original recipe; returns a :class:`scripts.cal_net.CALOutput` in every setting, what
    :class:`scripts.losses.CALLoss` reads. Runs the network on the batch; with ``enabled``, draws a crop and a
    drop copy of every case from its attention maps (:func:`select_attention_maps`, :func:`attention_crop`,
    :func:`attention_drop`, no gradient) and runs the network on both copies in a second pass. Returns the first
    pass's output with ``"attentions"`` set to None (used up) and ``"aug_logits"`` (B, 2, num_classes) set to the
    crop's and the drop's logits, and ``"aug_effect"`` (B, 2, num_classes) to their effects when the network
    computes the counterfactual (None otherwise). Disabled, it is a plain forward pass (as ``SimpleInferer``). A
    plain classifier's logits tensor (the tabular-only model) becomes a :class:`~scripts.cal_net.CALOutput` with
    ``logits`` alone (:func:`scripts.cal_net.cal_output`).

    With ``enabled`` the network must return its attention maps in training (``CALNet(return_features=True)``).

    Args:
        enabled: run the attention-guided crop/drop pass.
        crop_theta: crop threshold, a fraction of the map's maximum or a ``(low, high)`` range drawn per case.
        crop_padding: the crop box's margin, a fraction of the input size per side.
        drop_theta: drop threshold, a fraction or a ``(low, high)`` range.
    """

    def __init__(
        self,
        enabled: bool = True,
        crop_theta: float | Sequence[float] = (0.4, 0.6),
        crop_padding: float = 0.1,
        drop_theta: float | Sequence[float] = (0.2, 0.5),
    ) -> None:
        super().__init__()
        self.enabled = enabled
        self.crop_theta = crop_theta
        self.crop_padding = crop_padding
        self.drop_theta = drop_theta

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> CALOutput:
        if not self.enabled:
            return _as_cal_output(network(inputs, *args, **kwargs))
        inputs = plain_tensor(inputs)  # cropping and re-batching cases must not touch per-case meta dicts
        output = _as_cal_output(network(inputs, *args, **kwargs))
        attentions = output["attentions"]
        if attentions is None:
            raise ValueError(
                "attention-guided crop/drop needs the attention maps in the network's training output: build the "
                "network with return_features=True (in the configs this follows --attention_augment True)."
            )
        with torch.no_grad():
            maps = select_attention_maps(attentions, 2)
            crops = attention_crop(inputs, maps[:, :1], self.crop_theta, self.crop_padding)
            drops = attention_drop(inputs, maps[:, 1:], self.drop_theta)
        twice = [_repeat_batch(a) for a in args], {k: _repeat_batch(v) for k, v in kwargs.items()}
        # extra inputs (tabular) for both copies
        aug = _as_cal_output(network(torch.cat([crops, drops]), *twice[0], **twice[1]))
        b = inputs.shape[0]
        aug_logits, aug_effect = aug["logits"], aug["effect"]
        output = CALOutput(**output)  # a copy: the network's own dict stays as it returned it
        output["attentions"] = None
        output["aug_logits"] = torch.stack([aug_logits[:b], aug_logits[b:]], dim=1)
        if aug_effect is not None:
            output["aug_effect"] = torch.stack([aug_effect[:b], aug_effect[b:]], dim=1)
        return output


def _as_cal_output(output: Any) -> CALOutput:
    """A network's training output as a CALOutput: CALNet's as it is, a plain classifier's logits wrapped."""
    return cal_output(output) if isinstance(output, torch.Tensor) else output


def _repeat_batch(value: Any) -> Any:
    """A batched extra network input (e.g. tabular values (B, L)) repeated for two copies of the batch (2B, L)."""
    return torch.cat([value, value]) if isinstance(value, torch.Tensor) else value


class AttentionCropInferer(Inferer):
    """
    Test-time averaging of the original recipe: the logits of the raw input averaged with those of attention
    crops, one per threshold in ``thetas``, each guided by the mean of the M attention maps (eval mode, through
    ``network.forward_attention``); with ``flip``, the same again on a copy flipped along the last spatial axis,
    and the two averages averaged. Returns logits (B, num_classes), or with ``return_attention``
    ``{"logits": ..., "attention": (B, 1, D, H, W)}`` like :class:`scripts.attention.AttentionInferer` (the raw
    input's attention map). Disabled, it is a plain forward pass (as ``SimpleInferer``).

    Args:
        enabled: average over attention crops.
        thetas: crop thresholds, fractions of the mean map's maximum (the original: 0.1 in validation,
            0.3, 0.2 and 0.1 in its final test).
        padding: crop margin per side as a fraction of the input size, one value or one per threshold
            (the original: 0.1 for 0.3 and 0.2, 0.05 for 0.1).
        flip: also average over a flipped copy of the input.
        return_attention: return the attention map with the logits (for inference.json's postprocessing).
    """

    def __init__(
        self,
        enabled: bool = True,
        thetas: Sequence[float] = (0.1,),
        padding: float | Sequence[float] = 0.05,
        flip: bool = False,
        return_attention: bool = False,
    ) -> None:
        super().__init__()
        self.enabled = enabled
        self.thetas = [float(t) for t in thetas]
        paddings = [float(padding)] * len(self.thetas) if isinstance(padding, (int, float)) else list(padding)
        if len(paddings) != len(self.thetas):
            raise ValueError(f"give one padding or one per threshold: {len(paddings)} for {len(self.thetas)}.")
        self.paddings = paddings
        self.flip = flip
        self.return_attention = return_attention

    def _averaged(
        self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, attentions = unwrap_network(network).forward_attention(inputs, *args, **kwargs)
        mean_map = attentions.mean(dim=1, keepdim=True)
        total = logits
        for theta, padding in zip(self.thetas, self.paddings):
            total = total + network(attention_crop(inputs, mean_map, theta, padding), *args, **kwargs)
        return total / (1 + len(self.thetas)), attentions

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            if not self.return_attention:
                return network(inputs, *args, **kwargs)
            if not hasattr(unwrap_network(network), "forward_attention"):
                return {"logits": network(inputs, *args, **kwargs)}
            logits, attentions = unwrap_network(network).forward_attention(inputs, *args, **kwargs)
            return {"logits": logits, "attention": attention_map(attentions, inputs.shape[2:])}
        inputs = plain_tensor(inputs)
        logits, attentions = self._averaged(inputs, network, *args, **kwargs)
        if self.flip:
            logits = (logits + self._averaged(torch.flip(inputs, dims=(-1,)), network, *args, **kwargs)[0]) / 2
        if self.return_attention:
            return {"logits": logits, "attention": attention_map(attentions, inputs.shape[2:])}
        return logits
