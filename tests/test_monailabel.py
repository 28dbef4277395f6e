# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
MONAI Label serves the bundle: the real server runs the bundle's app (scripts/tools/monailabel_app) on 127.0.0.1, one
NIfTI volume goes to ``/infer/cal_3d_classification`` over HTTP, and the answer names the predicted class and the
probabilities of the classes in the metadata's ``channel_def``, equal to the bundle's own preprocessing and network
run in this process.

monailabel needs a torchvision built for its torch, so it lives in its own virtual environment. The test uses the
first Python that imports it among: ``$MONAILABEL_PYTHON``, ``.venv-monailabel/bin/python`` (made by ``.ci/run``),
``../venv-monailabel/bin/python``, and the interpreter running the tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export

from scripts.tools.synthetic_data import synthetic_case
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
MODEL = "cal_3d_classification"
STARTUP_TIMEOUT_S = 240


def _monailabel_python() -> str | None:
    candidates = [
        os.environ.get("MONAILABEL_PYTHON"),
        ROOT / ".venv-monailabel" / "bin" / "python",
        ROOT.parent / "venv-monailabel" / "bin" / "python",
    ]
    for python in candidates:
        if python and Path(python).is_file():
            probe = subprocess.run([str(python), "-c", "import monailabel"], capture_output=True, timeout=300)
            if probe.returncode == 0:
                return str(python)
    return sys.executable if importlib.util.find_spec("monailabel") else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def _post_file(url: str, path: Path, timeout: float = 120) -> dict:
    """POST ``path`` as the multipart field ``file`` (what MONAI Label's clients send); the JSON answer."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    )
    body = head.encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _bundle_copy(folder: Path, weights: str) -> tuple[Path, Path]:
    """
    The bundle's configs and scripts with random weights of inference.json's network, as ``models/model.pt`` or, for
    ``weights="ts"``, only as ``models/model.ts`` exported by the model zoo's ``ckpt_export``. Returns the bundle and
    the checkpoint (state dict) of its weights.
    """
    bundle = folder / MODEL
    (bundle / "models").mkdir(parents=True)
    for name in ("configs", "scripts"):
        (bundle / name).symlink_to(ROOT / name, target_is_directory=True)
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    parser["bundle_root"] = str(ROOT)
    torch.manual_seed(0)
    checkpoint = folder / "model.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), checkpoint)
    if weights == "pt":
        shutil.copy(checkpoint, bundle / "models" / "model.pt")
    else:
        ckpt_export(
            net_id="network_def", filepath=str(bundle / "models" / "model.ts"), ckpt_file=str(checkpoint),
            meta_file=str(ROOT / "configs" / "metadata.json"), config_file=str(ROOT / "configs" / "inference.json"),
            bundle_root=str(ROOT),
        )  # fmt: skip
    return bundle, checkpoint


@pytest.fixture(scope="module", params=["pt", "ts"], ids=["model.pt", "model.ts"])
def server(request, tmp_path_factory):
    """A MONAI Label server with the bundle's app and a copy of the bundle whose weights are ``models/model.pt`` or
    only ``models/model.ts``; stopped after the tests that use it."""
    python = _monailabel_python()
    if python is None:
        pytest.skip(
            "monailabel is not installed: create its environment as .ci/run does (README, 'Serve the bundle with "
            "MONAI Label') or set MONAILABEL_PYTHON to a Python that imports monailabel"
        )
    tmp = tmp_path_factory.mktemp(f"monailabel_{request.param}")
    bundle, checkpoint = _bundle_copy(tmp, request.param)
    app = tmp / "app"  # MONAI Label writes logs and folders into its app directory: use a copy
    app.mkdir()
    shutil.copy(ROOT / "scripts" / "monailabel_app" / "main.py", app / "main.py")
    (tmp / "studies").mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    log = open(tmp / "server.log", "w")
    cmd = [python, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(tmp / "studies"),
           "--conf", "bundle", str(bundle), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"MONAI Label exited with {proc.returncode}:\n{(tmp / 'server.log').read_text()[-4000:]}")
            try:
                if _get(url + "/info/")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"MONAI Label not up in {STARTUP_TIMEOUT_S} s:\n{(tmp / 'server.log').read_text()[-4000:]}")
            time.sleep(1)
        yield {"url": url, "checkpoint": checkpoint, "dir": tmp}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _class_names() -> list[str]:
    channels = json.loads((ROOT / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]
    return [channels["channel_def"][str(i)] for i in range(len(channels["channel_def"]))]


def _expected_probabilities(checkpoint: Path, image: Path) -> np.ndarray:
    """The bundle's preprocessing, network and softmax, in this process."""
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    parser["bundle_root"] = str(ROOT)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(checkpoint, weights_only=True))
    data = parser.get_parsed_content("preprocessing")({"image": str(image)})
    with torch.no_grad():
        return torch.softmax(net.eval()(data["image"][None].as_tensor()), dim=1)[0].numpy()


def test_server_lists_the_bundle_as_a_classifier(server):
    info = json.loads(_get(server["url"] + "/info/")[1])
    model = info["models"][MODEL]
    assert model["type"] == "classification" and model["dimension"] == 3
    assert model["labels"] == {name.lower(): i for i, name in enumerate(_class_names())}


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    """A volume of another size and spacing than the network's input: the bundle's preprocessing must resize it."""
    image, _ = synthetic_case(np.random.default_rng(3), label=2, size=24)
    path = tmp_path_factory.mktemp("volume") / "case.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return path


def test_infer_returns_class_and_probabilities_for_a_volume(server, volume):
    answer = _post_file(f"{server['url']}/infer/{MODEL}?output=json", volume)

    names = _class_names()
    assert list(answer["probabilities"]) == names
    probs = np.array([answer["probabilities"][n] for n in names])
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)
    assert answer["class_index"] == int(probs.argmax()) and answer["class_name"] == names[answer["class_index"]]
    assert [(p["idx"], p["label"]) for p in answer["prediction"]] == [(i, n.lower()) for i, n in enumerate(names)]
    np.testing.assert_allclose([p["score"] for p in answer["prediction"]], probs, atol=1e-6)
    np.testing.assert_allclose(probs, _expected_probabilities(server["checkpoint"], volume), atol=1e-4)


def test_unknown_model_is_an_error(server, volume):
    with pytest.raises(urllib.error.HTTPError):
        _post_file(f"{server['url']}/infer/not_a_model?output=json", volume)
