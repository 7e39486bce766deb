"""What a reloading agenda-vrrpd tells the process it re-executes into (the same PID, new code).

SIGHUP makes the daemon exec itself without releasing anything: its VIPs stay on the interfaces and
no priority-0 advert is sent, so the backups never notice. The new process must then know which
virtual routers it already is the master of, or it would remove those VIPs as "stale" and start as
a backup (two VIP moves, each resetting the clients' TCP connections). That knowledge crosses the
exec in one environment variable, JSON, read and removed before anything else runs (notify and
track scripts must never inherit it).

The variable is input like any other: a value that is not exactly what `encode` writes, or written
by another process (its pid is not ours), is refused and the daemon starts as if there were none.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from typing import Any, Final

ENV: Final = "AGENDA_VRRPD_HANDOFF"
VERSION: Final = 1
MAX_LENGTH: Final = 256 * 1024  # 255 instances with a few VIPs each fit many times over
STATES: Final = frozenset({"INIT", "BACKUP", "MASTER", "FAULT", "STOPPED"})


class HandOffError(ValueError):
    """The variable is not a hand-off this daemon wrote; the message says what is wrong."""


@dataclass(frozen=True)
class InstanceHandOff:
    name: str
    interface: str
    vrid: int
    state: str
    vips: tuple[IPv4Interface, ...]  # the addresses the old process held on `interface`


@dataclass(frozen=True)
class HandOff:
    pid: int  # the process that wrote it, which must be the one reading it (exec keeps the pid)
    reloads: int  # how many reloads this PID has been through, this one included
    instances: tuple[InstanceHandOff, ...] = ()
    scripts: dict[str, bool] = field(default_factory=dict)  # track scripts' last verdicts

    def master(self, interface: str, vrid: int) -> InstanceHandOff | None:
        """The hand-off's entry for the virtual router on this wire (interface, VRID), if MASTER."""
        for entry in self.instances:
            if entry.interface == interface and entry.vrid == vrid and entry.state == "MASTER":
                return entry
        return None


def encode(handoff: HandOff) -> str:
    return json.dumps(
        {
            "version": VERSION,
            "pid": handoff.pid,
            "reloads": handoff.reloads,
            "instances": [
                {
                    "name": i.name,
                    "interface": i.interface,
                    "vrid": i.vrid,
                    "state": i.state,
                    "vips": [str(v) for v in i.vips],
                }
                for i in handoff.instances
            ],
            "scripts": dict(handoff.scripts),
        },
        separators=(",", ":"),
    )


def _field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    # bool is an int to isinstance: refuse it where a number is meant.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HandOffError(f"{where}{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def decode(value: str, *, pid: int | None = None) -> HandOff:
    """Parse and check a hand-off; raise HandOffError on anything unexpected."""
    if len(value) > MAX_LENGTH:
        raise HandOffError(f"{len(value)} characters, more than {MAX_LENGTH}")
    try:
        data = json.loads(value)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise HandOffError(f"not JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise HandOffError(f"expected an object, got {type(data).__name__}")
    if _field(data, "version", int, "") != VERSION:
        raise HandOffError(f"version {data['version']}, this daemon reads {VERSION}")
    written_by = _field(data, "pid", int, "")
    if written_by != (os.getpid() if pid is None else pid):
        raise HandOffError(f"written by pid {written_by}, not this process (a stale variable?)")
    reloads = _field(data, "reloads", int, "")
    if reloads < 1:
        raise HandOffError(f"reloads: {reloads} < 1")
    instances = []
    for index, raw in enumerate(_field(data, "instances", list, "")):
        where = f"instances.{index}."
        if not isinstance(raw, dict):
            raise HandOffError(f"{where[:-1]}: expected an object")
        vrid = _field(raw, "vrid", int, where)
        if not 1 <= vrid <= 255:
            raise HandOffError(f"{where}vrid: {vrid} not in 1..255")
        state = _field(raw, "state", str, where)
        if state not in STATES:
            raise HandOffError(f"{where}state: {state!r} is not a VRRP state")
        vips = []
        for vip in _field(raw, "vips", list, where):
            if not isinstance(vip, str):
                raise HandOffError(f"{where}vips: expected strings")
            try:
                vips.append(IPv4Interface(vip))
            except ValueError as exc:
                raise HandOffError(f"{where}vips: {exc}") from None
        instances.append(
            InstanceHandOff(
                name=_field(raw, "name", str, where),
                interface=_field(raw, "interface", str, where),
                vrid=vrid,
                state=state,
                vips=tuple(vips),
            )
        )
    scripts = _field(data, "scripts", dict, "")
    if not all(isinstance(k, str) and isinstance(v, bool) for k, v in scripts.items()):
        raise HandOffError("scripts: expected names mapped to true/false")
    return HandOff(pid=written_by, reloads=reloads, instances=tuple(instances), scripts=scripts)


def take(environ: MutableMapping[str, str]) -> str | None:
    """Remove the variable from `environ` and return its raw value: whatever it holds, no child
    process (notify, track scripts, check-config) may inherit it."""
    return environ.pop(ENV, None)
