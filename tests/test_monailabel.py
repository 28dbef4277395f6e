# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
MONAI Label serves the bundle, tested as a client uses it: the real server runs the bundle's app
(scripts/tools/monailabel_app) on 127.0.0.1 and every exchange goes over HTTP.

* ``server`` (a copy of the bundle with random weights as ``models/model.pt`` or only ``models/model.ts``): one volume
  to ``/infer/cal_3d_classification`` is answered with the predicted class and the probabilities, equal to the
  bundle's own preprocessing and network run in this process.
* ``loop_server`` (the tiny synthetic network of tests/conftest.py, passed with ``--conf configs`` and ``--conf
  overrides``): volumes are uploaded and labelled, the next sample is asked for, one short epoch is trained with
  ``/train``, and ``/infer`` then serves the new weights with the attention map as a NIfTI in the input's geometry;
  bad requests are answered 4xx with the bundle's screening message while the server keeps serving.

monailabel lives in its own virtual environment. The test uses the first Python that imports it among:
``$MONAILABEL_PYTHON``, ``.venv-monailabel/bin/python`` (made by ``.ci/run``), ``../venv-monailabel/bin/python``, and
the interpreter running the tests.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export

from scripts.tools.synthetic_data import synthetic_case
from tests.conftest import ROOT, TINY_OVERRIDES

pytestmark = pytest.mark.slow
MODEL = "cal_3d_classification"
STARTUP_TIMEOUT_S = 240
TRAIN_TIMEOUT_S = 300
APP = ROOT / "scripts" / "tools" / "monailabel_app" / "main.py"


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


def _inference_parser(configs: tuple[str, ...] = (), overrides: dict | None = None) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "inference.json")] + [str(ROOT / c) for c in configs])
    parser["bundle_root"] = str(ROOT)
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def _bundle_copy(
    folder: Path, weights: str, configs: tuple[str, ...] = (), overrides: dict | None = None
) -> tuple[Path, Path]:
    """
    The bundle's configs and scripts with random weights of inference.json's network (with ``configs`` and
    ``overrides`` on top), as ``models/model.pt`` or, for ``weights="ts"``, only as ``models/model.ts`` exported by
    the model zoo's ``ckpt_export``. Returns the bundle and the checkpoint (state dict) of its weights.
    """
    bundle = folder / MODEL
    (bundle / "models").mkdir(parents=True)
    for name in ("configs", "scripts"):
        (bundle / name).symlink_to(ROOT / name, target_is_directory=True)
    parser = _inference_parser(configs, overrides)
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


def _require_monailabel() -> str:
    python = _monailabel_python()
    if python is None:
        pytest.skip(
            "monailabel is not installed: create its environment as .ci/run does (README, 'Serve the bundle with "
            "MONAI Label') or set MONAILABEL_PYTHON to a Python that imports monailabel"
        )
    return python


@contextlib.contextmanager
def _running_server(python: str, tmp: Path, bundle: Path, conf: tuple[str, ...] = ()):
    """``monailabel start_server`` with a copy of the app (MONAI Label writes logs and folders into its app
    directory), the bundle and ``--conf`` pairs ``conf``, on a free loopback port; stopped on exit."""
    app = tmp / "app"
    app.mkdir()
    shutil.copy(APP, app / "main.py")
    (tmp / "studies").mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    log = open(tmp / "server.log", "w")
    cmd = [python, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(tmp / "studies"),
           "--conf", "bundle", str(bundle), *conf, "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
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
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module", params=["pt", "ts"], ids=["model.pt", "model.ts"])
def server(request, tmp_path_factory):
    """A MONAI Label server with the bundle's app and a copy of the bundle whose weights are ``models/model.pt`` or
    only ``models/model.ts``; stopped after the tests that use it."""
    python = _require_monailabel()
    tmp = tmp_path_factory.mktemp(f"monailabel_{request.param}")
    bundle, checkpoint = _bundle_copy(tmp, request.param)
    with _running_server(python, tmp, bundle) as url:
        yield {"url": url, "checkpoint": checkpoint, "dir": tmp}


def _class_names() -> list[str]:
    channels = json.loads((ROOT / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]
    return [channels["channel_def"][str(i)] for i in range(len(channels["channel_def"]))]


def _expected_probabilities(
    checkpoint: Path, image: Path, configs: tuple[str, ...] = (), overrides: dict | None = None
) -> np.ndarray:
    """The bundle's preprocessing, network and softmax, in this process."""
    parser = _inference_parser(configs, overrides)
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
    with pytest.raises(urllib.error.HTTPError) as error:
        _post_file(f"{server['url']}/infer/not_a_model?output=json", volume)
    assert error.value.code == 404 and MODEL in json.loads(error.value.read())["detail"]


# ---- the labelling loop, as a client runs it -------------------------------------------------------------------------

SYNTHETIC = ("configs/synthetic_attention.json",)
TINY = {TINY_OVERRIDES[i][2:]: json.loads(TINY_OVERRIDES[i + 1]) for i in range(0, len(TINY_OVERRIDES), 2)}
SYNTHETIC_CLASSES = ["solid", "hollow", "striped", "checkered"]
LABELS = {"vol0": 0, "vol1": "hollow", "vol2": 2, "vol3": "Checkered", "vol4": 0, "vol5": 1, "vol6": "2", "vol7": 3}
NUM_VOLUMES = 9
MAX_VOXELS = 20_000  # the loop server's size limit: the 16^3 volumes fit, a 32^3 one does not


def _request(method: str, url: str, fields: dict | None = None, files: dict | None = None, body: dict | None = None,
             timeout: float = 120) -> tuple[int, str, bytes]:  # fmt: skip
    """One HTTP request with form ``fields`` and ``files`` (multipart) or a JSON ``body``; (status, content type,
    body) whatever the status."""
    status, headers, data = _request_headers(method, url, fields, files, body, timeout)
    return status, headers.get("Content-Type", ""), data


def _request_headers(method: str, url: str, fields: dict | None = None, files: dict | None = None,
                     body: dict | None = None, timeout: float = 120) -> tuple[int, Any, bytes]:  # fmt: skip
    """:func:`_request` answering (status, headers, body)."""
    headers, data = {}, None
    if fields or files:
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in (fields or {}).items()
        ]
        for name, path in (files or {}).items():
            head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n")  # fmt: skip
            parts.append(head.encode() + path.read_bytes() + b"\r\n")
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _assert_serving(url: str) -> None:
    assert _get(url + "/info/")[0] == 200, "the server stopped serving"


def _save(path: Path, array: np.ndarray, spacing: float = 2.0) -> Path:
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([spacing, spacing, spacing, 1.0])), path)
    return path


@pytest.fixture(scope="module")
def loop_server(tmp_path_factory):
    """A server for the tiny synthetic network (``--conf configs`` and ``--conf overrides``) with random weights, and
    volumes of 20^3 voxels (the network takes 16^3: the preprocessing resizes them) to upload."""
    python = _require_monailabel()
    tmp = tmp_path_factory.mktemp("monailabel_loop")
    bundle, checkpoint = _bundle_copy(tmp, "pt", SYNTHETIC, TINY)
    volumes = tmp / "volumes"
    volumes.mkdir()
    rng = np.random.default_rng(5)
    paths = [
        _save(volumes / f"vol{i}.nii.gz", synthetic_case(rng, label=i % 4, size=20)[0]) for i in range(NUM_VOLUMES)
    ]
    overrides = json.dumps({**TINY, "max_voxels": MAX_VOXELS})
    conf = ("--conf", "configs", ",".join(SYNTHETIC), "--conf", "overrides", overrides, "--conf", "epochs", "1",
            "--conf", "min_val_per_class", "1")  # fmt: skip
    with _running_server(python, tmp, bundle, conf) as url:
        yield {"url": url, "dir": tmp, "volumes": paths, "checkpoint": checkpoint}


def _parts(content_type: str, body: bytes) -> dict[str, tuple[str, bytes, str | None]]:
    """The parts of a multipart answer: name -> (content type, bytes, file name)."""
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )  # fmt: skip
    return {p.get_param("name", header="content-disposition"): (p.get_content_type(), p.get_payload(decode=True),
            p.get_filename()) for p in message.iter_parts()}  # fmt: skip


def _train(url: str, params: dict) -> dict:
    """POST /train with ``params`` and wait for the task to end; its status."""
    status, _, body = _request("POST", f"{url}/train/{MODEL}", body=params)
    assert status == 200, body
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while (task := json.loads(_request("GET", f"{url}/train/")[2]))["status"] in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, f"training not done in {TRAIN_TIMEOUT_S} s: {task}"
        time.sleep(2)
    return task


def test_labelling_loop(loop_server):
    url, tmp = loop_server["url"], loop_server["dir"]
    model = f"{url}/infer/{MODEL}"

    # the volumes go into the datastore, and a client sets the classes of some (index or name, any case)
    for path in loop_server["volumes"]:
        status, _, body = _request("PUT", f"{url}/datastore/image?image={path.name[:-7]}", files={"file": path})
        assert status == 200, body
    for image in ("vol0", "vol4"):  # one class labelled: training refuses before it starts, class counts first
        assert _request("PUT", f"{url}/datastore/image/info?image={image}", {"info": '{"label": 0}'})[0] == 200
    status, _, body = _request("POST", f"{url}/train/{MODEL}", body={"max_epochs": 1})
    counts = "not trained: labelled volumes per class: solid 2, hollow 0, striped 0, checkered 0."
    assert status == 422 and json.loads(body)["detail"].startswith(counts), body
    task = json.loads(_request("GET", f"{url}/train/")[2])
    assert task["status"] == "ERROR" and task["details"][0].startswith(counts), task
    for image, label in LABELS.items():
        status, _, body = _request(
            "PUT", f"{url}/datastore/image/info?image={image}", {"info": json.dumps({"label": label})}
        )
        assert status == 200, body
    info = json.loads(_request("GET", f"{url}/datastore/image/info?image=vol3")[2])
    assert (info["label"], info["class_name"]) == (3, "checkered")
    assert json.loads(_request("GET", f"{url}/datastore/")[2])["completed"] == len(LABELS)
    # kept in the datastore's file: a restarted server reads them back
    stored = json.loads((tmp / "studies" / "datastore_v2.json").read_text())["objects"]
    assert {k: v["image"]["info"].get("label") for k, v in stored.items() if "label" in v["image"]["info"]} == {
        "vol0": 0, "vol1": 1, "vol2": 2, "vol3": 3, "vol4": 0, "vol5": 1, "vol6": 2, "vol7": 3
    }  # fmt: skip

    # the next volume worth labelling: an unlabelled one, the least certain
    unlabelled = {f"vol{i}" for i in range(NUM_VOLUMES)} - set(LABELS)
    for strategy in ("entropy", "margin"):
        status, _, body = _request("POST", f"{url}/activelearning/{strategy}")
        answer = json.loads(body)
        assert status == 200 and answer["id"] in unlabelled, answer
        assert list(answer["probabilities"]) == SYNTHETIC_CLASSES and strategy in answer

    # a validation share too small to compare models is refused, saying how many volumes per class it needs
    status, _, body = _request("POST", f"{url}/train/{MODEL}", body={"max_epochs": 1, "val_split": 0.2})
    assert status == 422 and "label at least 3 volumes of each class" in json.loads(body)["detail"], body

    # one short epoch of the bundle's training, from the served weights, on the labelled volumes; its progress and
    # the served and new weights' figures on the same held-out volumes are in the train status (min_gain -1: publish
    # even a worse model, which the status says)
    task = _train(url, {"max_epochs": 1, "val_split": 0.5, "min_gain": -1})
    details = "\n".join(task.get("details", []))
    assert task["status"] == "DONE", details + (tmp / "server.log").read_text()[-3000:]
    assert "Epoch[1]" in details and "served weights (" in details and "new weights (" in details
    assert "published" in details and "starting from the served weights" in (tmp / "server.log").read_text()
    published = tmp / "app" / "model" / MODEL / "model.pt"
    stats = json.loads((published.parent / "train_stats.json").read_text())
    assert stats["published"] and not stats["from_scratch"] and stats["validation"] == 4
    assert 0 <= stats["served"]["auc"] <= 1 and 0 <= stats["new"]["auc"] <= 1
    datalist = json.loads((published.parent / "train" / "datalist.json").read_text())
    assert len(datalist["training"]) + len(datalist["validation"]) == len(LABELS)
    assert sorted(v["label"] for v in datalist["validation"]) == [0, 1, 2, 3]
    assert datalist["labels"] == {str(i): n for i, n in enumerate(SYNTHETIC_CLASSES)}

    # /infer serves the new weights: class answer and attention map (multipart, as 3D Slicer asks for it), named
    # after the upload
    volume = loop_server["volumes"][-1]
    status, content_type, body = _request("POST", f"{model}?output=all", files={"file": volume})
    assert status == 200 and content_type.startswith("multipart/"), body[:500]
    parts = _parts(content_type, body)
    assert parts["image"][2] == "vol8_attention.nii.gz"
    answer = json.loads(parts["params"][1])
    probs = np.array([answer["probabilities"][n] for n in SYNTHETIC_CLASSES])
    assert answer["class_name"] == SYNTHETIC_CLASSES[int(probs.argmax())]
    np.testing.assert_allclose(probs, _expected_probabilities(published, volume, SYNTHETIC, TINY), atol=1e-4)
    assert not np.allclose(probs, _expected_probabilities(loop_server["checkpoint"], volume, SYNTHETIC, TINY))
    attention = tmp / "attention.nii.gz"
    attention.write_bytes(parts["image"][1])
    amap, source = nib.load(attention), nib.load(volume)
    assert amap.shape == source.shape and np.allclose(amap.affine, source.affine)
    values = amap.get_fdata()
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1 + 1e-6 and values.max() > 0

    # by image id, the attention map alone, named after the image
    status, headers, body = _request_headers("POST", f"{model}?image=vol8&output=image")
    assert status == 200 and body[:2] == b"\x1f\x8b"  # gzip: a .nii.gz
    assert 'filename="vol8_attention.nii.gz"' in headers.get("Content-Disposition", "")
    _assert_serving(url)


def test_train_keeps_the_served_model_unless_as_good_and_rolls_back(loop_server):
    """After the loop's training: rollback serves the bundle's weights again; a training whose model does not reach
    the served one's figure (min_gain 2: never) leaves them served and says why."""
    url, tmp = loop_server["url"], loop_server["dir"]
    published = tmp / "app" / "model" / MODEL / "model.pt"
    volume = loop_server["volumes"][-1]
    if not published.is_file():
        pytest.skip("needs the weights published by test_labelling_loop")
    status, _, body = _request("POST", f"{url}/train/{MODEL}/rollback")
    answer = json.loads(body)
    assert status == 200 and not published.exists() and Path(answer["retired"]).is_file(), body
    assert answer["serving"] == str(tmp / MODEL / "models" / "model.pt")
    original = _expected_probabilities(loop_server["checkpoint"], volume, SYNTHETIC, TINY)
    answer = _post_file(f"{url}/infer/{MODEL}?output=json", volume)
    np.testing.assert_allclose([answer["probabilities"][n] for n in SYNTHETIC_CLASSES], original, atol=1e-4)

    task = _train(url, {"max_epochs": 1, "val_split": 0.5, "min_gain": 2})
    assert task["status"] == "DONE", task
    details = "\n".join(task["details"])
    assert "not published: the new weights' macro AUC" in details and "below min_gain 2" in details, details
    assert "served weights (" in details and "keeps serving" in details
    assert not published.exists()
    answer = _post_file(f"{url}/infer/{MODEL}?output=json", volume)
    np.testing.assert_allclose([answer["probabilities"][n] for n in SYNTHETIC_CLASSES], original, atol=1e-4)


def _bad_inputs(folder: Path) -> dict[str, Path]:
    from PIL import Image

    (folder / "notes.txt").write_text("not an image")
    (folder / "text.nii.gz").write_text("not an image either")
    (folder / "empty.nii.gz").write_bytes(b"")
    _save(folder / "rgb.nii.gz", np.random.default_rng(0).random((16, 16, 16, 3)))
    _save(folder / "flat.nii.gz", np.random.default_rng(0).random((16, 16)))
    _save(folder / "big.nii.gz", np.zeros((32, 32, 32), dtype=np.float32))
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)).save(folder / "slice.png")
    return {p.name: p for p in folder.iterdir()}


@pytest.mark.parametrize(
    "name, status, words",
    [
        ("notes.txt", 415, "unreadable image"),
        ("text.nii.gz", 415, "unreadable image"),
        ("empty.nii.gz", 400, "empty"),
        ("rgb.nii.gz", 422, "3 channels"),
        ("flat.nii.gz", 422, "not a 3D volume"),
        ("slice.png", 422, "not a 3D volume"),
        ("big.nii.gz", 422, "more than max_voxels"),
    ],
)
def test_bad_upload_is_a_client_error(loop_server, tmp_path, name, status, words):
    path = _bad_inputs(tmp_path)[name]
    code, _, body = _request("POST", f"{loop_server['url']}/infer/{MODEL}?output=json", files={"file": path})
    assert code == status, body
    assert words in json.loads(body)["detail"] and "Fix:" in json.loads(body)["detail"]
    _assert_serving(loop_server["url"])


@pytest.mark.parametrize(
    "method, path, form, status, words",
    [
        ("POST", f"/infer/{MODEL}?image=no_such_volume&output=json", None, 404, "not in the datastore"),
        ("PUT", "/datastore/image/info?image=no_such_volume", {"info": '{"label": 1}'}, 404, "not in the datastore"),
        ("PUT", "/datastore/image/info?image=vol0", {"info": '{"label": "purple"}'}, 422, "not a class"),
        ("PUT", "/datastore/image/info?image=vol0", {"info": '{"label": 7}'}, 422, "not a class"),
        ("PUT", "/datastore/image/info?image=vol0", {"info": "notjson"}, 422, "is not JSON"),
        ("POST", f"/infer/{MODEL}?output=json", None, 422, "no volume"),
        ("POST", f"/infer/{MODEL}?image=vol0&output=json", {"params": "notjson"}, 422, "is not JSON"),
        ("POST", "/infer/nosuch?image=vol0&output=json", None, 404, MODEL),
        ("POST", "/activelearning/nosuch", None, 404, "entropy"),
        ("POST", "/train/nosuch", None, 404, MODEL),
        # only datastore ids: a server path, existing or not, is the same 404
        ("POST", f"/infer/{MODEL}?image=../studies/vol0&output=json", None, 404, "not in the datastore"),
        ("POST", f"/infer/{MODEL}?image={APP}&output=json", None, 404, "not in the datastore"),
        ("POST", f"/infer/{MODEL}?image=/no/such/file.nii.gz&output=json", None, 404, "not in the datastore"),
        ("POST", f"/infer/{MODEL}?output=json", {"params": json.dumps({"image": str(APP)})}, 422, "no volume"),
        ("DELETE", "/datastore/image?id=../decoy", None, 400, "not a plain name"),
        ("DELETE", "/datastore/image?id=no_such_volume", None, 404, "not in the datastore"),
    ],
)
def test_bad_request_is_a_client_error(loop_server, method, path, form, status, words):
    if (
        path.startswith("/datastore/image/info?image=vol0")
        and not (loop_server["dir"] / "studies" / "vol0.nii.gz").exists()
    ):
        _request("PUT", f"{loop_server['url']}/datastore/image?image=vol0", files={"file": loop_server["volumes"][0]})
    decoy = loop_server["dir"] / "studies" / ".." / "decoy.nii.gz"
    decoy.write_bytes(loop_server["volumes"][0].read_bytes())
    code, _, body = _request(method, loop_server["url"] + path, form)
    assert code == status, body
    assert words in json.loads(body)["detail"]
    assert decoy.is_file() and (loop_server["dir"] / "studies" / "vol0.nii.gz").is_file()
    _assert_serving(loop_server["url"])


@pytest.mark.parametrize(
    "image, name, status, words",
    [
        ("../../../tmp/escape", "case.nii.gz", 400, "not a plain name"),
        ("../escape", "case.nii.gz", 400, "not a plain name"),
        ("..", "case.nii.gz", 400, "not a plain name"),
        ("notes", "notes.txt", 415, "not a volume file"),
        ("escape", "case.nii.gz.txt", 415, "not a volume file"),
        ("escape", "text.nii.gz", 415, "unreadable image"),
        ("escape", "flat.nii.gz", 422, "not a 3D volume"),
        (None, "notes.txt", 415, "not a volume file"),
    ],
)
def test_datastore_upload_stays_inside_and_takes_only_volumes(loop_server, tmp_path, image, name, status, words):
    """PUT /datastore/image refuses an id or file that is not a volume in the studies folder and writes nothing."""
    url, studies = loop_server["url"], loop_server["dir"] / "studies"
    sources = {**_bad_inputs(tmp_path), "case.nii.gz": loop_server["volumes"][0]}
    upload = tmp_path / "upload"
    upload.mkdir()
    shutil.copy(sources.get(name, sources["case.nii.gz"]), upload / name)
    before = sorted(p.name for p in studies.rglob("*"))
    outside = sorted(p.name for p in loop_server["dir"].iterdir())
    query = f"?image={urllib.parse.quote(image)}" if image is not None else ""
    code, _, body = _request("PUT", f"{url}/datastore/image{query}", files={"file": upload / name})
    assert code == status and words in json.loads(body)["detail"], body
    assert sorted(p.name for p in studies.rglob("*")) == before
    assert sorted(p.name for p in loop_server["dir"].iterdir()) == outside
    assert not Path("/tmp/escape.nii.gz").exists()
    assert "escape" not in json.loads(_request("GET", f"{url}/datastore/?output=all")[2])["objects"]
    _assert_serving(url)


def test_readme_overrides_example_reaches_the_app_as_one_json_argument(tmp_path):
    """The README's ``--conf overrides`` command, run as written through MONAI Label's ``monailabel`` launcher (which
    passes its arguments on as ``$*``), hands the app the JSON object as one argument."""
    launcher = Path(_require_monailabel()).parent / "monailabel"
    if not launcher.is_file():
        pytest.skip(f"no monailabel launcher beside {launcher.parent / 'python'}")
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    command = next(b for b in blocks if b.startswith("monailabel start_server") and "--conf overrides" in b)
    stub = tmp_path / "python"  # stands in for the launcher's Python: prints the arguments it is given
    stub.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo "Python 3"; exit 0; fi\n'
        f'exec {sys.executable} -c "import json, sys; print(json.dumps(sys.argv[1:]))" "$@"\n'
    )
    stub.chmod(0o755)
    argv = shlex.split(command)  # what the user's shell hands the launcher
    env = {**os.environ, "MONAILABEL_PYEXE": str(stub)}
    run = subprocess.run(["bash", str(launcher), *argv[1:]], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    args = json.loads(run.stdout.strip().splitlines()[-1])
    overrides = args[args.index("overrides") + 1]
    assert args[args.index("overrides") - 1] == "--conf"
    assert json.loads(overrides) == {"spatial_size": [16, 16, 16], "batch_size": 4}
