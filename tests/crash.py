# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
A test-only ignite handler that kills its own process at a given iteration, for the resume test: a config overlay
appends it to ``train#handlers`` (after the checkpoint handler, so that the iteration's checkpoint is written
first), and the training dies there as under ``kill -9``, deterministically, with no polling from outside.
"""

from __future__ import annotations

import os
import signal
import sys

from ignite.engine import Engine, Events


class CrashAt:
    """Kill this process with SIGKILL once iteration ``iteration`` has completed (and its other handlers ran)."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=self.iteration), self)

    def __call__(self, engine: Engine) -> None:
        print(f"CrashAt: killing the training at iteration {engine.state.iteration}", flush=True)
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def overlay(iteration: int) -> dict:
    """A config overlay (to write as JSON after train.json) that appends :class:`CrashAt` to the trainer's handlers."""
    return {"+train#handlers": [{"_target_": "tests.crash.CrashAt", "iteration": iteration}]}
