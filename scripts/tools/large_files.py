# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The bundle's files that are not kept in git, listed in ``large_files.yml`` as the MONAI model zoo does (``path``,
``url``, ``hash_val``, ``hash_type`` per file): download them into place, or compute the hashes to record after a
release::

    python -m scripts.tools.large_files download
    python -m scripts.tools.large_files hashes --write true
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from monai.apps.utils import download_url
from monai.bundle import ConfigParser

__all__ = ["LARGE_FILES", "PLACEHOLDER", "HASH_TYPES", "read_large_files", "file_hash", "download", "hashes"]

LARGE_FILES = "large_files.yml"
PLACEHOLDER = "OWNER"  # the repository owner in a release url that is not filled in yet
HASH_TYPES = ("md5", "sha1", "sha256", "sha512")
KEYS = ("path", "url", "hash_val", "hash_type")


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


if __name__ == "__main__":
    from fire import Fire

    Fire({"download": download, "hashes": hashes})
