"""The DB's Raft transport: pysyncobj's TCP transport with durable acks, pings and a stricter "connected".

:class:`DurableTransport` (1) holds a follower's acks (``next_node_idx``) until the journal is fsynced
(group commit, see :mod:`agenda.db.durability`), (2) pings every link every ``connection_timeout / 4``,
(3) counts an outgoing link as connected only once the peer has spoken on it, (4) refuses the
membership admin commands on the Raft port, and (5) pairs AppendEntries with their answers for
ReadIndex (:mod:`agenda.db.readindex`): every AppendEntries sent carries a growing stamp
(``agenda_seq``), a follower copies the stamp of the AppendEntries it is handling onto the answer
pysyncobj sends for it, and the leader keeps each member's highest echoed stamp (``acked``). A member
of an older version ignores the stamp and echoes nothing, so reads then fall back to the log. It also
(8) hands pysyncobj each AppendEntries trimmed to Raft's receiver rule
(:func:`~agenda.db.append_rule.trim_known_entries`), so a follower never deletes entries it has unless
they conflict. Why (2) to (4) matter is in :mod:`agenda.db.node` ("Timers" and "Membership"). The
pysyncobj callbacks it refines reach it through the public hooks of
:class:`~agenda.db.pysyncobj_adapter.TransportBase`.

With Raft over TLS (the node's ``raft_tls``, :mod:`agenda.db.rafttls`), all of the above runs inside
mutually authenticated TLS links, and this transport (6) lets a dialler name itself only with a Raft
address whose host its certificate names, and (7) counts every refused link (``tls_refused_links``,
``raft_tls_refused`` in ``/metrics``) and logs ``raft TLS link refused`` with the peer and OpenSSL's
reason - rate-limited per peer host, since a foreign member redials every half second. A member with a
certificate from another CA thus shows up in the members' logs and counters, and nowhere else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from agenda.db.append_rule import trim_known_entries
from agenda.db.durability import DurableFileJournal
from agenda.db.pysyncobj_adapter import FAIL_REASON, TransportBase
from agenda.db.rafttls import RefusalLog, certificate_names, claimed_host

__all__ = ["SEQ_KEY", "DurableTransport"]

log = logging.getLogger(__name__)

_PING: Final = {"type": "agenda_ping"}
SEQ_KEY: Final = "agenda_seq"  # the AppendEntries stamp, and its echo in the answer
# pysyncobj's admin commands on the Raft port that would change membership behind the directory's back.
_REFUSED_UTILITY_COMMANDS: Final = frozenset({"add", "remove"})


class DurableTransport(TransportBase):
    """TCP (or TLS) transport that (1) holds follower acks until the journal is fsynced, (2) pings idle
    links, (3) counts an outgoing link as connected only once the peer has spoken on it, (4) refuses the
    membership admin commands, (5) stamps AppendEntries for ReadIndex, and over TLS (6) checks a
    dialler's claimed address against its certificate and (7) counts and logs refused links (see the
    module docstring)."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:  # noqa: N803 - pysyncobj's names
        self._held: list[tuple[Any, Any]] = []
        self._last_ping = 0.0
        # Outgoing links that are open but on which the peer has not sent anything yet: a member that does
        # not know us accepts the TCP connection and hangs up once we name ourselves.
        self._unconfirmed: set[Any] = set()
        self.refused_links = 0  # outgoing links closed before the peer spoke: it does not know this member
        self.next_seq = 0  # the stamp of the next AppendEntries sent
        self.acked: dict[Any, int] = {}  # member -> the highest stamp it echoed
        self.echoed_at: dict[Any, float] = {}  # member -> when it last echoed one (time.monotonic)
        self._answering: tuple[Any, int] | None = None  # (leader, stamp) of the AppendEntries in hand
        self._covered: int | None = None  # the last index it vouches for, when trimmed (trim_known_entries)
        self.tls_refused_links = 0  # TLS links closed before carrying a Raft message
        self._refusal_log = RefusalLog()
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
        # Its echoes vouch for nothing any more (and a readonly link's node is never seen again).
        self.acked.pop(node, None)
        self.echoed_at.pop(node, None)
        if node in self._unconfirmed:
            self._unconfirmed.discard(node)
            self.refused_links += 1

    def identity_allowed(self, address: str, certificate: dict[str, Any] | None) -> bool:
        # A host's certificate speaks for the members on that host only; "readonly" is no address.
        host = claimed_host(address)
        return host is not None and certificate_names(certificate, host)

    def tls_refused(self, peer: str, reason: str) -> None:
        self.tls_refused_links += 1
        held_back = self._refusal_log.report(claimed_host(peer) or peer, time.monotonic())
        if held_back is not None:
            log.warning(
                "raft TLS link refused", extra={"peer": peer, "reason": reason, "held_back": held_back}
            )

    def _journal(self) -> DurableFileJournal | None:
        journal = self.raft_log()
        return journal if isinstance(journal, DurableFileJournal) else None

    def send(self, node: Any, message: Any) -> bool:
        if type(message) is dict:
            kind = message.get("type")
            if kind == "append_entries":
                message[SEQ_KEY] = self.next_seq  # pysyncobj builds a new dict for every send
                self.next_seq += 1
            elif kind == "next_node_idx":
                answering = self._answering
                if answering is not None and answering[0] == node:
                    message[SEQ_KEY] = answering[1]
                covered = self._covered
                if covered is not None and message.get("success") and message["next_node_idx"] > covered + 1:
                    message["next_node_idx"] = covered + 1
                journal = self._journal()
                if journal is not None and journal.fsync:
                    self._held.append((node, message))
                    return True
        return bool(super().send(node, message))

    def message_received(self, node: Any, message: Any) -> None:
        if type(message) is dict:
            kind = message.get("type")
            seq = message.get(SEQ_KEY)
            if kind == "append_entries":
                message, self._covered = trim_known_entries(message, self.raft_log())
                # pysyncobj answers (at most once) while it handles the message: echo the stamp (if any),
                # and claim no more than the message covered.
                self._answering = (node, seq) if type(seq) is int else None
                try:
                    self.deliver(node, message)
                finally:
                    self._answering = None
                    self._covered = None
                return
            if type(seq) is int:
                if kind == "next_node_idx":
                    self.echoed_at[node] = time.monotonic()
                    if seq > self.acked.get(node, -1):
                        self.acked[node] = seq
            elif kind == "next_node_idx" and node in self.acked:
                # An answer without a stamp: that member does not echo (any more), whatever it did.
                del self.acked[node]
                self.echoed_at.pop(node, None)
        self.deliver(node, message)

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
