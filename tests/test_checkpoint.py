# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""Atomic checkpoint writes, resuming the full training state, and weights-only loading."""

from __future__ import annotations

import ast
import os
import pathlib
import random
import re

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.handlers import CheckpointLoader
from torch import nn

import scripts.run.checkpoints as checkpoint_module
from scripts.run.checkpoints import AtomicCheckpointSaver, RandomStates, TrainingCheckpoint, atomic_save
from tests.conftest import ROOT


def _failing_save(obj, f, *args, **kwargs):
    f.write(b"half a checkpoint")
    raise OSError("disk full")


def test_atomic_save_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"w": torch.ones(3)}, path)
    monkeypatch.setattr(checkpoint_module.torch, "save", _failing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"w": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))  # the previous file, intact
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file, not 0600


def _best_model_saver(tmp_path, net: nn.Module) -> tuple[AtomicCheckpointSaver, Engine]:
    """The best-model saver of train.json on ``net``, attached to an engine, after a first save (score 0.5)."""
    saver = AtomicCheckpointSaver(
        str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="score", key_metric_filename="model.pt"
    )
    engine = Engine(lambda e, b: None)
    saver.attach(engine)
    engine.state.metrics = {"score": 0.5}
    saver.metrics_completed(engine)
    return saver, engine


def test_best_model_file_is_replaced_not_deleted_first(tmp_path, monkeypatch):
    """MONAI's CheckpointSaver deletes model.pt and then writes it: a kill in between leaves no model at all."""
    net = nn.Linear(2, 1)
    saver, engine = _best_model_saver(tmp_path, net)  # model.pt written once, for a score of 0.5
    first = torch.load(tmp_path / "model.pt", weights_only=True)
    monkeypatch.setattr(checkpoint_module.torch, "save", _failing_save)  # the next write dies half-way
    engine.state.metrics = {"score": 0.7}
    with pytest.raises(OSError):
        saver.metrics_completed(engine)
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], first["weight"])


SCORES = [0.5, 0.9, 0.3, 0.4]  # validation score per epoch: epoch 2 is the best


def _training(ckpt_dir, resume: bool, crash_at: int | None = None, iteration_interval: int = 0):
    """A tiny trainer/validator pair (2 iterations per epoch, 4 epochs) wired like train.json."""
    net = nn.Linear(2, 1, bias=False)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer: Engine

    def step(engine, batch):
        optimizer.zero_grad()
        net(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        with torch.no_grad():
            net.weight.fill_(engine.state.iteration)  # the weights say at which iteration they were saved

    trainer = Engine(step)
    validator = Engine(lambda e, b: None)
    validator.state.best_metric, validator.state.best_metric_epoch = -1, -1

    @validator.on(Events.EPOCH_COMPLETED)
    def score(engine):
        engine.state.metrics["score"] = SCORES[trainer.state.epoch - 1]
        if engine.state.metrics["score"] > engine.state.best_metric:
            engine.state.best_metric, engine.state.best_metric_epoch = (
                engine.state.metrics["score"],
                trainer.state.epoch,
            )

    saver = AtomicCheckpointSaver(
        str(ckpt_dir), {"model": net}, save_key_metric=True, key_metric_name="score", key_metric_filename="model.pt"
    )
    saver.attach(validator)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: scheduler.step())
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: validator.run([0], max_epochs=1))
    TrainingCheckpoint(
        ckpt_dir,
        {"model": net, "optimizer": optimizer, "lr_scheduler": scheduler, "best_model": saver},
        iteration_interval=iteration_interval,
        resume=resume,
        validator=validator,
    ).attach(trainer)
    iterations: list[int] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    if crash_at is not None:

        @trainer.on(Events.ITERATION_STARTED(once=crash_at))
        def crash(_):
            raise KeyboardInterrupt("killed")

    return trainer, validator, optimizer, scheduler, iterations


def test_resume_continues_epochs_and_best_model_selection(tmp_path):
    trainer, *_ = _training(tmp_path, resume=False, crash_at=6)
    with pytest.raises(KeyboardInterrupt):
        trainer.run([0, 1], max_epochs=4)  # dies in epoch 3, after the checkpoint of epoch 2
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].flatten()[0] == 4  # best: epoch 2

    trainer, validator, optimizer, scheduler, iterations = _training(tmp_path, resume=True)
    trainer.run([0, 1], max_epochs=4)
    assert iterations == [5, 6, 7, 8]  # epochs 3 and 4 only
    assert (trainer.state.epoch, trainer.state.iteration) == (4, 8)
    assert scheduler.last_epoch == 4 and optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    assert "momentum_buffer" in optimizer.state[optimizer.param_groups[0]["params"][0]]
    # epochs 3 and 4 score below epoch 2's 0.9: the best model stays epoch 2's, which needs the restored state
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].flatten()[0] == 4
    assert (validator.state.best_metric, validator.state.best_metric_epoch) == (0.9, 2)


def test_resume_mid_epoch_with_iteration_checkpoints(tmp_path):
    trainer, *_ = _training(tmp_path, resume=False, crash_at=7, iteration_interval=1)
    with pytest.raises(KeyboardInterrupt):
        trainer.run([0, 1], max_epochs=4)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["trainer"]["iteration"] == 6
    trainer, *_, iterations = _training(tmp_path, resume=True, iteration_interval=1)
    trainer.run([0, 1], max_epochs=4)
    assert iterations == [7, 8] and trainer.state.epoch == 4


def test_resume_without_checkpoint_starts_from_scratch(tmp_path, caplog):
    trainer, *_, iterations = _training(tmp_path, resume=True)
    with caplog.at_level("WARNING"):
        trainer.run([0, 1], max_epochs=2)
    assert iterations == [1, 2, 3, 4] and "no checkpoint at" in caplog.text


class _Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_checkpoints_are_loaded_weights_only(tmp_path):
    marker = tmp_path / "code-was-executed"
    torch.save({"trainer": {"iteration": 1}, "model": _Payload(marker)}, tmp_path / "checkpoint.pt")
    trainer, *_ = _training(tmp_path, resume=True)
    with pytest.raises(SystemExit, match="carries pickled code") as info:
        trainer.run([0, 1], max_epochs=2)
    assert "weights_only=False" not in str(info.value) and "Fix: " in str(info.value)
    assert not marker.exists()
    # what evaluate.json and inference.json use to load models/model.pt
    loader = CheckpointLoader(str(tmp_path / "checkpoint.pt"), {"model": nn.Linear(2, 1)})
    with pytest.raises(Exception, match="Weights only load failed"):
        loader(Engine(lambda e, b: None))
    assert not marker.exists()


def _calls(path):
    """(dotted name, keyword names and values) of every call in a Python file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), {k.arg: ast.unparse(k.value) for k in node.keywords}


def test_audit_no_unsafe_loading_or_evaluation_in_the_bundle():
    """Loading is weights-only everywhere, and nothing evaluates strings (data) as code."""
    for path in sorted((ROOT / "scripts").glob("*.py")):
        for name, keywords in _calls(path):
            assert name not in {"eval", "exec", "compile", "__import__"}, f"{path.name} calls {name}"
            assert not name.endswith(("pickle.load", "pickle.loads", "literal_eval")), f"{path.name} calls {name}"
            if name.endswith("torch.load"):
                assert keywords.get("weights_only") == "True", f"{path.name}: {name} without weights_only=True"
            if name.endswith(("np.load", "numpy.load")):
                assert keywords.get("allow_pickle", "False") == "False", f"{path.name}: {name} allows pickle"
    for files in (["train.json"], ["train.json", "evaluate.json"], ["inference.json"]):
        parser = ConfigParser()
        parser.read_config([str(ROOT / "configs" / f) for f in files])
        text = str(parser.get())
        # models are loaded only through MONAI's CheckpointLoader (weights_only=True in monai 1.6.1) or ours
        assert "torch.load" not in text and "pickle" not in text, files
        loaders = re.findall(r"'_target_': '([\w.]*CheckpointLoader)'", text)
        assert set(loaders) <= {"CheckpointLoader", "scripts.run.checkpoints.ModelCheckpointLoader"}, loaders


def test_weights_of_another_network_get_an_explained_error(tmp_path):
    """Inference of a model trained with other settings names the fix (the training overrides), not only the
    mismatched tensors."""
    from scripts.run.checkpoints import ModelCheckpointLoader

    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "model.pt")
    loader = ModelCheckpointLoader(str(tmp_path / "model.pt"), {"model": nn.Linear(3, 4)})
    with pytest.raises(SystemExit, match=r"another shape \(e.g. weight: \(2, 3\) in the file(.|\n)*--num_classes"):
        loader(Engine(lambda e, b: None))
    good = ModelCheckpointLoader(str(tmp_path / "model.pt"), {"model": nn.Linear(3, 2)})
    good(Engine(lambda e, b: None))  # a fitting network loads as with MONAI's loader


def _bad_file(tmp_path, kind: str) -> pathlib.Path:
    path = tmp_path / f"{kind}.pt"
    good = tmp_path / "good.pt"
    torch.save(nn.Linear(2, 1).state_dict(), good)
    if kind == "garbage":
        path.write_bytes(b"<html>404 Not Found</html>\n" * 4)
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:300])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "code":
        torch.save({"weight": _Payload(tmp_path / "code-was-executed")}, path)
    elif kind == "tensor":
        torch.save(torch.ones(2), path)
    elif kind == "list":
        torch.save([torch.ones(2)], path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "torchscript":
        torch.jit.save(torch.jit.script(nn.Linear(2, 1)), str(path))
    return path  # "missing": not created


BAD_FILES = {
    "missing": "no such file",
    "folder": "is a folder, not a checkpoint file",
    "empty": "is empty (0 bytes)",
    "garbage": "is not a readable PyTorch checkpoint",
    "truncated": "is truncated or corrupt",
    "code": "carries pickled code",
    "tensor": "holds a Tensor, not a state dict",
    "list": "holds a list, not a state dict",
    "torchscript": "is a TorchScript model, not a state dict",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_every_checkpoint_problem_is_one_message_with_the_file_and_the_fix(tmp_path, kind):
    from scripts.run.checkpoints import load_weights

    path = _bad_file(tmp_path, kind)
    with pytest.raises(SystemExit) as info:
        load_weights(path, nn.Linear(2, 1))
    message = str(info.value)
    assert message.startswith(f"{path}: {BAD_FILES[kind]}") and "Fix: " in message, message
    assert "weights_only=False" not in message and "\n" not in message
    assert not (tmp_path / "code-was-executed").exists()


def test_torchscript_paths_missing_or_not_torchscript(tmp_path):
    from scripts.run.checkpoints import load_torchscript

    for path, problem in [
        (tmp_path / "model.ts", "no such file"),
        (_bad_file(tmp_path, "garbage"), "is not a TorchScript model"),
        (tmp_path / "good.pt", "is not a TorchScript model (a plain PyTorch checkpoint"),
    ]:
        with pytest.raises(SystemExit, match="Fix: ") as info:
            load_torchscript(path)
        assert str(info.value).startswith(f"{path}: {problem}"), str(info.value)
    assert isinstance(load_torchscript(_bad_file(tmp_path, "torchscript")), torch.jit.ScriptModule)


def test_non_finite_weights_are_never_written(tmp_path):
    net = nn.Linear(2, 1)
    saver, engine = _best_model_saver(tmp_path, net)  # model.pt written once, for a score of 0.5
    finite = net.weight.detach().clone()
    with torch.no_grad():
        net.weight[0, 1] = float("nan")
    engine.state.metrics = {"score": 0.7}
    with pytest.raises(SystemExit, match=r"model.pt: not written: 1 tensor\(s\) hold NaN/Inf values \(e.g. weight\)"):
        saver.metrics_completed(engine)
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], finite)


def test_non_finite_loss_stops_training_before_any_save(tmp_path):
    net = nn.Linear(2, 1)
    losses = [1.0, float("inf")]
    trainer = Engine(lambda e, b: [{"loss": torch.tensor(losses[e.state.iteration - 1])}])
    TrainingCheckpoint(tmp_path, {"model": net}, iteration_interval=1).attach(trainer)
    with pytest.raises(SystemExit) as info:
        trainer.run([0, 1], max_epochs=1)
    message = str(info.value)
    assert message.startswith("training loss at epoch 1, iteration 2 (2 of the epoch): inf (not finite)")
    assert "--learning_rate" in message and "--amp" in message and "Fix: " in message
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["trainer"]["iteration"] == 1  # iteration 1's


def test_resume_with_another_batch_size_is_refused(tmp_path):
    trainer, *_ = _training(tmp_path, resume=False)
    trainer.run([0, 1], max_epochs=1)
    net = nn.Linear(2, 1, bias=False)
    loader = torch.utils.data.DataLoader([0, 1, 2, 3], batch_size=2)
    resumed = Engine(lambda e, b: None)
    resumed.data_loader = loader
    TrainingCheckpoint(tmp_path, {"model": net}, resume=True, settings={"num_classes": 2}).attach(resumed)
    torch.save(
        {**torch.load(tmp_path / "checkpoint.pt", weights_only=True), "settings": {"num_classes": 3, "batch_size": 1}},
        tmp_path / "checkpoint.pt",
    )
    with pytest.raises(SystemExit) as info:
        resumed.run(loader, max_epochs=2)
    message = str(info.value)
    assert "--num_classes 3 (this run: 2), --batch_size 1 (this run: 2)" in message, message
    assert "iterations per epoch" in message and "Fix: resume with --num_classes 3 --batch_size 1" in message


def test_random_states_round_trip():
    from monai.transforms import Compose, RandFlipd, RandScaleIntensityd

    transform = Compose([RandFlipd("x", prob=0.5), RandScaleIntensityd("x", factors=0.5, prob=0.5)])
    loader = torch.utils.data.DataLoader(monai_dataset(transform), batch_size=1)
    states = RandomStates(loader)
    assert len(states.transforms) >= 3  # the Compose and its two random transforms

    def draws():
        return [
            random.random(), float(np.random.rand()), float(torch.rand(1)), [float(b["x"].sum()) for b in loader]
        ]  # fmt: skip

    saved = torch.load(_roundtrip(states.state_dict()), weights_only=True)  # loadable weights-only
    first = draws()
    states.load_state_dict(saved)
    assert draws() == first


def monai_dataset(transform):
    from monai.data import Dataset

    return Dataset([{"x": torch.arange(8.0).reshape(1, 2, 2, 2) + i} for i in range(4)], transform)


def _roundtrip(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_random_states_include_the_counterfactual_generator():
    """A resumed CAL run draws the same counterfactual attention as the uninterrupted one."""
    from scripts.cal_net import CALNet

    net = CALNet(num_classes=2, spatial_size=16, backbone="resnet", backbone_kwargs={"depth": 10, "widen_factor": 0.25})
    states = RandomStates(network=torch.nn.parallel.DataParallel(net))
    saved = states.state_dict()
    assert set(saved["generators"]) == {"network.bap"}
    attentions = torch.rand(2, 4, 2, 2, 2)
    first = net.train().bap.counterfactual_attention(attentions)
    states.load_state_dict(saved)
    torch.testing.assert_close(net.bap.counterfactual_attention(attentions), first)
