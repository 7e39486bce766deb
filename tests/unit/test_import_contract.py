"""The import contract between the packages of `agenda`, checked on the source with `ast`.

* The User Service, the Group Service and the API gateway never import each other, directly or through
  any module that loads the other: what two of them share lives below both (`agenda.common`,
  `agenda.calendar`, `agenda.domain`), so one can change without the others loading its internals.
* Nothing outside `agenda.db` imports the DB Service's server side: only its client side
  (`agenda.db.client`, `agenda.db.txn`), which itself never loads the state machine, the node or the API.
* Importing the gateway in a fresh interpreter does not load the DB's state machine (it never talks
  to the DB).

Every import counts, at module level or inside a function, since a lazy import loads the module just
the same once that function runs; importing ``a.b.c`` also loads the packages ``a`` and ``a.b``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from functools import cache
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
# The components: each runs as its own process and never imports another's internals (the
# development stack, agenda.devstack, runs them all in one process: it is the one exception).
SERVICES = (
    "agenda.users",
    "agenda.groups",
    "agenda.gateway",
    "agenda.vrrp",
    "agenda.redis_supervisor",
)
DB_CLIENT_SIDE = frozenset({"agenda.db", "agenda.db.client", "agenda.db.txn"})
DB_SERVER_SIDE = ("agenda.db.state", "agenda.db.node", "agenda.db.api")

Graph = dict[str, frozenset[str]]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(APP).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((APP / "agenda").rglob("*.py"))}


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


def _imported(name: str, path: Path, known: dict[str, Path]) -> frozenset[str]:
    """The `agenda` modules that importing `name` (or running any of its functions) loads directly."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found.add(base)
            # `from agenda.db import client` imports the submodule, not a name of the package.
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    loaded: set[str] = set()
    for target in found:
        if target == "agenda" or target.startswith("agenda."):
            loaded |= _with_parents(target)
    return frozenset(m for m in loaded if m in known and m != name)


@cache
def graph() -> Graph:
    known = modules()
    return {name: _imported(name, path, known) for name, path in known.items()}


def _in(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def chain_to(edges: Graph, start: str, wanted: str) -> list[str] | None:
    """The shortest import chain from `start` to a module inside package `wanted`, or None."""
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        if _in(wanted, module) and module != start:
            path = [module]
            while (previous := parent[path[-1]]) is not None:
                path.append(previous)
            return path[::-1]
        for nxt in sorted(edges.get(module, ())):
            if nxt not in parent:
                parent[nxt] = module
                queue.append(nxt)
    return None


def service_violations(edges: Graph) -> list[str]:
    out = []
    for service in SERVICES:
        for other in SERVICES:
            if other == service:
                continue
            for module in sorted(m for m in edges if _in(service, m)):
                path = chain_to(edges, module, other)
                if path is not None:
                    out.append(" -> ".join(path))
    return out


def db_violations(edges: Graph) -> list[str]:
    return [
        f"{module} imports {target}"
        for module, targets in sorted(edges.items())
        if not _in("agenda.db", module)
        for target in sorted(targets)
        if _in("agenda.db", target) and target not in DB_CLIENT_SIDE
    ]


def test_the_parser_sees_the_imports_it_must_judge() -> None:
    edges = graph()
    assert len(edges) > 40
    assert {"agenda.users.app", "agenda.groups.app", "agenda.gateway.app"} <= set(edges)
    assert "agenda.calendar.store" in edges["agenda.groups.app"]
    assert "agenda.db.client" in edges["agenda.calendar.store"]
    assert "agenda.db" in edges["agenda.calendar.store"]  # the package comes with its module
    assert "agenda.groups.app" in edges["agenda.groups.cli"]  # an import inside build_app() counts


def test_the_checks_would_catch_a_violation() -> None:
    edges = dict(graph())
    edges["agenda.calendar.views"] = edges["agenda.calendar.views"] | {"agenda.users.passwords"}
    edges["agenda.domain.ical"] = edges["agenda.domain.ical"] | {"agenda.db.state"}
    assert any(v.startswith("agenda.groups.app -> ") for v in service_violations(edges))
    assert "agenda.domain.ical imports agenda.db.state" in db_violations(edges)


def test_users_groups_and_gateway_never_import_each_other() -> None:
    assert service_violations(graph()) == []


def test_only_the_db_client_side_is_imported_outside_the_db_package() -> None:
    assert db_violations(graph()) == []


@pytest.mark.parametrize("client_side", sorted(DB_CLIENT_SIDE - {"agenda.db"}))
def test_the_db_client_side_never_loads_the_server(client_side: str) -> None:
    edges = graph()
    assert client_side in edges, f"{client_side} is missing"
    for server in DB_SERVER_SIDE:
        assert chain_to(edges, client_side, server) is None


def test_importing_the_gateway_loads_neither_the_db_server_nor_another_service() -> None:
    code = (
        "import sys, agenda.gateway.app, agenda.gateway.cli; "
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith(('agenda', 'pysyncobj')))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(result.stdout.split())
    assert "agenda.gateway.app" in loaded
    assert not {m for m in loaded if m == "pysyncobj" or m.startswith("pysyncobj.")}
    assert not {m for m in loaded if _in("agenda.db", m)} - DB_CLIENT_SIDE
    assert not {m for m in loaded if _in("agenda.users", m) or _in("agenda.groups", m)}
