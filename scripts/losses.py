# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The CAL loss: cross-entropy on the factual logits plus cross-entropy on the counterfactual effect."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CALLoss"]


class CALLoss(nn.Module):
    """
    ``factual_weight * CE(Y(A), y) + effect_weight * CE(Y(A) - Y(Ā), y)``; the seed's weights are 1/3 and 1.

    ``output`` is what :class:`scripts.cal_net.CALNet` returns in training: a dict with ``"logits"`` and
    ``"effect"`` (B, num_classes), or a plain logits tensor when CAL is off, which gets plain cross-entropy.
    ``target`` holds class indices, (B,) or (B, 1).

    Args:
        factual_weight: weight of the factual cross-entropy (with CAL on).
        effect_weight: weight of the effect cross-entropy.
        class_weights: optional per-class weights of every cross-entropy term (for imbalanced data).
        label_smoothing: label smoothing of every cross-entropy term.
    """

    def __init__(
        self,
        factual_weight: float = 1.0 / 3.0,
        effect_weight: float = 1.0,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.factual_weight = factual_weight
        self.effect_weight = effect_weight
        self.label_smoothing = label_smoothing
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float)
        self.register_buffer("class_weights", weight, persistent=False)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of logits (B, num_classes) against class indices (B,)."""
        weight = None if self.class_weights is None else self.class_weights.to(logits)
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=self.label_smoothing)

    def forward(self, output: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        target = torch.as_tensor(target).reshape(-1).long()
        if not isinstance(output, dict):
            return self.cross_entropy(output, target)
        factual = self.cross_entropy(output["logits"], target)
        effect = self.cross_entropy(output["effect"], target)
        return self.factual_weight * factual + self.effect_weight * effect
