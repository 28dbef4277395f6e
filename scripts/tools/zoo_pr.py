# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
Write the folder of a MONAI model-zoo pull request for this bundle::

    python -m scripts.tools.zoo_pr --output_dir DIR --weights_url URL

``DIR`` then mirrors the zoo's layout; copy it over a clone of Project-MONAI/model-zoo and commit:

- ``DIR/models/cal_3d_classification/``: the bundle as the configs run it: ``configs/``, ``docs/``, ``scripts/``
  (without ``scripts/tools``, the tools that drive the bundle from this repository), ``LICENSE`` and a
  ``large_files.yml`` whose entry for ``models/model.pt`` names ``URL`` and the md5 of the local
  ``models/model.pt``. The weights themselves stay out of the pull request, as the zoo asks.
- ``DIR/ci/unit_tests/test_cal_3d_classification.py`` and ``..._dist.py``: the zoo-format unit tests, copied from
  ``scripts/tools/zoo_tests/``.

Every file is at most 1 MB (the zoo's pre-commit ``check-added-large-files --maxkb=1024``); a larger one stops the
build with an error that names it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from scripts.tools.large_files import LARGE_FILES, PLACEHOLDER, file_hash

__all__ = ["ROOT", "MAX_BYTES", "BUNDLE_ITEMS", "bundle_name", "large_files_text", "build", "main"]

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 1024 * 1024  # the zoo's pre-commit limit: check-added-large-files --maxkb=1024
# copied as they are (less IGNORED and EXCLUDED_DIRS); large_files.yml is written
BUNDLE_ITEMS = ("configs", "docs", "scripts", "LICENSE")
IGNORED = ("__pycache__", "*.pyc", ".DS_Store")
EXCLUDED_DIRS = (Path("scripts") / "tools",)  # tools that drive the bundle from this repository, not run by configs
WEIGHTS = "models/model.pt"
ZOO_TESTS = Path("scripts") / "tools" / "zoo_tests"


class ZooPRError(ValueError):
    """The pull-request folder cannot be written as asked (a large file, a bad url, a folder in the way)."""


def bundle_name(root: str | os.PathLike = ROOT) -> str:
    """
    The bundle's folder name in the zoo (also the name of its tests): the display ``name`` of configs/metadata.json
    as an identifier, "CAL 3D classification" -> ``cal_3d_classification``.
    """
    name = str(json.loads((Path(root) / "configs" / "metadata.json").read_text())["name"])
    return re.sub(r"\W+", "_", name).strip("_").lower()


def large_files_text(weights_url: str, hash_val: str) -> str:
    """large_files.yml of the pull request: the released ``models/model.pt`` at ``weights_url`` with its md5."""
    return (
        "# Files of this bundle kept outside git (MONAI model-zoo format: path, url, hash_val, hash_type); the zoo's\n"
        "# CI downloads them into place before it verifies the bundle.\n"
        "large_files:\n"
        f'  - path: "{WEIGHTS}"\n'
        f'    url: "{weights_url}"\n'
        f'    hash_val: "{hash_val}"\n'
        '    hash_type: "md5"\n'
    )


def _check_url(url: str) -> str:
    url = str(url).strip()
    if not url or PLACEHOLDER in url or not url.startswith(("https://", "http://", "file://")):
        raise ZooPRError(
            f"--weights_url must be the released weights' address (https://...), got '{url}'"
            + (f" (it still names the placeholder '{PLACEHOLDER}')" if PLACEHOLDER in url else "")
            + "; e.g. https://github.com/<owner>/cal_3d_classification/releases/download/v<version>/model.pt"
        )
    return url


def _too_large(folder: Path) -> list[str]:
    return sorted(
        f"{p.relative_to(folder)} ({p.stat().st_size / 2**20:.2f} MB)"
        for p in folder.rglob("*")
        if p.is_file() and p.stat().st_size > MAX_BYTES
    )


def build(
    output_dir: str | os.PathLike, weights_url: str, root: str | os.PathLike = ROOT, overwrite: bool = False
) -> Path:
    """
    Write the pull-request folder into ``output_dir`` (see the module's description) and return the bundle's folder
    ``output_dir/models/<name>``.

    Args:
        output_dir: folder of the pull request, laid out as the zoo's root (``models/``, ``ci/unit_tests/``).
        weights_url: where the released ``models/model.pt`` is downloaded from (large_files.yml's ``url``).
        root: the bundle repository to take the files from.
        overwrite: replace an existing ``output_dir/models/<name>`` (otherwise an error).

    Raises:
        ZooPRError: a file of the output is over 1 MB (nothing is left behind), the url is not an address, the local
            weights are missing, or the bundle's folder exists and ``overwrite`` is false.
    """
    root, out = Path(root).resolve(), Path(output_dir).resolve()
    weights_url = _check_url(weights_url)
    weights = root / WEIGHTS
    if not weights.is_file():
        raise ZooPRError(f"{weights} is missing: large_files.yml records its md5, train or download it first.")
    name = bundle_name(root)
    bundle = out / "models" / name
    tests = out / "ci" / "unit_tests"
    test_files = [(root / ZOO_TESTS / f"test_{name}{s}.py", tests / f"test_{name}{s}.py") for s in ("", "_dist")]
    if bundle.exists() and not overwrite:
        raise ZooPRError(f"{bundle} exists; remove it or pass --overwrite True.")

    # assemble in a folder beside the target, check sizes, then move into place: a refused build leaves nothing
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        excluded = {root / d for d in EXCLUDED_DIRS}

        def ignore(folder: str, names: list[str]) -> set[str]:
            skip = set(shutil.ignore_patterns(*IGNORED)(folder, names))
            return skip | {n for n in names if Path(folder, n) in excluded}

        for item in BUNDLE_ITEMS:
            src = root / item
            if src.is_dir():
                shutil.copytree(src, staging / "bundle" / item, ignore=ignore)
            else:
                (staging / "bundle").mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, staging / "bundle" / item)
        (staging / "bundle" / LARGE_FILES).write_text(large_files_text(weights_url, file_hash(weights, "md5")))
        (staging / "tests").mkdir()
        for src, dst in test_files:
            shutil.copy2(src, staging / "tests" / dst.name)
        large = _too_large(staging)
        if large:
            raise ZooPRError(
                f"the model zoo refuses files over 1 MB (pre-commit check-added-large-files --maxkb=1024): "
                f"{', '.join(large)}. Keep such files out of the bundle or list them in {LARGE_FILES}."
            )
        if bundle.exists():
            shutil.rmtree(bundle)
        bundle.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging / "bundle"), str(bundle))
        tests.mkdir(parents=True, exist_ok=True)
        for _, dst in test_files:
            shutil.move(str(staging / "tests" / dst.name), str(dst))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bundle


def main(output_dir: str, weights_url: str, overwrite: bool = False) -> str:
    """Command line: write the pull-request folder and print what to do with it."""
    bundle = build(output_dir, weights_url, overwrite=overwrite)
    files = sum(1 for p in bundle.rglob("*") if p.is_file())
    print(
        f"wrote {bundle} ({files} files) and {Path(output_dir) / 'ci' / 'unit_tests'}; copy '{output_dir}' over a "
        f"clone of Project-MONAI/model-zoo (branch dev) and open the pull request."
    )
    return str(bundle)


if __name__ == "__main__":
    from fire import Fire

    Fire(main)
