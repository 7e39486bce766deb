"""The Redis primary as recorded in the DB Service, and the strict parsing of that record.

The supervisor writes ``{"name": "host:port", "host": str, "port": int, "epoch": int}`` under
``/system/redis/primary``. Anything else (a hand edit, a bug, a future format) must be reported with
the key and the reason, not surface later as a ``KeyError`` deep inside a connection attempt or kill
the thread that watches the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from agenda.messaging.errors import MalformedRecord

__all__ = ["PRIMARY_KEY", "PrimaryRecord", "parse_record"]

PRIMARY_KEY: Final = "/system/redis/primary"
_FIELDS: Final = frozenset({"name", "host", "port", "epoch"})


@dataclass(frozen=True)
class PrimaryRecord:
    """Where the primary is; ``epoch`` grows by one at every failover."""

    name: str
    host: str
    port: int
    epoch: int

    def __str__(self) -> str:
        return f"{self.name} (epoch {self.epoch})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_record(value: Any, *, key: str = PRIMARY_KEY) -> PrimaryRecord:
    """The record in ``value`` (the DB's JSON value, or a JSON string of it); MalformedRecord otherwise."""
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError:
            raise MalformedRecord(f"{key}: the value is not a JSON object: {str(value)[:80]!r}") from None
    if not isinstance(value, Mapping):
        raise MalformedRecord(f"{key}: expected a JSON object, got {type(value).__name__}")
    missing = sorted(_FIELDS - set(value))
    if missing:
        raise MalformedRecord(f"{key}: missing field(s) {', '.join(missing)}")
    name, host, port, epoch = value["name"], value["host"], value["port"], value["epoch"]
    if not isinstance(name, str) or not name:
        raise MalformedRecord(f"{key}: 'name' must be a non-empty string, got {name!r}")
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise MalformedRecord(f"{key}: 'host' must be a non-empty host name or address, got {host!r}")
    if not _is_int(port) or not 0 < port < 65536:
        raise MalformedRecord(f"{key}: 'port' must be an integer in 1..65535, got {port!r}")
    if not _is_int(epoch) or epoch < 0:
        raise MalformedRecord(f"{key}: 'epoch' must be a non-negative integer, got {epoch!r}")
    return PrimaryRecord(name=name, host=host, port=port, epoch=epoch)
