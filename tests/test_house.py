# Copyright (c) 2026 cal_3d_classification contributors
# Licensed under the Apache License, Version 2.0; see the LICENSE file.

"""
The house: ``scripts/`` is what the configs run, ``scripts/tools/`` what drives the bundle. The bundle never imports a
tool, and every bundle module is reached from a config (directly or through the imports of one that is).
"""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

SCRIPTS = ROOT / "scripts"


def _bundle_modules() -> set[str]:
    return {p.stem for p in SCRIPTS.glob("*.py") if p.stem != "__init__"}


def _imports(module: str) -> set[str]:
    """Names of the ``scripts`` modules (and ``tools``) that ``scripts/<module>.py`` imports."""
    tree = ast.parse((SCRIPTS / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            name = node.module
            if node.level == 1:
                found.add(name.split(".")[0])
            elif name.startswith("scripts."):
                found.add(name.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.level == 1:  # from . import x
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("scripts."))
    return found


def test_the_bundle_never_imports_its_tools():
    offenders = {m: sorted(_imports(m) & {"tools"}) for m in _bundle_modules()}
    assert {m: i for m, i in offenders.items() if i} == {}
    for config in (ROOT / "configs").glob("*.json"):
        assert "scripts.tools" not in config.read_text(), config.name


def test_every_bundle_module_is_reached_from_a_config():
    text = "".join(p.read_text() for p in (ROOT / "configs").glob("*.json"))
    reached = set(re.findall(r"scripts\.(\w+)", text)) & _bundle_modules()
    frontier = set(reached)
    while frontier:
        frontier = {i for m in frontier for i in _imports(m) if i in _bundle_modules()} - reached
        reached |= frontier
    assert sorted(_bundle_modules() - reached) == []
