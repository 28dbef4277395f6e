# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Memory and time of inference on inputs of any size: for each size, a synthetic int16 CT-like volume (air, a body
ellipsoid, noise) is written as NIfTI, and two steps are measured, each in a fresh subprocess so that peaks do
not mix:

- ``preprocessing``: ``configs/inference.json``'s preprocessing of the file (load, orient, scale, resize);
- ``infer``: one ``/infer``-equivalent call (what the MONAI Label app runs per request): the preprocessing, the
  network with the released weights, the attention map inverted to the input's geometry and written as NIfTI by the
  config's post-processing.

Each row gives the step's wall time, the subprocess's peak resident memory (``VmHWM`` on Linux, else
``ru_maxrss``; it includes the Python, PyTorch and MONAI imports and, for ``infer``, the network) and its peak
before the step. The volumes are written by a subprocess too, so that the measuring processes start small.
The machine's load average is printed too: the figures are only comparable on an idle machine.

Examples::

    python -m scripts.tools.benchmark_inputs                           # 28^3 ... 512x512x600
    python -m scripts.tools.benchmark_inputs --sizes 28 128x128x64 --steps preprocessing --output eval/inputs.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_SIZES", "parse_size", "synthetic_ct", "measure", "format_table", "main"]

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SIZES = ("28", "128", "256x256x100", "512x512x200", "512x512x600")
STEPS = ("preprocessing", "infer")
GOAL = {"size": (512, 512, 200), "peak_rss_mb": 2048, "seconds": 10.0}


def parse_size(text: str) -> tuple[int, int, int]:
    """``"128"`` -> (128, 128, 128); ``"512x512x200"`` -> (512, 512, 200)."""
    values = [int(v) for v in text.lower().split("x")]
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) < 2:
        raise argparse.ArgumentTypeError(f"size '{text}': give one edge (128) or three (512x512x200), each >= 2")
    return tuple(values)  # type: ignore[return-value]


def synthetic_ct(size: Sequence[int], path: str | os.PathLike, seed: int = 0) -> Path:
    """Write an int16 CT-like volume of ``size`` (air -1000 HU, a soft-tissue ellipsoid with noise), 0.7 mm voxels."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    axes = np.ogrid[tuple(slice(0, s) for s in size)]
    inside = sum(((a - s / 2) / (0.4 * s)) ** 2 for a, s in zip(axes, size)) <= 1.0
    volume = np.full(tuple(size), -1000, dtype=np.int16)
    volume[inside] = 40
    volume += rng.integers(-20, 21, size=tuple(size), dtype=np.int16)
    path = Path(path)
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.7, 0.7, 1.0])), str(path))
    return path


def _rss_mb() -> float:
    """
    This process's peak resident memory so far, in MB: ``VmHWM`` on Linux (since this program started; Linux's
    ``ru_maxrss`` keeps the parent's peak across fork and exec), else ``ru_maxrss`` (kB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 2**10
    except (OSError, StopIteration, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _child(step: str, image: str, config_file: str, ckpt_path: str | None, output_dir: str) -> dict[str, Any]:
    """Run one step on ``image`` in this process; returns its time and this process's peak memory."""
    import torch
    from monai.bundle import ConfigParser

    sys.path.insert(0, str(BUNDLE_ROOT))
    parser = ConfigParser()
    parser.read_config(config_file)
    parser["bundle_root"] = str(BUNDLE_ROOT)
    parser["output_dir"] = output_dir
    parser["case_names"] = {}  # one volume, named after its file, as the MONAI Label app does
    if ckpt_path:
        parser["ckpt_path"] = ckpt_path
    preprocessing = parser.get_parsed_content("preprocessing")
    if step == "infer":
        network = parser.get_parsed_content("network_def")
        state = torch.load(parser.get_parsed_content("ckpt_path"), map_location="cpu", weights_only=True)
        network.load_state_dict(state["model"] if isinstance(state.get("model"), dict) else state)
        network.eval()
        inferer = parser.get_parsed_content("inferer")
        postprocessing = parser.get_parsed_content("postprocessing")
    before = _rss_mb()
    start = time.perf_counter()
    data = preprocessing({"image": image})
    shape = tuple(data["image"].shape[1:])
    if step == "infer":
        with torch.inference_mode():
            pred = inferer(data["image"][None], network)
        data["pred"] = {key: value[0] for key, value in pred.items()}
        postprocessing(data)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": _rss_mb(), "rss_before_mb": before, "network_input": list(shape)}


def measure(
    step: str, image: str | os.PathLike, config_file: str, ckpt_path: str | None = None, timeout: float = 900
) -> dict[str, Any]:
    """Run ``step`` on ``image`` in a fresh subprocess; its figures, or ``{"error": ...}`` when it failed."""
    with tempfile.TemporaryDirectory() as output_dir:
        command = [sys.executable, "-m", "scripts.tools.benchmark_inputs", "--child", step, "--image", str(image)]
        command += ["--config_file", config_file, "--child_output", output_dir]
        command += ["--ckpt_path", ckpt_path] if ckpt_path else []
        try:
            done = subprocess.run(
                command, cwd=BUNDLE_ROOT, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:g} s"}
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            return {"error": tail[0][:300]}
        return json.loads(lines[-1])


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`main`'s rows."""
    lines = ["| input | step | time (s) | peak RSS (MB) | RSS before (MB) |", "|---|---|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['input']} | {r['step']} | error: {r['error']} | | |")
        else:
            lines.append(
                f"| {r['input']} | {r['step']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} |"
            )
    return "\n".join(lines)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.tools.benchmark_inputs", description=__doc__.split("\n\n")[1])
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES])
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    p.add_argument("--config_file", default="configs/inference.json", help="the config whose preprocessing runs")
    p.add_argument("--ckpt_path", default=None, help="weights for the infer step (default: the config's)")
    p.add_argument("--data_dir", default=None, help="keep the synthetic volumes here (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    p.add_argument("--output", default=None, help="also write the JSON to this file")
    p.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    p.add_argument("--child_output", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = _arguments(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.image, args.config_file, args.ckpt_path, args.child_output)))
        return []
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        data_dir = Path(args.data_dir or temp)
        data_dir.mkdir(parents=True, exist_ok=True)
        print(f"load average (1, 5, 15 min): {os.getloadavg()}; {os.cpu_count()} CPUs", file=sys.stderr)
        for size in args.sizes:
            name = "x".join(map(str, size))
            path = data_dir / f"ct_{name}.nii.gz"
            if not path.exists():  # in a subprocess: this process stays small
                make = f"from scripts.tools.benchmark_inputs import synthetic_ct; synthetic_ct({list(size)}, {str(path)!r})"
                subprocess.run([sys.executable, "-c", make], cwd=BUNDLE_ROOT, check=True)
            for step in args.steps:
                row = {
                    "input": name,
                    "step": step,
                    **measure(step, path, args.config_file, args.ckpt_path, args.timeout),
                }
                rows.append(row)
                print(format_table([row]).splitlines()[-1], file=sys.stderr, flush=True)
        print(f"load average (1, 5, 15 min): {os.getloadavg()}", file=sys.stderr)
    print(format_table(rows), file=sys.stderr)
    text = json.dumps({"load_average": os.getloadavg(), "goal": GOAL, "rows": rows}, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    return rows


if __name__ == "__main__":
    main()
