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

Every load reads with ``torch.load(..., weights_only=True)`` (:func:`read_checkpoint`): a checkpoint can carry
tensors and plain containers only, never code. Every problem with a checkpoint file (missing, a folder, empty,
truncated or garbage bytes, pickled code, not a state dict, weights of another network, a training state of other
settings) stops the run with one message naming the file and the fix (:func:`scripts.run.errors.stop`).

A non-finite training loss stops training (ignite's ``TerminateOnNan``, in :class:`TrainingCheckpoint`), and no file
is written with NaN/Inf values (:class:`AtomicSaver`): ``models/model.pt`` and ``models/checkpoint.pt`` keep the last
finite state.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.transforms import Randomizable
from monai.utils import min_version, optional_import
from torch import nn

from ..reports.outputs import TMP_SUFFIX, atomic_file
from .distributed import get_rank, unwrap_network
from .errors import stop

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
Checkpoint, _ = optional_import("ignite.handlers", "0.4.11", min_version, "Checkpoint")
BaseSaveHandler, _ = optional_import("ignite.handlers.checkpoint", "0.4.11", min_version, "BaseSaveHandler")
TerminateOnNan, _ = optional_import("ignite.handlers", "0.4.11", min_version, "TerminateOnNan")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = [
    "atomic_save",
    "AtomicSaver",
    "AtomicCheckpointSaver",
    "TrainingCheckpoint",
    "ModelCheckpointLoader",
    "RandomStates",
    "read_checkpoint",
    "load_weights",
    "load_torchscript",
]


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` made atomic with :func:`scripts.reports.outputs.atomic_file` (temporary file, then rename)."""
    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporaries that :func:`atomic_save` left beside ``path`` when a process was killed mid-write."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


_TRUSTED_FIX = (
    "re-save the weights as a plain state dict where they were trained (torch.save(model.state_dict(), path)), or use "
    "weights from a source you trust (this bundle's models/model.pt, whose md5 is in large_files.yml)"
)


def _short_reason(error: BaseException) -> str:
    """``error`` in a few words, without torch's advice (which may suggest loading with ``weights_only=False``)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = re.split(r"(?<=[a-z)])\. ", text)[0].rstrip(".")
    if "weights_only" in text or len(text) > 120:
        text = ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _check_file(path: Path, fix_missing: str) -> None:
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.pt")) + sorted(p.name for p in path.glob("*.ts"))
        hint = f" (it holds {', '.join(inside[:3])})" if inside else ""
        stop(
            str(path),
            f"is a folder, not a checkpoint file{hint}",
            "name the file itself, e.g. " + str(path / "model.pt"),
        )
    if not path.exists():
        stop(str(path), "no such file", fix_missing)
    if path.stat().st_size == 0:
        stop(str(path), "is empty (0 bytes): an interrupted write or copy", "copy or download it again, or retrain")


def read_checkpoint(path: str | os.PathLike, map_location: Any = None, fix_missing: str = "") -> Any:
    """
    The content of the checkpoint ``path``, read weights-only (tensors and plain containers, never code). Any problem
    stops the run with one message naming the file and the fix (:func:`scripts.run.errors.stop`): missing, a folder,
    empty, truncated or not a PyTorch file, a TorchScript model, a file carrying pickled code.
    """
    path = Path(path)
    _check_file(path, fix_missing or "check the path, or train first to write it")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TorchScript archive")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:  # e.g. "Unsupported operand": bytes that are no pickle at all
            operand = re.search(r"Unsupported operand \S+", str(error))
            stop(
                str(path),
                f"is not a readable PyTorch checkpoint: other bytes ({operand.group(0) if operand else 'unpickling'})",
                "copy or download it again (compare its size and md5 with the original), or retrain",
            )
        stop(
            str(path),
            f"carries pickled code ({found.group(1)}), which is refused: checkpoints are read as weights only, "
            "never run",
            _TRUSTED_FIX,
        )
    except RuntimeError as error:
        if "TorchScript" in str(error):
            stop(
                str(path),
                "is a TorchScript model, not a state dict",
                "give it the .ts extension (inference runs TorchScript when --ckpt_path ends in .ts), or pass the .pt "
                "state dict it was exported from",
            )
        problem = "is truncated or corrupt" if "zip archive" in str(error) else "is not a readable PyTorch checkpoint"
        stop(
            str(path),
            f"{problem} ({_short_reason(error)})",
            "copy or download it again (compare its size and md5 with the original), or retrain",
        )
    except (EOFError, KeyError, ValueError, TypeError, AttributeError, IndexError, OSError) as error:
        stop(
            str(path),
            f"is not a readable PyTorch checkpoint: truncated or other bytes ({_short_reason(error)})",
            "copy or download it again (compare its size and md5 with the original), or retrain",
        )


_STATE_DICT_FIX = (
    "save the weights with torch.save(model.state_dict(), path), or pass the models/model.pt training wrote"
)


def _state_dict_of(content: Any, path: Path, key: str = "model") -> Mapping[str, torch.Tensor]:
    """The network weights in a checkpoint's content: a state dict, or the ``key`` entry of a training checkpoint."""
    if isinstance(content, Mapping) and isinstance(content.get(key), Mapping):
        content = content[key]
    if not isinstance(content, Mapping) or not content:
        kind = "an empty dict" if isinstance(content, Mapping) else f"a {type(content).__name__}"
        stop(
            str(path),
            f"holds {kind}, not a state dict (a dict of tensors named after the network's layers)",
            _STATE_DICT_FIX,
        )
    bad = [k for k, v in content.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        stop(str(path), f"is not a state dict: entry {bad[0]!r} is not a tensor", _STATE_DICT_FIX)
    return content


def _inferred_settings(weights: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The CALNet settings that a state dict reveals: classes, attention maps, backbone, tabular branch."""
    found: dict[str, Any] = {}
    for key in ("fc.weight", "tabular_fc.weight"):
        if key in weights and weights[key].ndim == 2:
            found["num_classes"] = int(weights[key].shape[0])
            break
    if "attention.0.weight" in weights:
        found["num_attentions"] = int(weights["attention.0.weight"].shape[0])
    names = " ".join(weights)
    for backbone, marker in (
        ("vit", "backbone.vit."),
        ("densenet", "backbone.features."),
        ("resnet", "backbone.stem."),
    ):
        if marker in names:
            found["backbone"] = backbone
    found["use_tabular"] = any(k.startswith("tabular.") for k in weights)
    return found


def _override(value: Any) -> str:
    """A setting's value as written after ``--name`` on the command line."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (list, tuple, dict)):
        return f"'{json.dumps(value, separators=(',', ':'))}'"
    return str(value)


def describe_mismatch(weights: Mapping[str, torch.Tensor], network: nn.Module) -> tuple[str, list[str]] | None:
    """
    None when ``weights`` fit ``network``; else the problem (which tensors differ, and the settings the weights
    reveal, as overrides) and the list of those overrides.
    """
    expected = unwrap_network(network).state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [k for k in expected if k in weights and tuple(expected[k].shape) != tuple(weights[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    theirs, ours = _inferred_settings(weights), _inferred_settings(expected)
    settings = [
        f"--{name} {_override(value)} (this config: {_override(ours[name])})"
        for name, value in theirs.items()
        if name in ours and ours[name] != value
    ]
    details = []
    if missing:
        details.append(f"{len(missing)} tensor(s) missing (e.g. {missing[0]})")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        details.append(
            f"{len(shapes)} tensor(s) of another shape (e.g. {k}: {tuple(weights[k].shape)} in the file, "
            f"{tuple(expected[k].shape)} in this network)"
        )
    which = f"they were trained with {', '.join(settings)}" if settings else "they were trained with other settings"
    return f"weights of another network ({'; '.join(details)}): {which}", settings


def load_weights(path: str | os.PathLike, network: nn.Module, map_location: Any = None) -> None:
    """Load the network weights of the checkpoint ``path`` into ``network``, or stop with the problem and its fix."""
    path = Path(path)
    weights = _state_dict_of(
        read_checkpoint(
            path, map_location, "pass --ckpt_path with a model file (training writes models/model.pt), or train first"
        ),
        path,
    )
    mismatch = describe_mismatch(weights, network)
    if mismatch is not None:
        problem, settings = mismatch
        fix = (
            f"pass the overrides their training used ({', '.join(s.split(' (')[0] for s in settings)}, and any other "
            "setting it changed), or point --ckpt_path to weights of this network"
            if settings
            else "pass the overrides their training used (--backbone, --backbone_args#..., --num_classes, "
            "--spatial_size, --num_attentions, --use_tabular ...), or point --ckpt_path to weights of this network"
        )
        stop(str(path), problem, fix)
    unwrap_network(network).load_state_dict(weights)


def load_torchscript(path: str | os.PathLike, map_location: Any = None) -> torch.jit.ScriptModule:
    """``torch.jit.load(path)``, or stop with one message naming the file and the fix when it is not a TorchScript."""
    path = Path(path)
    _check_file(path, "export it first (README, Export: ckpt_export ... --filepath models/model.ts), or check the path")
    try:
        return torch.jit.load(str(path), map_location=map_location)
    except (RuntimeError, ValueError, OSError) as error:
        plain = "constants.pkl" in str(error) or "data.pkl" in str(error)
        problem = (
            "is not a TorchScript model (a plain PyTorch checkpoint named .ts?)"
            if plain
            else f"is not a TorchScript model: truncated or other bytes ({_short_reason(error)})"
        )
        stop(
            str(path),
            problem,
            "export the model again with ckpt_export (README, Export), or pass a state dict with a .pt name",
        )


def _reraise(engine: Engine, error: BaseException) -> None:
    if isinstance(error, SystemExit) or len(engine._event_handlers[Events.EXCEPTION_RAISED]) == 1:
        raise error  # the others (e.g. StatsHandler's, which logs a traceback) then do not run


def quiet_input_errors(engine: Engine) -> None:
    """
    Make ``engine`` end on a bad input (:mod:`scripts.run.errors`, a ``SystemExit``) with its message alone: MONAI's
    ``StatsHandler`` logs the traceback of any exception raised in a run; an ``EXCEPTION_RAISED`` handler placed
    before it re-raises a ``SystemExit`` first. Other exceptions still reach the handlers after it.
    """
    if engine.has_event_handler(_reraise, Events.EXCEPTION_RAISED):
        return
    engine.add_event_handler(Events.EXCEPTION_RAISED, _reraise)
    handlers = engine._event_handlers[Events.EXCEPTION_RAISED]
    handlers.insert(0, handlers.pop())


class ModelCheckpointLoader(CheckpointLoader):
    """
    Loads the network weights of ``load_path`` (a state dict, or the ``model`` entry of a training checkpoint) into
    ``load_dict["model"]`` when the engine starts, weights-only. Every problem with the file, and weights that do
    not fit the configured network, stop the run with one message naming the file, the differing settings and the
    fix (:func:`load_weights`).
    """

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        quiet_input_errors(engine)

    def __call__(self, engine: Engine) -> None:
        networks = [v for v in self.load_dict.values() if isinstance(v, nn.Module)]
        if len(self.load_dict) != 1 or len(networks) != 1:
            raise ValueError("ModelCheckpointLoader loads exactly one network: load_dict={'model': network}.")
        load_weights(self.load_path, networks[0], self.map_location)
        self.logger.info(f"Restored all variables from {self.load_path}")


NON_FINITE_FIX = (
    "lower --learning_rate (e.g. by 10x); check that the images' intensities fit float32 (|value| < 3e38; the data "
    "check rejects NaN/Inf voxels only); without --amp if it was on (float16 overflows above 65504: "
    "--amp_dtype bfloat16 or --amp False); then start a new run, or resume from the last finite checkpoint "
    "with the lower learning rate (--resume True)"
)


def non_finite_tensors(obj: Any, name: str = "") -> list[str]:
    """Names (``a.b.c``) of the floating-point tensors in ``obj`` (nested dicts, lists) that hold NaN or Inf."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            return [] if bool(torch.isfinite(obj).all()) else [name or "tensor"]
        return []
    if isinstance(obj, Mapping):
        return [b for k, v in obj.items() for b in non_finite_tensors(v, f"{name}.{k}" if name else str(k))]
    if isinstance(obj, (list, tuple)):
        return [b for i, v in enumerate(obj) for b in non_finite_tensors(v, f"{name}[{i}]")]
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return non_finite_tensors(obj.state_dict(), name)
    return []


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
            path = self.dirname / (self.filename or filename)
            bad = non_finite_tensors(checkpoint)
            if bad:
                stop(
                    str(path),
                    f"not written: {len(bad)} tensor(s) hold NaN/Inf values (e.g. {bad[0]}); the file keeps the last "
                    "finite state. Training diverged",
                    NON_FINITE_FIX,
                )
            atomic_save(checkpoint, path)

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


def _randomizables(root: Any) -> list[Randomizable]:
    """
    Every MONAI ``Randomizable`` reachable from ``root`` (a dataset's transform: ``Compose``, its transforms and the
    array transforms they wrap), in a fixed order: the objects whose ``R`` MONAI's ``set_rnd`` seeds.
    """
    found: list[Randomizable] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, torch.Tensor, np.ndarray, Mapping)):
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)
            return
        if isinstance(obj, Randomizable) and isinstance(getattr(obj, "R", None), np.random.RandomState):
            found.append(obj)
        if type(obj).__module__.startswith(("monai.transforms", "scripts")) or isinstance(obj, Randomizable):
            for value in vars(obj).values() if hasattr(obj, "__dict__") else ():
                visit(value)

    visit(root)
    return found


def _numpy_state(state: tuple) -> dict:
    """A ``RandomState.get_state()`` tuple as tensors and plain numbers (loadable weights-only)."""
    name, keys, pos, has_gauss, gauss = state
    return {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}  # fmt: skip


def _numpy_tuple(state: Mapping) -> tuple:
    keys = np.asarray(state["keys"].cpu().numpy(), dtype=np.uint32)
    return state["name"], keys, state["pos"], state["has_gauss"], state["gauss"]


class RandomStates:
    """
    Every random stream a training run draws from, as a ``state_dict`` that loads weights-only: Python's ``random``,
    NumPy's global generator, torch's CPU generator (the data loader's shuffling, dropout...), the CUDA generators
    when CUDA is in use, the data loader's and sampler's own ``torch.Generator`` if any, those of the network's
    modules (the counterfactual attention's, :class:`scripts.cal_net.BAP3D`), and the ``R`` of each MONAI random
    transform of the training data set (drawn per case, in the main process when ``num_workers`` is 0; with workers,
    each epoch's worker seeds come from torch's CPU generator).

    In a distributed run only rank 0 saves the checkpoint: its streams are restored on rank 0 only, the other ranks
    keep those of their seed.
    """

    def __init__(self, data_loader: Any = None, network: torch.nn.Module | None = None) -> None:
        self.data_loader = data_loader
        self.network = network
        dataset = getattr(data_loader, "dataset", None)
        self.transforms = _randomizables(getattr(dataset, "transform", dataset))

    def _generators(self) -> dict[str, torch.Generator]:
        owners = [("loader", self.data_loader), ("sampler", getattr(self.data_loader, "sampler", None))]
        if self.network is not None:  # modules with a generator of their own (the counterfactual attention's)
            owners += [(f"network.{name}", module) for name, module in unwrap_network(self.network).named_modules()]
        found = {}
        for name, owner in owners:
            generator = getattr(owner, "generator", None)
            if isinstance(generator, torch.Generator):
                found[name] = generator
        return found

    def state_dict(self) -> dict:
        state = {
            "python": random.getstate(),
            "numpy": _numpy_state(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "generators": {k: g.get_state() for k, g in self._generators().items()},
            "transforms": [_numpy_state(t.R.get_state()) for t in self.transforms],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping) -> None:
        if get_rank() != 0:
            return
        if len(state["transforms"]) != len(self.transforms):
            stop(
                "--resume True",
                f"the checkpoint holds the states of {len(state['transforms'])} random transforms, this run's training "
                f"data has {len(self.transforms)}",
                "resume with the augmentation settings of the interrupted run (e.g. --spatial_augmentation), or "
                "start a new run without --resume",
            )
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        np.random.set_state(_numpy_tuple(state["numpy"]))
        torch.set_rng_state(state["torch"].cpu())
        for name, generator in self._generators().items():
            if name in state["generators"]:
                generator.set_state(state["generators"][name].cpu())
        for transform, saved in zip(self.transforms, state["transforms"]):
            transform.R.set_state(_numpy_tuple(saved))
        if "cuda" in state and torch.cuda.is_available():
            cuda = [s.cpu() for s in state["cuda"]]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)


class _Settings:
    """The run's settings that a resume must keep (network and batch size), saved in the checkpoint."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = json.loads(json.dumps(dict(settings), default=str))

    def state_dict(self) -> dict:
        return self.settings

    def load_state_dict(self, state: Mapping) -> None:
        pass  # compared before loading, in TrainingCheckpoint.load


def _flat(value: Any, name: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{name}#{key}").items()}
    return {name: value}


def _loss(output: Any) -> Any:
    """The loss in an iteration's ``output`` (a dict, or MONAI's list of per-case dicts); ``()`` when it has none."""
    item = output[0] if isinstance(output, (list, tuple)) and output else output
    loss = item.get("loss") if isinstance(item, Mapping) else None
    return () if loss is None else loss


class TrainingCheckpoint:
    """
    The whole training state in one file, ``save_dir/filename``, written atomically when each epoch completes
    (after validation, so the best-model state is current) and, with ``iteration_interval`` N > 0, every N
    iterations. It holds the trainer's epoch and iteration, every object of ``save_dict`` (network, optimizer, LR
    scheduler, the :class:`AtomicCheckpointSaver` that selects the best model...), the validator's best metric,
    every random stream (:class:`RandomStates`) and the ``settings`` a resume must keep.

    With ``resume=True`` the file is loaded when the trainer starts (weights-only) and training continues from the
    saved iteration up to the same ``max_epochs``; a resume from an epoch boundary is bitwise equal to the
    uninterrupted run on a CPU. A missing file is logged and training starts from scratch, so a job script can always
    pass ``--resume True``. A file that cannot be resumed (unreadable, not a training checkpoint, other
    ``settings``, another network, another batch size or training split) stops the run with the fix.

    Every iteration ignite's ``TerminateOnNan`` checks the loss: a NaN/Inf loss stops the training with its epoch and
    iteration, before anything is saved (and :class:`AtomicSaver` never writes a NaN/Inf tensor).

    Attach it after the ``ValidationHandler`` (later in ``train#handlers``).

    Args:
        save_dir: folder of the checkpoint.
        save_dict: objects with ``state_dict``/``load_state_dict``; the trainer is added as ``"trainer"``.
        filename: checkpoint file name.
        iteration_interval: also save every N iterations (0: at epoch ends only).
        resume: load the checkpoint when the trainer starts.
        validator: the evaluator whose ``best_metric`` state is saved too.
        map_location: where loaded tensors go (e.g. the training device).
        settings: config values (name: value, as the command-line overrides name them) that a resume must keep;
            the trainer's batch size is added as ``batch_size``.
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
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.iteration_interval = int(iteration_interval or 0)
        self.resume = resume
        self.validator = validator
        self.map_location = map_location
        self.settings = dict(settings or {})
        self.logger = logging.getLogger(self.__class__.__name__)
        self._checkpoint: Checkpoint | None = None
        self._objects: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        data_loader = getattr(engine, "data_loader", None)
        settings = dict(self.settings)
        if getattr(data_loader, "batch_size", None) is not None:
            settings.setdefault("batch_size", data_loader.batch_size)
        self._objects = {**self.save_dict, "trainer": engine, "settings": _Settings(settings)}
        if self.validator is not None:
            self._objects["validator"] = _BestMetric(self.validator)
        # the network's own generators (MONAI attaches handlers before the trainer holds its network: take the saved
        # one); restored last: nothing draws after it
        network = self.save_dict.get("model", getattr(engine, "network", None))
        self._objects["random_states"] = RandomStates(data_loader, network if isinstance(network, nn.Module) else None)
        self._checkpoint = Checkpoint(
            to_save=self._objects,
            save_handler=AtomicSaver(self.path.parent, filename=self.path.name),
            n_saved=1,
            greater_or_equal=True,
        )
        for quiet in (engine, self.validator):
            if quiet is not None:
                quiet_input_errors(quiet)
        terminate_on_nan = TerminateOnNan(_loss)
        # ignite gives its logger two console handlers of its own (its warning printed twice): log it once, through
        # the bundle's logging configuration
        terminate_on_nan.logger.handlers.clear()
        terminate_on_nan.logger.propagate = True
        engine.add_event_handler(Events.ITERATION_COMPLETED, terminate_on_nan)
        engine.add_event_handler(Events.TERMINATE, self.stop_on_nan)
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        if self.iteration_interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.iteration_interval), self._save_mid_epoch)

    def stop_on_nan(self, engine: Engine) -> None:
        """End the run with the fix when ``TerminateOnNan`` terminated it (the loss is NaN or infinite)."""
        loss = torch.as_tensor(_loss(engine.state.output), dtype=torch.float)
        if loss.numel() == 0 or bool(loss.isfinite().all()):
            return  # terminated for another reason
        value = float(loss.mean())
        state = engine.state
        in_epoch = (state.iteration - 1) % state.epoch_length + 1 if state.epoch_length else state.iteration
        stop(
            f"training loss at epoch {state.epoch}, iteration {state.iteration} ({in_epoch} of the epoch)",
            f"{value} (not finite): the network's weights are now invalid, so training stops; the files in "
            f"{self.path.parent} (checkpoint.pt, model.pt) keep the last state saved before. Likely causes: "
            "intensities beyond float32's range, a learning rate too high, or float16 overflow with --amp",
            NON_FINITE_FIX,
        )

    def save(self, engine: Engine) -> None:
        """Write the training state now."""
        self._checkpoint(engine)

    def _save_mid_epoch(self, engine: Engine) -> None:
        last = bool(engine.state.epoch_length) and engine.state.iteration % engine.state.epoch_length == 0
        if engine.should_terminate or last:
            return  # terminated (a NaN loss), or the epoch-end save follows, after validation
        self.save(engine)

    def _refuse(self, problem: str, fix: str = "") -> None:
        stop(
            str(self.path),
            problem,
            fix
            or "resume with the command (settings, data, batch size) of the interrupted run, or start a new run "
            "without --resume (or with another --ckpt_dir to keep this one)",
        )

    def _check_settings(self, checkpoint: Mapping, engine: Engine) -> None:
        saved = checkpoint.get("settings")
        if not isinstance(saved, Mapping):
            return
        ours = self._objects["settings"].state_dict()
        differ = []
        for name in ours:
            if name not in saved:
                continue
            theirs, mine = _flat(saved[name], name), _flat(ours[name], name)
            differ += [
                f"--{k} {_override(theirs.get(k))} (this run: {_override(mine.get(k))})"
                for k in sorted(set(theirs) | set(mine))
                if theirs.get(k) != mine.get(k)
            ]
        if differ:
            why = (
                " (another batch size changes the iterations per epoch and which cases share a batch: the resumed "
                "run would not be the interrupted one)"
                if any(d.startswith("--batch_size ") for d in differ)
                else ""
            )
            self._refuse(
                f"was saved by a run with other settings: {', '.join(differ)}{why}",
                f"resume with {' '.join(d.split(' (')[0] for d in differ)} as the interrupted run, or start a new run "
                "without --resume (or with another --ckpt_dir to keep this one)",
            )

    def load(self, engine: Engine) -> None:
        """Restore the training state from the checkpoint file (called on ``STARTED`` when ``resume`` is set)."""
        for tmp in remove_stale_temporaries(self.path):
            self.logger.info(f"removed {tmp}, a checkpoint write interrupted by the end of the previous run")
        if not self.path.exists():
            self.logger.warning(f"--resume: no checkpoint at {self.path}, training starts from epoch 1.")
            return
        checkpoint = read_checkpoint(self.path, self.map_location)
        if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("trainer"), Mapping):
            self._refuse(
                "is not a training checkpoint (no trainer state): --resume needs the checkpoint.pt that training "
                "writes, not a model file",
                f"move {self.path} away and start a new run, or resume with the --ckpt_dir of the interrupted run",
            )
        self._check_settings(checkpoint, engine)
        network = self._objects.get("model")
        if isinstance(network, nn.Module):
            weights = _state_dict_of(checkpoint, self.path)
            mismatch = describe_mismatch(weights, network)
            if mismatch is not None:
                problem, settings = mismatch
                overrides = " ".join(s.split(" (")[0] for s in settings) or "the interrupted run's settings"
                self._refuse(
                    f"holds {problem}",
                    f"resume with {overrides}, or start a new run without --resume (or with another --ckpt_dir)",
                )
        absent = [k for k in self._objects if k not in checkpoint]
        if "trainer" in absent or "model" in absent:
            self._refuse(f"is not a complete training checkpoint (no {' or '.join(absent)})")
        if absent:
            self.logger.warning(
                f"--resume: {self.path} has no {', '.join(absent)} (written by an older version): the resumed run "
                "continues, but is not bitwise equal to an uninterrupted one."
            )
        to_load = {k: v for k, v in self._objects.items() if k in checkpoint}
        epoch_length, max_epochs = engine.state.epoch_length, engine.state.max_epochs
        try:
            Checkpoint.load_objects(to_load=to_load, checkpoint=dict(checkpoint))
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
            self._refuse(f"cannot be resumed by this run's configuration ({_short_reason(error)})")
        if max_epochs is not None and engine.state.epoch > max_epochs:
            self._refuse(
                f"has {engine.state.epoch} epochs done, more than --epochs {max_epochs}",
                f"pass --epochs {engine.state.epoch} or more, or start a new run without --resume",
            )
        engine.state.max_epochs = max_epochs
        if epoch_length is not None and engine.state.epoch_length != epoch_length:
            self._refuse(
                f"was saved with {engine.state.epoch_length} iterations per epoch, the training data now give "
                f"{epoch_length}: the training split or the batch size changed since"
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
