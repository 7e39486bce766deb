"""The one module that knows pysyncobj's internals: every private name and internal module it uses is here.

pysyncobj (0.3.17) has no public hooks for what the DB needs - its own journal file, a transport
that holds acks and refines "connected", membership entries that also edit our directory, one
AppendEntries per tick in batched mode - so the DB reaches into name-mangled methods
(``_SyncObj__...``), private attributes and internal modules. Keeping all of that here means a
pysyncobj upgrade is checked and fixed in this file alone; ``tests/unit/db/test_pysyncobj_adapter.py``
fails if another module of the package touches a pysyncobj private name or imports pysyncobj.

What it offers the rest of the package is ordinary Python: base classes whose overridable hooks and
accessors have public names (:class:`RaftBase`, :class:`TransportBase`, :class:`JournalBase`), a few
re-exported public pysyncobj names (``FileJournal``, pysyncobj's own journal, whose files ours converts),
:func:`journal_factory`, and for Raft over mutual TLS (:mod:`agenda.db.rafttls`) :class:`TlsConnection`,
pysyncobj's connection with a TLS handshake in front. Each base class checks at construction that the
internals it relies on still exist, so an incompatible version fails at start, loudly, instead of silently
losing durability or membership bookkeeping.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import pysyncobj.pickle as _pickle
import pysyncobj.syncobj as _syncobj_module
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.journal import FileJournal, Journal, MetaStorer
from pysyncobj.node import TCPNode
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.transport import TCPTransport

from agenda.db.rafttls import RaftTls, TlsSocket, handshake_reason

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
    "TlsConnection",
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


_READ: Final = POLL_EVENT_TYPE.READ
_WRITE: Final = POLL_EVENT_TYPE.WRITE
_ERROR: Final = POLL_EVENT_TYPE.ERROR


class TlsConnection(TcpConnection):
    """pysyncobj's TCP connection with a TLS handshake between the TCP connect (or accept) and the first
    Raft message (see :mod:`agenda.db.rafttls` for the policy).

    pysyncobj drives a connection from its poller with non-blocking sockets: the poller calls
    ``__processConnection`` on every event, which reports a dialled link connected on its first event
    and then reads and writes. This class puts the handshake in front of that callback: until the
    handshake is done, pysyncobj's own processing does not run (a dialled link stays CONNECTING, so
    nothing is sent on it; an accepted one has not named itself, so nothing is delivered from it), and
    the connection waits only for the event OpenSSL asks for - waiting for the peer's next flight with
    WRITE subscribed would spin the tick thread. Once done, pysyncobj's processing runs with the socket
    replaced by a :class:`~agenda.db.rafttls.TlsSocket`, and whatever plaintext OpenSSL decrypted ahead
    of the poller is read at once. A handshake that fails, or is not done within the transport's
    ``connection_timeout`` (checked on every tick), closes the connection and is reported to the
    transport (``tls_refused``).
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        owner: TransportBase,
        *,
        poller: Any,
        peer: str,
        server_hostname: str | None = None,
        socket: Any = None,
        **kwargs: Any,
    ) -> None:
        self._context = context
        self._owner = owner
        self._server_hostname = server_hostname  # None: the accepting side
        self._tls_poller = poller
        self._tls: TlsSocket | None = None
        self._deadline: float | None = None  # while handshaking: when to give up
        self.peer = peer  # for reports: the member dialled, or the address a link came from
        super().__init__(poller, socket=socket, **kwargs)
        if socket is not None:
            self._start_tls(socket)

    @classmethod
    def accepted(cls, plain: TcpConnection, context: ssl.SSLContext, owner: TransportBase) -> TlsConnection:
        """The TLS connection for a socket pysyncobj's server just accepted into ``plain`` (which is
        dropped: the new connection takes over the socket and its poller subscription)."""
        raw = plain._TcpConnection__socket
        try:
            host, port = raw.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:
            peer = "unknown"
        conf = owner._syncObj.conf
        return cls(
            context,
            owner,
            poller=owner._syncObj._poller,
            peer=peer,
            socket=raw,
            timeout=conf.connectionTimeout,
            sendBufferSize=conf.sendBufferSize,
            recvBufferSize=conf.recvBufferSize,
        )

    def peer_certificate(self) -> dict[str, Any] | None:
        """The verified peer certificate (``SSLSocket.getpeercert()``), None before the handshake."""
        return self._tls.getpeercert() if self._tls is not None and self._deadline is None else None

    def expire(self, now: float) -> None:
        """Refuse the link if its handshake is still not done at ``now`` (the transport's tick)."""
        if self._deadline is not None and now > self._deadline:
            self._fail(f"no TLS handshake within {self._owner.connection_timeout():g} s")

    def connect(self, host: str, port: int) -> bool:
        self._end_handshake()
        self._tls = None
        return bool(super().connect(host, port))

    def disconnect(self) -> None:
        # A deliberate close (membership change, shutdown) during the handshake is no refusal.
        self._end_handshake()
        self._tls = None
        super().disconnect()

    def _TcpConnection__processConnection(self, descr: int, eventType: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        if descr == self.fileno():
            if eventType & _ERROR:
                if self._deadline is not None:
                    self._fail("the connection failed during the TLS handshake")
                    return
            else:
                if self._tls is None and self.state == CONNECTION_STATE.CONNECTING:
                    # The TCP connect finished (or failed: pysyncobj's processing then sees SO_ERROR).
                    raw = self._TcpConnection__socket
                    if not raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self._start_tls(raw)
                if self._deadline is not None:
                    if not self._handshake():
                        return
                    # Done: pysyncobj reports a dialled link connected, flushes, reads what came along.
                    eventType = _READ | _WRITE  # noqa: N806 - pysyncobj's name
        TcpConnection._TcpConnection__processConnection(self, descr, eventType)
        tls = self._tls
        if tls is not None and self.state == CONNECTION_STATE.CONNECTED and tls.pending():
            TcpConnection._TcpConnection__processConnection(self, descr, _READ)

    def _start_tls(self, raw: Any) -> None:
        try:
            wrapped = self._context.wrap_socket(
                raw,
                server_side=self._server_hostname is None,
                server_hostname=self._server_hostname,
                do_handshake_on_connect=False,
            )
        except OSError as exc:
            self._fail(handshake_reason(exc))
            return
        self._tls = TlsSocket(wrapped)
        self._TcpConnection__socket = self._tls
        self._deadline = time.monotonic() + self._owner.connection_timeout()
        self._owner._handshakes.add(self)
        self._subscribe(_READ | _ERROR)  # a dialler's first step follows at once; an acceptor waits for it

    def _handshake(self) -> bool:
        """One handshake step; True once it is done."""
        assert self._tls is not None  # noqa: S101 - _deadline is only set with a socket
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._subscribe(_READ | _ERROR)
            return False
        except ssl.SSLWantWriteError:
            self._subscribe(_READ | _WRITE | _ERROR)
            return False
        except OSError as exc:  # ssl.SSLError (certificate, protocol, alert from the peer) or a hang-up
            self._fail(handshake_reason(exc))
            return False
        self._end_handshake()
        self._subscribe(_READ | _WRITE | _ERROR)  # pysyncobj drops WRITE once its buffer is flushed
        return True

    def _subscribe(self, events: int) -> None:
        self._tls_poller.subscribe(self.fileno(), self._TcpConnection__processConnection, events)

    def _end_handshake(self) -> None:
        if self._deadline is not None:
            self._deadline = None
            self._owner._handshakes.discard(self)

    def _fail(self, reason: str) -> None:
        self._end_handshake()
        self._owner.tls_refused(self.peer, reason)
        self.disconnect()


class TransportBase(TCPTransport):
    """pysyncobj's TCP transport with the private callbacks the DB refines turned into public hooks.

    The hooks' defaults keep pysyncobj's behaviour. ``hold_link_report`` is only asked about *outgoing*
    links: pysyncobj reports one as connected from inside two callbacks (the second when the link is
    encrypted), and a subclass may defer that report until the peer has spoken (``peer_spoke``).

    When the owning :class:`RaftBase` was given a :class:`~agenda.db.rafttls.RaftTls`, every link is a
    :class:`TlsConnection`: dialled ones are built so (pysyncobj's ``addNode`` names its connection class
    directly, so it is redone here), accepted ones are taken over from pysyncobj's server as soon as it
    hands them over, and a dialler's first message - the Raft address it claims - is put to
    ``identity_allowed`` with its certificate before pysyncobj sees it.
    """

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:  # noqa: N803 - pysyncobj's names
        self._opening_outgoing = False
        # Read before pysyncobj's constructor: it adds the initial members (addNode) from inside it.
        self._tls: RaftTls | None = getattr(syncObj, "raft_tls", None)
        self._handshakes: set[TlsConnection] = set()
        super().__init__(syncObj, selfNode, otherNodes)
        _require(self, ("_syncObj", "_nodes", "_connToNode"), "TCPTransport")
        if self._tls is not None:
            _require(
                self,
                ("_nodeAddrToNode", "_connections", "_shouldConnect", "_onOutgoingConnected"),
                "TCPTransport",
            )
            _require(TcpConnection, ("_TcpConnection__processConnection",), "TcpConnection")

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

    def tls_refused(self, peer: str, reason: str) -> None:
        """A TLS link from or to ``peer`` was closed before carrying a Raft message (failed or late
        handshake, or an identity its certificate does not back)."""

    def identity_allowed(self, address: str, certificate: dict[str, Any] | None) -> bool:
        """A TLS link's dialler names itself ``address`` (a Raft address, or pysyncobj's ``readonly``)
        and presented ``certificate``; False closes the link before pysyncobj sees the name."""
        return True

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
        if self._handshakes:
            now = time.monotonic()
            for conn in list(self._handshakes):
                conn.expire(now)
        self.after_tick()

    def addNode(self, node: Any) -> None:  # noqa: N802 - pysyncobj's name
        tls = self._tls
        if tls is None:
            super().addNode(node)
            return
        # pysyncobj's addNode, with a TlsConnection where it builds a TcpConnection.
        self._nodes.add(node)
        self._nodeAddrToNode[node.address] = node
        if self._shouldConnect(node):
            conf = self._syncObj.conf
            conn = TlsConnection(
                tls.client,
                self,
                poller=self._syncObj._poller,
                peer=node.address,
                server_hostname=node.host,
                timeout=conf.connectionTimeout,
                sendBufferSize=conf.sendBufferSize,
                recvBufferSize=conf.recvBufferSize,
                keepalive=conf.tcp_keepalive,
            )
            conn.encryptor = self._syncObj.encryptor
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn

    def _onNewIncomingConnection(self, conn: Any) -> None:  # noqa: N802 - pysyncobj's name
        if self._tls is not None:
            conn = TlsConnection.accepted(conn, self._tls.server, self)
            if conn.state == CONNECTION_STATE.DISCONNECTED:
                return  # refused before pysyncobj would know it (the socket could not even be wrapped)
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:  # noqa: N802 - pysyncobj's name
        # A dialler's name: its first message, or its second after pysyncobj's password key exchange.
        naming = isinstance(message, str) and (self._syncObj.encryptor is None or conn.sendRandKey)
        if (
            naming
            and isinstance(conn, TlsConnection)
            and not self.identity_allowed(message, conn.peer_certificate())
        ):
            self.tls_refused(conn.peer, f"its certificate does not name the host of {message!r}")
            conn.disconnect()  # pysyncobj forgets it (_onDisconnected)
            return
        super()._onIncomingMessageReceived(conn, message)


class RaftBase(SyncObj):
    """A SyncObj with hooks on membership entries and public access to the internals the node drives;
    given ``tls``, its :class:`TransportBase` runs every Raft link over TLS (:class:`TlsConnection`).

    Hooks (run on the tick thread): ``membership_entry_applied(request)`` for each committed membership
    entry ``[kind, address, TCPNode]`` on every member, after pysyncobj's own handling (at start-up replay
    that is what changes the configuration), its result going to the proposer's callback; and
    ``membership_entry_allowed(request)`` on the leader right before such an entry is appended.
    """

    def __init__(
        self,
        self_addr: str,
        others: list[str],
        conf: SyncObjConf,
        *,
        transport_class: type,
        tls: RaftTls | None = None,
    ) -> None:
        # Read by the transport, which pysyncobj builds inside SyncObj.__init__: with it, every link is TLS.
        self.raft_tls = tls
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
