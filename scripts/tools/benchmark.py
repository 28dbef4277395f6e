# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
What CAL costs over the plain backbone, measured side by side in one process on the same batch.

For each backbone the command builds the bundle's network twice from ``configs/train.json`` (``cal: true`` and the
baseline ``cal: false``, same weights) and measures, with warm-up and interleaved repeats (CAL, baseline, baseline,
CAL, ...), the median

- training step time (forward, CAL loss, backward, AdamW step) and its CAL / baseline ratio;
- inference time (eval mode, ``torch.inference_mode``) and its ratio;
- peak memory of a training step and its ratio: the step's own tensors (parameters, buffers, optimizer state,
  batch) plus the highest extra memory allocated during the step, read from ``torch.cuda.max_memory_allocated``
  on GPUs and, on CPUs, from the allocation and free events of the PyTorch profiler (``profile_memory=True``),
  i.e. tensor memory as on GPUs, not the process's resident size; the same for forward and backward alone
  (without the optimizer update, whose temporaries are often the step's peak), where CAL's extra activations show;
- the fraction of step time spent waiting for data with the bundle's default training loader
  (``train#dataloader``), over real training steps of the CAL network;
- samples per second (training and inference, on the fixed batch).

It prints a Markdown table (stderr) and JSON (stdout); targets: training step ratio <= 1.05, inference ratio <=
1.02, peak memory ratio <= 1.05, data wait < 5% of a step. ``--profile DIR`` writes a torch.profiler table per
network and step, and lists in the JSON the operators whose self time CAL increases most.

Examples::

    python -m scripts.tools.benchmark                    # the seed's ViT-B and the bundle's ResNet at 64^3
    python -m scripts.tools.benchmark --backbone vit --batch_size 2 --repeats 5 --profile eval/benchmark

Like ``monai.bundle run``, the command is an entry point that reads the bundle's training config (with the
overrides above), so that it measures the network, loss and loader that training uses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import monai
import torch
from monai.bundle import ConfigParser
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ..data.datalist import DATALIST_NAME
from ..data.loading import PlainTensorBatch
from ..run.distributed import prepare_network
from .synthetic_data import generate_synthetic_dataset

__all__ = [
    "SEED_VIT_B",
    "ROWS",
    "TARGETS",
    "interleaved_times",
    "resident_bytes",
    "step_peak_bytes",
    "data_wait_fraction",
    "benchmark_backbone",
    "format_table",
    "main",
]

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
# the seed's ViT-B: 64^3 input, 16^3 patches (a 4x4x4 token grid), 768 wide, 12 layers, 12 heads
SEED_VIT_B = {"patch_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12}
# The rows of docs/speed.md (--rows): the released network at train.json's input size, the 64^3 network of the 0.5.0
# study (train.json's ResNet with a 5^3, stride-4 first convolution) and the seed's ViT-B at 64^3.
ROWS: dict[str, tuple[str, dict[str, Any], list[int] | None]] = {
    "released": ("resnet", {}, None),
    "resnet64": ("resnet", {"conv1_t_size": 5, "conv1_t_stride": 4}, [64, 64, 64]),
    "vit_b64": ("vit", SEED_VIT_B, [64, 64, 64]),
}
TARGETS = {"train_step_ratio": 1.05, "inference_ratio": 1.02, "peak_memory_ratio": 1.05, "data_wait_fraction": 0.05}
VARIANTS = ("cal", "baseline")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def interleaved_times(
    fns: dict[str, Callable[[], Any]], warmup: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """
    Seconds per call of each function in ``fns``, ``repeats`` times after ``warmup`` untimed rounds; the calling
    order alternates every round (A B, B A, ...) so that a drift in machine load hits every function alike.
    """
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            elapsed = _seconds(fns[name], device)
            if r >= warmup:
                times[name].append(elapsed)
    return times


def _unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[(t.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def resident_bytes(network: nn.Module, optimizer: torch.optim.Optimizer, batch: Sequence[torch.Tensor]) -> int:
    """Bytes a training step holds from start to end: parameters, buffers, optimizer state and the batch."""
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return _unique_bytes([*network.parameters(), *network.buffers(), *state, *batch])


def step_peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """
    The highest tensor memory ``fn`` allocates on ``device`` on top of what was allocated when it started:
    ``torch.cuda.max_memory_allocated`` on CUDA; on CPUs the running sum of the profiler's allocation (+) and
    free (-) events in time order.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        if event.device_type() == torch.autograd.DeviceType.CPU:
            running += event.nbytes()
            peak = max(peak, running)
    return peak


def data_wait_fraction(
    loader: Iterable, step: Callable[[torch.Tensor, torch.Tensor], Any], steps: int, device: torch.device
) -> tuple[float, float, list[float]]:
    """
    Run ``steps`` training steps on batches from ``loader`` (after one untimed step, which also starts the
    loader); return the fraction of the time spent waiting for the next batch (including moving it to
    ``device``), the samples per second of the whole loop and each step's wait in seconds.
    """
    prepare = PlainTensorBatch()
    iterator = iter(loader)
    wait = total = 0.0
    samples = 0
    waits: list[float] = []
    for i in range(steps + 1):
        _sync(device)
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        image, label = prepare(batch, device)
        _sync(device)
        ready = time.perf_counter()
        step(image, label)
        _sync(device)
        if i > 0:
            waits.append(ready - start)
            wait += ready - start
            total += time.perf_counter() - start
            samples += image.shape[0]
    return wait / total, samples / total, waits


def _operator_times(fn: Callable[[], Any], device: torch.device) -> tuple[Any, dict[str, float]]:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        _sync(device)
    averages = prof.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return averages, {a.key: (getattr(a, key) / 1000.0, a.count) for a in averages}  # (ms, calls)


# The bundle's training config with the synthetic overlay: the seed's CAL recipe (no centre loss, crop/drop or
# test-time crops) on the synthetic data set this command generates, so the ratios measure CAL alone.
DEFAULT_CONFIGS = [
    str(BUNDLE_ROOT / "configs" / "train.json"),
    str(BUNDLE_ROOT / "configs" / "synthetic_attention.json"),
]
# The data pipeline's settings, taken from the first config (train.json) whatever the overlays say, so that the data
# wait is that of the training's own loader: its cache, augmentation and loader class.
TRAINING_DATA_KEYS = ("dataset_cache", "cache_rate", "spatial_augmentation", "num_workers", "thread_loader")


def _bundle_parser(config_file: str | list[str], overrides: dict[str, Any]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config_file)
    files = [config_file] if isinstance(config_file, (str, Path)) else list(config_file)
    if len(files) > 1:
        training = ConfigParser.load_config_files(files[0])
        for key in TRAINING_DATA_KEYS:
            if key in training:
                parser[key] = training[key]
    parser["bundle_root"] = str(BUNDLE_ROOT)
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _median(values: list[float]) -> float:
    return statistics.median(values)


def benchmark_backbone(
    backbone: str,
    backbone_args: dict[str, Any],
    dataset_dir: str,
    device: torch.device,
    spatial_size: Sequence[int],
    batch_size: int,
    num_attentions: int = 32,
    warmup: int = 2,
    repeats: int = 5,
    data_steps: int = 4,
    amp: bool = False,
    channels_last: bool = False,
    profile_dir: str | None = None,
    config_file: str | list[str] | None = None,
    seed: int = 0,
    name: str | None = None,
) -> dict[str, Any]:
    """
    Measure one backbone, CAL against its baseline; returns the figures as a JSON-ready dict. ``name`` labels the
    row (default: the backbone) and its profiler tables.
    """
    parser = _bundle_parser(
        config_file or DEFAULT_CONFIGS,
        {
            "dataset_dir": dataset_dir,
            "device": device,
            "backbone": backbone,
            f"backbone_args#{backbone}": dict(backbone_args),
            "spatial_size": list(spatial_size),
            "num_attentions": num_attentions,
            "batch_size": batch_size,
        },
    )
    monai.utils.set_determinism(seed=seed)
    networks: dict[str, nn.Module] = {}
    for variant in VARIANTS:
        parser["cal"] = variant == "cal"
        networks[variant] = parser.get_parsed_content("network_def", lazy=False)
    networks["baseline"].load_state_dict(networks["cal"].state_dict())
    networks = {k: prepare_network(v, device, channels_last=channels_last) for k, v in networks.items()}
    optimizers = {
        k: torch.optim.AdamW(v.parameters(), lr=parser["learning_rate"], weight_decay=parser["weight_decay"])
        for k, v in networks.items()
    }  # train.json's optimizer
    loss_fn = parser.get_parsed_content("loss")
    loader = parser.get_parsed_content("train#dataloader")
    image, label = PlainTensorBatch()(next(iter(loader)), device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else nullcontext

    def forward_backward(variant: str, x: torch.Tensor = image, y: torch.Tensor = label) -> None:
        networks[variant].train()
        optimizers[variant].zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(networks[variant](x), y)
        loss.backward()

    def train_step(variant: str, x: torch.Tensor = image, y: torch.Tensor = label) -> None:
        forward_backward(variant, x, y)
        optimizers[variant].step()

    def infer(variant: str) -> None:
        networks[variant].eval()
        with torch.inference_mode(), autocast():
            networks[variant](image)

    train = interleaved_times({v: (lambda v=v: train_step(v)) for v in VARIANTS}, warmup, repeats, device)
    inference = interleaved_times({v: (lambda v=v: infer(v)) for v in VARIANTS}, warmup, repeats, device)
    peak: dict[str, dict[str, int]] = {"step": {}, "forward_backward": {}}
    for variant in VARIANTS:
        for part, fn in (("step", train_step), ("forward_backward", forward_backward)):
            optimizers[variant].zero_grad(set_to_none=True)
            resident = resident_bytes(networks[variant], optimizers[variant], (image, label))
            peak[part][variant] = resident + step_peak_bytes(lambda v=variant: fn(v), device)
    wait, loader_rate, waits = data_wait_fraction(loader, lambda x, y: train_step("cal", x, y), data_steps, device)

    train_s = {v: _median(train[v]) for v in VARIANTS}
    infer_s = {v: _median(inference[v]) for v in VARIANTS}
    result: dict[str, Any] = {
        "row": name or backbone,
        "backbone": backbone,
        "spatial_size": list(spatial_size),
        "backbone_args": dict(backbone_args),
        "parameters": sum(p.numel() for p in networks["cal"].parameters()),
        "train_step_s": train_s,
        "train_step_ratio": train_s["cal"] / train_s["baseline"],
        "inference_s": infer_s,
        "inference_ratio": infer_s["cal"] / infer_s["baseline"],
        "peak_memory_bytes": peak["step"],
        "peak_memory_ratio": peak["step"]["cal"] / peak["step"]["baseline"],
        "forward_backward_peak_bytes": peak["forward_backward"],
        "forward_backward_peak_ratio": peak["forward_backward"]["cal"] / peak["forward_backward"]["baseline"],
        "data_wait_fraction": wait,
        "samples_per_s": {
            "train": batch_size / train_s["cal"],
            "inference": batch_size / infer_s["cal"],
            "train_with_default_loader": loader_rate,
        },
        "raw_s": {"train": train, "inference": inference, "data_wait": waits},
    }
    result["targets_met"] = {key: result[key] <= limit for key, limit in TARGETS.items()}
    if profile_dir is not None:
        result["profile"] = _profile(name or backbone, train_step, infer, device, Path(profile_dir))
    return result


def _profile(backbone: str, train_step: Callable, infer: Callable, device: torch.device, out: Path) -> dict:
    """
    Operator tables of one training step and one inference per variant, and what CAL adds: the operators whose
    self time grows most, and the operators CAL calls more often than the baseline (none means the same work).
    """
    out.mkdir(parents=True, exist_ok=True)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    summary: dict[str, Any] = {"tables": []}
    for stage, fn in (("train", train_step), ("inference", infer)):
        ops = {}
        for variant in VARIANTS:
            averages, ops[variant] = _operator_times(lambda v=variant: fn(v), device)
            path = out / f"{backbone}_{variant}_{stage}.txt"
            path.write_text(averages.table(sort_by=sort, row_limit=30))
            summary["tables"].append(str(path))
        cal, base = ops["cal"], ops["baseline"]
        extra_ms = {op: cal[op][0] - base.get(op, (0.0, 0))[0] for op in cal}
        extra_calls = {op: cal.get(op, (0, 0))[1] - base.get(op, (0, 0))[1] for op in set(cal) | set(base)}
        summary[f"{stage}_total_ms"] = {v: sum(ms for ms, _ in ops[v].values()) for v in VARIANTS}
        summary[f"{stage}_cal_extra_ms_by_operator"] = dict(sorted(extra_ms.items(), key=lambda kv: -kv[1])[:8])
        summary[f"{stage}_cal_extra_calls"] = {op: n for op, n in sorted(extra_calls.items()) if n}
    return summary


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """
    A Markdown table of the figures (CAL / baseline and their ratio, ``!`` marking a missed target), ready to
    paste into the model card.
    """

    def mark(r: dict, key: str, text: str) -> str:
        return text if r["targets_met"][key] else f"{text} !"

    def pair(values: dict, scale: float, fmt: str) -> str:
        return f"{values['cal'] * scale:{fmt}} / {values['baseline'] * scale:{fmt}}"

    header = [
        "network", "input", "parameters", f"train step s, CAL / base (ratio <= {TARGETS['train_step_ratio']})",
        f"inference s, CAL / base (ratio <= {TARGETS['inference_ratio']})",
        f"peak memory MiB, CAL / base (ratio <= {TARGETS['peak_memory_ratio']})",
        f"data wait (< {TARGETS['data_wait_fraction']:.0%})", "samples/s train, inference",
    ]  # fmt: skip
    rows = [header, ["---"] * len(header)]
    for r in results:
        rows.append([
            r.get("row", r["backbone"]), "x".join(map(str, r.get("spatial_size", []))), _parameters(r["parameters"]),
            mark(r, "train_step_ratio", f"{pair(r['train_step_s'], 1, '.3f')} ({r['train_step_ratio']:.3f})"),
            mark(r, "inference_ratio", f"{pair(r['inference_s'], 1, '.3f')} ({r['inference_ratio']:.3f})"),
            mark(r, "peak_memory_ratio",
                 f"{pair(r['peak_memory_bytes'], 2**-20, '.0f')} ({r['peak_memory_ratio']:.3f})"),
            mark(r, "data_wait_fraction", f"{r['data_wait_fraction']:.1%}"),
            f"{r['samples_per_s']['train']:.2f}, {r['samples_per_s']['inference']:.2f}",
        ])  # fmt: skip
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _parameters(count: int) -> str:
    return f"{count / 1e6:.1f} M" if count >= 1e6 else f"{count / 1e3:.0f} K"


def _default_backbone_args(config_file: str | list[str], backbone: str) -> dict[str, Any]:
    if backbone == "vit":
        return dict(SEED_VIT_B)
    parser = ConfigParser()
    parser.read_config(config_file)
    return dict(parser["backbone_args"][backbone])


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.tools.benchmark", description=__doc__.split("\n\n")[1])
    p.add_argument("--backbone", nargs="+", default=["vit", "resnet"], choices=["vit", "resnet", "densenet"])
    p.add_argument(
        "--backbone_args",
        type=json.loads,
        default={},
        help="JSON {backbone: arguments}; defaults: the seed's ViT-B, and train.json's backbone_args for CNNs",
    )
    p.add_argument("--spatial_size", type=int, nargs="+", default=[64], help="input size, one value or three")
    p.add_argument(
        "--rows",
        nargs="+",
        choices=list(ROWS),
        default=None,
        help="named networks, each at its own input size, instead of --backbone/--spatial_size: released (train.json's"
        " network and size), resnet64 (first convolution 5^3 stride 4, 64^3), vit_b64 (the seed's ViT-B, 64^3)",
    )
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--num_attentions", type=int, default=32, help="M, attention maps")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds before the timed ones")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds; medians are reported")
    p.add_argument("--data_steps", type=int, default=16, help="training steps timed with the default loader")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: the training's num_threads; 0: torch's)"
    )
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    p.add_argument("--channels_last", action="store_true", help="channels-last (NDHWC) convolution weights")
    p.add_argument("--dataset_dir", default=None, help="a bundle data set (default: synthetic, made in a temp dir)")
    p.add_argument("--config_file", nargs="+", default=DEFAULT_CONFIGS, help="bundle configs, merged in order")
    p.add_argument("--profile", default=None, metavar="DIR", help="write torch.profiler operator tables here")
    p.add_argument("--output", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    for name in ("batch_size", "repeats", "data_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be 1 or more, got {getattr(args, name)}.")
    if len(args.spatial_size) not in (1, 3):
        p.error("--spatial_size takes one value (a cube) or three.")
    args.spatial_size = args.spatial_size * 3 if len(args.spatial_size) == 1 else args.spatial_size
    return args


def _rows(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any], list[int]]]:
    """(name, backbone, backbone arguments, input size) of each network to measure."""
    if not args.rows:
        return [
            (b, b, args.backbone_args.get(b, _default_backbone_args(args.config_file, b)), args.spatial_size)
            for b in args.backbone
        ]
    config = ConfigParser.load_config_files(args.config_file[0])
    rows = []
    for name in args.rows:
        backbone, extra, size = ROWS[name]
        backbone_args = dict(SEED_VIT_B) if backbone == "vit" else {**config["backbone_args"][backbone], **extra}
        rows.append((name, backbone, backbone_args, list(size or config["spatial_size"])))
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark from command-line arguments; print the table (stderr) and the JSON (stdout)."""
    args = _arguments(argv)
    threads = args.threads
    if threads is None:  # as training pins them
        threads = int(ConfigParser.load_config_files(args.config_file[0]).get("num_threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    device = torch.device(args.device)
    amp = args.amp and device.type == "cuda"
    if args.amp and not amp:
        print("--amp runs on CUDA only; measuring in float32.", file=sys.stderr)
    settings = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "spatial_size": args.spatial_size if not args.rows else None,
        "rows": args.rows,
        "num_attentions": args.num_attentions,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "data_steps": args.data_steps,
        "amp": amp,
        "channels_last": args.channels_last,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "memory_measure": (
            "cuda max_memory_allocated" if device.type == "cuda" else "torch.profiler allocation events (tensor memory)"
        ),
        "targets": TARGETS,
    }
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.dataset_dir is not None and not (Path(args.dataset_dir) / DATALIST_NAME).is_file():
            raise FileNotFoundError(f"--dataset_dir {args.dataset_dir} has no {DATALIST_NAME}; give a bundle data set.")
        datasets: dict[int, str] = {}

        def dataset_dir(size: Sequence[int]) -> str:  # enough synthetic cases for the loader's steps, at the size
            if args.dataset_dir is not None:
                return args.dataset_dir
            if max(size) not in datasets:
                datasets[max(size)] = str(Path(tmp) / f"synthetic_{max(size)}")
                cases = args.batch_size * (args.data_steps + 2)
                generate_synthetic_dataset(datasets[max(size)], size=max(size), num_cases=(cases, 1, 1), seed=0)
            return datasets[max(size)]

        for name, backbone, backbone_args, size in _rows(args):
            print(f"benchmarking {name}: {backbone} {backbone_args} at {size} ...", file=sys.stderr, flush=True)
            results.append(
                benchmark_backbone(
                    backbone, backbone_args, dataset_dir(size), device, size, args.batch_size,
                    num_attentions=args.num_attentions, warmup=args.warmup, repeats=args.repeats,
                    data_steps=args.data_steps, amp=amp, channels_last=args.channels_last,
                    profile_dir=args.profile, config_file=args.config_file, name=name,
                )
            )  # fmt: skip
    report = {"settings": settings, "results": results}
    print(format_table(results), file=sys.stderr)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    return report


if __name__ == "__main__":
    main()
