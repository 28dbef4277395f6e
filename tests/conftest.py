# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Shared fixtures: a tiny synthetic data set, tiny network overrides, and runners that cannot hang the test session:
``run_command`` and ``run_bundle`` (subprocesses with a timeout) and ``run_spawned`` (a function in spawned
processes with a timeout, for anything that creates a torch.distributed process group).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# The tests train, evaluate and infer on the synthetic fixture: configs/synthetic_attention.json on top of each
# workflow's config (command-line lists of config files, relative to ROOT).
TRAIN = "['configs/train.json','configs/synthetic_attention.json']"
EVALUATE = "['configs/train.json','configs/synthetic_attention.json','configs/evaluate.json']"
SYNTHETIC_INFERENCE = "['configs/inference.json','configs/synthetic_attention.json']"

# A 16^3 data set and a one-block ViT: a whole bundle run takes seconds on a CPU.
TINY_OVERRIDES = [
    "--spatial_size", "[16,16,16]",
    "--backbone_args#vit#patch_size", "4",
    "--backbone_args#vit#hidden_size", "16",
    "--backbone_args#vit#mlp_dim", "32",
    "--backbone_args#vit#num_layers", "1",
    "--backbone_args#vit#num_heads", "2",
    "--num_attentions", "4",
    "--batch_size", "4",
]  # fmt: skip


# Time limits (seconds) below pytest-timeout's per-test limit (pyproject.toml), so that a stuck subprocess fails its
# test with its output, and the session goes on.
COMMAND_TIMEOUT_S = 600
SPAWN_TIMEOUT_S = 180


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def run_command(
    cmd: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """
    Run ``cmd`` capturing its output as text. It runs in a session of its own, so that on timeout the whole process
    group (e.g. torchrun's workers, data-loader workers) is killed, and the test fails with what it printed so far.
    """
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    except subprocess.TimeoutExpired as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a grandchild outside the group holds the pipes
            stdout, stderr = _text(exc.stdout), _text(exc.stderr)
    message = f"{' '.join(map(str, cmd))} did not finish in {timeout} s and was killed:\n"
    pytest.fail(message + f"{stdout[-4000:]}\n{stderr[-4000:]}", pytrace=False)


def run_bundle(
    *args: str, cwd: Path = ROOT, check: bool = True, env: dict | None = None, timeout: float = COMMAND_TIMEOUT_S
):
    """Run ``python -m monai.bundle <args>`` in a subprocess; fail the test with its output when it fails or hangs."""
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = run_command(cmd, cwd=cwd, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed with {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _spawned_main(target: Callable, rank: int, args: tuple, result: str) -> None:
    """A spawned process's body: run ``target(rank, *args)``, write the outcome to ``result``, and leave at once."""
    try:
        target(rank, *args)
        outcome = ""
    except BaseException:  # noqa: B036 - an assertion failure, SystemExit or anything else goes back to the test
        outcome = traceback.format_exc()
    Path(result).write_text(outcome)
    sys.stdout.flush()
    sys.stderr.flush()
    # The outcome is recorded: skip the interpreter's teardown, where torch's process-group destructors can block
    # on thread joins; the test checks the function, not torch's shutdown.
    os._exit(0)


def run_spawned(target: Callable, *args: Any, nprocs: int = 1, timeout: float = SPAWN_TIMEOUT_S) -> None:
    """
    Run ``target(rank, *args)`` for rank 0..nprocs-1, each in a process of its own (spawned, not forked: a forked
    child can crash once the parent has started torch's thread pools), and fail the test with a process's traceback
    when it raised, or when the processes did not finish within ``timeout`` seconds (they are then killed).

    Tests that create a torch.distributed process group run it through this, never in the pytest process: a group
    (and a DistributedDataParallel reducer holding it) left in the test session can block it for good in a
    destructor. ``target`` must be a module-level function and ``args`` picklable.
    """
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        results = [Path(tmp) / f"rank{rank}.txt" for rank in range(nprocs)]
        processes = [
            context.Process(target=_spawned_main, args=(target, rank, args, str(results[rank])), daemon=True)
            for rank in range(nprocs)
        ]
        for p in processes:
            p.start()
        deadline = time.monotonic() + timeout
        for p in processes:
            p.join(max(0.0, deadline - time.monotonic()))
        stuck = [rank for rank, p in enumerate(processes) if p.is_alive()]
        for p in processes:
            if p.is_alive():
                p.kill()
                p.join()
        name = getattr(target, "__qualname__", repr(target))
        failures = []
        for rank, (p, result) in enumerate(zip(processes, results)):
            if result.exists() and (outcome := result.read_text()):
                failures.append(f"rank {rank}:\n{outcome}")
            elif not result.exists() and rank not in stuck:
                failures.append(f"rank {rank} exited with {p.exitcode} before reporting")
        if stuck:
            failures.insert(0, f"rank(s) {stuck} did not finish in {timeout} s and were killed")
        if failures:
            pytest.fail(f"{name} in {nprocs} spawned process(es):\n" + "\n".join(failures), pytrace=False)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 16^3 synthetic data set (16 training, 8 validation, 8 test cases) with its datalist."""
    from scripts.tools.synthetic_data import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_synthetic_dataset(root, size=16, num_cases=(16, 8, 8), seed=0)
    return root
