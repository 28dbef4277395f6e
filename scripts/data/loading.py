# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Training's data loading: datasets that cache the deterministic part of the preprocessing, the hand-over from the
cached part to the random augmentation, plain-tensor batches, and a loader that prepares the next batches in a
background thread.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor, PersistentDataset, ThreadDataLoader
from monai.data.thread_buffer import buffer_iterator
from monai.data.utils import pickle_hashing
from monai.engines import PrepareBatchExtraInput, default_prepare_batch
from monai.transforms import EnsureTyped, ToDeviced, Transform

__all__ = [
    "DATASET_CACHES",
    "build_dataset",
    "augmentation_input",
    "file_state_hashing",
    "PlainTensorBatch",
    "plain_tensor",
    "PrefetchDataLoader",
    "limit_thread_intra_op",
    "loader_class",
]

DATASET_CACHES = ("none", "memory", "disk")


def build_dataset(
    data: Sequence[dict],
    transform: Callable,
    cache: str = "none",
    cache_rate: float = 1.0,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = 0,
    copy_cache: bool = True,
) -> Dataset:
    """
    A MONAI dataset over ``data`` that keeps the output of ``transform``'s deterministic head (loading, reorienting,
    scaling, resizing: every transform before the first random one) according to ``cache``:

    - ``"none"``: :class:`monai.data.Dataset`, every item is read and transformed at every epoch;
    - ``"memory"``: :class:`monai.data.CacheDataset`, ``cache_rate`` of the items are prepared once, up front, and
      held in memory (each training process holds its own copy);
    - ``"disk"``: :class:`monai.data.PersistentDataset`, prepared items are written to ``cache_dir`` on first use and
      read from there afterwards; file names hash the item, the size and modification time of every file it names
      (:func:`file_state_hashing`: an image replaced in place is prepared again) and the cached transforms, so
      changing the preprocessing (e.g. ``spatial_size``) does not reuse stale files either.

    ``num_workers`` is the number of threads that fill the memory cache (0: one). ``copy_cache=False`` hands the
    memory cache's items to the random transforms without a deep copy first: right when none of them changes its
    input in place (MONAI's random transforms return new tensors), and a copy of every item per epoch saved.
    """
    if cache == "none":
        return Dataset(data=data, transform=transform)
    if cache == "memory":
        if not 0.0 <= cache_rate <= 1.0:
            raise ValueError(f"cache_rate must be in [0, 1] (the fraction of cases held in memory), got {cache_rate}.")
        return CacheDataset(
            data=data, transform=transform, cache_rate=cache_rate, num_workers=num_workers or 1, copy_cache=copy_cache
        )
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("dataset_cache 'disk' needs a folder: set dataset_cache_dir.")
        return PersistentDataset(
            data=data,
            transform=transform,
            cache_dir=cache_dir,
            hash_func=file_state_hashing,
            hash_transform=pickle_hashing,
        )
    raise ValueError(f"unknown dataset_cache '{cache}', choose one of {DATASET_CACHES}.")


def augmentation_input(
    keys: str | Sequence[str] = "image",
    device: str | torch.device | None = None,
    on_device: bool = False,
    num_workers: int | None = 0,
) -> list[Transform]:
    """
    The transforms between training's deterministic preprocessing (what a dataset cache keeps) and its random
    augmentation: ``keys`` as plain tensors, so that the cache keeps no metadata for the augmentation to add to, and,
    with ``on_device``, moved to ``device`` (MONAI's fast-training recipe: ``ToDeviced`` after the cached part, then
    the random transforms run on the device, in the loader's thread; with ``dataset_cache`` ``memory`` the cases are
    held on the device). The random draws are the same on either device.

    Raises:
        ValueError: ``on_device`` with loader worker processes (``num_workers`` > 0), which cannot use CUDA tensors.
    """
    transforms: list[Transform] = [EnsureTyped(keys=keys, track_meta=False)]
    if on_device:
        if num_workers:
            raise ValueError(
                f"augment_on_device runs the augmentation in the loader's thread, not in {num_workers} worker "
                "processes: set num_workers 0 (and thread_loader true to overlap it with the training step)."
            )
        transforms.append(ToDeviced(keys=keys, device=device))
    return transforms


def _file_paths(value: Any) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, (list, tuple)):
        return [os.fspath(v) for v in value if isinstance(v, (str, os.PathLike))]
    return []


def file_state_hashing(item: Any) -> bytes:
    """
    The disk cache's key of a data item: MONAI's ``pickle_hashing`` of the item together with the size and the
    modification time (ns) of each existing file it names (``image``, ``mask``...). A file rewritten in place gets
    a new key, so its stale cached copy is not read (it stays in the cache folder until removed).
    """
    if not isinstance(item, Mapping):
        return pickle_hashing(item)
    stamps = {}
    for key in sorted(map(str, item)):
        for path in _file_paths(item[key]):
            if os.path.isfile(path):
                state = os.stat(path)
                stamps[f"{key}:{path}"] = (state.st_size, state.st_mtime_ns)
    return pickle_hashing({"item": item, "files": stamps}) if stamps else pickle_hashing(item)


class PlainTensorBatch(PrepareBatchExtraInput):
    """
    ``(image, label)`` of a batch dict, on ``device``, as plain ``torch.Tensor`` rather than MONAI ``MetaTensor``;
    with ``extra_keys`` (e.g. ``["tabular"]``) also the extra network inputs, as ``PrepareBatchExtraInput`` does.

    A training step needs no image metadata; dropping it saves the metadata bookkeeping of every operation in
    the network and is what ``torch.compile`` requires (it cannot trace ``MetaTensor``).
    """

    def __init__(self, extra_keys: str | Sequence[str] | dict[str, str] | None = None) -> None:
        super().__init__(extra_keys or ())

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple:
        if not self.extra_keys:
            image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
            return plain_tensor(image), plain_tensor(label)
        image, label, args, extra = super().__call__(batchdata, device, non_blocking, **kwargs)
        return (
            plain_tensor(image),
            plain_tensor(label),
            tuple(plain_tensor(a) for a in args),
            {k: plain_tensor(v) for k, v in extra.items()},
        )


def plain_tensor(x: Any) -> Any:
    """``x`` without MONAI metadata: a ``MetaTensor`` as a plain ``torch.Tensor``, anything else unchanged."""
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def _omp_set_num_threads() -> Callable[[int], Any] | None:
    """The OpenMP runtime's ``omp_set_num_threads`` that PyTorch's CPU kernels use, or None where there is none."""
    try:
        return ctypes.CDLL(None).omp_set_num_threads
    except (AttributeError, OSError):  # no OpenMP runtime loaded globally (e.g. Windows, a non-OpenMP torch build)
        return None


def limit_thread_intra_op(threads: int) -> bool:
    """
    Let PyTorch's CPU kernels called from the current thread use at most ``threads`` threads, leaving every other
    thread's setting as it is (the OpenMP team size of this thread only). ``torch.set_num_threads`` cannot do this:
    besides the calling thread it sets the count that threads take when they first run a parallel kernel, the main
    thread included when it has not run one yet. Returns whether the limit could be set.
    """
    omp_set_num_threads = _omp_set_num_threads()
    if omp_set_num_threads is None or threads < 1:
        return False
    torch.get_num_threads()  # PyTorch's lazy per-thread initialisation first, so that it does not undo the limit
    omp_set_num_threads(int(threads))
    return torch.get_num_threads() == threads


class PrefetchDataLoader(ThreadDataLoader):
    """
    MONAI's ``ThreadDataLoader``: the next batches are loaded and augmented in a background thread while the
    training step runs, in the same order and with the same random draws as ``DataLoader`` (the transforms' own
    random states, the sampler's order drawn when the epoch starts). The background thread's PyTorch kernels run
    on ``intra_op_threads`` CPU threads (default 1), so that the augmentation's many small kernels do not compete
    with the training step's thread team for the same cores; the training step's threads are unchanged.
    """

    def __init__(self, dataset: Dataset, intra_op_threads: int = 1, buffer_size: int = 2, **kwargs: Any) -> None:
        super().__init__(dataset, buffer_size=buffer_size, **kwargs)
        self.intra_op_threads = intra_op_threads

    def __iter__(self):
        source = DataLoader.__iter__(self)

        def limited():  # runs in ThreadBuffer's thread
            limit_thread_intra_op(self.intra_op_threads)
            yield from source

        yield from buffer_iterator(limited(), self.buffer_size, self.buffer_timeout, self.repeats)


def loader_class(thread_loader: bool = False) -> type[DataLoader]:
    """:class:`PrefetchDataLoader` (batches prepared in a background thread) if ``thread_loader``, else ``DataLoader``."""
    return PrefetchDataLoader if thread_loader else DataLoader
