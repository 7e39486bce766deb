"""The one module that knows pysyncobj's internals: every private name and internal module it uses is here.

pysyncobj (0.3.17) has no public hooks for what the DB needs - its own journal file, a transport
that holds acks and refines "connected", membership entries that also edit our directory, one
AppendEntries per tick in batched mode - so the DB reaches into name-mangled methods
(``_SyncObj__...``), private attributes and internal modules. Keeping all of that here means a
pysyncobj upgrade is checked and fixed in this file alone; ``tests/unit/db/test_pysyncobj_adapter.py``
fails if another module of the package touches a pysyncobj private name or imports pysyncobj.

What it offers the rest of the package is ordinary Python: base classes whose overridable hooks and
accessors have public names (:class:`RaftBase`, :class:`TransportBase`, :class:`JournalBase`), a few
re-exported public pysyncobj names (``FileJournal``, pysyncobj's own journal, whose files ours converts)
and :func:`journal_factory`. Each base class checks at construction that the internals it relies on still
exist, so an incompatible version fails at start, loudly, instead of silently losing durability or
membership bookkeeping.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

import pysyncobj.pickle as _pickle
import pysyncobj.syncobj as _syncobj_module
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.journal import FileJournal, Journal, MetaStorer
from pysyncobj.node import TCPNode
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.transport import TCPTransport

__all__ = [
    "FAIL_REASON",
    "POLL_READ",
    "FileJournal",
    "Journal",
    "JournalBase",
    "MetaStorer",
    "RaftBase",
    "SyncObjConf",
    "TCPNode",
    "TransportBase",
    "encode_meta",
    "journal_factory",
    "replicated",
]

POLL_READ: Final = POLL_EVENT_TYPE.READ
"""The event mask for "readable" in pysyncobj's poller (``subscribe(fd, callback, POLL_READ)``)."""

# First byte of pysyncobj's membership log entries (the rest is a pickled [kind, address, TCPNode]).
_MEMBERSHIP_ENTRY: Final = bytes([_syncobj_module._COMMAND_TYPE.MEMBERSHIP])
_JOURNAL_FACTORY_LOCK: Final = threading.Lock()


def _require(obj: object, names: tuple[str, ...], what: str) -> None:
    """Fail at start-up, naming the missing internal, when a pysyncobj upgrade renamed one we use."""
    for name in names:
        if not hasattr(obj, name):
            raise RuntimeError(f"unsupported pysyncobj version: {what}.{name} is missing")


def encode_meta(meta: dict[str, Any]) -> bytes:
    """``meta`` encoded the way pysyncobj's :class:`MetaStorer` reads it back."""
    data: bytes = _pickle.dumps(meta)
    return data


@contextlib.contextmanager
def journal_factory(factory: Callable[[str | None], Any]) -> Iterator[None]:
    """While active, a new SyncObj builds its journal with ``factory(path)`` instead of pysyncobj's.

    pysyncobj takes no journal class: it calls the module-level ``createJournal``, which is swapped here
    (under a lock, as SyncObjs may be created from several threads in tests).
    """
    with _JOURNAL_FACTORY_LOCK:
        original = _syncobj_module.createJournal
        _syncobj_module.createJournal = factory
        try:
            yield
        finally:
            _syncobj_module.createJournal = original


class JournalBase(Journal):
    """pysyncobj's journal interface (``add``, ``clear``, ``deleteEntriesFrom``, ... as it names them) with
    its one private method behind a public name: pysyncobj calls ``_destroy`` when it is done."""

    def close(self) -> None:
        """pysyncobj is done with the journal: release the file."""

    def _destroy(self) -> None:
        self.close()


class TransportBase(TCPTransport):
    """pysyncobj's TCP transport with the private callbacks the DB refines turned into public hooks.

    The hooks' defaults keep pysyncobj's behaviour. ``hold_link_report`` is only asked about *outgoing*
    links: pysyncobj reports one as connected from inside two callbacks (the second when the link is
    encrypted), and a subclass may defer that report until the peer has spoken (``peer_spoke``).
    """

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:  # noqa: N803 - pysyncobj's names
        self._opening_outgoing = False
        super().__init__(syncObj, selfNode, otherNodes)
        _require(self, ("_syncObj", "_nodes", "_connToNode"), "TCPTransport")

    # ----------------------------------------------------------------------------- hooks (override)

    def hold_link_report(self, node: Any) -> bool:
        """An outgoing link to ``node`` just opened; True defers reporting it connected (``peer_spoke``)."""
        return False

    def peer_spoke(self, node: Any) -> bool:
        """A message arrived from ``node``; True reports the deferred link connected before it is handled."""
        return False

    def link_closed(self, node: Any) -> None:
        """The link to ``node`` closed (called before pysyncobj's own handling)."""

    def after_tick(self) -> None:
        """Runs on the tick thread after pysyncobj's own transport tick."""

    def message_received(self, node: Any, message: Any) -> None:
        """A message from ``node``; the default hands it to pysyncobj (``deliver``), as an override must."""
        self.deliver(node, message)

    # -------------------------------------------------------------------------------- accessors

    def raft_log(self) -> Any:
        """The owning SyncObj's journal, or None before it exists."""
        return getattr(self._syncObj, "_SyncObj__raftLog", None)

    def connection_timeout(self) -> float:
        """The configured ``connectionTimeout`` in seconds."""
        return float(self._syncObj.conf.connectionTimeout)

    def links(self) -> list[Any]:
        """The nodes this transport keeps links to (a copy)."""
        return list(self._nodes)

    def deliver(self, node: Any, message: Any) -> None:
        """Hand a received message to pysyncobj (which handles it, and may answer, before this returns)."""
        TCPTransport._onMessageReceived(self, node, message)

    # --------------------------------------------------------------------- pysyncobj's privates

    def _onOutgoingConnected(self, conn: Any) -> None:  # noqa: N802 - pysyncobj's name
        self._opening_outgoing = True
        try:
            super()._onOutgoingConnected(conn)
        finally:
            self._opening_outgoing = False

    def _onOutgoingMessageReceived(self, conn: Any, message: Any) -> None:  # noqa: N802 - pysyncobj's name
        self._opening_outgoing = True
        try:
            super()._onOutgoingMessageReceived(conn, message)
        finally:
            self._opening_outgoing = False

    def _onNodeConnected(self, node: Any) -> None:  # noqa: N802 - pysyncobj's name
        if self._opening_outgoing and self.hold_link_report(node):
            return
        super()._onNodeConnected(node)

    def _onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802 - pysyncobj's name
        if self.peer_spoke(node):
            super()._onNodeConnected(node)
        self.message_received(node, message)

    def _onDisconnected(self, conn: Any) -> None:  # noqa: N802 - pysyncobj's name
        node = self._connToNode(conn)
        if node is not None:
            self.link_closed(node)
        super()._onDisconnected(conn)

    def _onTick(self) -> None:  # noqa: N802 - pysyncobj's name
        super()._onTick()
        self.after_tick()


class RaftBase(SyncObj):
    """A SyncObj with hooks on membership entries and public access to the internals the node drives.

    Hooks (run on the tick thread): ``membership_entry_applied(request)`` for each committed membership
    entry ``[kind, address, TCPNode]`` on every member, after pysyncobj's own handling (at start-up replay
    that is what changes the configuration), its result going to the proposer's callback; and
    ``membership_entry_allowed(request)`` on the leader right before such an entry is appended.
    """

    def __init__(
        self, self_addr: str, others: list[str], conf: SyncObjConf, *, transport_class: type
    ) -> None:
        _require(
            SyncObj,
            (
                "_SyncObj__doApplyCommand",
                "_SyncObj__changeCluster",
                "_SyncObj__getCurrentLogIndex",
                "_SyncObj__sendAppendEntries",
                "_isLeader",
                "_getLeader",
            ),
            "SyncObj",
        )
        super().__init__(self_addr, others, conf, transportClass=transport_class)
        _require(self, ("_SyncObj__noopIDx",), "SyncObj")

    # ----------------------------------------------------------------------------- hooks (override)

    def membership_entry_applied(self, request: list[Any]) -> Any:
        """A committed membership entry was applied; the return value is the proposer's result."""
        return None

    def membership_entry_allowed(self, request: list[Any]) -> bool:
        """Leader, before a membership entry is appended: False refuses it."""
        return True

    # -------------------------------------------------------------------------------- accessors

    def is_leader(self) -> bool:
        return bool(self._isLeader())

    def leader_node(self) -> Any:
        """The node this member follows (a TCPNode, itself when leading), or None."""
        return self._getLeader()

    def last_log_index(self) -> int:
        return int(self._SyncObj__getCurrentLogIndex())

    def term_start_index(self) -> int | None:
        """Leader: the index of the no-op pysyncobj appended when it took this term (None before any)."""
        index = self._SyncObj__noopIDx
        return None if index is None else int(index)

    def send_append_entries(self) -> None:
        """Send AppendEntries to every follower now (pysyncobj would wait for the next heartbeat)."""
        self._SyncObj__sendAppendEntries()

    def poller(self) -> Any:
        """The poller of the tick thread (``subscribe(fd, callback, POLL_READ)``)."""
        return self._poller

    def transport(self) -> Any:
        return getattr(self, "_SyncObj__transport", None)

    # --------------------------------------------------------------------- pysyncobj's privates

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:  # noqa: N802 - overrides pysyncobj's
        result = SyncObj._SyncObj__doApplyCommand(self, command)  # type: ignore[attr-defined]
        if command[:1] == _MEMBERSHIP_ENTRY:
            return self.membership_entry_applied(_pickle.loads(command[1:]))
        return result

    def _SyncObj__changeCluster(self, request: list[Any]) -> bool:  # noqa: N802 - overrides pysyncobj's
        """Right before a membership entry is appended: here the directory cannot change underneath the
        hook's check, and pysyncobj's one-change-at-a-time guard gets the log index it never records
        itself (it then refuses changes until that entry is applied)."""
        if not self.membership_entry_allowed(request):
            return False
        index = self._SyncObj__getCurrentLogIndex() + 1  # where _checkCommandsToApply appends the entry
        if not SyncObj._SyncObj__changeCluster(self, request):  # type: ignore[attr-defined]
            return False
        self._SyncObj__changeClusterIDx = index
        return True
