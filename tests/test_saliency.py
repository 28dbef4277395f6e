# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Grad-CAM and the saliency inferer: maps at the input's size, in [0, 1], pointing where the evidence is."""

from __future__ import annotations

import pytest
import torch
from monai.networks.utils import eval_mode
from torch import nn

from scripts.cal_net import CALNet
from scripts.reports.saliency import SaliencyInferer, grad_cam, normalize_per_case

TINY_VIT = {"patch_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2}


class SumNet(nn.Module):
    """Logits (sum(x), -sum(x)) over an identity "backbone": Grad-CAM of class 0 is relu(x), of class 1 relu(-x)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Identity()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = (self.backbone(x) * self.scale).flatten(1).sum(1)
        return torch.stack([total, -total], dim=1)


def test_normalize_per_case_keeps_the_maximum_on_top():
    maps = torch.stack([torch.arange(8.0).view(1, 2, 2, 2), torch.full((1, 2, 2, 2), 3.0)])
    out = normalize_per_case(maps)
    assert out[0].flatten().tolist() == pytest.approx([i / 7 for i in range(8)])  # max -> 1, unlike MONAI's default
    assert out[1].abs().max() == 0.0  # constant map


def test_grad_cam_known_answer_and_class_choice():
    x = torch.zeros(2, 1, 6, 6, 6)
    x[0, 0, 1, 2, 3], x[0, 0, 4, 4, 4] = 2.0, -3.0
    x[1, 0, 5, 0, 1], x[1, 0, 0, 0, 0] = 1.0, -1.0
    net = SumNet()
    cam0 = grad_cam(net, x, "backbone", torch.tensor([0, 0]))
    assert cam0.shape == (2, 1, 6, 6, 6)
    assert cam0[0, 0, 1, 2, 3] == 1.0 and cam0[0].sum() == 1.0 and cam0[1, 0, 5, 0, 1] == 1.0
    cam1 = grad_cam(net, x, "backbone", torch.tensor([1, 0]))  # per case: class 1 points at the negative voxel
    assert cam1[0, 0, 4, 4, 4] == 1.0 and cam1[0].sum() == 1.0 and torch.equal(cam1[1], cam0[1])
    assert grad_cam(net, x, "backbone")[0, 0, 4, 4, 4] == 1.0  # default: the predicted class (1: sum(x) < 0)
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="'nope' is not a module"):
        grad_cam(net, x, "nope")


@pytest.mark.parametrize(
    "backbone, kwargs",
    [("vit", TINY_VIT), ("resnet", {"depth": 10, "widen_factor": 0.125, "conv1_t_stride": 1, "no_max_pool": True})],
)
def test_saliency_inferer_on_tiny_cal_network(backbone, kwargs):
    torch.manual_seed(0)
    net = CALNet(4, 1, 16, backbone=backbone, backbone_kwargs=kwargs, num_attentions=4, attention_block="conv_bn_relu")
    x = torch.rand(3, 1, 16, 16, 16)
    with eval_mode(net):  # what the evaluator does: eval mode under no_grad
        out = SaliencyInferer()(x, net)
        again = SaliencyInferer()(x, net)
        logits = net(x)
    assert set(out) == {"logits", "attention", "gradcam"}
    torch.testing.assert_close(out["logits"], logits)
    for key in ("attention", "gradcam"):
        assert out[key].shape == (3, 1, 16, 16, 16)
        assert out[key].min() >= 0.0 and out[key].max() <= 1.0 + 1e-6
        assert not out[key].requires_grad
    torch.testing.assert_close(again["gradcam"], out["gradcam"])  # hooks are registered once
    assert net.training


def test_saliency_inferer_without_attention_gives_gradcam_only():
    out = SaliencyInferer()(torch.rand(2, 1, 4, 4, 4), SumNet())
    assert set(out) == {"logits", "gradcam"} and out["gradcam"].shape == (2, 1, 4, 4, 4)
    assert set(SaliencyInferer(gradcam_layer=None)(torch.rand(2, 1, 4, 4, 4), SumNet())) == {"logits"}
