"""pysyncobj's internals are confined to ``agenda.db.pysyncobj_adapter``, so an upgrade touches one file.

The DB reaches into pysyncobj's private names (name-mangled ``_SyncObj__...`` methods, underscore
attributes, internal modules) because pysyncobj has no public hooks for what it needs. These tests read
every other module of the package and fail if one imports pysyncobj or names one of its private
identifiers, whether as an attribute, a method override or a string given to ``getattr``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pysyncobj

import agenda.db

DB_PACKAGE = Path(agenda.db.__file__).parent
ADAPTER = DB_PACKAGE / "pysyncobj_adapter.py"
PYSYNCOBJ_PACKAGE = Path(pysyncobj.__file__).parent


def _private(name: str) -> bool:
    """``_x`` and ``__x``, but not dunders or the throwaway name ``_``."""
    return len(name) > 1 and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _identifiers(tree: ast.AST) -> Iterator[str]:
    """Names a module defines or uses: attributes, definitions, plain names, identifier-like strings."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            yield node.value


def _reaches(tree: ast.AST) -> Iterator[str]:
    """The names through which a module could reach into another library's objects: attributes
    (``raft._isLeader``), methods (overriding ``_onTick``) and strings (``getattr(x, "_SyncObj__...")``).
    A module's own top-level helpers and local names are its business, whatever pysyncobj calls its own."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, ast.ClassDef):
            yield from (
                item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            yield node.value


def _pysyncobj_private_names() -> set[str]:
    """Every private identifier pysyncobj defines, with ``__x`` in class ``C`` as Python mangles it."""
    names: set[str] = set()
    for path in PYSYNCOBJ_PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names.update(name for name in _identifiers(tree) if _private(name))
        for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
            names.update(
                f"_{cls.name.lstrip('_')}{name}"
                for name in _identifiers(cls)
                if name.startswith("__") and not name.endswith("__")
            )
    return names


def _db_modules() -> list[Path]:
    modules = sorted(path for path in DB_PACKAGE.rglob("*.py") if path != ADAPTER)
    assert ADAPTER.exists()
    assert modules
    return modules


def test_only_the_adapter_imports_pysyncobj():
    offenders = []
    for path in _db_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} {m}" for m in modules if m.split(".")[0] == "pysyncobj"]
    assert offenders == []


def test_no_module_but_the_adapter_names_a_private_pysyncobj_identifier():
    private = _pysyncobj_private_names()
    assert {"_SyncObj__raftLog", "_isLeader", "_onTick", "_FileJournal__journalFile"} <= private  # sanity
    offenders = {
        f"{path.name}: {name}"
        for path in _db_modules()
        for name in _reaches(ast.parse(path.read_text(encoding="utf-8")))
        if name in private
    }
    assert sorted(offenders) == []


def test_the_adapter_is_where_the_internals_are():
    # If this fails the adapter no longer needs pysyncobj's internals (or the name scan broke): either way
    # the two tests above would pass vacuously.
    used = set(_reaches(ast.parse(ADAPTER.read_text(encoding="utf-8"))))
    assert {
        "_SyncObj__doApplyCommand",
        "_onTick",
        "_destroy",
    } <= used & _pysyncobj_private_names()
