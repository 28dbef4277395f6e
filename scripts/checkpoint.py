# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Checkpoints that survive a killed run.

- :func:`atomic_save` writes a file so that readers see the old or the new content, never half a file.
- :class:`AtomicCheckpointSaver` is MONAI's ``CheckpointSaver`` with atomic writes (MONAI's own writes in place,
  and with a fixed file name it deletes the old file before writing the new one) and a ``state_dict`` of its
  best-model tracking, so that a resumed run keeps selecting ``models/model.pt`` against the best score so far.
- :class:`ModelCheckpointLoader` is MONAI's ``CheckpointLoader`` whose error, when the weights do not fit the
  configured network, says which settings to pass.
- :class:`TrainingCheckpoint` saves the whole training state (trainer epoch/iteration, network, optimizer, LR
  scheduler, best-model state) every epoch and optionally every N iterations, and resumes from it.

Every load goes through MONAI's ``CheckpointLoader``, which reads with ``torch.load(..., weights_only=True)``:
a checkpoint can carry tensors and plain containers only, never code.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import min_version, optional_import

from .distributed import get_rank

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
Checkpoint, _ = optional_import("ignite.handlers", "0.4.11", min_version, "Checkpoint")
BaseSaveHandler, _ = optional_import("ignite.handlers.checkpoint", "0.4.11", min_version, "BaseSaveHandler")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["atomic_save", "AtomicSaver", "AtomicCheckpointSaver", "TrainingCheckpoint", "ModelCheckpointLoader"]

_TMP_SUFFIX = ".tmp"


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """
    ``torch.save(obj, path)`` made atomic: the data go to a temporary file in the same folder, are flushed to disk,
    and the file is renamed over ``path`` (``os.replace``). A process killed at any moment leaves either the previous
    ``path`` or the new one, plus at worst a stray hidden ``.<name>.<pid>.<id>.tmp``. The file gets the usual
    permissions (0666 minus the umask), unlike a ``tempfile`` (0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporaries that :func:`atomic_save` left beside ``path`` when a process was killed mid-write."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*{_TMP_SUFFIX}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


MISMATCH_HINT = (
    "the network this config builds does not fit those weights: they were trained with other settings. Fix: pass "
    "the overrides their training used (--backbone, --backbone_args#..., --num_classes, --spatial_size, "
    "--num_attentions, --use_tabular ...), or point --ckpt_path to weights of this network."
)


class ModelCheckpointLoader(CheckpointLoader):
    """
    MONAI's ``CheckpointLoader`` (weights-only ``torch.load``) that explains a mismatch between the weights and the
    configured network (missing or unexpected keys, other shapes) instead of only listing the tensors.
    """

    def __call__(self, engine: Engine) -> None:
        try:
            super().__call__(engine)
        except RuntimeError as error:
            if "state_dict" not in str(error):  # load_state_dict's "Error(s) in loading state_dict for ..."
                raise
            raise RuntimeError(f"cannot load '{self.load_path}': {MISMATCH_HINT}\n{error}") from error


class AtomicSaver(BaseSaveHandler):
    """
    An ignite save handler writing with :func:`atomic_save` into ``dirname`` (on rank 0 only). With a fixed
    ``filename`` every checkpoint goes to that file and ``remove`` does nothing: the new file replaces the old one
    in a single rename, so there is no moment without a complete file.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, save_on_rank: int = 0) -> None:
        self.dirname = Path(dirname)
        self.filename = filename
        self.save_on_rank = save_on_rank

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if get_rank() == self.save_on_rank:
            atomic_save(checkpoint, self.dirname / (self.filename or filename))

    def remove(self, filename: str) -> None:
        if self.filename is None and get_rank() == self.save_on_rank:
            (self.dirname / filename).unlink(missing_ok=True)


class AtomicCheckpointSaver(CheckpointSaver):
    """
    MONAI's :class:`~monai.handlers.CheckpointSaver` (same arguments) whose files are written with
    :class:`AtomicSaver`, and whose best-model tracking (the best score so far and its file) is available as
    ``state_dict()`` / ``load_state_dict()``, so that :class:`TrainingCheckpoint` can save and restore it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                ckpt.save_handler = AtomicSaver(self.save_dir, filename=getattr(ckpt.save_handler, "filename", None))

    def state_dict(self) -> dict:
        """Best-model tracking: ``{"_saved": [(score, file name), ...]}`` (plain floats and strings)."""
        if self._key_metric_checkpoint is None:
            return {}
        return {"_saved": [(float(p), str(f)) for p, f in self._key_metric_checkpoint._saved]}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            super().load_state_dict(state_dict)


class _BestMetric:
    """The ``best_metric`` / ``best_metric_epoch`` state of a MONAI evaluator, as a state_dict."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def state_dict(self) -> dict:
        best = getattr(self.engine.state, "best_metric", -1)
        return {
            "best_metric": float(best.item() if isinstance(best, torch.Tensor) else best),
            "best_metric_epoch": int(getattr(self.engine.state, "best_metric_epoch", -1)),
        }

    def load_state_dict(self, state_dict: Mapping) -> None:
        self.engine.state.best_metric = state_dict["best_metric"]
        self.engine.state.best_metric_epoch = state_dict["best_metric_epoch"]


class TrainingCheckpoint:
    """
    The whole training state in one file, ``save_dir/filename``, written atomically when each epoch completes
    (after validation, so the best-model state is current) and, with ``iteration_interval`` N > 0, every N
    iterations. It holds the trainer's epoch and iteration, every object of ``save_dict`` (network, optimizer, LR
    scheduler, the :class:`AtomicCheckpointSaver` that selects the best model...) and the validator's best metric.

    With ``resume=True`` the file is loaded when the trainer starts (through MONAI's ``CheckpointLoader``,
    weights-only) and training continues from the saved iteration up to the same ``max_epochs``; a missing file is
    logged and training starts from scratch, so a job script can always pass ``--resume true``.

    Attach it after the ``ValidationHandler`` (later in ``train#handlers``).

    Args:
        save_dir: folder of the checkpoint.
        save_dict: objects with ``state_dict``/``load_state_dict``; the trainer is added as ``"trainer"``.
        filename: checkpoint file name.
        iteration_interval: also save every N iterations (0: at epoch ends only).
        resume: load the checkpoint when the trainer starts.
        validator: the evaluator whose ``best_metric`` state is saved too.
        map_location: where loaded tensors go (e.g. the training device).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "checkpoint.pt",
        iteration_interval: int = 0,
        resume: bool = False,
        validator: Engine | None = None,
        map_location: Any = None,
    ) -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.iteration_interval = int(iteration_interval or 0)
        self.resume = resume
        self.validator = validator
        self.map_location = map_location
        self.logger = logging.getLogger(self.__class__.__name__)
        self._checkpoint: Checkpoint | None = None
        self._objects: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        self._objects = {**self.save_dict, "trainer": engine}
        if self.validator is not None:
            self._objects["validator"] = _BestMetric(self.validator)
        self._checkpoint = Checkpoint(
            to_save=self._objects,
            save_handler=AtomicSaver(self.path.parent, filename=self.path.name),
            n_saved=1,
            greater_or_equal=True,
        )
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        if self.iteration_interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.iteration_interval), self._save_mid_epoch)

    def save(self, engine: Engine) -> None:
        """Write the training state now."""
        self._checkpoint(engine)

    def _save_mid_epoch(self, engine: Engine) -> None:
        if engine.state.epoch_length and engine.state.iteration % engine.state.epoch_length == 0:
            return  # the epoch-end save follows, after validation
        self.save(engine)

    def load(self, engine: Engine) -> None:
        """Restore the training state from the checkpoint file (called on ``STARTED`` when ``resume`` is set)."""
        for tmp in remove_stale_temporaries(self.path):
            self.logger.info(f"removed {tmp}, a checkpoint write interrupted by the end of the previous run")
        if not self.path.is_file():
            self.logger.warning(f"--resume: no checkpoint at {self.path}, training starts from epoch 1.")
            return
        epoch_length = engine.state.epoch_length
        CheckpointLoader(load_path=str(self.path), load_dict=self._objects, map_location=self.map_location)(engine)
        if epoch_length is not None and engine.state.epoch_length != epoch_length:
            raise ValueError(
                f"{self.path} was saved with {engine.state.epoch_length} iterations per epoch, the training data now "
                f"give {epoch_length}: the training split or batch size changed since. Resume with the same data and "
                f"batch size, or start a new run without --resume."
            )
        state = engine.state
        left = (
            "the run was complete, nothing left to train"
            if state.epoch >= state.max_epochs
            else f"training continues at iteration {state.iteration + 1}"
        )
        self.logger.info(
            f"resumed from {self.path}: {state.epoch} of {state.max_epochs} epochs and {state.iteration} iterations "
            f"done; {left}."
        )
