# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
What inference and evaluation write, made safe:

- :func:`unique_case_names`: one case name per input file, unique even when two files share a stem
  (``scan.nii`` and ``scan.nii.gz``, ``a/scan.nii.gz`` and ``b/scan.nii.gz``); it names the ``case`` column of
  ``predictions.csv``/``errors.csv`` and, through :class:`CaseNameFormatter`, the attention map files;
- :func:`atomic_write_text`: a result file is replaced whole or not at all (a failed re-run keeps the previous
  good ``predictions.csv``);
- :func:`separate_output_dir`: outputs are never written into the folder of volumes being classified.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..run.errors import stop

__all__ = [
    "case_name",
    "unique_case_names",
    "CaseNameFormatter",
    "atomic_file",
    "atomic_write_text",
    "separate_output_dir",
]

_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".npy", ".npz", ".dcm", ".png")
_NIFTI = (".nii", ".nii.gz")


def case_name(path: str | os.PathLike) -> str:
    """Case identifier from an image path: the file name without its image suffix."""
    name = Path(str(path)).name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _key(path: str | os.PathLike) -> str:
    return os.path.normpath(os.fspath(path))


def unique_case_names(images: Iterable[str | os.PathLike]) -> dict[str, str]:
    """
    Map each image path (normalised with ``os.path.normpath``) to a case name unique among ``images``: its
    :func:`case_name` when no other file has the same one; otherwise, among the files of that name, prefixed with as
    many parent folders as tell their folders apart (``a_scan``, ``b_scan``), and, for files of one folder, with
    their suffix (``scan_nii``, ``scan_nii_gz``); as a last resort a counter (``scan_2``). The same path listed twice
    is one case and keeps one name.
    """
    paths = list(dict.fromkeys(_key(p) for p in images))
    names = {p: case_name(p) for p in paths}
    groups: dict[str, list[str]] = {}
    for p in paths:
        groups.setdefault(names[p], []).append(p)
    for base, group in groups.items():
        if len(group) < 2:
            continue
        folders = list(dict.fromkeys(Path(p).parent.parts for p in group))
        prefix = {folder: () for folder in folders}
        for depth in range(1, max(len(folder) for folder in folders) + 1) if len(folders) > 1 else ():
            prefix = {folder: folder[-depth:] for folder in folders}
            if len(set(prefix.values())) == len(folders):
                break
        for p in group:
            folder = Path(p).parent.parts
            alone = sum(Path(q).parent.parts == folder for q in group) == 1
            stem = base if alone else Path(p).name.replace(".", "_")  # one folder: keep the suffix
            names[p] = "_".join(prefix[folder] + (stem,)).lstrip(os.sep + "_") or stem
    taken: Counter = Counter()
    used = set()
    for p in paths:  # a prefixed name can still meet another file's name: number the later ones
        name = names[p]
        while name in used:
            taken[names[p]] += 1
            name = f"{names[p]}_{taken[names[p]] + 1}"
        used.add(name)
        names[p] = name
    return names


class CaseNameFormatter:
    """
    ``output_name_formatter`` of MONAI's ``SaveImage(d)``: the saved file is named after the case's unique name
    from :func:`unique_case_names` (``<case><postfix>.nii.gz``) rather than after the file stem, so two inputs never
    write one attention map.
    """

    def __init__(self, case_names: Mapping[str, str]) -> None:
        self.case_names = dict(case_names)

    def __call__(self, metadict: Mapping | None, saver: object = None) -> dict:
        source = (metadict or {}).get("filename_or_obj", "")
        name = self.case_names.get(_key(source)) if source else None
        if name is None:
            name = case_name(source) if source else f"case_{getattr(saver, '_data_index', 0)}"
        # SaveImage strips the extension of the subject: give one, so that a dot in the name is kept
        return {"subject": f"{name}.nii.gz", "idx": None}


TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """
    Open ``path`` for writing atomically: the block writes to a hidden temporary file of the same folder
    (``.<name>.<pid>.<id>.tmp``), which is flushed to disk and renamed over ``path`` (``os.replace``) when the block
    ends without error, and removed otherwise. A process killed at any moment leaves either the previous ``path`` or
    the new one, plus at worst a stray temporary. The file gets the usual permissions (0666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    text = {"newline": "", "encoding": "utf-8"} if "b" not in mode else {}
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` with :func:`atomic_file`: a run that fails or is killed leaves the previous file."""
    with atomic_file(path, "w") as f:
        f.write(text)


def separate_output_dir(source: str | os.PathLike, output_dir: str | os.PathLike, datalist: str = "datalist.json"):
    """
    ``source`` unchanged, after checking that ``output_dir`` is not the folder of volumes that inference reads
    (a folder without ``datalist``) nor inside it: the next run would classify its own attention maps.
    """
    root = Path(source)
    if not root.is_dir() or (root / datalist).is_file():
        return str(source)
    out, inside = Path(output_dir).resolve(), root.resolve()
    if out == inside or inside in out.parents:
        elsewhere = inside.parent / f"{inside.name}_inference"
        stop(
            f"--output_dir '{output_dir}'",
            f"is inside the input folder --dataset_dir '{source}', whose NIfTI volumes are all classified: the next "
            f"run would classify this run's attention maps as cases",
            f"write the results outside the input folder, e.g. --output_dir '{elsewhere}'",
        )
    return str(source)
