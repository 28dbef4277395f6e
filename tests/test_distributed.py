# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Distributed training and evaluation on CPUs with gloo: the process-group helpers, exact metric gathering over
uneven validation shards, and 2-process ``torchrun`` runs of configs/multi_gpu_train.json and
configs/multi_gpu_evaluate.json.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from scripts.run import distributed
from tests.conftest import EVALUATE, ROOT, TINY_OVERRIDES, run_bundle, run_command, run_spawned

MULTI_GPU = "['configs/train.json','configs/synthetic_attention.json','configs/multi_gpu_train.json']"
MULTI_GPU_EVALUATE = EVALUATE[:-1] + ",'configs/multi_gpu_evaluate.json']"
CLASSES = ["solid", "hollow", "striped", "checkered"]
NUM_VAL = 7  # odd: two ranks get 4 and 3 cases, i.e. 2 and 1 batches of 3


def test_backend_and_device_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU defaults")
    assert distributed.default_backend() == "gloo"
    assert distributed.local_device() == torch.device("cpu")


def test_rank_and_world_size_from_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (distributed.get_rank(), distributed.get_world_size()) == (3, 4)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert (distributed.get_rank(), distributed.get_world_size()) == (0, 1)


def test_init_without_torchrun_names_the_launch_command(monkeypatch):
    for key in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node"):
        distributed.init_process_group()


def test_nccl_without_gpus_is_refused(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU refusal")
    for key, value in zip(distributed.TORCHRUN_ENV, ("0", "0", "1", "127.0.0.1", "29500")):
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="gloo"):
        distributed.init_process_group(backend="nccl")


def test_quiet_other_ranks_keeps_warnings(monkeypatch, caplog):
    monkeypatch.setenv("RANK", "1")
    logger = logging.getLogger("test_quiet")
    try:
        with caplog.at_level(logging.INFO):
            distributed.quiet_other_ranks()
            logger.info("progress")
            logger.warning("problem")
    finally:
        logging.disable(logging.NOTSET)
    assert [r.getMessage() for r in caplog.records] == ["problem"]


@pytest.mark.parametrize("cal", [True, False])
@pytest.mark.parametrize(
    "backbone, args, size",
    [("vit", {"patch_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2}, 16),
     ("resnet", {"depth": 10, "widen_factor": 0.125, "conv1_t_stride": 1, "no_max_pool": True}, 16),
     ("densenet", {"depth": 121, "growth_rate": 4, "init_features": 8, "bn_size": 2}, 32)],
)  # fmt: skip
def test_every_trainable_parameter_gets_a_gradient(backbone, args, size, cal):
    """DistributedDataParallel (without find_unused_parameters) needs a gradient for every trainable parameter."""
    from scripts.cal_net import CALNet
    from scripts.losses import CALLoss

    net = CALNet(4, 1, size, backbone, args, num_attentions=4, attention_block="conv_bn_relu", cal=cal).train()
    CALLoss()(net(torch.rand(2, 1, size, size, size)), torch.tensor([0, 1])).backward()
    assert [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None] == []


def _writing_handlers(_: int, rank: int, dataset_dir: str, tmp_path: str) -> None:
    """In a spawned process: train.json + multi_gpu_train.json parsed as process ``rank`` would, in a gloo group."""
    from monai.bundle import ConfigParser
    from monai.handlers import CheckpointSaver, LrScheduleHandler, StatsHandler, TensorBoardStatsHandler

    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / f) for f in ("train.json", "multi_gpu_train.json")])
    overrides = {"bundle_root": str(ROOT), "dataset_dir": dataset_dir, "output_dir": f"{tmp_path}/eval",
                 "ckpt_dir": f"{tmp_path}/models", "rank": rank}  # fmt: skip
    for key, value in overrides.items():
        parser[key] = value
    _join(0, 1, f"{tmp_path}/store")
    try:
        train = parser.get_parsed_content("train#handlers")
        validate = parser.get_parsed_content("validate#handlers")
    finally:
        distributed.destroy_process_group()  # also resets ignite's view of the group
    writers = (StatsHandler, TensorBoardStatsHandler, CheckpointSaver)
    if rank == 0:
        assert len(train) == len(parser["train#handlers"]) and len(validate) == len(parser["validate#handlers"])
        assert sum(isinstance(h, writers) for h in train + validate) == 5
    else:
        assert not any(isinstance(h, (StatsHandler, TensorBoardStatsHandler)) for h in train + validate)
        # LR schedule, validation, tabular statistics and the resume checkpoint run on every process; the best-model
        # saver too, so that its tracking state is the same everywhere, but its files are written by rank 0 only
        assert len(train) == 4 and len(validate) == 1 and isinstance(validate[0], CheckpointSaver)
    assert [h.print_lr for h in train if isinstance(h, LrScheduleHandler)] == [rank == 0]


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_zero_keeps_the_writing_handlers(rank, tiny_dataset, tmp_path):
    """train.json's logging handlers are disabled on every process but rank 0 (``"_disabled_": "$@rank > 0"``)."""
    run_spawned(_writing_handlers, rank, str(tiny_dataset), str(tmp_path))


def _join(rank: int, world_size: int, store: str) -> None:
    """Join a gloo group through a file store; a collective that waits over a minute fails instead of hanging."""
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )


@pytest.mark.parametrize("balanced", [False, True])
def test_multi_gpu_training_sampler_keeps_balanced_sampling(balanced, tiny_dataset):
    """Under multi_gpu_train.json ``--balanced_sampling True`` draws balanced classes from each process's share."""
    from monai.bundle import ConfigParser
    from monai.data import DistributedSampler, DistributedWeightedRandomSampler

    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / f) for f in ("train.json", "multi_gpu_train.json")])
    overrides = {"bundle_root": str(ROOT), "dataset_dir": str(tiny_dataset), "num_classes": 4,
                 "balanced_sampling": balanced, "train#sampler#num_replicas": 2, "train#sampler#rank": 1}  # fmt: skip
    for key, value in overrides.items():  # the process group's size and rank given: no group needed
        parser[key] = value
    sampler = parser.get_parsed_content("train#sampler")
    assert type(sampler) is (DistributedWeightedRandomSampler if balanced else DistributedSampler)
    assert len(sampler) == 8 and sampler.rank == 1  # 16 training cases over 2 processes
    assert parser.get_parsed_content("train#dataloader#shuffle") is False


# --- metrics over uneven validation shards -------------------------------------------------------------------


def _validation_outputs() -> list[dict]:
    """Fixed per-case outputs of a 4-class evaluator (probabilities, labels, image with its file name)."""
    from monai.data import MetaTensor

    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(NUM_VAL, 4, generator=g) * 2, dim=1)
    labels = torch.tensor([0, 1, 2, 3, 1, 2, 0])
    items = []
    for i in range(NUM_VAL):
        image = MetaTensor(torch.zeros(1, 2, 2, 2), meta={"filename_or_obj": f"/data/case{i:02d}.nii.gz"})
        onehot = torch.nn.functional.one_hot(labels[i], 4).float()
        items.append({"pred": probs[i], "label": labels[i], "label_onehot": onehot, "image": image})
    return items


def _evaluate(output_dir: str) -> dict:
    """
    Run the configured validation metrics (train.json ``validate#metrics``) and ClassificationReport over this
    process's shard of the outputs, as the evaluator does under multi_gpu_train.json; return the metric values.
    """
    from ignite.engine import Engine
    from monai.bundle import ConfigParser
    from monai.data import DistributedSampler

    from scripts.run.handlers import ClassificationReport

    items = _validation_outputs()
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    metrics = parser.get_parsed_content("validate#metrics")
    indices = list(range(NUM_VAL))
    if dist.is_initialized():
        sampler = DistributedSampler(indices, even_divisible=False, shuffle=False)
        indices = [indices[i] for i in sampler]
    batches = [indices[i : i + 3] for i in range(0, len(indices), 3)]
    engine = Engine(lambda engine, batch: [items[i] for i in batch])
    for name, metric in metrics.items():
        metric.attach(engine, name)
    ClassificationReport(output_dir, CLASSES).attach(engine)
    engine.run(batches, max_epochs=1)
    return {name: float(engine.state.metrics[name]) for name in metrics} | {"cases": len(indices)}


def _evaluate_rank(rank: int, world_size: int, store: str, output_dir: str) -> None:
    _join(rank, world_size, store)
    distributed.init_process_group()  # the group exists: only ignite is told about it
    try:
        result = _evaluate(output_dir)
        Path(store).with_name(f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        distributed.destroy_process_group()


@pytest.mark.slow
def test_validation_metrics_and_report_are_exact_across_uneven_shards(tmp_path):
    single = _evaluate(str(tmp_path / "single"))
    args = (2, str(tmp_path / "store"), str(tmp_path / "dist"))
    run_spawned(_evaluate_rank, *args, nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r.pop("cases") for r in ranks] == [4, 3]
    single.pop("cases")
    for result in ranks:  # every rank gets the metric over all cases, equal to one process's
        assert result == pytest.approx(single, abs=1e-6)
    rows = {p: list(csv.DictReader(open(tmp_path / p / "predictions.csv"))) for p in ("single", "dist")}
    assert len(rows["dist"]) == NUM_VAL
    assert sorted(rows["dist"], key=lambda r: r["case"]) == sorted(rows["single"], key=lambda r: r["case"])
    metrics = {p: json.loads((tmp_path / p / "metrics.json").read_text()) for p in ("single", "dist")}
    assert metrics["dist"] == metrics["single"]


# --- torchrun, 2 processes -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uneven_dataset(tmp_path_factory) -> Path:
    """16 training and 7 validation cases at 16^3: validation shards of 4 and 3 cases."""
    from scripts.tools.synthetic_data import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_synthetic_dataset(root, size=16, num_cases=(16, NUM_VAL, 4), seed=0)
    return root


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(uneven_dataset, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "--config_file", MULTI_GPU, "--logging_file", "configs/logging.conf",
        "--dataset_dir", str(uneven_dataset), "--ckpt_dir", str(tmp_path / "models"),
        "--output_dir", str(tmp_path / "eval"), "--epochs", "2", "--log_interval", "1", "--dist_timeout", "300",
        *_without(TINY_OVERRIDES, "--batch_size"), "--batch_size", "3",
    ]  # fmt: skip
    proc = run_command(cmd, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    # both processes trained: 16 cases / 2 ranks / batch 3 = 3 iterations per epoch each
    for rank in (0, 1):
        assert f"rank {rank} of 2: trained 6 iterations over 2 epochs, 8 training cases per epoch" in log
    # progress and metrics on the console once (rank 0), not once per process
    assert len(re.findall(r"Epoch: 1/2, Iter: 1/3 -- train_loss", log)) == 1
    assert len(re.findall(r"Epoch\[2\] Metrics -- val_accuracy", log)) == 1
    assert log.count("Engine run resuming from iteration 0, epoch 0 until 2 epochs") == 1
    # exactly one checkpoint, loadable into a plain (not DDP-wrapped) network
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["checkpoint.pt", "model.pt"]  # rank 0 only
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "fc.weight" in state and not any(k.startswith("module.") for k in state)
    # TensorBoard written by one process only (event file names carry the writer's process id)
    events = list((tmp_path / "eval" / "train").glob("events.out.tfevents.*"))
    assert events and len({re.search(r"\.(\d+)\.\d+$", e.name).group(1) for e in events}) == 1


@pytest.fixture(scope="module")
def uneven_test_split(tmp_path_factory) -> Path:
    """4 training, 2 validation and 7 test cases at 16^3: test shards of 4 and 3 cases."""
    from scripts.tools.synthetic_data import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_synthetic_dataset(root, size=16, num_cases=(4, 2, NUM_VAL), seed=1)
    return root


def _tiny_untrained_checkpoint(ckpt_dir: Path) -> None:
    """``ckpt_dir/model.pt``: the tiny network of TINY_OVERRIDES with its initial (seeded) weights."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(ROOT / f) for f in json.loads(EVALUATE.replace("'", '"'))])
    parser["bundle_root"] = str(ROOT)
    for key, value in zip(TINY_OVERRIDES[::2], TINY_OVERRIDES[1::2]):
        parser[key[2:]] = json.loads(value)
    torch.manual_seed(0)
    ckpt_dir.mkdir(parents=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), ckpt_dir / "model.pt")


@pytest.mark.slow
def test_torchrun_evaluation_equals_one_process(uneven_test_split, tmp_path):
    """configs/multi_gpu_evaluate.json: two processes each evaluate their shard of the test split; the metrics and
    the per-case report, gathered across ranks and written by rank 0, are those of a one-process evaluation."""
    _tiny_untrained_checkpoint(tmp_path / "models")
    common = ["--dataset_dir", str(uneven_test_split), "--ckpt_dir", str(tmp_path / "models"),
              *_without(TINY_OVERRIDES, "--batch_size"), "--batch_size", "3"]  # fmt: skip
    run_bundle("run", "evaluating", "--config_file", EVALUATE, "--output_dir", str(tmp_path / "single"), *common)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "--config_file", MULTI_GPU_EVALUATE, "--logging_file", "configs/logging.conf",
        "--output_dir", str(tmp_path / "dist"), "--dist_timeout", "300", *common,
    ]  # fmt: skip
    proc = run_command(cmd, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert len(re.findall(r"Epoch\[1\] Metrics -- ", log)) == 1  # rank 0's StatsHandler only
    metrics = {p: json.loads((tmp_path / p / "metrics.json").read_text()) for p in ("single", "dist")}
    assert metrics["dist"]["num_cases"] == NUM_VAL
    assert _rounded(metrics["dist"]) == _rounded(metrics["single"])
    rows = {p: list(csv.DictReader(open(tmp_path / p / "predictions.csv"))) for p in ("single", "dist")}
    assert len(rows["dist"]) == NUM_VAL
    key = lambda r: r["case"]  # noqa: E731
    for dist_row, single_row in zip(sorted(rows["dist"], key=key), sorted(rows["single"], key=key)):
        assert dist_row["case"] == single_row["case"] and dist_row["pred"] == single_row["pred"]
        for name, value in single_row.items():
            if name.startswith("prob_"):
                assert float(dist_row[name]) == pytest.approx(float(value), abs=1e-5)


def _rounded(value):
    """``value`` (nested dicts and lists of numbers) with its floats rounded to 5 decimals, for comparison."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 5) if isinstance(value, float) else value


def _without(args: list[str], key: str) -> list[str]:
    """Command-line overrides without ``key`` and its value."""
    i = args.index(key)
    return args[:i] + args[i + 2 :]
