"""Figures a failover check measures go to the CI log, past pytest's capture (conftest.py)."""

from __future__ import annotations

from typing import Any

CAPTURE: list[Any] = []  # the running test's capsys, set by conftest.py's autouse fixture


def print_through(line: str) -> None:
    with CAPTURE[0].disabled():
        print(f"\n{line}", flush=True)
