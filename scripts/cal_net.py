# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Counterfactual Attention Learning (CAL) for 3D volumes: bilinear attention pooling (BAP3D), counterfactual
attention, and the CAL network (backbone + attention maps + BAP3D + linear classifier).

Reference: Rao et al., "Counterfactual Attention Learning for Fine-Grained Visual Categorization and
Re-identification", ICCV 2021.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone
from .tabular_net import TabularEncoder

__all__ = [
    "EPSILON",
    "COUNTERFACTUALS",
    "CAL_OUTPUT_KEYS",
    "CALOutput",
    "cal_output",
    "factual_logits",
    "signed_sqrt_normalize",
    "counterfactual_attention",
    "BAP3D",
    "CALNet",
]

EPSILON = 1e-6
COUNTERFACTUALS = ("random", "uniform", "reversed", "shuffle", "sparse")


class CALOutput(TypedDict):
    """
    What :class:`CALNet` returns in ``train()`` mode, and what :class:`scripts.losses.CALLoss` reads: a dict whose
    keys are always these (:data:`CAL_OUTPUT_KEYS`), a field that does not apply being None, never absent. In the
    terms of the design notes, for B cases, K classes, M attention maps of C channels:

    - ``logits``: the factual prediction Y(A), (B, K);
    - ``counterfactual_logits``: Y(Ā), (B, K), under the counterfactual attention Ā; None with ``cal=False``;
    - ``effect``: Y(A) - Y(Ā), (B, K), what the effect cross-entropy reads; None with ``cal=False``;
    - ``features``: the feature matrix f, (B, M*C), with ``return_features`` (the centre loss); None otherwise;
    - ``attentions``: the attention maps A, (B, M, d, h, w), with ``return_features`` (attention-guided crop/drop);
      None otherwise, and None once :class:`scripts.recipe.AttentionAugmentInferer` has used them;
    - ``aug_logits``, ``aug_effect``: (B, 2, K), the logits and effects of the crop and drop copies of each case,
      filled by :class:`scripts.recipe.AttentionAugmentInferer` (``aug_effect`` only with ``cal=True``); the
      network itself leaves them None.

    A plain dict rather than a dataclass: MONAI's engines decollate the prediction (``decollate_batch`` splits a
    dict per case and cannot split a dataclass), DDP and ``torch.compile`` traverse dicts, and TorchScript compiles
    ``Dict[str, Optional[Tensor]]``. Build one with :func:`cal_output`.
    """

    logits: torch.Tensor
    counterfactual_logits: torch.Tensor | None
    effect: torch.Tensor | None
    features: torch.Tensor | None
    attentions: torch.Tensor | None
    aug_logits: torch.Tensor | None
    aug_effect: torch.Tensor | None


CAL_OUTPUT_KEYS: tuple[str, ...] = tuple(CALOutput.__annotations__)


def cal_output(logits: torch.Tensor, **fields: torch.Tensor | None) -> CALOutput:
    """
    A :class:`CALOutput` with the factual ``logits`` (B, K) and the given fields, every other field None; e.g. a
    plain classifier's training logits (the tabular-only model) as the loss reads them.
    """
    unknown = sorted(set(fields) - set(CAL_OUTPUT_KEYS))
    if unknown:
        raise KeyError(f"not fields of CALOutput: {unknown}; the fields are {CAL_OUTPUT_KEYS}.")
    output = dict.fromkeys(CAL_OUTPUT_KEYS)
    output.update(fields, logits=logits)
    return output  # type: ignore[return-value]


def signed_sqrt_normalize(x: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """Signed square root ``sign(x) * sqrt(|x| + eps)`` then L2 normalisation over the last dim: (B, K) -> (B, K)."""
    return F.normalize(torch.sign(x) * torch.sqrt(torch.abs(x) + eps), dim=-1)


def counterfactual_attention(
    attentions: torch.Tensor, kind: str = "random", generator: torch.Generator | None = None
) -> torch.Tensor:
    """
    Counterfactual attention maps Ā for ``attentions`` A (B, M, d, h, w), same shape, no gradient.

    - ``random``: uniform in [0, 2) per voxel and map (the seed's and the CAL code's choice);
    - ``uniform``: every voxel of a map set to that map's spatial mean (no location information);
    - ``reversed``: ``max(A) - A`` per map, attending where the model does not;
    - ``shuffle``: another case's maps (the batch rolled by a random non-zero shift); with a batch of one,
      the voxels of each map are permuted instead;
    - ``sparse``: random attention with each learned map's own sparsity: every voxel of map m is kept with
      probability p_m (the share of A[m]'s voxels above zero, at least one voxel's share) and then drawn uniform in
      [0, 2); the others are zero. Unlike ``random``, whose maps are close to all ones on a coarse grid (a global
      average), it attends to a few random places, as sparsely as the model does.

    The random kinds draw from ``generator`` (a CPU :class:`torch.Generator`; the draws are moved to A's device), or
    from torch's global generator when it is None.
    """
    a = attentions.detach()
    if kind == "random":
        return torch.rand(a.shape, generator=generator).to(a.device, a.dtype) * 2.0
    if kind == "uniform":
        return a.mean(dim=(2, 3, 4), keepdim=True).expand_as(a).contiguous()
    if kind == "reversed":
        return a.amax(dim=(2, 3, 4), keepdim=True) - a
    if kind == "shuffle":
        b = a.shape[0]
        if b > 1:
            shift = int(torch.randint(1, b, (1,), generator=generator).item())
            return torch.roll(a, shifts=shift, dims=0)
        flat = a.flatten(2)
        order = torch.randperm(flat.shape[-1], generator=generator).to(a.device)
        return flat.index_select(2, order).view_as(a)
    if kind == "sparse":
        voxels = a.shape[2] * a.shape[3] * a.shape[4]
        density = (a > 0).flatten(2).float().mean(dim=2).clamp(min=1.0 / voxels)[..., None, None, None]
        keep = torch.rand(a.shape, generator=generator).to(a.device, a.dtype) < density
        return torch.rand(a.shape, generator=generator).to(a.device, a.dtype) * 2.0 * keep
    raise ValueError("unknown counterfactual '" + kind + "', choose random, uniform, reversed, shuffle or sparse.")


class BAP3D(nn.Module):
    """
    Bilinear attention pooling for 3D feature maps, with its counterfactual.

    For attention maps A (B, M, d, h, w) and features F (B, C, D, H, W), ``f[m, c]`` pools ``A[m] * F[c]`` over
    the voxels: the mean (``pool="GAP"``) or the maximum (``pool="GMP"``). A is resized (trilinear) to F's size
    when they differ. The (B, M*C) result goes through signed square root and L2 normalisation.

    Called as ``bap(features, attentions)`` it returns the factual and the counterfactual feature matrices (the
    seed's call); :meth:`pool_features` gives the factual one alone (what inference needs).

    The counterfactual draws from the module's own CPU :class:`torch.Generator` (``self.generator``), seeded once
    from torch's global generator when the module is built, so that a network trained with the counterfactual and
    one trained without it consume the global random stream (data order, augmentation, weight initialisation)
    identically: paired runs differ by the counterfactual alone. Its state is saved with a training checkpoint.

    Args:
        pool: ``"GAP"`` (global average, the default) or ``"GMP"`` (global max).
        counterfactual: the counterfactual attention in training, one of :data:`COUNTERFACTUALS` (see
            :func:`counterfactual_attention`). In eval mode it is all ones, as in the seed.
        eps: the signed square root's epsilon.
    """

    def __init__(self, pool: str = "GAP", counterfactual: str = "random", eps: float = EPSILON) -> None:
        super().__init__()
        if pool not in ("GAP", "GMP"):
            raise ValueError(f"pool must be 'GAP' or 'GMP', got '{pool}'.")
        if counterfactual not in COUNTERFACTUALS:
            raise ValueError(f"unknown counterfactual '{counterfactual}', choose one of {COUNTERFACTUALS}.")
        self.pool = pool
        self.counterfactual = counterfactual
        self.eps = eps
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))

    __jit_ignored_attributes__ = ["generator"]  # TorchScript cannot hold or save a generator

    def pool_features(self, features: torch.Tensor, attentions: torch.Tensor) -> torch.Tensor:
        """Feature matrix of ``features`` (B, C, D, H, W) under ``attentions`` (B, M, d, h, w): (B, M*C)."""
        b = features.shape[0]
        if features.shape[2:] != attentions.shape[2:]:
            attentions = F.interpolate(attentions, size=features.shape[2:], mode="trilinear", align_corners=False)
        if self.pool == "GAP":
            n = features.shape[2] * features.shape[3] * features.shape[4]
            matrix = torch.einsum("bmdhw,bcdhw->bmc", attentions, features) / float(n)
        else:
            matrix = (attentions.unsqueeze(2) * features.unsqueeze(1)).amax(dim=(3, 4, 5))
        return signed_sqrt_normalize(matrix.reshape(b, -1), self.eps)

    def counterfactual_attention(self, attentions: torch.Tensor) -> torch.Tensor:
        """Ā for ``attentions`` (B, M, d, h, w), same shape: the configured kind in training, all ones in eval."""
        if self.training:
            if torch.jit.is_scripting():  # a scripted network in training mode draws from the global generator
                return counterfactual_attention(attentions, self.counterfactual, None)
            return counterfactual_attention(attentions, self.counterfactual, self.generator)
        return torch.ones_like(attentions)

    def forward(self, features: torch.Tensor, attentions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        ``features`` (B, C, D, H, W) and ``attentions`` (B, M, d, h, w) -> ``(feature_matrix,
        counterfactual_feature_matrix)``, each (B, M*C), the second pooled under :meth:`counterfactual_attention`.
        """
        return self.pool_features(features, attentions), self.pool_features(
            features, self.counterfactual_attention(attentions)
        )


class CALNet(nn.Module):
    """
    CAL classifier: backbone feature map F -> M attention maps ``A = conv1x1x1(F)`` -> ``BAP3D(F, A)`` ->
    ``fc(scale * f)``.

    In ``train()`` mode the forward always returns a :class:`CALOutput` (a dict with fixed keys, the ones that do
    not apply None): with ``cal=True``, ``logits`` Y(A), ``counterfactual_logits`` Y(Ā) and ``effect``
    Y(A) - Y(Ā), the two feature matrices coming from one ``self.bap(features, attentions)`` call (Ā: the
    configured counterfactual, see :func:`counterfactual_attention`); with ``cal=False`` (the baseline: the same
    network trained with plain cross-entropy) ``logits`` only, and no counterfactual is computed. In ``eval()``
    mode it returns the logits tensor (B, num_classes) alone, without the counterfactual, so that evaluation,
    TorchScript and MONAI Label see a plain classifier. :meth:`forward_attention` also returns the attention maps.
    The tabular-only model of the modality comparison is :class:`scripts.tabular_net.TabularClassifier`.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        spatial_size: the input's spatial size (the ViT needs it).
        backbone: ``"vit"``, ``"densenet"`` or ``"resnet"`` (see :mod:`scripts.backbones`), or a module with an
            ``out_channels`` attribute that maps (B, in_channels, D, H, W) to (B, C, d, h, w).
        backbone_kwargs: constructor arguments of the named backbone.
        num_attentions: M, the number of attention maps.
        pool: BAP3D pooling, ``"GAP"`` or ``"GMP"``.
        cal: train with the counterfactual branch (``False`` gives the baseline).
        counterfactual: one of :data:`COUNTERFACTUALS` (held by :class:`BAP3D`, which draws it from its own
            generator).
        attention_block: ``"conv"`` (the seed's 1x1x1 conv with bias) or ``"conv_bn_relu"`` (the original
            CAL code's conv without bias + BatchNorm + ReLU, which keeps attention non-negative).
        scale: the factor applied to the feature matrix before the classifier (100 in the seed and the paper).
        fc_bias: whether the classifier has a bias (the seed: yes; the original code: no).
        tabular_features: L > 0 adds the tabular branch: the network then takes a second input, the (B, L) tabular
            values (NaN where missing), embedded by :class:`scripts.tabular_net.TabularEncoder` and fused with the
            image embedding before the classifier; 0 (the default) is the image-only network.
        tabular_kwargs: constructor arguments of the tabular encoder (``hidden_channels``, ``dropout``,
            ``missing_indicator``, and the training split's ``mean`` and ``std``).
        return_features: in ``train()`` mode, also return the feature matrix f (B, M*C) as ``"features"`` and the
            attention maps A (B, M, d, h, w) as ``"attentions"`` (what the original recipe's centre loss and
            attention-guided crop/drop need, see :mod:`scripts.recipe`); without it both are None. Eval mode still
            returns the logits tensor.

    Multimodal fusion is a concatenation of the image embedding ``scale * f`` and the tabular embedding ``e(t)``
    read by one linear classifier, written as ``fc(scale * f) + tabular_fc(e(t))``. The counterfactual branch
    swaps only the image attention and keeps the same tabular input: ``Y(A, t) - Y(Ā, t)``, in which the tabular
    term cancels, so the effect measures what the attention adds, as in the image-only network.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        spatial_size: Sequence[int] | int = 64,
        backbone: str | nn.Module = "vit",
        backbone_kwargs: dict[str, Any] | None = None,
        num_attentions: int = 32,
        pool: str = "GAP",
        cal: bool | str = True,
        counterfactual: str = "random",
        attention_block: str = "conv",
        scale: float = 100.0,
        fc_bias: bool = True,
        tabular_features: int = 0,
        tabular_kwargs: dict[str, Any] | None = None,
        return_features: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, in_channels, spatial_size, **(backbone_kwargs or {}))
        self.backbone = backbone
        channels = int(backbone.out_channels)
        if attention_block == "conv":
            self.attention = nn.Sequential(nn.Conv3d(channels, num_attentions, kernel_size=1))
        elif attention_block == "conv_bn_relu":
            self.attention = nn.Sequential(
                nn.Conv3d(channels, num_attentions, kernel_size=1, bias=False),
                nn.BatchNorm3d(num_attentions),
                nn.ReLU(inplace=True),
            )
        else:
            raise ValueError(f"attention_block must be 'conv' or 'conv_bn_relu', got '{attention_block}'.")
        self.bap = BAP3D(pool=pool, counterfactual=counterfactual)
        self.fc = nn.Linear(num_attentions * channels, num_classes, bias=fc_bias)
        self.tabular: TabularEncoder | None = None
        self.tabular_fc: nn.Linear | None = None
        if tabular_features > 0:
            self.tabular = TabularEncoder(tabular_features, **(tabular_kwargs or {}))
            self.tabular_fc = nn.Linear(self.tabular.out_channels, num_classes, bias=False)  # fc has the bias
        self.num_classes = num_classes
        self.num_attentions = num_attentions
        self.cal = cal
        self.scale = scale
        self.return_features = return_features

    def classify(self, matrix: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of a feature matrix (B, M*C)."""
        return self.fc(matrix * self.scale)

    def tabular_logits(self, tabular: torch.Tensor | None) -> torch.Tensor | None:
        """The tabular branch's share of the logits (B, num_classes) for values (B, L); None without the branch."""
        if self.tabular is None or self.tabular_fc is None:
            return None
        if tabular is None:
            raise ValueError("this CALNet has a tabular branch: pass the tabular values (B, L) as its second input.")
        return self.tabular_fc(self.tabular(tabular))

    @torch.jit.export
    def forward_attention(
        self, x: torch.Tensor, tabular: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Factual logits (B, num_classes) and attention maps (B, M, d, h, w) of images (B, in_channels, D, H, W)
        (and their tabular values (B, L) when the network has the tabular branch).
        """
        features = self.backbone(x)
        attentions = self.attention(features)
        logits = self.classify(self.bap.pool_features(features, attentions))
        extra = self.tabular_logits(tabular)
        if extra is not None:
            logits = logits + extra
        return logits, attentions

    def forward(
        self, x: torch.Tensor, tabular: torch.Tensor | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor | None]:
        """
        Images (B, in_channels, D, H, W) (and tabular values (B, L) when the network has the tabular branch) ->
        in ``eval()`` mode, logits (B, num_classes); in ``train()`` mode, a :class:`CALOutput` (see class doc;
        annotated as the dict it is, which TorchScript compiles).
        """
        features = self.backbone(x)
        attentions = self.attention(features)
        counterfactual_matrix: torch.Tensor | None = None
        if self.training and self.cal:
            matrix, counterfactual_matrix = self.bap(features, attentions)
        else:
            matrix = self.bap.pool_features(features, attentions)  # inference: the factual pooling only
        image_logits = self.classify(matrix)
        logits = image_logits
        extra = self.tabular_logits(tabular)
        if extra is not None:
            logits = logits + extra
        if not self.training:
            return logits
        counterfactual_logits: torch.Tensor | None = None
        effect: torch.Tensor | None = None
        if counterfactual_matrix is not None:
            counterfactual_image_logits = self.classify(counterfactual_matrix)
            # Y(A, t) - Y(Ā, t): the same tabular term on both sides cancels, so it is left out of the difference
            effect = image_logits - counterfactual_image_logits
            counterfactual_logits = counterfactual_image_logits
            if extra is not None:
                counterfactual_logits = counterfactual_image_logits + extra
        # a CALOutput: every key always present (keep in step with CAL_OUTPUT_KEYS)
        output: dict[str, torch.Tensor | None] = {
            "logits": logits,
            "counterfactual_logits": counterfactual_logits,
            "effect": effect,
            "features": matrix if self.return_features else None,
            "attentions": attentions if self.return_features else None,
            "aug_logits": None,
            "aug_effect": None,
        }
        return output


def factual_logits(output: torch.Tensor | Mapping[str, Any]) -> torch.Tensor:
    """
    The factual logits Y(A) of a network output: ``output["logits"]`` of a :class:`CALOutput` (training, whole or
    decollated per case, as ``train#postprocessing`` sees it), or the eval-mode logits tensor itself.
    """
    return output if isinstance(output, torch.Tensor) else output["logits"]
