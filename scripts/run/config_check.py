# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Checks of the configuration that run before any work (the configs' ``initialize``), each ending the run with one
message naming the key, the value and the fix (:mod:`scripts.run.errors`):

- :func:`check_overrides`: a command-line override (``--key value``) that names no key of the configs, e.g.
  ``--epoch 3`` for ``--epochs 3``, which MONAI would otherwise add to the config as a new, unused item;
- :func:`check_settings`: values that would fail later with a traceback (unknown backbone, a spatial size the
  network cannot take, found by building it and running it once (:func:`check_input_size`), no attention maps,
  the tabular branch without its length) and output folders that cannot be written;
- :func:`train_drop_last`: the training loader's ``drop_last``, so that BatchNorm never trains on a batch of one.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from fire.parser import DefaultParseValue
from monai.utils import ensure_tuple_rep
from torch import nn

from .distributed import unwrap_network
from .errors import install_exit_hook, stop

__all__ = [
    "RUNNER_KEYS",
    "command_line_overrides",
    "override_problems",
    "check_overrides",
    "check_settings",
    "check_input_size",
    "check_writable_dirs",
    "train_drop_last",
]

logger = logging.getLogger(__name__)

# Arguments that `python -m monai.bundle run` (run, create_workflow, ConfigWorkflow) consumes itself, and the
# settings of MONAI's experiment tracking (``--tracking mlflow --experiment_name ...``).
RUNNER_KEYS = frozenset(
    {
        "run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
        "workflow_name", "workflow_type", "properties_path",
        "tracking_uri", "experiment_name", "run_name", "save_execute_config",
    }
)  # fmt: skip
_RUN_COMMANDS = ("run", "run_workflow")
_FALSE_WORDS = ("false", "no", "off", "0", "none", "null", "")
# the positional arguments of `run`, in order (fire fills them before the keyword ones)
_POSITIONAL = ("run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file")


def _value(text: str) -> Any:
    """A command-line value as fire (``monai.bundle``'s front end) reads it: a literal where it is one, else the text."""
    return DefaultParseValue(text)


def command_line_overrides(argv: Sequence[str]) -> dict[str, Any] | None:
    """
    The keyword arguments of a ``python -m monai.bundle run ...`` command line (``argv`` without the program),
    parsed the way fire parses them (``--key value``, ``--key=value``, a bare ``--flag``, ``-`` read as ``_`` in
    names, ``--`` ending them), positional ones under their names (``run_id``, ...); None for another command.
    """
    if not argv or argv[0] not in _RUN_COMMANDS:
        return None
    args: dict[str, Any] = {}
    positional = iter(_POSITIONAL)
    tokens = list(argv[1:])
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            break
        if token.startswith("--") and len(token) > 2:
            name, eq, text = token[2:].partition("=")
            name = name.replace("-", "_")
            if eq:
                args[name] = _value(text)
            elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                args[name] = _value(tokens[i + 1])
                i += 1
            else:
                args[name] = True
        else:
            name = next(positional, None)
            if name is not None:
                args.setdefault(name, _value(token))
        i += 1
    return args


def _nearest(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> str | None:
    match = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=cutoff)
    return match[0] if match else None


def _key_problem(config: Mapping[str, Any], key: str) -> tuple[str, str | None] | None:
    """Why override ``key`` (``a#b#c``) names no key of ``config``, and the nearest key; None when it does."""
    parts = key.split("#")
    node: Any = config
    for depth, part in enumerate(parts):
        where = "#".join(parts[:depth])
        last = depth == len(parts) - 1
        if isinstance(node, Mapping):
            if part in node:
                node = node[part]
                continue
            near = _nearest(part, list(node), cutoff=0.8 if depth and last else 0.6)
            suggestion = "#".join(parts[:depth] + [near]) if near else None
            if depth and last and near is None:
                return None  # a new entry of an existing dict: a new argument of a component
            problem = f"'{where}' has no key '{part}'" if where else f"'{part}' is no key of the configs"
            return problem, suggestion
        if isinstance(node, list):
            if part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            return f"'{where}' is a list of {len(node)} item(s): '{part}' is not one of its indices 0..", None
        return f"'{where}' is a value ({node!r}), not a dict or list with a key '{part}'", None
    return None


def _switch_problem(config: Mapping[str, Any], key: str, value: Any) -> tuple[str, str] | None:
    """
    Why ``value`` cannot set the on/off setting ``key`` (a JSON boolean in ``config``), and the override to write
    instead: the command line turns only ``True``/``False`` into bools, and Python reads any other text as true.
    None when ``key`` is no boolean or ``value`` is not text.
    """
    node: Any = config
    for part in key.split("#"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if not isinstance(node, bool) or not isinstance(value, str):
        return None
    meant = "False" if value.strip().lower() in _FALSE_WORDS else "True"
    return f"'{value}' is text; an on/off setting takes True or False", f"{key} {meant}"


def override_problems(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """
    ``(key, problem, nearest key)`` for each override key that is no key of the merged ``config``, and for each
    on/off setting given as text (``--cal false``; the nearest key is then the override to write, ``cal False``).
    """
    problems = []
    for key, value in overrides.items():
        if key in RUNNER_KEYS or key.startswith("_meta_"):
            continue
        found = _key_problem(config, key) or _switch_problem(config, key, value)
        if found is not None:
            problems.append((key, *found))
    return problems


def _is_bundle_runner(program: str) -> bool:
    path = Path(program)
    return path.name == "__main__.py" and path.parent.name == "bundle" and path.parent.parent.name == "monai"


def check_overrides(argv: Sequence[str] | None = None) -> None:
    """
    Stop when an override of the ``python -m monai.bundle run`` command line names no key of its configs (MONAI
    would add it as a new item that nothing reads, silently ignoring it), suggesting the nearest key.

    ``argv`` defaults to ``sys.argv`` and is checked only when the program is ``monai.bundle``'s command line (not
    when a workflow is built from Python). Top-level keys and the inner keys of nested ``a#b#c`` overrides must
    exist in the configs (``config_file`` and ``args_file``'s keys merged, as MONAI merges them); the last key of a
    nested override may be new (a new argument of a component, e.g. ``backbone_args#resnet#num_stages``) unless it
    is one typo away from an existing key. The arguments MONAI's runner consumes (:data:`RUNNER_KEYS`) pass.
    On that command line it first installs :func:`scripts.run.errors.install_exit_hook` (it is the configs' first
    ``initialize`` item), so that a bad input raised by any later component ends with its message, not a traceback.
    """
    if argv is None:
        if not sys.argv or not _is_bundle_runner(sys.argv[0]):
            return
        install_exit_hook()  # from here on, a bad input any component raises ends without a traceback
        argv = sys.argv[1:]
    overrides = command_line_overrides(argv)
    if overrides is None:
        return
    from monai.bundle import ConfigParser

    args_file = overrides.get("args_file")
    if args_file:
        overrides = {**ConfigParser.load_config_file(str(args_file)), **overrides}
    config_file = overrides.get("config_file")
    if not config_file:
        return
    config = ConfigParser.load_config_files(config_file)
    problems = override_problems(config, overrides)
    if not problems:
        return
    what = ", ".join(f"--{key}" for key, _, _ in problems)
    texts, fixes = [], []
    for key, text, near in problems:
        fixes.append(f"write --{near} instead of --{key}" if near else f"remove --{key} or correct it")
        if _key_problem(config, key) is not None:  # no key of the configs
            nearest = f" (nearest: '{near}')" if near else ""
            texts.append(f"{text}{nearest}, so it would be silently ignored (configs: {config_file})")
        else:  # an on/off setting given as text
            fixes[-1] += f" {overrides[key]}"
            texts.append(f"--{key} {text} (the command line reads only True and False as bools)")
    stop(
        f"command-line override {what}",
        "; ".join(texts),
        "; ".join(fixes) + " (the Settings table in README.md lists the keys; nested keys are written a#b)",
    )


def check_writable_dirs(dirs: Mapping[str, str | os.PathLike]) -> None:
    """
    Stop when a folder the run writes into cannot be created or written: ``dirs`` maps config keys
    (``ckpt_dir``, ...) to folders. A missing folder is fine when its nearest existing parent is a writable folder
    (the run creates it); nothing is created here.
    """
    for key, value in dirs.items():
        path = Path(str(value))
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            where = "is an existing file" if existing == path else f"is inside '{existing}', a file"
            stop(f"{key} '{path}'", f"{where}, not a folder", f"point --{key} to a folder (new or existing)")
        try:
            handle, probe = tempfile.mkstemp(dir=existing, prefix=".write_check_")
            os.close(handle)
            os.remove(probe)
        except OSError as e:
            where = "" if existing == path else f" (its nearest existing parent '{existing}' is not writable)"
            stop(
                f"{key} '{path}'",
                f"cannot be written{where}: {e.strerror or e}",
                f"point --{key} to a folder you can write to, or change its permissions",
            )


def check_settings(
    backbone: Any,
    backbone_args: Mapping[str, Any],
    spatial_size: Any,
    num_attentions: Any,
    use_tabular: bool = False,
    tabular_length: Any = 0,
    writable_dirs: Mapping[str, str | os.PathLike] | None = None,
) -> None:
    """
    Stop on configuration values that would otherwise end in a traceback once the network is built, and on output
    folders that cannot be written (see :func:`check_writable_dirs`); the configs' ``config_check`` item.
    """
    from ..backbones import BACKBONES

    names = sorted(set(BACKBONES) & set(backbone_args or {}))
    if backbone not in BACKBONES or backbone not in (backbone_args or {}):
        near = _nearest(str(backbone), names)
        problem = "is not a known backbone" if backbone not in BACKBONES else "has no entry in backbone_args"
        stop(
            f"backbone '{backbone}'",
            problem + (f" (nearest: '{near}')" if near else ""),
            f"use --backbone {' / '.join(names)}"
            + ("" if backbone not in BACKBONES else f", or give its arguments with --backbone_args#{backbone}"),
        )
    try:
        size = tuple(int(s) for s in ensure_tuple_rep(spatial_size, 3))
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) < 1:
        stop(f"spatial_size {spatial_size!r}", "is not 3 positive sizes", 'write it as --spatial_size "[28,28,28]"')
    check_input_size(backbone, backbone_args[backbone], size)
    if isinstance(num_attentions, bool) or not isinstance(num_attentions, int) or num_attentions < 1:
        stop(
            f"num_attentions {num_attentions!r}",
            "the network needs at least one attention map",
            "set --num_attentions to a positive integer (32 by default)",
        )
    if use_tabular:
        try:
            length = int(tabular_length)
        except (TypeError, ValueError):
            length = 0
        if length < 1:
            stop(
                f"use_tabular true with tabular_length {tabular_length!r}",
                "the tabular branch is on but its input has no length",
                "set --tabular_length to the number of tabular values per case, or --use_tabular False",
            )
    check_writable_dirs(writable_dirs or {})


def _forward_error(network: nn.Module, size: Sequence[int], in_channels: int) -> str | None:
    """Why ``network`` (on the meta device) cannot take a zero input of ``size``; None when it can."""
    try:
        with torch.no_grad():
            network(torch.zeros(1, in_channels, *size, device="meta"))
    except NotImplementedError:  # an operation without a meta kernel: the check cannot tell, training will
        return None
    except Exception as e:  # the shape check of the layer that cannot take its input
        return " ".join(f"{type(e).__name__}: {e}".split())[:300]
    return None


def _build(backbone: str, backbone_kwargs: Mapping[str, Any], size: Sequence[int], in_channels: int) -> nn.Module:
    from ..backbones import build_backbone

    with torch.device("meta"):  # shapes only: no memory, no computation, no random numbers drawn
        return build_backbone(backbone, in_channels, tuple(size), **dict(backbone_kwargs)).eval()


def _smallest_cube(network: nn.Module, start: int, in_channels: int, limit: int = 1024) -> int | None:
    """The smallest n such that ``network`` takes an n^3 input (larger inputs assumed to pass too), None if none."""
    high = max(int(start), 1)
    while _forward_error(network, (high,) * 3, in_channels) is not None:
        if high >= limit:
            return None
        high *= 2
    low = 0  # fails (no input)
    while high - low > 1:
        middle = (low + high) // 2
        if _forward_error(network, (middle,) * 3, in_channels) is None:
            high = middle
        else:
            low = middle
    return high


def _nearest_size(backbone: str, backbone_kwargs: Mapping[str, Any], size: Sequence[int], in_channels: int):
    """The size nearest to ``size`` (each side changed by the same amount, at most 32) the network takes, if any."""
    for change in (d for step in range(1, 33) for d in (step, -step)):
        candidate = [s + change for s in size]
        if min(candidate) < 1:
            continue
        try:
            network = _build(backbone, backbone_kwargs, candidate, in_channels)
        except Exception:
            continue
        if _forward_error(network, candidate, in_channels) is None:
            return candidate
    return None


def check_input_size(
    backbone: str, backbone_kwargs: Mapping[str, Any], spatial_size: Sequence[int], in_channels: int = 1
) -> None:
    """
    Stop when the configured backbone cannot take a ``spatial_size`` input, found by construction: the backbone is
    built and run once on a zero tensor of that size, on PyTorch's meta device (shapes only, so the check costs no
    memory at any size, and draws no random numbers: the training's random stream is the same with or without it).
    An input too small for the network's downsampling gives "<backbone> needs at least N^3 input"; one the network
    cannot be built for (a ViT patch that does not divide it) gives its reason and the nearest size that works.
    """
    size = [int(s) for s in spatial_size]
    what = f"spatial_size {size} with backbone '{backbone}'"
    with torch.random.fork_rng(devices=[]):
        try:
            network = _build(backbone, backbone_kwargs, size, in_channels)
        except (ValueError, TypeError, KeyError) as e:  # a constructor's check of its arguments, e.g. the ViT's patch
            error = " ".join(f"{type(e).__name__}: {e}".split()).rstrip(".")
            near = _nearest_size(backbone, backbone_kwargs, size, in_channels)
            stop(
                what,
                f"the network cannot be built with these settings ({error})",
                (
                    f'use --spatial_size "{near}" (the nearest size it takes), or change --backbone_args#{backbone}'
                    if near
                    else f"correct --backbone_args#{backbone} (the reason above), or use another --spatial_size"
                ),
            )
        error = _forward_error(network, size, in_channels)
        if error is None:
            return
        smallest = _smallest_cube(network, max(size), in_channels)
    if smallest is not None and smallest > min(size):
        stop(
            what,
            f"{backbone} needs at least {smallest}^3 input; got {size} (a zero input of that size fails: {error})",
            f'use --spatial_size "{[max(s, smallest) for s in size]}" or larger (images are resized to it), or a '
            f"backbone that downsamples less (e.g. --backbone resnet)",
        )
    stop(
        what,
        f"the network cannot take this input ({error})",
        f"use another --spatial_size or --backbone_args#{backbone}",
    )


def _batch_norms(network: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in network.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _single_value_norm(network: nn.Module, spatial_size: Any, in_channels: int) -> tuple[str, tuple] | None:
    """The first BatchNorm layer that gets one value per channel for a one-case batch, and its input shape."""
    shapes: dict[str, tuple] = {}

    def recorder(name: str):
        def hook(_module: nn.Module, inputs: tuple) -> None:
            shapes.setdefault(name, tuple(inputs[0].shape))

        return hook

    hooks = [m.register_forward_pre_hook(recorder(name)) for name, m in _batch_norms(network)]
    training = network.training
    try:
        param = next(network.parameters())
        x = torch.zeros(1, int(in_channels), *ensure_tuple_rep(spatial_size, 3), device=param.device)
        tabular = getattr(network, "tabular", None)
        extra = () if tabular is None else (torch.zeros(1, int(tabular.in_features), device=param.device),)
        network.eval()
        with torch.no_grad():
            network(x, *extra)
    except Exception:  # a network the probe cannot run: let training report what it reports
        return None
    finally:
        network.train(training)
        for hook in hooks:
            hook.remove()
    for name, shape in shapes.items():
        values = 1
        for s in shape[2:]:
            values *= int(s)
        if values == 1:
            return name, shape
    return None


def train_drop_last(
    network: nn.Module, batch_size: int, num_items: int, spatial_size: Any = None, in_channels: int = 1
) -> bool:
    """
    The training loader's ``drop_last``: True when the network has BatchNorm layers and the epoch's last batch
    would hold a single case (``num_items % batch_size == 1``, ``num_items`` being the cases per epoch and rank),
    which is dropped (a different case each epoch when shuffled; logged). With ``batch_size`` 1, stops with a
    message when a BatchNorm layer would get one value per channel (which it cannot train on).
    """
    network = unwrap_network(network)
    if not _batch_norms(network):
        return False
    batch_size = int(batch_size)
    if batch_size == 1:
        found = None if spatial_size is None else _single_value_norm(network, spatial_size, in_channels)
        if found is not None:
            name, shape = found
            stop(
                "batch_size 1",
                f"in training, the network's BatchNorm layer '{name}' gets one value per channel (input shape "
                f"{list(shape)} for one case) and cannot normalise it",
                "set --batch_size 2 or more, or a larger --spatial_size",
            )
        return False
    if int(num_items) % batch_size == 1:
        logger.warning(
            f"training: {num_items} cases per epoch with batch_size {batch_size} leave a last batch of one case, "
            f"which BatchNorm cannot train on: it is dropped (one case per epoch, a different one when shuffled)."
        )
        return True
    return False
