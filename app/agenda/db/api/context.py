"""What every part of the DB's HTTP API shares: header names and limits, the member it serves, metrics.

The app factory (:func:`agenda.db.api.create_app`) stores one :class:`DBContext` in the app; the
blueprints, the forwarding and the PUT fast path reach the member through it.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import flask

from agenda.db.peers import Peer
from agenda.db.state import KVStateMachine

if TYPE_CHECKING:  # the API must not load Raft: the node module imports pysyncobj
    from agenda.db.api.forwarding import Forwarder
    from agenda.db.node import Status

__all__ = [
    "ANY_JSON",
    "DEFAULT_WATCH_TIMEOUT",
    "EMPTY",
    "FORWARDED_HEADER",
    "MAX_BODY_BYTES",
    "MAX_WATCH_TIMEOUT",
    "NODE_HEADER",
    "PROBE_TIMEOUT",
    "RETRY_AFTER",
    "REVISION_HEADER",
    "Backend",
    "DBContext",
    "Metrics",
    "db_context",
    "new_request_id",
    "revision_response",
]

FORWARDED_HEADER: Final = "X-Agenda-Forwarded"
NODE_HEADER: Final = "X-Agenda-Node"
REVISION_HEADER: Final = "X-Agenda-Revision"
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
MAX_WATCH_TIMEOUT: Final = 60.0
DEFAULT_WATCH_TIMEOUT: Final = 30.0
RETRY_AFTER: Final = 1
# Asking a would-be member who it is: a local API answers in milliseconds, and the leader must still have
# its whole proposal timeout left within the forwarding member's read timeout.
PROBE_TIMEOUT: Final = (0.5, 1.0)
ANY_JSON: Final = (str, int, float, bool, list, dict, type(None))
EMPTY: Final = KVStateMachine(history_limit=1)
"""Never mutated: validates range arguments (prefix, start, limit) exactly as a read would."""


class Backend(Protocol):
    """What the API needs from a member (``agenda.db.node.Node``; tests substitute fakes)."""

    self_peer: Peer
    proposal_timeout: float
    counters: dict[str, int]

    @property
    def status(self) -> Status: ...

    @property
    def members(self) -> tuple[Peer, ...]: ...

    @property
    def journal_syncs(self) -> int: ...

    def is_leader(self) -> bool: ...

    def leader(self) -> Peer | None: ...

    def healthy(self) -> bool: ...

    def read(self, fn: Callable[[KVStateMachine], Any]) -> Any: ...

    def wait_changed(self, predicate: Callable[[KVStateMachine], Any], timeout: float) -> Any: ...

    def propose(self, command: dict[str, Any], timeout: float | None = None) -> dict[str, Any]: ...

    def read_barrier(self, timeout: float | None = None) -> None: ...

    def new_lease_id(self) -> int: ...

    def add_member(self, peer: Peer, timeout: float | None = None) -> tuple[Peer, ...]: ...

    def remove_member(self, node_id: str, timeout: float | None = None) -> tuple[Peer, ...]: ...

    def transfer_leadership(self, timeout: float | None = None) -> Peer: ...


@dataclass(slots=True)
class Metrics:
    """Request counters of one app, by (method, URL rule, status); read by ``/metrics``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    forwarded: int = 0
    redirected: int = 0


@dataclass(frozen=True, slots=True)
class DBContext:
    """The member an app serves, the clients towards the other members, and the app's metrics."""

    node: Backend
    forwarder: Forwarder
    metrics: Metrics


def db_context() -> DBContext:
    """The :class:`DBContext` of the app handling the current request."""
    context: DBContext = flask.current_app.extensions["agenda_db"]
    return context


def revision_response(payload: Any, revision: int, status: int = 200) -> flask.Response:
    """``payload`` as JSON with the revision it reflects in ``X-Agenda-Revision``."""
    response = flask.jsonify(payload)
    response.status_code = status
    response.headers[REVISION_HEADER] = str(revision)
    return response


def new_request_id() -> str:
    """Same format as ``agenda.common.logs.new_request_id`` (32 random hex digits), far cheaper.

    A request id only correlates log lines; it needs uniqueness, not unpredictability, so the process's
    Mersenne Twister (seeded from the OS at start) does instead of a UUID from ``os.urandom`` per request.
    """
    return f"{random.getrandbits(128):032x}"
