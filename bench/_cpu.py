"""CPU time of groups of processes, read from /proc: where a request's cost goes.

A throughput number alone does not say why a path is slower than another; CPU milliseconds per request
of each component (gateway, User Service, DB members, ...) do, on a machine where every process shares
the same cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Final

__all__ = ["CpuMeter", "cpu_seconds", "per_request_ms"]

_TICKS: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, read: Callable[[str], str] | None = None) -> float:
    """User + system CPU seconds used so far by `pid` (0.0 once it is gone)."""
    try:
        text = (read or _read)(f"/proc/{pid}/stat")
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15 of stat


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


class CpuMeter:
    """CPU seconds each named group of processes uses between :meth:`start` and :meth:`stop`."""

    def __init__(self, groups: Mapping[str, Iterable[int]], read: Callable[[str], str] | None = None) -> None:
        self.groups = {name: tuple(pids) for name, pids in groups.items()}
        self._read = read
        self._before: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid, self._read) for pid in pids) for name, pids in self.groups.items()}

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        return {name: max(0.0, after[name] - self._before.get(name, 0.0)) for name in after}


def per_request_ms(used: Mapping[str, float], requests: int) -> dict[str, float | None]:
    """CPU milliseconds per request of each group, and their ``total``; None without requests."""
    if requests <= 0:
        return {name: None for name in (*used, "total")}
    out: dict[str, float | None] = {name: 1000.0 * seconds / requests for name, seconds in used.items()}
    out["total"] = 1000.0 * sum(used.values()) / requests
    return out
