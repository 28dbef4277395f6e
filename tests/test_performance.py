# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""The speed options: dataset caches, plain-tensor batches, channels-last, AMP and SyncBatchNorm on CPUs, and the
bundle's training run with them switched on."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor, PersistentDataset
from monai.transforms import Compose, Lambdad, LoadImaged, RandAffined, RandFlipd, Resized, ScaleIntensityd
from monai.utils import set_determinism

from scripts.cal_net import CALNet
from scripts.data.loading import (
    PlainTensorBatch,
    PrefetchDataLoader,
    _omp_set_num_threads,
    augmentation_input,
    build_dataset,
    loader_class,
)
from scripts.run import distributed
from scripts.run.distributed import prepare_network, unwrap_network
from scripts.run.engine import amp_enabled, autocast_kwargs
from tests.conftest import TINY_OVERRIDES, TRAIN, run_bundle, run_spawned

ROOT = Path(__file__).resolve().parents[1]
TINY_VIT = {"patch_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2}


def _items(tiny_dataset) -> list[dict]:
    datalist = json.loads((tiny_dataset / "datalist.json").read_text())
    return [{"image": str(tiny_dataset / d["image"]), "label": d["label"]} for d in datalist["validation"][:4]]


def _transform(size: int = 8, random: bool = False) -> Compose:
    transforms = [LoadImaged("image", ensure_channel_first=True, image_only=True), ScaleIntensityd("image")]
    transforms += [Resized("image", spatial_size=(size,) * 3)]
    return Compose(transforms + ([RandFlipd("image", prob=1.0, spatial_axis=0)] if random else []))


def _tiny_net() -> CALNet:
    torch.manual_seed(0)
    return CALNet(4, 1, 16, "vit", TINY_VIT, num_attentions=4, attention_block="conv_bn_relu")


def test_dataset_cache_memory_holds_the_requested_fraction(tiny_dataset):
    items = _items(tiny_dataset)
    plain = build_dataset(items, _transform(), cache="none")
    cached = build_dataset(items, _transform(), cache="memory", cache_rate=0.5)
    assert type(plain) is Dataset and isinstance(cached, CacheDataset)
    assert sum(c is not None for c in cached._cache) == 2
    for i in range(len(items)):
        assert torch.equal(plain[i]["image"], cached[i]["image"])


def test_dataset_cache_disk_keys_files_on_the_preprocessing(tiny_dataset, tmp_path):
    items = _items(tiny_dataset)
    first = build_dataset(items, _transform(8, random=True), cache="disk", cache_dir=tmp_path)
    assert isinstance(first, PersistentDataset)
    torch.testing.assert_close(first[0]["image"], build_dataset(items, _transform(8, random=True))[0]["image"])
    files = {p.name for p in tmp_path.glob("*.pt")}
    assert len(files) == 1
    second = build_dataset(items, _transform(6, random=True), cache="disk", cache_dir=tmp_path)
    assert second[0]["image"].shape[1:] == (6, 6, 6)  # a new spatial size is not served from the old files
    assert len({p.name for p in tmp_path.glob("*.pt")} - files) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [({"cache": "ram"}, "none.*memory.*disk"), ({"cache": "memory", "cache_rate": 2.0}, "cache_rate"),
     ({"cache": "disk"}, "dataset_cache_dir")],
)  # fmt: skip
def test_dataset_cache_bad_settings_name_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_dataset([{"image": "x.nii.gz"}], _transform(), **kwargs)


def _augmented_batches(loader_type: type, epochs: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    augment = Compose([
        RandFlipd("image", prob=0.5, spatial_axis=0),
        RandAffined("image", prob=0.5, rotate_range=[0.3] * 3, scale_range=[0.1] * 3, padding_mode="zeros"),
    ])  # fmt: skip
    images = torch.rand(6, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0))
    set_determinism(seed=3)
    dataset = CacheDataset([{"image": x, "label": i} for i, x in enumerate(images)], augment, progress=False)
    loader = loader_type(dataset, batch_size=4, shuffle=True)
    batches = [(b["image"].as_tensor(), b["label"]) for _ in range(epochs) for b in loader]
    set_determinism(seed=None)
    return batches


@pytest.mark.timeout(60)
def test_prefetch_loader_yields_the_plain_loaders_batches():
    """The background thread changes when batches are made, not which: same order, same random augmentation."""
    assert loader_class(True) is PrefetchDataLoader and loader_class(False) is DataLoader
    plain, prefetched = _augmented_batches(DataLoader), _augmented_batches(PrefetchDataLoader)
    assert len(plain) == len(prefetched) == 4
    for (image, label), (image_prefetched, label_prefetched) in zip(plain, prefetched):
        assert torch.equal(label, label_prefetched) and torch.equal(image, image_prefetched)


@pytest.mark.timeout(60)
def test_prefetch_loader_limits_the_threads_of_its_own_thread_only():
    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: list[int] = []
    try:
        record = Lambdad("image", lambda x: seen.append(torch.get_num_threads()) or x)
        loader = PrefetchDataLoader(Dataset([{"image": torch.zeros(1, 2, 2, 2)}] * 4, record), batch_size=2)
        assert len(list(loader)) == 2
        assert torch.get_num_threads() == 2  # the training step's threads are unchanged
        if _omp_set_num_threads() is None:
            pytest.skip("no OpenMP runtime in this PyTorch build: the loader thread keeps PyTorch's thread count")
        assert seen == [1] * 4
    finally:
        torch.set_num_threads(threads_before)


def _training_augmentation(on_device: bool) -> Compose:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    parser["bundle_root"] = str(ROOT)
    head = augmentation_input("image", torch.device("cpu"), on_device=on_device)
    transforms = (
        head + parser.get_parsed_content("augmentation") + parser.get_parsed_content("spatial_augmentation_transforms")
    )
    return Compose(transforms).set_random_state(seed=7)


@pytest.mark.timeout(60)
def test_augmentation_on_the_device_draws_as_on_the_cpu():
    """The device path (ToDeviced, then train.json's augmentation) tried on CPU tensors: the same cases out."""
    on_cpu, on_device = _training_augmentation(False), _training_augmentation(True)
    assert [type(t).__name__ for t in on_device.transforms[:2]] == ["EnsureTyped", "ToDeviced"]
    images = torch.rand(6, 1, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    for image in images:
        expected, got = on_cpu({"image": MetaTensor(image)})["image"], on_device({"image": MetaTensor(image)})["image"]
        assert torch.equal(torch.as_tensor(got), torch.as_tensor(expected))


def test_augmentation_on_the_device_refuses_worker_processes():
    with pytest.raises(ValueError, match="num_workers 0"):
        augmentation_input("image", "cuda", on_device=True, num_workers=2)


def test_plain_tensor_batch_drops_metadata_only():
    image = MetaTensor(torch.rand(2, 1, 4, 4, 4), meta={"filename_or_obj": ["a", "b"]})
    label = torch.tensor([1, 2])
    x, y = PlainTensorBatch()({"image": image, "label": label}, torch.device("cpu"))
    assert type(x) is torch.Tensor and type(y) is torch.Tensor
    assert torch.equal(x, image.as_tensor()) and torch.equal(y, label)


def test_channels_last_keeps_outputs_and_state_dict():
    reference, net = _tiny_net().eval(), _tiny_net().eval()
    net = prepare_network(net, "cpu", channels_last=True)
    conv = net.backbone.vit.patch_embedding.patch_embeddings
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), rtol=1e-4, atol=1e-5)
    assert net.state_dict().keys() == reference.state_dict().keys()
    net.train()
    out = net(x.contiguous(memory_format=torch.channels_last_3d))
    out["effect"].sum().backward()  # trains in that layout
    assert conv.weight.grad is not None


def test_amp_is_ignored_on_cpu_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert amp_enabled(True, "cpu") is False
    assert "CUDA devices only" in caplog.text
    assert amp_enabled(False, "cpu") is False
    assert amp_enabled(True, torch.device("cuda", 0)) is True  # decided from the device, no GPU needed
    assert autocast_kwargs("float16") == {"dtype": torch.float16}
    with pytest.raises(ValueError, match="bfloat16"):
        autocast_kwargs("int8")


def _wrap_in_a_process_group(rank: int, store: str) -> None:
    """In a spawned process: a one-process gloo group, the network wrapped for it, one training step."""
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=1, timeout=timedelta(seconds=60)
    )
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger().addHandler(handler)
    try:
        net = prepare_network(_tiny_net(), "cpu", distributed=True, sync_batchnorm=True)
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel)
        assert any("sync_batchnorm needs CUDA" in w for w in warnings), warnings
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules())
        out = net.train()(torch.rand(2, 1, 16, 16, 16))
        (out["logits"].sum() + out["effect"].sum()).backward()  # no unused parameters for DDP to reject
        del net, out  # the DDP reducer goes before the group it holds
    finally:
        logging.getLogger().removeHandler(handler)
        distributed.destroy_process_group()  # also resets ignite's view of the group


def test_distributed_wrap_and_sync_batchnorm_ignored_on_cpu(tmp_path):
    run_spawned(_wrap_in_a_process_group, str(tmp_path / "store"))


def test_unwrap_network_removes_parallel_and_compile_wrappers():
    net = _tiny_net()
    assert unwrap_network(net) is net
    assert unwrap_network(torch.nn.DataParallel(net)) is net  # DistributedDataParallel's .module likewise
    assert unwrap_network(torch.compile(torch.nn.DataParallel(net))) is net  # compiling is lazy: nothing runs here


@pytest.mark.slow
def test_training_with_cpu_speed_options(tiny_dataset, tmp_path):
    """Memory cache, a thread loader over a worker process, channels-last, and AMP requested (ignored on CPU)."""
    proc = run_bundle(
        "run", "training", "--config_file", TRAIN, "--dataset_dir", str(tiny_dataset),
        "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"), "--epochs", "1",
        "--dataset_cache", "memory", "--thread_loader", "True", "--num_workers", "1", "--channels_last", "True",
        "--amp", str(not torch.cuda.is_available()), *TINY_OVERRIDES,
    )  # fmt: skip
    assert (tmp_path / "models" / "model.pt").is_file()
    if not torch.cuda.is_available():
        assert "amp (mixed precision) runs on CUDA devices only" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_training_with_disk_cache_and_compile(tiny_dataset, tmp_path):
    """PersistentDataset and torch.compile of the training step (``aot_eager``: traced, no C++ build in CI)."""
    run_bundle(
        "run", "training", "--config_file", TRAIN, "--dataset_dir", str(tiny_dataset),
        "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"), "--epochs", "1",
        "--dataset_cache", "disk", "--dataset_cache_dir", str(tmp_path / "cache"),
        "--compile", "True", "--compile_kwargs", "{'backend': 'aot_eager'}", *TINY_OVERRIDES,
    )  # fmt: skip
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 16 + 8  # training and validation cases
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in state)  # loads into the plain network
