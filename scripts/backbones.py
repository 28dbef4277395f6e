# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Backbone adapters: each wraps a MONAI network so that it returns its last feature map (B, C, d, h, w)
and exposes the channel count ``out_channels``, which is what the CAL head needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121, DenseNet169, ViT, resnet10, resnet18, resnet34, resnet50
from monai.utils import ensure_tuple_rep
from torch import nn

__all__ = ["ViTBackbone", "DenseNetBackbone", "ResNetBackbone", "BACKBONES", "build_backbone"]


class ViTBackbone(nn.Module):
    """
    MONAI ViT whose token sequence (B, N, hidden) is folded back into a feature map (B, hidden, d, h, w),
    with ``d = D / patch_size`` etc. The seed's ViT-B is ``img_size=64, patch_size=16, hidden_size=768,
    mlp_dim=3072, num_layers=12, num_heads=12`` (feature map 4x4x4).
    """

    def __init__(
        self,
        in_channels: int = 1,
        img_size: Sequence[int] | int = 64,
        patch_size: Sequence[int] | int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        dropout_rate: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        img = ensure_tuple_rep(img_size, 3)
        patch = ensure_tuple_rep(patch_size, 3)
        if any(i % p for i, p in zip(img, patch)):
            raise ValueError(f"img_size {img} must be divisible by patch_size {patch}.")
        self.grid = tuple(i // p for i, p in zip(img, patch))
        self.out_channels = hidden_size
        self.vit = ViT(
            in_channels=in_channels,
            img_size=img,
            patch_size=patch,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout_rate=dropout_rate,
            classification=False,
            spatial_dims=3,
            **kwargs,
        )
        # MONAI's transformer blocks build a cross-attention LayerNorm even without cross-attention; it never gets
        # a gradient, which DistributedDataParallel rejects. Freezing it keeps the state dict as it is.
        for block in self.vit.blocks:
            if not block.with_cross_attention:
                block.norm_cross_attn.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, D, H, W) -> (B, hidden_size, D/p, H/p, W/p)."""
        tokens = self.vit(x)[0]  # (B, N, hidden), tokens ordered as the patch grid flattened (d, h, w)
        b, _, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, self.grid[0], self.grid[1], self.grid[2])


class DenseNetBackbone(nn.Module):
    """MONAI DenseNet's ``features`` followed by the ReLU its classifier would apply: stride 32."""

    def __init__(self, in_channels: int = 1, depth: int = 121, **kwargs: Any) -> None:
        super().__init__()
        net_cls = {121: DenseNet121, 169: DenseNet169}[depth]
        net = net_cls(spatial_dims=3, in_channels=in_channels, out_channels=1, **kwargs)
        self.features = net.features
        self.out_channels = net.class_layers.out.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, D, H, W) -> (B, C, D/32, H/32, W/32)."""
        return F.relu(self.features(x))


class ResNetBackbone(nn.Module):
    """
    MONAI 3D ResNet up to ``layer4``. ``conv1_t_stride=1`` and ``no_max_pool=True`` reduce the stride from 32
    to 8, which keeps a usable attention grid on small volumes; ``widen_factor`` scales the width.
    ``num_stages`` < 4 stops after ``layer<num_stages>``: each stage fewer halves the stride (a finer attention
    grid) at a lower cost, e.g. a stride-2 first convolution and 3 stages give a 4x4x4 grid on 28^3 input.
    """

    def __init__(self, in_channels: int = 1, depth: int = 18, num_stages: int = 4, **kwargs: Any) -> None:
        super().__init__()
        if num_stages not in (1, 2, 3, 4):
            raise ValueError(f"num_stages must be 1, 2, 3 or 4, got {num_stages}.")
        factory = {10: resnet10, 18: resnet18, 34: resnet34, 50: resnet50}[depth]
        net = factory(spatial_dims=3, n_input_channels=in_channels, feed_forward=False, **kwargs)
        stem = [net.conv1, net.bn1, net.act] + ([] if net.no_max_pool else [net.maxpool])
        self.stem = nn.Sequential(*stem)
        stages = [net.layer1, net.layer2, net.layer3, net.layer4][:num_stages]
        self.layers = nn.Sequential(*stages)
        if num_stages == 4:
            self.out_channels = net.in_planes
        else:  # the last normalisation layer of the last stage kept has its output width
            self.out_channels = [m for m in stages[-1].modules() if hasattr(m, "num_features")][-1].num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, D, H, W) -> (B, C, d, h, w)."""
        return self.layers(self.stem(x))


BACKBONES: dict[str, type[nn.Module]] = {"vit": ViTBackbone, "densenet": DenseNetBackbone, "resnet": ResNetBackbone}


def build_backbone(name: str, in_channels: int, spatial_size: Sequence[int] | int, **kwargs: Any) -> nn.Module:
    """
    Build a backbone by name (``"vit"``, ``"densenet"``, ``"resnet"``); ``kwargs`` go to its constructor.
    ``spatial_size`` is the network's input size, used by the ViT as ``img_size``.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}', choose one of {sorted(BACKBONES)}.")
    if name == "vit":
        kwargs.setdefault("img_size", spatial_size)
    return BACKBONES[name](in_channels=in_channels, **kwargs)
