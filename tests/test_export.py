# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Export: ``monai.bundle ckpt_export`` (TorchScript) and ``monai.bundle onnx_export`` give networks whose outputs equal
the eager network's in eval mode, for the ViT and a CNN backbone; inference.json runs from model.ts as from model.pt.

Tolerances: TorchScript runs the same kernels as eager PyTorch, so its logits and attention maps must agree to
rtol = atol = 1e-5; ONNX Runtime has its own kernels (other summation orders), so rtol = atol = 1e-4.
"""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from scripts.losses import CALLoss
from tests.conftest import ROOT, SYNTHETIC_INFERENCE, TINY_OVERRIDES, run_bundle

pytestmark = pytest.mark.slow
META = str(ROOT / "configs" / "metadata.json")
INFERENCE = SYNTHETIC_INFERENCE  # the tiny models here are trained with train.json's network
TS_TOL = {"rtol": 1e-5, "atol": 1e-5}
ONNX_TOL = {"rtol": 1e-4, "atol": 1e-4}
BACKBONES = {"vit": [], "resnet": ["--backbone", "resnet", "--backbone_args#resnet#widen_factor", "0.125"]}
# what `python -m monai.bundle onnx_export` needs: the TorchScript-based exporter (the dynamo one needs onnxscript),
# named tensors and a free batch size
ONNX_CONVERTER_KWARGS = (
    "{'dynamo': False, 'input_names': ['image'], 'output_names': ['pred'], "
    "'dynamic_axes': {'image': {0: 'batch'}, 'pred': {0: 'batch'}}}"
)


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _network(cli_overrides: list[str]) -> torch.nn.Module:
    """inference.json's ``network_def`` with command-line style overrides applied."""
    parser = ConfigParser()
    parser.read_config([str(ROOT / f) for f in ("configs/inference.json", "configs/synthetic_attention.json")])
    parser["bundle_root"] = str(ROOT)
    for key, value in zip(cli_overrides[::2], cli_overrides[1::2]):
        parser[key.lstrip("-")] = _value(value)
    return parser.get_parsed_content("network_def")


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def exported(request, tmp_path_factory) -> dict:
    """A tiny network trained for three CAL steps (so BatchNorm statistics are not the defaults), saved as model.pt,
    and exported to model.ts by the model zoo's command."""
    overrides = TINY_OVERRIDES + BACKBONES[request.param]
    folder = tmp_path_factory.mktemp(f"export_{request.param}")
    torch.manual_seed(0)
    net = _network(overrides).train()
    loss, optimizer = CALLoss(), torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        loss(net(torch.rand(4, 1, 16, 16, 16)), torch.randint(0, 4, (4,))).backward()
        optimizer.step()
    torch.save(net.state_dict(), folder / "model.pt")
    run_bundle(
        "ckpt_export", "network_def", "--filepath", str(folder / "model.ts"), "--ckpt_file", str(folder / "model.pt"),
        "--meta_file", META, "--config_file", INFERENCE, *overrides,
    )  # fmt: skip
    eager = _network(overrides)
    eager.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    return {"name": request.param, "dir": folder, "eager": eager.eval(), "overrides": overrides}


def test_torchscript_matches_eager(exported):
    scripted = torch.jit.load(str(exported["dir"] / "model.ts"))
    scripted.eval()
    x = torch.rand(3, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), exported["eager"](x), **TS_TOL)
        logits_ts, attention_ts = scripted.forward_attention(x)
        logits, attention = exported["eager"].forward_attention(x)
    torch.testing.assert_close(logits_ts, logits, **TS_TOL)
    torch.testing.assert_close(attention_ts, attention, **TS_TOL)
    assert logits.shape == (3, 4) and logits.std() > 0


def test_torchscript_carries_the_metadata(exported):
    extra = {"metadata.json": ""}
    torch.jit.load(str(exported["dir"] / "model.ts"), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    assert meta["name"] == "CAL 3D classification" and "network_data_format" in meta


def test_onnx_matches_eager(exported):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx onnxruntime)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
    path = exported["dir"] / "model.onnx"
    run_bundle(
        "onnx_export", "network_def", "--filepath", str(path), "--ckpt_file", str(exported["dir"] / "model.pt"),
        "--meta_file", META, "--config_file", INFERENCE, "--use_trace", "true", "--input_shape", "[1,1,16,16,16]",
        "--converter_kwargs", ONNX_CONVERTER_KWARGS, *exported["overrides"],
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    x = torch.rand(3, 1, 16, 16, 16, generator=torch.Generator().manual_seed(2))  # another batch size than exported
    (pred,) = session.run(["pred"], {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(pred), exported["eager"](x), **ONNX_TOL)


def _read_predictions(folder: Path) -> dict[str, np.ndarray]:
    rows = list(csv.DictReader(open(folder / "predictions.csv")))
    return {r["case"]: np.array([float(v) for k, v in r.items() if k.startswith("prob_")]) for r in rows}


def test_inference_runs_from_torchscript_as_from_checkpoint(exported, tiny_dataset, tmp_path):
    """``--ckpt_path models/model.ts`` switches inference.json to the TorchScript model: same probabilities, same
    attention maps (written in the input's geometry) as from model.pt."""
    outputs = {}
    for suffix in ("pt", "ts"):
        outputs[suffix] = tmp_path / suffix
        run_bundle(
            "run", "inferring", "--config_file", INFERENCE, "--dataset_dir", str(tiny_dataset),
            "--ckpt_path", str(exported["dir"] / f"model.{suffix}"), "--output_dir", str(outputs[suffix]),
            *exported["overrides"],
        )  # fmt: skip
    from_pt, from_ts = _read_predictions(outputs["pt"]), _read_predictions(outputs["ts"])
    assert len(from_ts) == 8 and from_pt.keys() == from_ts.keys()
    for case in from_ts:
        np.testing.assert_allclose(from_ts[case], from_pt[case], atol=1e-5)
        np.testing.assert_allclose(from_ts[case].sum(), 1.0, atol=1e-4)
        attention_ts = nib.load(outputs["ts"] / f"{case}_attention.nii.gz")
        attention_pt = nib.load(outputs["pt"] / f"{case}_attention.nii.gz")
        image = nib.load(tiny_dataset / "images" / f"{case}.nii.gz")
        assert attention_ts.shape == image.shape
        np.testing.assert_allclose(attention_ts.affine, image.affine, atol=1e-5)
        np.testing.assert_allclose(attention_ts.get_fdata(), attention_pt.get_fdata(), atol=1e-5)


def test_checkpoint_loader_is_skipped_for_torchscript():
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    parser["bundle_root"] = str(ROOT)
    assert parser.get_parsed_content("use_torchscript") is False
    parser["ckpt_path"] = "models/model.ts"
    assert parser.get_parsed_content("use_torchscript") is True
