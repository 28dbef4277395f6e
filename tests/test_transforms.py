# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The bounded preprocessing: identical to MONAI's anti-aliased Resize on the default 28^3 data, close to it on a
large input, invertible to the input's geometry; the size limit and the resampling warning."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, Orientationd, Resize, Resized, ScaleIntensityd

from scripts.data.checks import screen_items
from scripts.data.transforms import BoundedResize, BoundedResized, VoxelLimitd, block_sizes, image_shape

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


def _volume(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """(1, *shape) in [0, ~1]: smooth structure (trilinear from a coarse random grid) plus noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, *[max(2, s // 8) for s in shape], generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear")[0]
    return smooth + 0.05 * torch.rand(1, *shape, generator=g)


def _nifti(path: Path, shape: tuple[int, ...], seed: int = 0) -> str:
    array = (_volume(shape, seed)[0].numpy() * 1000 - 500).astype(np.int16)
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 1.5, 1.0])), str(path))
    return str(path)


def _old_preprocessing() -> Compose:
    """The preprocessing of 0.5.0 and before: MONAI's Resized with Gaussian anti-aliasing on the full volume."""
    return Compose(
        [
            LoadImaged("image", ensure_channel_first=True, image_only=True),
            Orientationd("image", axcodes="RAS", labels=None),
            ScaleIntensityd("image", minv=0.0, maxv=1.0),
            Resized("image", spatial_size=(28, 28, 28), mode="trilinear", anti_aliasing=True),
        ]
    )


def _bundle_preprocessing(config: str) -> Compose:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / config))
    parser["bundle_root"] = str(ROOT)
    preprocessing = parser.get_parsed_content("preprocessing")
    return preprocessing if isinstance(preprocessing, Compose) else Compose(preprocessing)


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
@pytest.mark.parametrize("shape", [(28, 28, 28), (60, 50, 40)])
def test_bundle_preprocessing_is_the_old_one_on_inputs_within_4x(tmp_path, config, shape):
    """The default data (28^3) and any input shrunk less than 4x per axis give the very same tensor as before."""
    image = _nifti(tmp_path / "case.nii.gz", shape)
    old = _old_preprocessing()({"image": image})["image"]
    new = _bundle_preprocessing(config)({"image": image, "tabular": None})["image"]
    assert new.dtype == old.dtype == torch.float32 and new.shape == old.shape == (1, 28, 28, 28)
    assert torch.equal(new.as_tensor(), old.as_tensor())
    assert torch.equal(new.affine, old.affine)


def test_bounded_resize_matches_the_anti_aliased_resize_on_a_large_input():
    """160x160x60 -> 28^3 (2x2 blocks, then the rest of the Gaussian): within 0.03 per voxel, 0.005 on average,
    of MONAI's one-stage anti-aliased resize, on intensities in [0, 1]."""
    image = MetaTensor(_volume((160, 160, 60)))
    assert block_sizes((160, 160, 60), (28, 28, 28)) == (2, 2, 1)
    old = Resize((28, 28, 28), mode="trilinear", anti_aliasing=True)(image)
    new = BoundedResize((28, 28, 28), warn_factor=None)(image)
    assert new.shape == old.shape and new.dtype == torch.float32
    difference = (new - old).abs()
    assert float(difference.max()) < 0.03 and float(difference.mean()) < 0.005
    assert torch.allclose(new.affine, old.affine)


def test_bounded_resize_inverts_to_the_input_geometry():
    """What Invertd does to the attention map: back to the input's size and affine."""
    affine = torch.diag(torch.tensor([0.7, 0.7, 2.0, 1.0], dtype=torch.float64))
    image = MetaTensor(_volume((160, 160, 60)), affine=affine)
    resize = BoundedResized("image", spatial_size=(28, 28, 28), warn_factor=None)
    out = resize({"image": image})["image"]
    assert out.shape == (1, 28, 28, 28)
    restored = resize.inverse({"image": out})["image"]
    assert restored.shape == (1, 160, 160, 60)
    assert torch.allclose(restored.affine, affine)
    assert not restored.applied_operations


def test_voxel_limit_refuses_a_volume_from_its_header_with_the_reason_and_fix(tmp_path):
    image = _nifti(tmp_path / "big.nii.gz", (40, 40, 20))
    assert image_shape(image) == (40, 40, 20)
    VoxelLimitd("image", max_voxels=32000)({"image": image})  # exactly at the limit: accepted
    with pytest.raises(ValueError) as error:
        VoxelLimitd("image", max_voxels=31999)({"image": image})
    message = str(error.value)
    assert message.startswith(f"{image}: 40x40x20 = 32,000 voxels, more than max_voxels=31,999")
    assert ". Fix: crop or downsample the volume" in message and "raise max_voxels" in message
    with pytest.raises(ValueError, match="more than max_voxels=100"):  # a loaded array (C, D, H, W), any format
        BoundedResize((28, 28, 28), max_voxels=100)(MetaTensor(torch.zeros(1, 10, 10, 2)))


def test_inference_screening_reports_an_oversized_case_and_keeps_the_others(tmp_path):
    small = _nifti(tmp_path / "small.nii.gz", (28, 28, 28))
    big = _nifti(tmp_path / "big.nii.gz", (64, 64, 32))
    screening = screen_items([{"image": big}, {"image": small}], max_voxels=100_000, num_workers=1)
    assert screening.good == [{"image": small}]
    assert [row["case"] for row in screening.failed] == ["big"]
    assert screening.failed[0]["error"].startswith("64x64x32 = 131,072 voxels, more than max_voxels=100,000")
    assert len(screen_items([{"image": big}], max_voxels=None, num_workers=1).good) == 1


def test_resampling_warning_names_the_factor(caplog):
    caplog.set_level(logging.WARNING, logger="scripts.data.transforms")
    image = MetaTensor(torch.zeros(1, 160, 160, 60), meta={"filename_or_obj": "ct.nii.gz"})
    BoundedResize((28, 28, 28), warn_factor=4.0)(image)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith("ct.nii.gz: resampled from 160x160x60 to 28x28x28 voxels, a factor of 5.7 per axis")
    caplog.clear()
    BoundedResize((28, 28, 28), warn_factor=4.0)(MetaTensor(torch.zeros(1, 100, 100, 28)))  # 3.6: no warning
    BoundedResize((28, 28, 28), warn_factor=None)(image)
    assert not caplog.records


def test_resampling_warning_from_the_training_spacing(caplog):
    caplog.set_level(logging.WARNING, logger="scripts.data.transforms")
    affine = torch.diag(torch.tensor([5.0, 5.0, 5.0, 1.0], dtype=torch.float64))  # 28 x 5 mm -> 5 mm voxels
    image = MetaTensor(torch.zeros(1, 28, 28, 28), affine=affine)
    BoundedResize((28, 28, 28), warn_factor=4.0, reference_spacing=(1.0, 1.0, 1.0))(image)
    assert "a factor of 5.0 per axis" in caplog.records[0].getMessage()
