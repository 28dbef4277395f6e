# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The original CAL recipe in 3D: attention-guided crop/drop with known answers, the two inferers, the loss terms."""

from __future__ import annotations

import math

import pytest
import torch

from scripts.cal_net import CAL_OUTPUT_KEYS, CALNet, cal_output
from scripts.losses import CALLoss, CenterLoss
from scripts.recipe import (
    AttentionAugmentInferer,
    AttentionCropInferer,
    attention_crop,
    attention_drop,
    crop_boxes,
    select_attention_maps,
)

BLOCK = (slice(2, 4), slice(4, 6), slice(1, 3))


def _map_with_block(size: int = 8, block: tuple[slice, slice, slice] = BLOCK):
    """One attention map (1, 1, size^3): 1 in ``block``, 0.3 on one other voxel, 0 elsewhere."""
    a = torch.zeros(1, 1, size, size, size)
    a[(0, 0) + block] = 1.0
    a[0, 0, 7, 0, 7] = 0.3
    return a


def test_crop_box_is_the_thresholded_region_padded_and_clipped():
    maps = _map_with_block()  # same size as the image: no resampling
    # θ 0.5: only the block survives -> voxels z 2..3, y 4..5, x 1..2; padding 0.125 * 8 = 1 voxel, clipped at 0/8
    box = crop_boxes(maps, (8, 8, 8), theta=0.5, padding=0.125)
    assert box.tolist() == [[[1, 5], [3, 7], [0, 4]]]
    # θ 0.2 keeps the 0.3 voxel too: the box spans both, up to the volume's end
    box = crop_boxes(maps, (8, 8, 8), theta=0.2, padding=0.0)
    assert box.tolist() == [[[2, 8], [0, 6], [1, 8]]]


def test_crop_box_scales_a_coarse_map_to_the_image():
    maps = torch.zeros(1, 1, 4, 4, 4)
    maps[0, 0, 1, 2, 3] = 1.0  # one coarse cell = voxels 8..15, 16..23, 24..31 of a 32^3 image
    box = crop_boxes(maps, (32, 32, 32), theta=0.99, padding=0.0)
    (z0, z1), (y0, y1), (x0, x1) = box[0].tolist()
    assert 8 <= z0 <= 12 <= z1 <= 16 and 16 <= y0 <= 20 <= y1 <= 24 and 24 <= x0 <= 28 <= x1 <= 32


def test_an_empty_map_crops_and_drops_nothing():
    assert crop_boxes(torch.zeros(1, 1, 4, 4, 4), (8, 8, 8), theta=0.5).tolist() == [[[0, 8], [0, 8], [0, 8]]]
    image = torch.rand(1, 1, 8, 8, 8)
    torch.testing.assert_close(attention_drop(image, torch.zeros(1, 1, 4, 4, 4), theta=0.3), image)


def test_crop_theta_range_is_drawn_per_case():
    maps = _map_with_block().repeat(64, 1, 1, 1, 1)
    boxes = crop_boxes(maps, (8, 8, 8), theta=(0.2, 0.5), padding=0.0)
    # θ < 0.3 includes the far voxel (box to the end), θ > 0.3 does not: a U(0.2, 0.5) draw gives both
    ends = {int(b[0, 1]) for b in boxes}
    assert ends == {4, 8}


def test_attention_crop_resizes_the_box_back_to_the_input_size():
    image = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 1, 8, 8, 8).contiguous()  # intensity = z
    maps = torch.zeros(1, 1, 8, 8, 8)
    maps[0, 0, 4:8, :, :] = 1.0
    crop = attention_crop(image, maps, theta=0.5, padding=0.0)
    assert crop.shape == image.shape
    assert float(crop.min()) >= 4.0 - 1e-5 and float(crop.max()) <= 7.0 + 1e-5  # only z 4..7 is left


def test_attention_drop_zeroes_the_attended_voxels():
    image = torch.ones(1, 2, 8, 8, 8)
    maps = _map_with_block()
    dropped = attention_drop(image, maps, theta=0.5)
    assert dropped.shape == image.shape
    assert float(dropped[:, :, 2:4, 4:6, 1:3].abs().sum()) == 0.0
    assert float(dropped.sum()) == 2 * (8**3 - 8)  # the block (8 voxels) in both channels, nothing else


def test_map_selection_follows_sqrt_of_the_spatial_sum():
    torch.manual_seed(0)
    attentions = torch.zeros(1, 3, 2, 2, 2)
    attentions[0, 0] = 4.0 / 8  # sums 4, 1, 0 -> sqrt weights 2, 1, ~0
    attentions[0, 1] = 1.0 / 8
    picks = torch.cat([select_attention_maps(attentions, 2).flatten(1)[:, ::8] for _ in range(600)]).flatten()
    share = float((picks == 0.5).float().mean())
    assert share == pytest.approx(2 / 3, abs=0.05)
    assert not bool((picks == 0).any())  # the empty map is (almost) never drawn


def _net(**kwargs) -> CALNet:
    torch.manual_seed(0)
    return CALNet(
        num_classes=3,
        spatial_size=16,
        backbone="vit",
        backbone_kwargs={"patch_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2},
        num_attentions=4,
        attention_block="conv_bn_relu",
        **kwargs,
    )


def test_network_exposes_features_and_attentions_only_when_asked():
    x = torch.rand(2, 1, 16, 16, 16)
    net = _net(return_features=True).train()
    out = net(x)
    assert set(out) == set(CAL_OUTPUT_KEYS)
    assert out["features"].shape == (2, 4 * 16) and out["attentions"].shape == (2, 4, 4, 4, 4)
    out = _net(cal=False, return_features=True).train()(x)
    assert out["effect"] is None and out["features"] is not None and out["attentions"] is not None
    out = _net().train()(x)  # the default is unchanged: no features nor attentions
    assert out["effect"] is not None and out["features"] is None and out["attentions"] is None
    logits = net.eval()(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), logits)


def test_augment_inferer_adds_crop_and_drop_logits_and_the_loss_uses_them():
    net = _net(return_features=True).train()
    x, y = torch.rand(3, 1, 16, 16, 16), torch.tensor([0, 1, 2])
    out = AttentionAugmentInferer()(x, net)
    assert set(out) == set(CAL_OUTPUT_KEYS) and out["attentions"] is None  # the attention maps are used up
    assert out["effect"] is not None and out["features"] is not None
    assert out["aug_logits"].shape == (3, 2, 3) and out["aug_effect"].shape == (3, 2, 3)
    loss_fn = CALLoss(center_weight=1.0, num_classes=3)
    loss = loss_fn(out, y)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and net.attention[0].weight.grad is not None
    assert loss_fn.center_loss.centers.abs().sum() > 0  # the centres moved
    # disabled, it is a plain forward pass
    torch.manual_seed(1)
    plain = AttentionAugmentInferer(enabled=False)(x, _net().train())
    assert set(plain) == set(CAL_OUTPUT_KEYS) and plain["effect"] is not None and plain["aug_logits"] is None
    # CAL off: crop/drop logits, no augmented effect
    out = AttentionAugmentInferer()(x, _net(cal=False, return_features=True).train())
    assert out["aug_logits"].shape == (3, 2, 3) and out["effect"] is None and out["aug_effect"] is None


def test_augment_inferer_wraps_a_plain_classifier():
    """A network returning a logits tensor in training (the tabular-only model) gives the same CALOutput."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16**3, 3)).train()
    x, y = torch.rand(2, 1, 16, 16, 16), torch.tensor([0, 2])
    out = AttentionAugmentInferer(enabled=False)(x, net)
    assert tuple(out) == CAL_OUTPUT_KEYS and out["logits"].shape == (2, 3) and out["effect"] is None
    expected = torch.nn.functional.cross_entropy(out["logits"], y).detach()
    assert float(CALLoss()(out, y).detach()) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="return_features"):
        AttentionAugmentInferer()(x, net)


def test_augment_inferer_explains_a_network_without_attention_output():
    with pytest.raises(ValueError, match="return_features"):
        AttentionAugmentInferer()(torch.rand(2, 1, 16, 16, 16), _net().train())


def test_recipe_loss_weights_on_known_logits():
    ce = torch.nn.functional.cross_entropy
    y = torch.tensor([0, 1])
    out = cal_output(
        torch.tensor([[1.0, 0.0], [0.0, 2.0]]),
        effect=torch.tensor([[0.5, 0.0], [0.0, 0.5]]),
        aug_logits=torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]),  # (B, crop/drop, C)
        aug_effect=torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 3.0], [0.0, 1.0]]]),
    )
    aug_y = torch.tensor([0, 0, 1, 1])
    expected = (
        ce(out["logits"], y) / 3
        + ce(torch.cat([out["effect"], out["aug_effect"].reshape(4, 2)]), torch.cat([y, aug_y]))
        + ce(out["aug_logits"].reshape(4, 2), aug_y) * 2 / 3
    )
    assert float(CALLoss()(out, y)) == pytest.approx(float(expected), rel=1e-6)


def test_center_loss_value_and_moving_average_update():
    loss_fn = CenterLoss(num_classes=2, beta=0.05)
    f1 = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    # first call: centres are zero, loss = sum of squares / B = (25 + 4) / 2; C[y] += 0.05 * f
    assert float(loss_fn(f1, torch.tensor([0, 1]))) == pytest.approx(14.5)
    torch.testing.assert_close(loss_fn.centers, torch.tensor([[0.15, 0.2], [0.0, 0.1]]))
    # second call: normalised centres are (0.6, 0.8) and (0, 1)
    f2 = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    expected = ((1 - 0.6) ** 2 + (1 - 0.8) ** 2 + 0.0 + 1.0) / 2
    assert float(loss_fn(f2, torch.tensor([0, 1]))) == pytest.approx(expected)
    c0 = torch.tensor([0.15, 0.2]) + 0.05 * (torch.tensor([1.0, 1.0]) - torch.tensor([0.6, 0.8]))
    c1 = torch.tensor([0.0, 0.1]) + 0.05 * (torch.tensor([0.0, 0.0]) - torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(loss_fn.centers, torch.stack([c0, c1]))
    # as the original's indexed assignment C[y] += ...: one step per class, from the class's last case in the batch
    loss_fn = CenterLoss(num_classes=2, beta=0.5)
    loss_fn(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]), torch.tensor([0, 0, 1]))
    torch.testing.assert_close(loss_fn.centers, torch.tensor([[0.0, 0.5], [1.0, 1.0]]))


def test_center_loss_in_cal_loss_needs_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        CALLoss(center_weight=1.0)


def test_crop_inferer_averages_raw_and_crop_logits():
    net = _net().eval()
    x = torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        logits, attentions = net.forward_attention(x)
        crop = attention_crop(x, attentions.mean(1, keepdim=True), 0.1, 0.05)
        expected = (logits + net(crop)) / 2
        got = AttentionCropInferer(thetas=[0.1], padding=0.05)(x, net)
        torch.testing.assert_close(got, expected)
        # several thresholds and a flipped copy: (mean over raw + crops) averaged with the same on the flip
        inferer = AttentionCropInferer(thetas=[0.3, 0.1], padding=[0.1, 0.05], flip=True)
        flipped = torch.flip(x, dims=(-1,))
        parts = []
        for image in (x, flipped):
            raw, att = net.forward_attention(image)
            mean_map = att.mean(1, keepdim=True)
            crops = [net(attention_crop(image, mean_map, t, p)) for t, p in ((0.3, 0.1), (0.1, 0.05))]
            parts.append((raw + sum(crops)) / 3)
        torch.testing.assert_close(inferer(x, net), (parts[0] + parts[1]) / 2)
        # disabled: the plain logits; with return_attention: the AttentionInferer's dict
        torch.testing.assert_close(AttentionCropInferer(enabled=False)(x, net), logits)
        out = AttentionCropInferer(return_attention=True)(x, net)
        assert set(out) == {"logits", "attention"} and out["attention"].shape == (2, 1, 16, 16, 16)
        torch.testing.assert_close(out["logits"], expected)


def test_recipe_inferers_pass_the_tabular_values_on():
    """With the tabular branch, the second input reaches every forward pass (crop and drop copies included)."""
    net = _net(return_features=True, tabular_features=3).train()
    x, tabular = torch.rand(2, 1, 16, 16, 16), torch.rand(2, 3)
    out = AttentionAugmentInferer()(x, net, tabular)
    assert out["aug_logits"].shape == (2, 2, 3)
    net.eval()
    with torch.no_grad():
        logits, attentions = net.forward_attention(x, tabular)
        crop = attention_crop(x, attentions.mean(1, keepdim=True), 0.1, 0.05)
        expected = (logits + net(crop, tabular)) / 2
        torch.testing.assert_close(AttentionCropInferer()(x, net, tabular), expected)
        with pytest.raises(ValueError, match="tabular"):
            AttentionCropInferer()(x, net)


def test_crop_inferer_rejects_mismatched_paddings():
    with pytest.raises(ValueError, match="padding"):
        AttentionCropInferer(thetas=[0.3, 0.2], padding=[0.1])


def test_inference_config_accepts_the_crop_inferer():
    """The README's inference override: test-time crops with the attention map, through inference.json."""
    from monai.bundle import ConfigParser

    from tests.conftest import ROOT

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs/inference.json"))
    parser["bundle_root"] = str(ROOT)
    parser["inferer"] = {"_target_": "scripts.recipe.AttentionCropInferer", "return_attention": True}
    inferer, net = parser.get_parsed_content("inferer"), parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        out = inferer(torch.rand(1, 1, 28, 28, 28), net)  # the released model's input
    assert out["logits"].shape == (1, 2) and out["attention"].shape == (1, 1, 28, 28, 28)
