# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
How the bundle stops on a bad input: one message naming the input, the problem and the fix, exit status 1, and no
traceback (the form of the data check's messages).

There is one path to that message, whichever component finds the problem:

- :func:`stop` raises :class:`BundleInputError`, a ``SystemExit``: MONAI's config instantiation and ignite's engines
  wrap or re-raise ``Exception`` subclasses with their tracebacks, while a ``SystemExit`` passes through them and
  ends ``python -m monai.bundle`` with its message on stderr and exit status 1;
- an exception that a bundle module raises itself (``raise ValueError(...)`` in ``scripts/``) reaches the user
  wrapped by MONAI (``RuntimeError: Failed to instantiate component ...`` or ``Failed to evaluate ...``); the hook
  that :func:`install_exit_hook` sets (the configs' ``initialize`` runs it first, through
  :func:`scripts.run.config_check.check_overrides`) unwraps it into :func:`input_error`'s message, naming the config
  item. Any other uncaught exception (an error inside MONAI or torch, a bug) keeps its traceback.
"""

from __future__ import annotations

import linecache
import re
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import NoReturn

__all__ = ["BundleInputError", "input_error", "stop", "bad_input_error", "install_exit_hook"]

_BUNDLE_DIR = Path(__file__).resolve().parents[1]  # scripts/
_RAISE = re.compile(r"raise\s+[A-Za-z_][\w.]*\s*\(")
_GENERIC_FIX = "correct the value or file it names and run again (README.md's Settings table lists the keys)"


class BundleInputError(SystemExit):
    """A bad input (data, configuration value, checkpoint, folder): its message names the input and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def input_error(what: str, problem: str, fix: str) -> BundleInputError:
    """The error for input ``what`` (a path, a config key with its value, a case) with ``problem`` and ``fix``."""
    return BundleInputError(f"{what}: {problem}. Fix: {fix}")


def stop(what: str, problem: str, fix: str) -> NoReturn:
    """End the run with :func:`input_error`'s message and exit status 1."""
    raise input_error(what, problem, fix)


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it wraps (``raise ... from``, or raised while handling), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not e for e in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _raised_by_the_bundle(error: BaseException) -> bool:
    """Whether ``error`` was raised by a ``raise SomeError(...)`` statement of a bundle module (``scripts/``)."""
    frames = list(traceback.walk_tb(error.__traceback__))
    if not frames:
        return False
    frame, lineno = frames[-1]
    path = Path(frame.f_code.co_filename).resolve()
    if not path.is_relative_to(_BUNDLE_DIR) or path.relative_to(_BUNDLE_DIR).parts[0] == "tools":
        return False  # scripts/tools/ drive the bundle from outside: not a component
    return bool(_RAISE.match(linecache.getline(str(path), lineno).strip()))


def _config_item(chain: list[BaseException]) -> str | None:
    """The id of the innermost config item (component or expression) MONAI was building when ``chain`` was raised."""
    from monai.bundle.config_item import ConfigItem

    found = None
    for error in chain:  # outermost first: the last item found is the innermost
        for frame, _ in traceback.walk_tb(error.__traceback__):
            owner = frame.f_locals.get("self")
            if isinstance(owner, ConfigItem) and owner.get_id():
                found = owner.get_id()
    return None if found is None else found.replace("::", "#")


def bad_input_error(error: BaseException) -> BundleInputError | None:
    """
    The :class:`BundleInputError` that ``error`` carries: itself or a wrapped one, or, for an exception a bundle
    module raised itself (a check of its arguments) and MONAI wrapped, one naming the config item whose building
    raised it, with its message and a fix. None for anything else, which keeps its traceback.
    """
    chain = _chain(error)
    for e in chain:
        if isinstance(e, BundleInputError):
            return e
    root = chain[-1]
    if not isinstance(root, Exception) or not _raised_by_the_bundle(root):
        return None
    text = root.args[0] if isinstance(root, KeyError) and root.args else str(root)
    text = " ".join(str(text).split()) or type(root).__name__
    item = _config_item(chain)
    what = f"config item '{item}'" if item else type(root).__name__
    if "Fix:" in text:
        return BundleInputError(f"{what}: {text}")
    return input_error(what, text.rstrip("."), _GENERIC_FIX)


def _exit_hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """``sys.excepthook``: a bad input ends with its message alone (exit status 1), anything else as before."""
    error = bad_input_error(value) if isinstance(value, Exception) else None
    if error is None:
        _exit_hook.previous(kind, value, tb)  # type: ignore[attr-defined]
        return
    sys.stderr.write(f"{error.message}\n")
    sys.stderr.flush()


def install_exit_hook() -> None:
    """
    Make an uncaught bad-input error end the program with its message and exit status 1, without a traceback
    (:func:`bad_input_error`); other errors keep Python's report. Idempotent.
    """
    if sys.excepthook is not _exit_hook:
        _exit_hook.previous = sys.excepthook  # type: ignore[attr-defined]
        sys.excepthook = _exit_hook
