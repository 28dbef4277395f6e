# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The CAL loss: cross-entropy on the factual logits plus cross-entropy on the counterfactual effect, and, as options,
the original recipe's terms: a centre loss on the feature matrix and cross-entropy on attention-guided crop/drop
copies of the input (see :mod:`scripts.recipe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .cal_net import CAL_OUTPUT_KEYS, CALOutput

__all__ = ["CenterLoss", "CALLoss"]


class CenterLoss(nn.Module):
    """
    Centre loss with moving-average class centres, as in the original CAL/WS-DAN code: with centres C
    (num_classes, K), for feature matrices f (B, K) and labels y (B,), the loss is
    ``sum((f - normalize(C[y]))**2) / B`` and, in training, the centres then move:
    ``C[y] += beta * (f.detach() - normalize(C[y]))``, an indexed assignment in the original, so that each class
    present in the batch takes one step per training step, from its last case in the batch (cases of the same class
    do not add up). The centres start at zero and are created on the first call (K is the feature size); they are
    a buffer, saved with the loss's state.

    Args:
        num_classes: number of classes.
        beta: the centres' update rate (0.05 in the original).
    """

    def __init__(self, num_classes: int, beta: float = 0.05) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.beta = beta
        self.register_buffer("centers", None)

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = torch.as_tensor(target, device=features.device).reshape(-1).long()
        if self.centers is None or self.centers.shape[1] != features.shape[1]:
            self.centers = features.new_zeros(self.num_classes, features.shape[1])
        self.centers = self.centers.to(features.device)
        batch_centers = F.normalize(self.centers[target], dim=-1)
        loss = ((features - batch_centers) ** 2).sum() / features.shape[0]
        if self.training:
            with torch.no_grad():
                # the last case of each class present: what ``C[y] += ...`` with repeated indices writes
                positions = torch.arange(target.numel(), device=target.device)
                last = torch.full((self.num_classes,), -1, device=target.device, dtype=torch.long)
                last = last.scatter_reduce(0, target, positions, reduce="amax")
                rows = last[last >= 0]
                step = self.beta * (features.detach()[rows] - batch_centers[rows])
                self.centers[target[rows]] += step
        return loss


class CALLoss(nn.Module):
    """
    ``factual_weight * CE(Y(A), y) + effect_weight * CE(Y(A) - Y(Ā), y)``; the seed's weights are 1/3 and 1.

    ``output`` is a :class:`scripts.cal_net.CALOutput`, what :class:`scripts.cal_net.CALNet` returns in training
    (and :class:`scripts.recipe.AttentionAugmentInferer` passes on; a plain classifier's logits are wrapped by
    :func:`scripts.cal_net.cal_output`); ``target`` holds class indices, (B,) or (B, 1). Its ``"effect"``
    (B, num_classes) is None when CAL is off: the factual logits then get plain cross-entropy (weight 1).

    The original recipe's terms are added when their fields are not None:

    - ``"features"`` (B, K) and ``center_weight > 0``: ``center_weight *`` :class:`CenterLoss` (with
      ``center_weight > 0`` and no features, a ValueError says how to build the network);
    - ``"aug_logits"`` (B, A, num_classes), logits of A augmented copies of each case
      (:class:`scripts.recipe.AttentionAugmentInferer`): ``augment_weight * CE(aug_logits, y)``, and the effect
      term is taken over the raw and augmented effects together (``"aug_effect"``), as in the original:
      ``CE(raw)/3 + CE(effect over raw and augmented) + CE(augmented) * 2/3 + centre loss``.

    Args:
        factual_weight: weight of the factual cross-entropy (with CAL on).
        effect_weight: weight of the effect cross-entropy.
        class_weights: optional per-class weights of every cross-entropy term (for imbalanced data).
        label_smoothing: label smoothing of every cross-entropy term.
        center_weight: weight of the centre loss (0: off; the original: 1).
        center_beta: the centres' update rate.
        num_classes: number of classes, needed when ``center_weight > 0``.
        augment_weight: weight of the cross-entropy on augmented copies (the original: 2/3).
    """

    def __init__(
        self,
        factual_weight: float = 1.0 / 3.0,
        effect_weight: float = 1.0,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        center_weight: float = 0.0,
        center_beta: float = 0.05,
        num_classes: int | None = None,
        augment_weight: float = 2.0 / 3.0,
    ) -> None:
        super().__init__()
        self.factual_weight = factual_weight
        self.effect_weight = effect_weight
        self.label_smoothing = label_smoothing
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float)
        self.register_buffer("class_weights", weight, persistent=False)
        self.center_weight = center_weight
        self.augment_weight = augment_weight
        self.center_loss: CenterLoss | None = None
        if center_weight > 0:
            if num_classes is None:
                raise ValueError("the centre loss needs num_classes: pass num_classes with center_weight > 0.")
            self.center_loss = CenterLoss(num_classes, center_beta)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of logits (B, num_classes) against class indices (B,)."""
        weight = None if self.class_weights is None else self.class_weights.to(logits)
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=self.label_smoothing)

    def forward(self, output: CALOutput, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss of a :class:`scripts.cal_net.CALOutput` against class indices ``target`` (B,) or (B, 1)."""
        _check_output(output)
        target = torch.as_tensor(target).reshape(-1).long()
        aug_logits, aug_effect, effect = output["aug_logits"], output["aug_effect"], output["effect"]
        aug_target = None
        if aug_logits is not None:
            aug_target = target.to(aug_logits.device).repeat_interleave(aug_logits.shape[1])
            aug_logits = aug_logits.reshape(-1, aug_logits.shape[-1])
        if effect is not None:
            loss = self.factual_weight * self.cross_entropy(output["logits"], target)
            effect_target = target
            if aug_target is not None and aug_effect is not None:
                aug_effect = aug_effect.reshape(-1, effect.shape[-1])
                effect, effect_target = torch.cat([effect, aug_effect]), torch.cat([target, aug_target])
            loss = loss + self.effect_weight * self.cross_entropy(effect, effect_target)
        else:
            loss = self.cross_entropy(output["logits"], target)
        if aug_logits is not None:
            loss = loss + self.augment_weight * self.cross_entropy(aug_logits, aug_target)
        if self.center_loss is not None:
            if output["features"] is None:
                raise ValueError(
                    "the centre loss (center_weight > 0) needs the feature matrix, and the network returned none: "
                    "build CALNet with return_features=True (train.json sets it when center_loss_weight > 0), or set "
                    "center_weight to 0."
                )
            loss = loss + self.center_weight * self.center_loss(output["features"], target)
        return loss


def _check_output(output: Any) -> None:
    """Raise a TypeError naming what to do unless ``output`` is a :class:`scripts.cal_net.CALOutput`."""
    if isinstance(output, dict) and set(output) == set(CAL_OUTPUT_KEYS):
        return
    got = f"a dict with keys {sorted(output)}" if isinstance(output, dict) else type(output).__name__
    raise TypeError(
        f"CALLoss reads a CALOutput (a dict with the keys {CAL_OUTPUT_KEYS}), what CALNet returns in train() mode; "
        f"got {got}. Wrap a plain classifier's logits with scripts.cal_net.cal_output(logits)."
    )
