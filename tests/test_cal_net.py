# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import scripts.cal_net as cal_net
from scripts.cal_net import (
    BAP3D,
    CAL_OUTPUT_KEYS,
    COUNTERFACTUALS,
    CALNet,
    cal_output,
    counterfactual_attention,
    factual_logits,
)

TINY_VIT = {"patch_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2}
TINY_BACKBONES = {
    "vit": (TINY_VIT, 16),
    "resnet": ({"depth": 10, "widen_factor": 0.125, "conv1_t_stride": 1, "no_max_pool": True}, 16),
    "densenet": ({"depth": 121, "growth_rate": 4, "init_features": 8, "bn_size": 2}, 32),
}


def reference_bap(features: torch.Tensor, attentions: torch.Tensor, pool: str, eps: float = 1e-6) -> torch.Tensor:
    """BAP written out loop by loop, as DESIGN.md states it, to check the vectorised module against."""
    b, c = features.shape[:2]
    m = attentions.shape[1]
    if attentions.shape[2:] != features.shape[2:]:
        attentions = F.interpolate(attentions, size=features.shape[2:], mode="trilinear", align_corners=False)
    out = torch.zeros(b, m * c, dtype=features.dtype)
    for i in range(b):
        for j in range(m):
            for k in range(c):
                product = attentions[i, j] * features[i, k]
                out[i, j * c + k] = product.mean() if pool == "GAP" else product.max()
    out = torch.sign(out) * torch.sqrt(out.abs() + eps)
    return out / out.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("pool", ["GAP", "GMP"])
@pytest.mark.parametrize("attention_size", [(3, 4, 5), (2, 2, 3)])
def test_bap3d_matches_reference(pool, attention_size):
    torch.manual_seed(0)
    features = torch.randn(2, 5, 3, 4, 5, dtype=torch.float64)
    attentions = torch.rand(2, 3, *attention_size, dtype=torch.float64)
    bap = BAP3D(pool=pool).eval()
    matrix, counterfactual = bap(features, attentions)
    assert matrix.shape == counterfactual.shape == (2, 15)
    torch.testing.assert_close(matrix, reference_bap(features, attentions, pool))
    # eval mode: the counterfactual attention is all ones
    torch.testing.assert_close(counterfactual, reference_bap(features, torch.ones_like(attentions), pool))
    torch.testing.assert_close(matrix.norm(dim=1), torch.ones(2, dtype=torch.float64))


def test_bap3d_counterfactual_is_random_in_training():
    torch.manual_seed(0)
    features, attentions = torch.randn(2, 4, 2, 2, 2), torch.rand(2, 3, 2, 2, 2)
    bap = BAP3D().train()
    first, cf1 = bap(features, attentions)
    second, cf2 = bap(features, attentions)
    torch.testing.assert_close(first, second)  # the factual matrix is deterministic
    assert not torch.allclose(cf1, cf2)  # a new random attention each call
    ones = bap.pool_features(features, torch.ones_like(attentions))
    assert not torch.allclose(cf1, ones)


def test_bap3d_rejects_unknown_pool_and_counterfactual():
    with pytest.raises(ValueError, match="GAP"):
        BAP3D(pool="mean")
    with pytest.raises(ValueError, match="counterfactual"):
        BAP3D(counterfactual="mirror")


@pytest.mark.parametrize("kind", ["uniform", "reversed"])
def test_bap3d_owns_its_counterfactual(kind):
    """The configured kind in training, all ones in eval mode (the seed's inference counterfactual)."""
    features, attentions = torch.randn(2, 4, 2, 2, 2), torch.rand(2, 3, 2, 2, 2)
    bap = BAP3D(counterfactual=kind).train()
    matrix, counterfactual = bap(features, attentions)
    torch.testing.assert_close(matrix, bap.pool_features(features, attentions))
    torch.testing.assert_close(counterfactual, bap.pool_features(features, counterfactual_attention(attentions, kind)))
    _, counterfactual = bap.eval()(features, attentions)
    torch.testing.assert_close(counterfactual, bap.pool_features(features, torch.ones_like(attentions)))


@pytest.mark.parametrize("kind", COUNTERFACTUALS)
def test_counterfactual_kinds(kind):
    torch.manual_seed(0)
    attentions = torch.rand(3, 2, 2, 3, 4, requires_grad=True)
    fake = counterfactual_attention(attentions, kind)
    assert fake.shape == attentions.shape
    assert not fake.requires_grad  # an intervention, not a path for gradients
    a = attentions.detach()
    if kind == "random":
        assert fake.min() >= 0 and fake.max() < 2
    elif kind == "uniform":
        torch.testing.assert_close(fake, a.mean(dim=(2, 3, 4), keepdim=True).expand_as(a))
    elif kind == "reversed":
        torch.testing.assert_close(fake, a.amax(dim=(2, 3, 4), keepdim=True) - a)
    elif kind == "sparse":
        assert fake.min() >= 0 and fake.max() < 2
    else:  # shuffle: every case receives another case's maps
        assert all(not torch.equal(fake[i], a[i]) for i in range(3))
        assert sorted(fake.sum(dim=(1, 2, 3, 4)).tolist()) == pytest.approx(sorted(a.sum(dim=(1, 2, 3, 4)).tolist()))


def test_sparse_counterfactual_keeps_each_maps_sparsity():
    """``sparse`` attends to random voxels, about as many per map as the learned map has above zero."""
    attentions = torch.zeros(4, 2, 10, 10, 10)
    attentions[:, 0, :2] = 1.0  # map 0: 20% of the voxels above zero
    attentions[:, 1] = torch.rand(4, 10, 10, 10) + 0.1  # map 1: dense
    fake = counterfactual_attention(attentions, "sparse", torch.Generator().manual_seed(0))
    kept = (fake > 0).flatten(2).float().mean(dim=2)
    assert kept[:, 0].mean().item() == pytest.approx(0.2, abs=0.03)
    assert kept[:, 1].mean().item() > 0.97
    assert not torch.equal(fake[0, 0] > 0, attentions[0, 0] > 0)  # random places, not the learned ones


def test_counterfactual_draws_leave_the_global_random_stream_alone():
    """Paired runs (CAL on and off) must see the same data order and augmentation: Ā draws from BAP3D's generator."""
    torch.manual_seed(0)
    bap = BAP3D().train()
    features, attentions = torch.randn(2, 4, 2, 2, 2), torch.rand(2, 3, 2, 2, 2)
    before = torch.get_rng_state()
    for kind in ("random", "shuffle", "sparse"):
        bap.counterfactual = kind
        bap(features, attentions)
    assert torch.equal(torch.get_rng_state(), before)
    # the generator is seeded from the global stream when the module is built: the same seed, the same draws
    torch.manual_seed(0)
    again = BAP3D().train()
    torch.testing.assert_close(
        again.counterfactual_attention(attentions), BAP3D.counterfactual_attention(_reseeded(bap, again), attentions)
    )


def _reseeded(bap: BAP3D, like: BAP3D) -> BAP3D:
    bap.counterfactual = like.counterfactual
    torch.manual_seed(0)
    bap.generator = BAP3D().generator
    return bap


def test_shuffle_with_a_batch_of_one_permutes_voxels():
    torch.manual_seed(0)
    attentions = torch.rand(1, 2, 3, 3, 3)
    fake = counterfactual_attention(attentions, "shuffle")
    torch.testing.assert_close(fake.flatten(2).sort(dim=2).values, attentions.flatten(2).sort(dim=2).values)
    assert not torch.equal(fake, attentions)


def test_unknown_counterfactual_is_rejected():
    with pytest.raises(ValueError, match="counterfactual"):
        CALNet(num_classes=2, spatial_size=16, backbone_kwargs=TINY_VIT, counterfactual="mirror")


def tiny_net(**kwargs) -> CALNet:
    torch.manual_seed(0)
    args = {"num_classes": 3, "spatial_size": 16, "backbone": "vit", "backbone_kwargs": TINY_VIT, "num_attentions": 4}
    return CALNet(**{**args, **kwargs})


def test_train_mode_returns_factual_and_effect_logits():
    net = tiny_net().train()
    x = torch.randn(2, 1, 16, 16, 16)
    out = net(x)
    assert set(out) == set(CAL_OUTPUT_KEYS)
    assert out["logits"].shape == out["effect"].shape == out["counterfactual_logits"].shape == (2, 3)
    assert all(out[k] is None for k in ("features", "attentions", "aug_logits", "aug_effect"))
    torch.testing.assert_close(out["effect"], out["logits"] - out["counterfactual_logits"])
    # the effect is Y(A) - Y(Ā): recompute Y(Ā) from the same features with the same random draw
    state = net.bap.generator.get_state()
    out = net(x)
    features = net.backbone(x)
    attentions = net.attention(features)
    fake = counterfactual_attention(attentions, "random", torch.Generator().set_state(state))
    expected = out["logits"] - net.classify(net.bap.pool_features(features, fake))
    torch.testing.assert_close(out["effect"], expected, rtol=1e-4, atol=1e-4)


def test_network_uses_its_bap3d_with_the_configured_counterfactual():
    net = tiny_net(counterfactual="reversed").train()
    assert net.bap.counterfactual == "reversed"
    x = torch.randn(2, 1, 16, 16, 16)
    out = net(x)
    features = net.backbone(x)
    attentions = net.attention(features)
    reversed_attention = attentions.amax(dim=(2, 3, 4), keepdim=True) - attentions
    expected = out["logits"] - net.classify(net.bap.pool_features(features, reversed_attention))
    torch.testing.assert_close(out["effect"], expected, rtol=1e-4, atol=1e-4)


def test_eval_mode_returns_logits_and_computes_no_counterfactual(monkeypatch):
    net = tiny_net().eval()

    def forbidden(*args, **kwargs):
        raise AssertionError("the counterfactual branch ran at inference")

    monkeypatch.setattr(cal_net, "counterfactual_attention", forbidden)
    monkeypatch.setattr(cal_net.BAP3D, "forward", forbidden)
    monkeypatch.setattr(cal_net.BAP3D, "counterfactual_attention", forbidden)
    x = torch.randn(2, 1, 16, 16, 16)
    logits = net(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3)
    torch.testing.assert_close(net(x), logits)  # deterministic
    again, attentions = net.forward_attention(x)
    torch.testing.assert_close(again, logits)
    assert attentions.shape == (2, 4, 4, 4, 4)


def test_cal_off_is_the_plain_baseline(monkeypatch):
    net = tiny_net(cal=False).train()

    def forbidden(*args, **kwargs):
        raise AssertionError("the counterfactual branch ran with cal=False")

    monkeypatch.setattr(cal_net.BAP3D, "forward", forbidden)
    x = torch.randn(2, 1, 16, 16, 16)
    out = net(x)
    assert out["logits"].shape == (2, 3) and out["effect"] is None and out["counterfactual_logits"] is None
    torch.testing.assert_close(factual_logits(out), out["logits"])
    torch.testing.assert_close(factual_logits(net.eval()(x)), net(x))  # the eval tensor passes through


def test_gradients_reach_backbone_and_attention():
    net = tiny_net().train()
    out = net(torch.randn(2, 1, 16, 16, 16))
    (out["logits"].sum() + out["effect"].square().sum()).backward()
    for name in ("backbone", "attention", "fc"):
        # MONAI's transformer block holds a cross-attention norm that a plain ViT never uses
        grads = {n: p.grad for n, p in getattr(net, name).named_parameters() if "cross_attn" not in n}
        assert grads and all(g is not None for g in grads.values()), name
        assert sum(float(g.abs().sum()) for g in grads.values()) > 0, name


def test_effect_gradient_reaches_attention_conv():
    """The effect term alone trains the attention: its gradient w.r.t. the attention conv is non-zero."""
    net = tiny_net().train()
    out = net(torch.randn(2, 1, 16, 16, 16))
    F.cross_entropy(out["effect"], torch.tensor([0, 1])).backward()
    assert float(net.attention[0].weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", sorted(TINY_BACKBONES))
@pytest.mark.parametrize("attention_block", ["conv", "conv_bn_relu"])
def test_backbones_train_and_eval(name, attention_block):
    kwargs, size = TINY_BACKBONES[name]
    net = tiny_net(backbone=name, backbone_kwargs=kwargs, spatial_size=size, attention_block=attention_block)
    x = torch.randn(2, 1, size, size, size)
    out = net.train()(x)
    assert out["logits"].shape == (2, 3)
    net.eval()
    logits, attentions = net.forward_attention(x)
    assert logits.shape == (2, 3) and attentions.shape[:2] == (2, 4)
    if attention_block == "conv_bn_relu":
        assert attentions.min() >= 0


def test_gmp_network_trains():
    net = tiny_net(pool="GMP").train()
    out = net(torch.randn(2, 1, 16, 16, 16))
    out["effect"].sum().backward()
    assert net.attention[0].weight.grad is not None


def test_vit_rejects_indivisible_patch():
    with pytest.raises(ValueError, match="divisible"):
        tiny_net(backbone_kwargs={**TINY_VIT, "patch_size": 5})


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        tiny_net(backbone="vgg")


def test_torchscript_matches_eager_in_eval():
    net = tiny_net().eval()
    scripted = torch.jit.script(net)
    x = torch.randn(2, 1, 16, 16, 16)
    torch.testing.assert_close(scripted(x), net(x))
    torch.testing.assert_close(scripted.forward_attention(x)[1], net.forward_attention(x)[1])


def test_cal_flag_switches_the_training_output():
    """``cal=False`` (``--cal False``) is a plain classifier in training."""
    x = torch.randn(2, 1, 16, 16, 16)
    assert tiny_net(cal=False).train()(x)["effect"] is None
    assert tiny_net(cal=True).train()(x)["effect"] is not None


@pytest.mark.parametrize("cal", [True, False])
@pytest.mark.parametrize("return_features", [True, False])
@pytest.mark.parametrize("tabular", [0, 3])
def test_training_output_has_fixed_fields_and_eval_returns_a_tensor(cal, return_features, tabular):
    """One training type whatever the settings (fields that do not apply are None), a plain tensor in eval."""
    net = tiny_net(cal=cal, return_features=return_features, tabular_features=tabular).train()
    args = (torch.randn(2, 1, 16, 16, 16),) + ((torch.rand(2, tabular),) if tabular else ())
    out = net(*args)
    assert type(out) is dict and tuple(out) == CAL_OUTPUT_KEYS
    assert out["logits"].shape == (2, 3)
    for key in ("counterfactual_logits", "effect"):
        assert (out[key] is not None) is cal and (not cal or out[key].shape == (2, 3))
    assert (out["features"] is not None) is return_features and (out["attentions"] is not None) is return_features
    assert out["aug_logits"] is None and out["aug_effect"] is None
    if cal:  # Y(A, t) - Y(Ā, t), up to rounding (the tabular term cancels exactly in the stored effect)
        torch.testing.assert_close(out["effect"], out["logits"] - out["counterfactual_logits"])
    logits = net.eval()(*args)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(*args), logits)
    assert set(scripted.train()(*args)) == set(CAL_OUTPUT_KEYS)


def test_cal_output_fills_the_missing_fields_with_none():
    logits = torch.zeros(2, 3)
    out = cal_output(logits, effect=logits)
    assert tuple(out) == CAL_OUTPUT_KEYS and out["logits"] is logits and out["effect"] is logits
    assert all(out[k] is None for k in CAL_OUTPUT_KEYS if k not in ("logits", "effect"))
    with pytest.raises(KeyError, match="aug_effects"):
        cal_output(logits, aug_effects=logits)


@pytest.mark.parametrize("num_stages, grid, channels", [(3, 4, 32), (4, 2, 64)])
def test_resnet_stages_trade_depth_for_a_finer_attention_grid(num_stages, grid, channels):
    kwargs = {"depth": 10, "widen_factor": 0.125, "conv1_t_size": 3, "conv1_t_stride": 2, "no_max_pool": True}
    net = CALNet(2, spatial_size=28, backbone="resnet", backbone_kwargs={**kwargs, "num_stages": num_stages}).eval()
    logits, attentions = net.forward_attention(torch.rand(1, 1, 28, 28, 28))
    assert net.backbone.out_channels == channels and attentions.shape[2:] == (grid, grid, grid)
    assert logits.shape == (1, 2)
    with pytest.raises(ValueError, match="num_stages"):
        CALNet(2, backbone="resnet", backbone_kwargs={**kwargs, "num_stages": 5})
