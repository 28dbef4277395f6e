# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The tabular branch: normalisation carried by the model, fusion with the CAL image embedding, the
counterfactual that swaps only the image attention, the tabular-only classifier, TorchScript with two inputs."""

from __future__ import annotations

import io

import pytest
import torch

from scripts.cal_net import CALNet, counterfactual_attention
from scripts.tabular_net import TabularClassifier, TabularEncoder

TINY_VIT = {"patch_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2}
NAN = float("nan")


def net(**kwargs) -> CALNet:
    torch.manual_seed(0)
    args = {"num_classes": 3, "spatial_size": 16, "backbone_kwargs": TINY_VIT, "num_attentions": 4}
    return CALNet(**{**args, **kwargs})


def inputs(batch: int = 2, length: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    tabular = torch.randn(batch, length) * 10 + 50
    tabular[0, 1] = NAN
    return torch.randn(batch, 1, 16, 16, 16), tabular


def test_missing_values_take_the_training_mean_and_are_flagged():
    encoder = TabularEncoder(3, mean=[10.0, 20.0, 30.0], std=[2.0, 0.0, 5.0])
    z = encoder.normalize(torch.tensor([[12.0, NAN, 20.0]]))
    # (x - mean) / std, a missing value at 0 (= its mean), zero std taken as 1; then the missing flags
    torch.testing.assert_close(z, torch.tensor([[1.0, 0.0, -2.0, 0.0, 1.0, 0.0]]))
    no_flags = TabularEncoder(3, missing_indicator=False, mean=[10.0, 20.0, 30.0], std=[2.0, 1.0, 5.0])
    torch.testing.assert_close(no_flags.normalize(torch.tensor([[12.0, NAN, 20.0]])), torch.tensor([[1.0, 0.0, -2.0]]))
    assert encoder(torch.tensor([[12.0, NAN, 20.0]])).shape == (1, 16)


def test_statistics_travel_in_the_state_dict():
    trained = TabularEncoder(2, mean=[5.0, -1.0], std=[2.0, 3.0])
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    fresh = TabularEncoder(2)  # what evaluation / inference build: identity statistics
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(fresh.mean, torch.tensor([5.0, -1.0]))
    torch.testing.assert_close(fresh.std, torch.tensor([2.0, 3.0]))


def test_encoder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="in_features"):
        TabularEncoder(0)
    with pytest.raises(ValueError, match="expected 3"):
        TabularEncoder(3, mean=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        TabularEncoder(3)(torch.zeros(2, 4))


def test_image_only_network_has_no_tabular_part():
    model = net()
    assert model.tabular is None and model.tabular_fc is None
    assert not any(k.startswith("tabular") for k in model.state_dict())


def test_fused_network_adds_the_tabular_share_to_the_logits():
    model = net(tabular_features=5).eval()
    x, t = inputs()
    logits = model(x, t)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3)
    features = model.backbone(x)
    image_logits = model.classify(model.bap.pool_features(features, model.attention(features)))
    torch.testing.assert_close(logits, image_logits + model.tabular_fc(model.tabular(t)))
    assert not torch.allclose(model(x, t + 5.0), logits)  # the tabular values matter
    again, attentions = model.forward_attention(x, t)
    torch.testing.assert_close(again, logits)
    assert attentions.shape == (2, 4, 4, 4, 4)
    with pytest.raises(ValueError, match="second input"):
        model(x)


def test_counterfactual_swaps_only_the_image_attention():
    """Y(A, t) - Y(Ā, t): the effect is the image-only effect, whatever the tabular values."""
    model = net(tabular_features=5).train()
    x, t = inputs()
    state = model.bap.generator.get_state()
    out = model(x, t)
    model.bap.generator.set_state(state)
    shifted = model(x, t * 2.0 + 1.0)
    assert not torch.allclose(out["logits"], shifted["logits"])
    torch.testing.assert_close(out["effect"], shifted["effect"], rtol=1e-4, atol=1e-4)
    features = model.backbone(x)
    attentions = model.attention(features)
    fake = counterfactual_attention(attentions, "random", torch.Generator().set_state(state))
    expected = model.classify(model.bap.pool_features(features, attentions)) - model.classify(
        model.bap.pool_features(features, fake)
    )
    torch.testing.assert_close(out["effect"], expected, rtol=1e-4, atol=1e-4)


def test_gradients_reach_both_branches():
    model = net(tabular_features=5).train()
    x, t = inputs()
    out = model(x, t)
    torch.nn.functional.cross_entropy(out["logits"], torch.tensor([0, 2])).backward()
    for part in (model.tabular, model.tabular_fc, model.attention, model.fc):
        assert sum(float(p.grad.abs().sum()) for p in part.parameters()) > 0


def tabular_only(**kwargs) -> TabularClassifier:
    torch.manual_seed(0)
    return TabularClassifier(**{"num_classes": 3, "tabular_features": 5, **kwargs})


def test_tabular_only_classifier():
    model = tabular_only().train()
    assert all(k.startswith("tabular") for k in model.state_dict())  # the fused network's tabular keys
    x, t = inputs()
    out = model(x, t)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)  # no counterfactual without an image branch
    torch.testing.assert_close(out, model(torch.zeros(1), t))  # the image is ignored
    assert not hasattr(model, "forward_attention")
    with pytest.raises(ValueError, match="second input"):
        model(x)
    with pytest.raises(ValueError, match="tabular_length"):
        tabular_only(tabular_features=0)


@pytest.mark.parametrize("image_branch", [True, False], ids=["fused", "tabular_only"])
def test_torchscript_with_two_inputs(image_branch):
    build = net if image_branch else tabular_only
    model = build(tabular_features=5, tabular_kwargs={"mean": [50.0] * 5}).eval()
    scripted = torch.jit.script(model)
    x, t = inputs()
    torch.testing.assert_close(scripted(x, t), model(x, t))
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    torch.testing.assert_close(loaded(x, t), model(x, t))
    torch.testing.assert_close(loaded.tabular.mean, torch.full((5,), 50.0))  # the statistics are in the file
    if image_branch:
        torch.testing.assert_close(loaded.forward_attention(x, t)[1], model.forward_attention(x, t)[1])
