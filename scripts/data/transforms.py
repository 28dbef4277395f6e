# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Preprocessing of inputs of any size in bounded memory and time.

- :class:`BoundedResize` / :class:`BoundedResized`: MONAI's ``Resize`` with Gaussian anti-aliasing (image
  (C, D, H, W) -> (C, *spatial_size)), computed in two stages when an axis shrinks by 4x or more: integer-factor
  block averaging (C, D, H, W) -> (C, ~D/b, ~H/b, ~W/b), which needs no copy of the full volume, then the
  remaining Gaussian (its width chosen so that the two blurs add up to the one-stage blur) and trilinear sampling
  at the one-stage positions on the small volume. Inputs that shrink less than 4x per axis (the 28^3 default data
  among them) go through MONAI's ``Resize`` unchanged, so their tensors are identical to it. Warns, naming the
  factor, when an input is resampled by more than ``warn_factor`` per axis (or, with ``reference_spacing``, ends
  with voxels that many times larger or smaller than the training data's). Inverts like ``Resize``.
- :class:`VoxelLimitd`: refuses, before loading, an image (path, read from its header; or a loaded (C, D, H, W)
  array) with more than ``max_voxels`` voxels per channel; :func:`voxel_limit_problem` is the check, also used by
  the data check (:mod:`scripts.data.checks`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import GaussianSmooth, MapTransform, Resize, Resized
from monai.transforms.inverse import TraceableTransform
from monai.transforms.utils import scale_affine
from monai.utils import TraceKeys, convert_to_dst_type, convert_to_tensor, fall_back_tuple

from ..run.errors import input_error

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "block_sizes",
    "image_shape",
    "voxel_limit_problem",
    "VoxelLimitd",
    "BoundedResize",
    "BoundedResized",
]

logger = logging.getLogger(__name__)

# 2^28 voxels, e.g. 512x512x1024: about 1 GB per float32 copy of the volume
DEFAULT_MAX_VOXELS = 2**28
_LIMIT_FIX = "crop or downsample the volume before sending it (e.g. to the region of interest), or raise max_voxels"


def block_sizes(in_size: Sequence[int], out_size: Sequence[int], oversample: float = 2.0) -> tuple[int, ...]:
    """Per axis, the integer block that averages ``in_size`` down to at least ``oversample`` x ``out_size``."""
    return tuple(max(1, int(i // (o * oversample))) for i, o in zip(in_size, out_size))


def image_shape(path: str | os.PathLike | Sequence[str]) -> tuple[int, ...] | None:
    """
    The array shape of an image file from its header, without reading its voxels: NIfTI, Analyze and MGH
    (nibabel), ``.npy``; None for other formats (DICOM, NRRD, ...) and lists of files.
    """
    if not isinstance(path, (str, os.PathLike)):
        return None
    name = os.fspath(path).lower()
    try:
        if name.endswith(".npy"):
            return tuple(np.load(path, mmap_mode="r").shape)
        if name.endswith((".nii", ".nii.gz", ".hdr", ".img", ".mgh", ".mgz")):
            import nibabel as nib

            return tuple(nib.load(os.fspath(path)).shape)
    except Exception:  # unreadable: the loader reports it
        return None
    return None


def voxel_limit_problem(shape: Sequence[int] | None, max_voxels: int | None, channel_first: bool = False):
    """
    ``(problem, fix)`` when a volume of array ``shape`` (spatial axes first, as in the file, or channel first
    with ``channel_first``) holds more than ``max_voxels`` voxels per channel; None when it fits, the limit is
    None or the shape is unknown.
    """
    if max_voxels is None or shape is None or len(shape) < 3:
        return None
    spatial = tuple(shape[1:] if channel_first else shape[:3])
    voxels = math.prod(int(s) for s in spatial)
    if voxels <= max_voxels:
        return None
    copy = f"{4 * voxels / 2**30:.1f} GB" if 4 * voxels >= 2**30 else f"{4 * voxels / 2**20:.0f} MB"
    return (
        f"{'x'.join(map(str, spatial))} = {voxels:,} voxels, more than max_voxels={max_voxels:,} (about {copy} per "
        f"float32 copy, which preprocessing makes several of)",
        _LIMIT_FIX,
    )


def _name(img: Any) -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj", "input image"))


class VoxelLimitd(MapTransform):
    """
    Refuse an image with more than ``max_voxels`` voxels per channel, with the reason and the fix
    (:func:`scripts.run.errors.input_error`'s form, raised as ``ValueError`` so that a server answers the request and
    keeps running). Before ``LoadImaged``, ``data[key]`` is a path whose header gives the shape (see
    :func:`image_shape`; a format without one is checked after loading by :class:`BoundedResize`); after it, the
    loaded array (C, D, H, W). ``max_voxels=None`` disables the check.
    """

    def __init__(self, keys: KeysCollection, max_voxels: int | None = DEFAULT_MAX_VOXELS, allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.max_voxels = max_voxels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if hasattr(value, "shape"):
                problem, what = voxel_limit_problem(tuple(value.shape), self.max_voxels, True), _name(value)
            else:  # a path (or a list of paths, checked after loading)
                problem, what = voxel_limit_problem(image_shape(value), self.max_voxels), str(value)
            if problem:
                raise ValueError(str(input_error(what, *problem)))
        return d


class BoundedResize(Resize):
    """
    ``monai.transforms.Resize`` whose anti-aliased downsampling of a large input is computed in bounded memory and
    time (see the module docstring); the result (C, *spatial_size) is float32, its trace and inverse are
    ``Resize``'s. Staging applies to anti-aliased trilinear resizing with MONAI's default sigma and
    ``align_corners`` off; any other setting is plain ``Resize``.

    Args:
        spatial_size, mode, align_corners, anti_aliasing, anti_aliasing_sigma, dtype: as ``Resize``.
        oversample: the block-averaged volume keeps at least this many voxels per output voxel and axis.
        max_voxels: refuse (``ValueError`` with the reason and fix) an input with more voxels per channel;
            None: no limit.
        warn_factor: warn when an axis is resampled by more than this factor (up or down); None: never.
        reference_spacing: the training data's voxel spacing (mm); when given, also warn when the resized
            voxels' spacing differs from it by more than ``warn_factor`` on an axis.
    """

    def __init__(
        self,
        spatial_size: Sequence[int] | int,
        mode: str = "trilinear",
        align_corners: bool | None = None,
        anti_aliasing: bool = True,
        anti_aliasing_sigma: Sequence[float] | float | None = None,
        dtype: Any = torch.float32,
        oversample: float = 2.0,
        max_voxels: int | None = DEFAULT_MAX_VOXELS,
        warn_factor: float | None = 4.0,
        reference_spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__(
            spatial_size, mode=mode, align_corners=align_corners, anti_aliasing=anti_aliasing,
            anti_aliasing_sigma=anti_aliasing_sigma, dtype=dtype,
        )  # fmt: skip
        self.oversample = oversample
        self.max_voxels = max_voxels
        self.warn_factor = warn_factor
        self.reference_spacing = reference_spacing

    def _check(self, img: torch.Tensor, in_size: Sequence[int], out_size: Sequence[int]) -> None:
        problem = voxel_limit_problem((1, *in_size), self.max_voxels, channel_first=True)
        if problem:
            raise ValueError(str(input_error(_name(img), *problem)))
        if self.warn_factor is None:
            return
        factors = [i / o for i, o in zip(in_size, out_size)]
        worst = max(max(f, 1 / f) for f in factors)
        what = f"resampled from {'x'.join(map(str, in_size))} to {'x'.join(map(str, out_size))} voxels"
        if self.reference_spacing is not None and isinstance(img, MetaTensor):
            spacing = [float(s) * f for s, f in zip(img.pixdim[: len(factors)], factors)]
            ratios = [s / r for s, r in zip(spacing, self.reference_spacing)]
            if max(max(r, 1 / r) for r in ratios) > worst:
                worst = max(max(r, 1 / r) for r in ratios)
                what = f"voxels of {'x'.join(f'{s:.3g}' for s, _ in zip(spacing, ratios))} mm after resizing, against "
                what += f"the training data's {'x'.join(f'{r:g}' for r in self.reference_spacing)} mm"
        if worst > self.warn_factor:
            logger.warning(
                f"{_name(img)}: {what}, a factor of {worst:.1f} per axis (more than {self.warn_factor:g}) from the "
                f"training data: the model was not validated on such inputs; check its prediction (the threshold "
                f"is resample_warning_factor)."
            )

    def __call__(  # type: ignore[override]
        self,
        img: torch.Tensor,
        mode: str | None = None,
        align_corners: bool | None = None,
        anti_aliasing: bool | None = None,
        anti_aliasing_sigma: Sequence[float] | float | None = None,
        dtype: Any = None,
        lazy: bool | None = None,
    ) -> torch.Tensor:
        in_size = tuple(int(s) for s in (img.peek_pending_shape() if isinstance(img, MetaTensor) else img.shape[1:]))
        out_size = tuple(int(s) for s in fall_back_tuple(self.spatial_size, in_size))
        self._check(img, in_size, out_size)
        mode_ = self.mode if mode is None else mode
        align_ = self.align_corners if align_corners is None else align_corners
        aa = self.anti_aliasing if anti_aliasing is None else anti_aliasing
        sigma = self.anti_aliasing_sigma if anti_aliasing_sigma is None else anti_aliasing_sigma
        lazy_ = self.lazy if lazy is None else lazy
        blocks = block_sizes(in_size, out_size, self.oversample)
        staged = (
            aa and sigma is None and mode_ == "trilinear" and not align_ and not lazy_ and self.size_mode == "all"
            and len(in_size) == 3 and len(out_size) == 3 and max(blocks) > 1
        )  # fmt: skip
        if not staged:
            return super().__call__(img, mode, align_corners, anti_aliasing, anti_aliasing_sigma, dtype, lazy)
        return self._staged(img, in_size, out_size, blocks)

    def _staged(self, img: torch.Tensor, in_size: tuple, out_size: tuple, blocks: tuple) -> torch.Tensor:
        meta_info = TraceableTransform.track_transform_meta(
            img,
            sp_size=out_size,
            affine=scale_affine(in_size, out_size, align_corners=False),
            extra_info={"mode": "trilinear", "align_corners": TraceKeys.NONE, "dtype": "float32", "new_dim": 0},
            orig_size=in_size,
            transform_info=self.get_transform_info(),
            lazy=False,
        )
        x = convert_to_tensor(img.as_tensor() if isinstance(img, MetaTensor) else img, track_meta=False)
        x = x.float()  # a no-op on LoadImage's float32
        # 1. block means: each b-voxel block -> one voxel; a partial block at the far end is averaged as if padded
        #    with zeros, as MONAI's Gaussian pads the full volume
        x = F.avg_pool3d(x[None], blocks, stride=blocks, ceil_mode=True, divisor_override=math.prod(blocks))[0]
        # 2. the rest of MONAI's anti-aliasing Gaussian, sigma = (factor - 1) / 2 input voxels: a b-block mean
        #    has variance (b^2 - 1) / 12, so the remaining sigma is sqrt(sigma^2 - (b^2 - 1) / 12), in blocks
        factors = [i / o for i, o in zip(in_size, out_size)]
        sigmas = [math.sqrt(max(((f - 1) / 2) ** 2 - (b * b - 1) / 12, 0.0)) / b for f, b in zip(factors, blocks)]
        x = GaussianSmooth(sigma=sigmas)(x)
        x = convert_to_tensor(x, track_meta=False)
        # 3. trilinear sampling at the one-stage positions: output j sits at input (j + 0.5) * f - 0.5, i.e.
        #    at block ((j + 0.5) * f) / b - 0.5; grid_sample's normalized coordinates, axes in (W, H, D) order
        axes = []
        for o, f, b, n in zip(out_size, factors, blocks, x.shape[1:]):
            centers = ((torch.arange(o, dtype=torch.float64) + 0.5) * f / b - 0.5).clamp(0, n - 1)
            axes.append(((2 * centers + 1) / n - 1).float())
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)[None]
        resized = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        out = convert_to_tensor(img.as_tensor() if isinstance(img, MetaTensor) else img, track_meta=get_track_meta())
        out, *_ = convert_to_dst_type(resized, out, dtype=torch.float32)
        return out.copy_meta_from(meta_info) if isinstance(out, MetaTensor) else out


class BoundedResized(Resized):
    """Dictionary version of :class:`BoundedResize` (same arguments, plus ``keys`` and ``allow_missing_keys``)."""

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | int,
        mode: str = "trilinear",
        anti_aliasing: bool = True,
        oversample: float = 2.0,
        max_voxels: int | None = DEFAULT_MAX_VOXELS,
        warn_factor: float | None = 4.0,
        reference_spacing: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys, spatial_size, mode=mode, anti_aliasing=anti_aliasing, allow_missing_keys=allow_missing_keys
        )
        self.resizer = BoundedResize(
            spatial_size, mode=mode, anti_aliasing=anti_aliasing, oversample=oversample, max_voxels=max_voxels,
            warn_factor=warn_factor, reference_spacing=reference_spacing,
        )  # fmt: skip
