# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The tabular branch of the multimodal CAL network: missing-value imputation and normalisation with statistics
stored in the module (so a saved model carries them), then a small MLP that gives the tabular embedding; and the
tabular-only classifier (that branch and a linear layer), the third arm of the modality comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["TabularEncoder", "TabularClassifier"]


class TabularEncoder(nn.Module):
    """
    Embeds a vector of L tabular values (B, L) into (B, ``out_channels``).

    The missing-value rule: a NaN is replaced by the column's training mean, i.e. it becomes 0 after
    standardisation ``(x - mean) / std``; with ``missing_indicator`` a 0/1 "was missing" flag per column is
    appended, so the MLP can tell an imputed mean from a measured one. ``mean`` and ``std`` are buffers: they are
    saved in the state dict (``models/model.pt``, TorchScript) and restored with the weights, so evaluation and
    inference apply the training split's statistics with no extra file. Without them the normalisation is the
    identity (mean 0, std 1) until :meth:`set_statistics` or a state dict sets them (in the bundle,
    :class:`scripts.run.handlers.TabularStatisticsHandler` sets them from the training split when training starts).

    The MLP is ``Linear -> ReLU -> Dropout`` per entry of ``hidden_channels``; its last width is the embedding size.

    Args:
        in_features: L, the number of tabular values per case.
        hidden_channels: widths of the MLP's layers, the last one being the embedding size.
        dropout: dropout probability after each layer.
        missing_indicator: append a missing-value flag per column to the MLP's input.
        mean: per-column training means (L,), or None for 0.
        std: per-column training standard deviations (L,), or None for 1; values <= 0 are taken as 1.
    """

    def __init__(
        self,
        in_features: int,
        hidden_channels: Sequence[int] = (32, 16),
        dropout: float = 0.0,
        missing_indicator: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1 (the tabular vector's length), got {in_features}.")
        if not hidden_channels:
            raise ValueError("hidden_channels needs at least one layer width.")
        self.in_features = in_features
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        self.set_statistics(self.mean if mean is None else mean, self.std if std is None else std)
        self.missing_indicator = missing_indicator
        layers: list[nn.Module] = []
        width = in_features * (2 if missing_indicator else 1)
        for channels in hidden_channels:
            layers += [nn.Linear(width, int(channels)), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = int(channels)
        self.mlp = nn.Sequential(*layers)
        self.out_channels = width

    def set_statistics(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Store the training split's per-column ``mean`` and ``std`` (L,) in the buffers (std <= 0 taken as 1)."""
        mean_t = torch.as_tensor(mean, dtype=torch.float).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float).reshape(-1)
        if mean_t.numel() != self.in_features or std_t.numel() != self.in_features:
            raise ValueError(
                f"tabular statistics have {mean_t.numel()} means and {std_t.numel()} stds, expected {self.in_features}."
            )
        with torch.no_grad():
            self.mean.copy_(torch.nan_to_num(mean_t, nan=0.0))
            self.std.copy_(torch.where(std_t > 0, std_t, torch.ones_like(std_t)))

    def normalize(self, tabular: torch.Tensor) -> torch.Tensor:
        """
        Raw values (B, L), NaN where missing -> standardised values with missing ones at 0, followed by the
        missing flags when ``missing_indicator``: (B, L) or (B, 2L).
        """
        x = tabular.float()
        missing = torch.isnan(x)
        z = (torch.where(missing, self.mean.expand_as(x), x) - self.mean) / self.std
        if self.missing_indicator:
            return torch.cat([z, missing.to(z.dtype)], dim=1)
        return z

    def forward(self, tabular: torch.Tensor) -> torch.Tensor:
        """(B, L) raw tabular values -> (B, out_channels) embedding."""
        if tabular.dim() != 2 or tabular.shape[1] != self.in_features:
            raise ValueError(f"expected tabular values of shape (B, {self.in_features}), got {list(tabular.shape)}.")
        return self.mlp(self.normalize(tabular))


class TabularClassifier(nn.Module):
    """
    The tabular-only model: :class:`TabularEncoder` then a linear classifier, (B, L) values -> (B, num_classes)
    logits. It has no image branch, no attention and no counterfactual; it is what a multimodal claim is compared
    with (``--use_image False`` in the bundle's configs). It takes the image as its first input and ignores it, so
    the bundle's engines, inferers and TorchScript export call it as they call the fused network:
    ``network(images, tabular)``. Its state-dict keys (``tabular.*``, ``tabular_fc.*``) are those of the fused
    network's tabular branch.

    Args:
        num_classes: number of output classes.
        tabular_features: L, the number of tabular values per case.
        tabular_kwargs: constructor arguments of the :class:`TabularEncoder`.
        fc_bias: whether the classifier has a bias.
    """

    def __init__(
        self,
        num_classes: int,
        tabular_features: int,
        tabular_kwargs: dict[str, Any] | None = None,
        fc_bias: bool = True,
    ) -> None:
        super().__init__()
        if tabular_features < 1:
            raise ValueError(
                f"a tabular-only model needs tabular values: tabular_features is {tabular_features}; set "
                f"--use_tabular True and --tabular_length."
            )
        self.tabular = TabularEncoder(tabular_features, **(tabular_kwargs or {}))
        self.tabular_fc = nn.Linear(self.tabular.out_channels, num_classes, bias=fc_bias)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, tabular: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, ...) (ignored) and tabular values (B, L), NaN where missing -> logits (B, num_classes)."""
        if tabular is None:
            raise ValueError("a TabularClassifier needs the tabular values (B, L) as its second input.")
        return self.tabular_fc(self.tabular(tabular))
