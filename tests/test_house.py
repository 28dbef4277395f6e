# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The house: ``scripts/`` is what the configs run (the network's modules at the top, ``data/``, ``run/`` and
``reports/`` beside them), ``scripts/tools/`` what drives the bundle. The bundle never imports a tool, every bundle
module is reached from a config (directly or through the imports of one that is), and no import chain between the
bundle's modules is longer than five modules.
"""

from __future__ import annotations

import ast
import re
from functools import cache

from tests.conftest import ROOT

SCRIPTS = ROOT / "scripts"
MAX_IMPORT_DEPTH = 5


def _module_name(path) -> str:
    """``scripts/data/datalist.py`` -> ``data.datalist``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(SCRIPTS).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _bundle_modules() -> set[str]:
    """The modules the configs can run: every ``scripts`` module outside ``tools`` (packages' ``__init__`` aside)."""
    return {
        _module_name(p)
        for p in SCRIPTS.rglob("*.py")
        if p.stem != "__init__" and p.relative_to(SCRIPTS).parts[0] != "tools"
    }


@cache
def _imports(module: str) -> frozenset[str]:
    """The ``scripts`` modules (names as :func:`_module_name` gives them) that the module imports."""
    path = SCRIPTS.joinpath(*module.split(".")).with_suffix(".py")
    package = module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                name = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module and node.module.startswith("scripts."):
                name = node.module[len("scripts.") :]
            else:
                continue
            for target in [name] + [f"{name}.{a.name}" if name else a.name for a in node.names]:
                if target in _bundle_modules() or target.split(".")[0] == "tools":
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name[len("scripts.") :] for a in node.names if a.name.startswith("scripts."))
    return frozenset(found)


def _depth(module: str, seen: tuple[str, ...] = ()) -> int:
    """The number of modules on the longest import chain that starts at ``module``."""
    assert module not in seen, f"import cycle: {' -> '.join(seen + (module,))}"
    inner = [_depth(m, seen + (module,)) for m in _imports(module) if m in _bundle_modules()]
    return 1 + max(inner, default=0)


def test_the_bundle_never_imports_its_tools():
    offenders = {m: sorted(i for i in _imports(m) if i.split(".")[0] == "tools") for m in _bundle_modules()}
    assert {m: i for m, i in offenders.items() if i} == {}
    for config in (ROOT / "configs").glob("*.json"):
        assert "scripts.tools" not in config.read_text(), config.name


def test_every_bundle_module_is_reached_from_a_config():
    text = "".join(p.read_text() for p in (ROOT / "configs").glob("*.json"))
    named = {".".join(parts[:n]) for parts in (m.split(".") for m in re.findall(r"scripts\.([\w.]+)", text))
             for n in range(1, len(parts) + 1)}  # fmt: skip
    reached = named & _bundle_modules()
    frontier = set(reached)
    while frontier:
        frontier = {i for m in frontier for i in _imports(m) if i in _bundle_modules()} - reached
        reached |= frontier
    assert sorted(_bundle_modules() - reached) == []


def test_import_chains_are_short():
    """A module is read with at most four floors of the bundle's own modules beneath it."""
    depths = {m: _depth(m) for m in _bundle_modules()}
    deepest = max(depths.values())
    assert deepest <= MAX_IMPORT_DEPTH, sorted(m for m, d in depths.items() if d == deepest)
