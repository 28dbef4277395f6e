# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The bundle's files that are not kept in git, listed in ``large_files.yml`` as the MONAI model zoo does (``path``,
``url``, ``hash_val``, ``hash_type`` per file): download them into place, or compute the hashes to record after a
release; or check that ``train.json``'s defaults train the released weights again, byte for byte::

    python -m scripts.tools.large_files download
    python -m scripts.tools.large_files hashes --write True
    python -m scripts.tools.large_files check_training
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from monai.apps.utils import download_url
from monai.bundle import ConfigParser

__all__ = [
    "LARGE_FILES",
    "PLACEHOLDER",
    "HASH_TYPES",
    "WEIGHTS",
    "read_large_files",
    "released_entry",
    "file_hash",
    "download",
    "hashes",
    "check_training",
]

LARGE_FILES = "large_files.yml"
PLACEHOLDER = "OWNER"  # the repository owner in a release url that is not filled in yet
HASH_TYPES = ("md5", "sha1", "sha256", "sha512")
KEYS = ("path", "url", "hash_val", "hash_type")
WEIGHTS = "models/model.pt"  # the released weights, which train.json's defaults train
EMBEDDED = "docs/data/adrenalmnist3d.npz"  # the data they are trained on


def read_large_files(bundle_root: str | os.PathLike = ".", name: str = LARGE_FILES) -> list[dict]:
    """The entries of ``bundle_root/name``, each checked to have ``path``, ``url``, ``hash_val`` and ``hash_type``."""
    path = Path(bundle_root) / name
    entries = ConfigParser.load_config_file(path).get("large_files")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty 'large_files' list of {{path, url, hash_val, hash_type}}.")
    for i, entry in enumerate(entries):
        missing = [k for k in KEYS if k not in entry]
        if missing:
            raise ValueError(f"{path}: entry {i} ({entry.get('path', '?')}) lacks {missing}; each needs {KEYS}.")
        if str(entry["hash_type"]).lower() not in HASH_TYPES:
            raise ValueError(f"{path}: entry {i} has hash_type '{entry['hash_type']}', use one of {HASH_TYPES}.")
    return entries


def released_entry(bundle_root: str | os.PathLike = ".", path: str = WEIGHTS, name: str = LARGE_FILES) -> dict:
    """The entry of ``path`` in ``bundle_root/name``: the one place that records the released file's hash."""
    for entry in read_large_files(bundle_root, name):
        if entry["path"] == path:
            return entry
    raise ValueError(f"{Path(bundle_root) / name} lists no '{path}'.")


def file_hash(path: str | os.PathLike, hash_type: str = "md5") -> str:
    """Hex digest of a file (``md5``, ``sha1``, ``sha256`` or ``sha512``), read in 1 MiB chunks."""
    digest = hashlib.new(hash_type.lower())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(bundle_root: str | os.PathLike = ".", name: str = LARGE_FILES) -> list[str]:
    """Download every file of ``large_files.yml`` to its path under ``bundle_root``, checking its hash when one is
    recorded; a file already there with the right hash is kept. Returns the paths."""
    done = []
    for entry in read_large_files(bundle_root, name):
        if PLACEHOLDER in str(entry["url"]):
            raise ValueError(
                f"{entry['path']} is not released yet: its url in {name} still names the placeholder '{PLACEHOLDER}'. "
                f"Train the model instead (python -m monai.bundle run training --config_file configs/train.json) or "
                f"put the release's url in {name}."
            )
        target = Path(bundle_root) / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        download_url(
            url=str(entry["url"]),
            filepath=str(target),
            hash_val=str(entry["hash_val"]) or None,
            hash_type=str(entry["hash_type"]).lower(),
        )
        done.append(str(target))
    return done


def hashes(bundle_root: str | os.PathLike = ".", name: str = LARGE_FILES, write: bool = False) -> dict[str, str]:
    """
    Hashes of the files of ``large_files.yml`` that exist under ``bundle_root`` (``{path: digest}``); with
    ``write=True`` they are written into the file's ``hash_val`` fields (the rest of the file is kept as it is).
    """
    found = {}
    for entry in read_large_files(bundle_root, name):
        target = Path(bundle_root) / entry["path"]
        if target.is_file():
            found[str(entry["path"])] = file_hash(target, str(entry["hash_type"]))
    if write and found:
        yml = Path(bundle_root) / name
        lines, current = yml.read_text().splitlines(keepends=True), None
        for i, line in enumerate(lines):
            match = re.match(r"\s*-?\s*path:\s*[\"']?([^\"'\s]+)", line)
            if match:
                current = match.group(1)
            elif current in found and re.match(r"\s*hash_val:", line):
                lines[i] = re.sub(r"hash_val:.*", f'hash_val: "{found[current]}"', line.rstrip("\n")) + "\n"
        yml.write_text("".join(lines))
    return found


def check_training(bundle_root: str | os.PathLike = ".", timeout: float = 1200, work_dir: str | None = None) -> str:
    """
    Train ``configs/train.json``'s defaults on the embedded data, on the CPU, in a temporary folder (or in
    ``work_dir``, an empty folder that is kept), never in the checkout, and compare the hash of the
    ``models/model.pt`` it writes with ``large_files.yml``'s. Returns the hash when they are equal; otherwise, or
    when training fails or runs past ``timeout`` seconds, ends with exit status 1 and a message saying which.
    """
    root = Path(bundle_root).resolve()
    entry = released_entry(root)
    hash_type, expected = str(entry["hash_type"]).lower(), str(entry["hash_val"])
    released_with = json.loads((root / "configs" / "metadata.json").read_text()).get("pytorch_version", "?")
    with tempfile.TemporaryDirectory(prefix="check_training_") as tmp:
        out = Path(work_dir or tmp).resolve()
        cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(root / "configs/train.json"),
               "--bundle_root", str(out), "--embedded_data", str(root / EMBEDDED)]  # fmt: skip
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}  # on the CPU, as released
        print(f"check_training: training train.json's defaults in {out} (at most {timeout:g} s) ...", flush=True)
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            sys.exit(f"check_training: FAILED, the training did not finish within {timeout:g} s (pass --timeout).")
        seconds = time.monotonic() - start
        if proc.returncode != 0 or not (out / WEIGHTS).is_file():
            tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n"
            sys.exit(tail + f"check_training: FAILED, the training exited with status {proc.returncode}.")
        found = file_hash(out / WEIGHTS, hash_type)
    if found != expected:
        sys.exit(
            f"check_training: MISMATCH, the training ({seconds:.0f} s) wrote {WEIGHTS} with {hash_type} {found}, "
            f"{LARGE_FILES} lists {expected} (released with the CPU build of torch {released_with}; this is torch "
            f"{torch.__version__}). Unless train.json's defaults, the embedded data or the PyTorch build changed on "
            "purpose (then release the new weights and record their hash: python -m scripts.tools.large_files hashes "
            "--write True), training is no longer reproducible."
        )
    print(f"check_training: OK, {WEIGHTS} trained again byte for byte ({hash_type} {found}) in {seconds:.0f} s.")
    return found


if __name__ == "__main__":
    from fire import Fire

    Fire({"download": download, "hashes": hashes, "check_training": check_training})
