"""The DB's Raft transport: pysyncobj's TCP transport with durable acks, pings and a stricter "connected".

:class:`DurableTransport` (1) holds a follower's acks (``next_node_idx``) until the journal is fsynced
(group commit, see :mod:`agenda.db.durability`), (2) pings every link every ``connection_timeout / 4``,
(3) counts an outgoing link as connected only once the peer has spoken on it, and (4) refuses the
membership admin commands on the Raft port. Why (2) to (4) matter is in :mod:`agenda.db.node` ("Timers"
and "Membership"). The pysyncobj callbacks it refines reach it through the public hooks of
:class:`~agenda.db.pysyncobj_adapter.TransportBase`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from agenda.db.durability import DurableFileJournal
from agenda.db.pysyncobj_adapter import FAIL_REASON, TransportBase

__all__ = ["DurableTransport"]

_PING: Final = {"type": "agenda_ping"}
# pysyncobj's admin commands on the Raft port that would change membership behind the directory's back.
_REFUSED_UTILITY_COMMANDS: Final = frozenset({"add", "remove"})


class DurableTransport(TransportBase):
    """TCP transport that (1) holds follower acks until the journal is fsynced, (2) pings idle links,
    (3) counts an outgoing link as connected only once the peer has spoken on it, and (4) refuses the
    membership admin commands (see the module docstring)."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:  # noqa: N803 - pysyncobj's names
        self._held: list[tuple[Any, Any]] = []
        self._last_ping = 0.0
        # Outgoing links that are open but on which the peer has not sent anything yet: a member that does
        # not know us accepts the TCP connection and hangs up once we name ourselves.
        self._unconfirmed: set[Any] = set()
        self.refused_links = 0  # outgoing links closed before the peer spoke: it does not know this member
        super().__init__(syncObj, selfNode, otherNodes)

    def setOnUtilityMessageCallback(self, message: str, callback: Any) -> None:  # noqa: N802 - pysyncobj's name
        if message in _REFUSED_UTILITY_COMMANDS:
            callback = _refuse_utility_command
        super().setOnUtilityMessageCallback(message, callback)

    # pysyncobj reports an outgoing link as connected as soon as it opens; hold that report until the
    # peer speaks, so an isolated member never believes it can win an election.
    def hold_link_report(self, node: Any) -> bool:
        self._unconfirmed.add(node)
        return True

    def peer_spoke(self, node: Any) -> bool:
        if self._unconfirmed and node in self._unconfirmed:
            self._unconfirmed.discard(node)
            return True
        return False

    def link_closed(self, node: Any) -> None:
        if node in self._unconfirmed:
            self._unconfirmed.discard(node)
            self.refused_links += 1

    def _journal(self) -> DurableFileJournal | None:
        journal = self.raft_log()
        return journal if isinstance(journal, DurableFileJournal) else None

    def send(self, node: Any, message: Any) -> bool:
        if isinstance(message, dict) and message.get("type") == "next_node_idx":
            journal = self._journal()
            if journal is not None and journal.fsync:
                self._held.append((node, message))
                return True
        return bool(super().send(node, message))

    def after_tick(self) -> None:
        if self._held:
            journal = self._journal()
            if journal is not None:
                journal.sync()  # group commit: one fsync for everything appended this tick
            held, self._held = self._held, []
            for node, message in held:
                super().send(node, message)
        now = time.monotonic()
        if now - self._last_ping >= self.connection_timeout() / 4:
            self._last_ping = now
            for node in self.links():
                super().send(node, _PING)


def _refuse_utility_command(_args: Any, callback: Callable[[Any, Any], None]) -> None:
    callback(None, FAIL_REASON.REQUEST_DENIED)
