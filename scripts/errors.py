# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
How the bundle stops on a bad input: one message naming the input, the problem and the fix, exit status 1, and no
traceback (the form of the data check's messages).

``SystemExit`` is used because MONAI's config instantiation and ignite's engines wrap or re-raise ``Exception``
subclasses with their tracebacks, while a ``SystemExit`` passes through them and ends ``python -m monai.bundle``
with its message on stderr and exit status 1.
"""

from __future__ import annotations

from typing import NoReturn

__all__ = ["BundleInputError", "input_error", "stop"]


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
