"""One DB cluster member: pysyncobj Raft around the deterministic :class:`KVStateMachine`.

Every write is a command dict that goes through the Raft log (a pysyncobj replicated method called
synchronously with a timeout) and is applied, in log order, by pysyncobj's tick thread on every member.
HTTP threads never touch the state machine except under ``_lock``; the tick thread is the only writer.

Timers (:class:`RaftTimers`) - pysyncobj's defaults are tuned for WANs and fail over in several seconds
(and a partitioned leader keeps believing it leads for 30 s). DB members sit on one LAN (or loopback in
tests), where a round trip is well under a millisecond, but they are Python processes sharing few cores
with other services, so a member can stall for tens of milliseconds (GIL, GC, a busy neighbour):

* ``append_entries_period = 0.05`` s: leader heartbeat. Cheap (a few hundred bytes to each follower) and
  4 per 200 ms means a single delayed or lost heartbeat never looks like a dead leader.
* ``raft_min_timeout = 0.5`` / ``raft_max_timeout = 1.0`` s: election timeout drawn uniformly from this
  range. 10 heartbeats of slack before a follower suspects the leader absorbs scheduling stalls on a busy
  2-core host without spurious elections; the 0.5 s spread makes split votes between 5 members rare.
  A dead leader is thus replaced after ~0.5-1 s plus one round of voting.
* ``leader_fallback_timeout = 1.0`` s (pysyncobj default 30 s): a leader that has not heard from a majority
  for about one election timeout steps down, so a partitioned or paused old leader stops accepting
  proposals at about the time the majority elects a new one. (Safety never depends on this: a deposed
  leader cannot commit anything - linearizable reads go through the log - it only makes it fail fast.)
* ``auto_tick_period = 0.02`` s: how long the tick thread blocks in poll() when idle; bounds the latency of
  timer-driven work (heartbeats, elections, our fsync group commit). Proposals wake the poller through
  our own pipe notifier (:class:`_Wakeup`), so writes do not wait for a tick.

Batching (``appendEntriesUseBatch=True``) - with pysyncobj's unbatched mode every proposal is sent to every
follower in its own AppendEntries message (pickle + zlib + send, times four) and every follower answers
each of them. In batched mode the leader appends everything queued since the last tick and pysyncobj
would only send it with the next heartbeat (``append_entries_period`` later). :meth:`Node._on_tick` (run
by the tick thread right after the queued proposals were appended) therefore sends one AppendEntries per
follower carrying all new entries (and the new commit index, so followers apply promptly), then fsyncs
the leader's own journal while the followers are fsyncing theirs: by the time a majority has acked, the
leader's ``setRaftCommitIndex`` sync is a no-op and the commit is not delayed by a second, serial fsync.
* ``connection_timeout = 1.5`` s: a TCP link without any inbound byte for that long is considered dead.
  pysyncobj requires >= raft_max_timeout. Because only the leader talks to followers, follower-follower
  links are idle between elections and pysyncobj would drop them on the first vote request after
  ``connection_timeout`` (losing that vote and costing a whole extra election round); our transport
  therefore pings every link every ``connection_timeout / 4``.
* ``connection_retry_time = 0.5`` s (default 5 s): how often to redial a lost member, so a restarted
  member rejoins within half a second.

Durability (``fsync=True``) - pysyncobj writes its journal through mmap and never fsyncs. A write that is
only in the page cache survives the process being SIGKILLed (the kernel still owns the pages) but not a
power loss or kernel crash. :class:`DurableFileJournal` and :class:`_DurableTransport` add:

* follower side: every ``next_node_idx`` message (the follower's ack of appended entries) is held back and
  sent at the end of the tick, after one ``msync``+``fsync`` of the journal covering everything appended
  during that tick (group commit). So a follower never acknowledges an entry that is not on its disk.
* leader side: before the leader advances its commit index (which it does counting itself), the journal is
  synced. Nothing that reveals the new commit index (applying, answering the client, telling followers)
  happens before that, so an acknowledged write is on the disks of a majority.
* currentTerm/votedFor (the ``.meta`` file) are written to a temp file, fsynced, renamed and the directory
  fsynced before the vote is sent (pysyncobj already stores them synchronously, but without fsync).
* snapshots (log compaction dump) are written by our serializer with fsync, and the journal is truncated
  only after the dump and the data directory are fsynced.

See the module-level notes in :func:`durability_notes` for what is *not* guaranteed.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import pysyncobj.syncobj as _syncobj_module
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.journal import FileJournal, MetaStorer
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.transport import TCPTransport

from agenda.db.state import (
    KVStateMachine,
    StateMachineError,
    lease_expire_command,
    noop_command,
    validate_command,
)

__all__ = [
    "DUMP_MAGIC",
    "DurableFileJournal",
    "LeaderUnknown",
    "Node",
    "NodeError",
    "NotLeader",
    "OutcomeUnknown",
    "Peer",
    "ProposalFailed",
    "RaftTimers",
    "durability_notes",
    "parse_peer",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

JOURNAL_FILE: Final = "raft.journal"
DUMP_FILE: Final = "raft.dump"
LOCK_FILE: Final = "LOCK"
DUMP_MAGIC: Final = b"AGENDA-DB-DUMP 1\n"
_NODE_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_PING: Final = {"type": "agenda_ping"}
_POLL_READ: Final = POLL_EVENT_TYPE.READ
# See DurableFileJournal.sync: on Linux an fsync of the journal file covers its shared mmap.
_MSYNC_IS_FSYNC: Final = sys.platform.startswith("linux")


# ----------------------------------------------------------------------------------------------------------
# Membership
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    """A cluster member: its id, its Raft address (pysyncobj's identity) and its HTTP API address."""

    node_id: str
    raft_addr: str
    api_addr: str


def validate_node_id(value: str) -> str:
    """Node ids are short tokens (they appear in URLs, metrics labels and logs)."""
    if not _NODE_ID_RE.match(value):
        raise ValueError(f"node id must match {_NODE_ID_RE.pattern}, got {value!r}")
    return value


def parse_peer(text: str, *, check_hostport: Callable[[str], object] | None = None) -> Peer:
    """Parse ``ID=RAFTHOST:PORT,APIHOST:PORT`` into a :class:`Peer`; ValueError naming the problem."""
    node_id, sep, rest = text.strip().partition("=")
    if not sep:
        raise ValueError(f"expected ID=RAFTHOST:PORT,APIHOST:PORT, got {text!r}")
    raft_addr, sep, api_addr = rest.partition(",")
    if not sep or "," in api_addr:
        raise ValueError(f"expected ID=RAFTHOST:PORT,APIHOST:PORT, got {text!r}")
    validate_node_id(node_id.strip())
    raft_addr, api_addr = raft_addr.strip(), api_addr.strip()
    if check_hostport is not None:
        check_hostport(raft_addr)
        check_hostport(api_addr)
    return Peer(node_id.strip(), raft_addr, api_addr)


# ----------------------------------------------------------------------------------------------------------
# Errors raised to the HTTP layer
# ----------------------------------------------------------------------------------------------------------


class NodeError(Exception):
    """Base of the errors a proposal or read barrier can end with; all mean "try again later"."""

    outcome_known = True


class NotLeader(NodeError):  # noqa: N818 - reads as the condition
    """This member is not the leader (the HTTP layer forwards or redirects)."""


class LeaderUnknown(NodeError):  # noqa: N818
    """No leader is known right now (election in progress or no quorum)."""


class ProposalFailed(NodeError):  # noqa: N818 - reads as the condition
    """The proposal was refused before it entered the log (queue full, leadership lost before append)."""


class OutcomeUnknown(NodeError):  # noqa: N818
    """The command may or may not be committed (timeout, leader change after append)."""

    outcome_known = False


_KNOWN_FAILURES: Final = {
    FAIL_REASON.QUEUE_FULL: ("ProposalFailed", "the proposal queue is full"),
    FAIL_REASON.MISSING_LEADER: ("LeaderUnknown", "no leader is known"),
    FAIL_REASON.NOT_LEADER: ("LeaderUnknown", "leadership moved before the command was appended"),
    FAIL_REASON.REQUEST_DENIED: ("ProposalFailed", "the leader denied the request"),
}


def map_failure(reason: Any) -> NodeError:
    """Turn a pysyncobj failure (FAIL_REASON code or 'Timeout') into one of our errors."""
    if reason in _KNOWN_FAILURES:
        kind, text = _KNOWN_FAILURES[reason]
        return LeaderUnknown(text) if kind == "LeaderUnknown" else ProposalFailed(text)
    if reason == "Timeout":
        return OutcomeUnknown("the proposal timed out; it may still be committed")
    return OutcomeUnknown(f"the leader changed while the command was in flight (reason {reason!r})")


# ----------------------------------------------------------------------------------------------------------
# Durability: fsync around pysyncobj's mmap journal
# ----------------------------------------------------------------------------------------------------------


def _fsync_path(path: str | os.PathLike[str], *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DurableMetaStorer(MetaStorer):
    """pysyncobj's meta file (currentTerm, votedFor, commit index) written atomically *and* durably."""

    def __init__(self, path: str, fsync: bool) -> None:
        super().__init__(path)
        self._fsync = fsync

    def storeMeta(self, meta: dict[str, Any]) -> None:  # noqa: N802 - pysyncobj's name
        path = self.getPath()
        tmp = path + ".tmp"
        data = _syncobj_module.pickle.dumps(meta)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self._fsync:
            _fsync_path(os.path.dirname(path) or ".", directory=True)


class DurableFileJournal(FileJournal):
    """pysyncobj's FileJournal plus an explicit :meth:`sync` (msync + fsync) and a dirty flag.

    ``sync`` is a no-op when nothing changed since the last one, so calling it at every decision point
    costs nothing when idle; with ``fsync=False`` it only clears the flag.
    """

    def __init__(self, path: str, *, fsync: bool, dump_path: str | None = None) -> None:
        super().__init__(path)
        self._path = path
        self._fsync = fsync
        self._dump_path = dump_path
        self._dirty = False
        self.syncs = 0  # number of real fsyncs (metrics)
        # pysyncobj keeps these private; fail loudly at start if a future version renames them.
        if not hasattr(self, "_FileJournal__metaStorer") or not hasattr(self, "_FileJournal__journalFile"):
            raise RuntimeError("unsupported pysyncobj version: FileJournal internals changed")
        self._FileJournal__metaStorer = _DurableMetaStorer(path + ".meta", fsync)
        if fsync:
            _fsync_path(os.path.dirname(path) or ".", directory=True)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        super().deleteEntriesFrom(entryFrom)
        self._dirty = True

    def clear(self) -> None:
        # clear() precedes rewriting the journal after a snapshot (ours or one received from the leader):
        # the dump that replaces the dropped entries must be durable before those entries are gone.
        if self._fsync and self._dump_path is not None and os.path.exists(self._dump_path):
            _fsync_path(self._dump_path)
            _fsync_path(os.path.dirname(self._dump_path) or ".", directory=True)
        super().clear()
        self._dirty = True

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        # The leader calls this right after counting itself towards a new commit index and before
        # applying / answering clients / telling followers: its own copy must be on disk first.
        self.sync()
        super().setRaftCommitIndex(raftCommitIndex)

    def sync(self) -> None:
        """Make every appended entry durable (one msync + fsync for all changes since the last sync)."""
        if not self._dirty:
            return
        self._dirty = False
        if not self._fsync:
            return
        resizable = self._FileJournal__journalFile
        if not _MSYNC_IS_FSYNC:
            resizable.flush()  # msync(MS_SYNC) of the mapping
        # On Linux, msync(MS_SYNC) of a shared file mapping *is* vfs_fsync_range() on the mapped file
        # (mm/msync.c): the mapping's dirty pages are the file's page-cache pages, which fsync writes back.
        # fsync of the whole file (data and metadata, e.g. the size after a resize) is therefore a
        # superset, and unlike CPython's mmap.flush() it releases the GIL while the disk works, so HTTP
        # threads keep running during the group commit.
        os.fsync(resizable._ResizableFile__f.fileno())
        self.syncs += 1


class _JournalFactory:
    """Temporarily replaces pysyncobj's ``createJournal`` so SyncObj builds a DurableFileJournal."""

    _lock = threading.Lock()

    @classmethod
    @contextlib.contextmanager
    def installed(cls, factory: Callable[[str | None], Any]) -> Iterator[None]:
        with cls._lock:
            original = _syncobj_module.createJournal
            _syncobj_module.createJournal = factory
            try:
                yield
            finally:
                _syncobj_module.createJournal = original


class _DurableTransport(TCPTransport):
    """TCP transport that (1) holds follower acks until the journal is fsynced, (2) pings idle links."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:  # noqa: N803
        self._held: list[tuple[Any, Any]] = []
        self._last_ping = 0.0
        super().__init__(syncObj, selfNode, otherNodes)

    def _journal(self) -> DurableFileJournal | None:
        journal = getattr(self._syncObj, "_SyncObj__raftLog", None)
        return journal if isinstance(journal, DurableFileJournal) else None

    def send(self, node: Any, message: Any) -> bool:
        if isinstance(message, dict) and message.get("type") == "next_node_idx":
            journal = self._journal()
            if journal is not None and journal._fsync:
                self._held.append((node, message))
                return True
        return bool(super().send(node, message))

    def _onTick(self) -> None:  # noqa: N802 - pysyncobj's name
        super()._onTick()
        if self._held:
            journal = self._journal()
            if journal is not None:
                journal.sync()  # group commit: one fsync for everything appended this tick
            held, self._held = self._held, []
            for node, message in held:
                super().send(node, message)
        now = time.monotonic()
        if now - self._last_ping >= self._syncObj.conf.connectionTimeout / 4:
            self._last_ping = now
            for node in list(self._nodes):
                super().send(node, _PING)


# ----------------------------------------------------------------------------------------------------------
# Snapshot (log compaction dump) format
# ----------------------------------------------------------------------------------------------------------


def _entry_to_json(entry: Sequence[Any]) -> list[Any]:
    command, idx, term = entry
    return [base64.b64encode(bytes(command)).decode("ascii"), int(idx), int(term)]


def _entry_from_json(item: Any) -> tuple[bytes, int, int]:
    command, idx, term = item
    return base64.b64decode(command), int(idx), int(term)


def encode_dump(pysyncobj_data: Sequence[Any], kv_snapshot: bytes) -> bytes:
    """Dump file bytes: magic, a JSON header line (pysyncobj's two boundary entries + members), the KV."""
    last_entry, prev_entry, cluster = pysyncobj_data
    header = {
        "last": _entry_to_json(last_entry),
        "prev": _entry_to_json(prev_entry),
        "cluster": sorted(getattr(node, "address", str(node)) for node in cluster),
    }
    return DUMP_MAGIC + json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + kv_snapshot


def decode_dump(data: bytes) -> tuple[tuple[Any, Any, set[str]], bytes]:
    """Inverse of :func:`encode_dump`; ValueError on anything unexpected."""
    if not data.startswith(DUMP_MAGIC):
        raise ValueError("not an agenda-db dump (bad magic)")
    header_line, sep, kv_snapshot = data[len(DUMP_MAGIC) :].partition(b"\n")
    if not sep:
        raise ValueError("truncated dump header")
    header = json.loads(header_line)
    last = _entry_from_json(header["last"])
    prev = _entry_from_json(header["prev"])
    return (last, prev, set(header["cluster"])), kv_snapshot


# ----------------------------------------------------------------------------------------------------------
# The node
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RaftTimers:
    """pysyncobj timing knobs; the defaults and why are in the module docstring."""

    append_entries_period: float = 0.05
    raft_min_timeout: float = 0.5
    raft_max_timeout: float = 1.0
    leader_fallback_timeout: float = 1.0
    auto_tick_period: float = 0.02
    connection_timeout: float = 1.5
    connection_retry_time: float = 0.5


@dataclass(frozen=True, slots=True)
class Status:
    """What the tick thread last published about Raft (read without locks by HTTP threads)."""

    is_leader: bool = False
    leader_raft_addr: str | None = None
    term: int = 0
    commit_index: int = 0
    applied_index: int = 0
    connected: frozenset[str] = frozenset()
    has_quorum: bool = False
    updated: float = 0.0


class _RaftKV(SyncObj):
    """The SyncObj: one replicated method that applies a command to the owner's state machine."""

    def __init__(self, owner: Node, self_addr: str, others: list[str], conf: SyncObjConf) -> None:
        self._owner = owner  # set before SyncObj.__init__: the tick thread may apply entries at once
        super().__init__(self_addr, others, conf, transportClass=_DurableTransport)

    @replicated
    def apply_command(self, command: dict[str, Any]) -> dict[str, Any]:
        return self._owner._apply(command)


class Node:
    """A DB member: owns the state machine, the Raft object, the lease-expiry thread and the data dir."""

    def __init__(
        self,
        self_peer: Peer,
        peers: Sequence[Peer],
        data_dir: str | os.PathLike[str],
        *,
        cluster_secret: str | None = None,
        fsync: bool = True,
        timers: RaftTimers | None = None,
        proposal_timeout: float = 3.0,
        history_limit: int | None = None,
        lease_check_interval: float = 0.25,
    ) -> None:
        self.self_peer = self_peer
        self.peers: tuple[Peer, ...] = tuple(peers)
        self.members: tuple[Peer, ...] = (self_peer, *self.peers)
        self._by_raft = {peer.raft_addr: peer for peer in self.members}
        self.data_dir = Path(data_dir)
        self.fsync = fsync
        self.timers = timers or RaftTimers()
        self.proposal_timeout = proposal_timeout
        self._cluster_secret = cluster_secret
        self._lease_check_interval = lease_check_interval
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._kv = KVStateMachine() if history_limit is None else KVStateMachine(history_limit=history_limit)
        self._status = Status()
        self._stop = threading.Event()
        self._raft: _RaftKV | None = None
        self._journal: DurableFileJournal | None = None
        self._wakeup: _Wakeup | None = None
        self._sent_index = -1  # leader: last log index / commit index shipped by _flush_leader
        self._sent_commit = -1
        self._lock_fd: int | None = None
        self._expiry_thread: threading.Thread | None = None
        self.counters: dict[str, int] = {
            "proposals": 0,
            "proposal_failures": 0,
            "read_barriers": 0,
            "lease_expire_proposals": 0,
            "applied": 0,
        }
        self._counters_lock = threading.Lock()

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Lock the data dir, open the journal, start Raft and the lease-expiry thread."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        journal_path = str(self.data_dir / JOURNAL_FILE)
        dump_path = str(self.data_dir / DUMP_FILE)
        conf = SyncObjConf(
            password=self._cluster_secret,
            autoTickPeriod=self.timers.auto_tick_period,
            appendEntriesPeriod=self.timers.append_entries_period,
            raftMinTimeout=self.timers.raft_min_timeout,
            raftMaxTimeout=self.timers.raft_max_timeout,
            leaderFallbackTimeout=self.timers.leader_fallback_timeout,
            connectionTimeout=self.timers.connection_timeout,
            connectionRetryTime=self.timers.connection_retry_time,
            appendEntriesUseBatch=True,
            commandsWaitLeader=False,
            bindAddress=self.self_peer.raft_addr,
            journalFile=journal_path,
            fullDumpFile=dump_path,
            serializer=self._serialize,
            deserializer=self._deserialize,
            dynamicMembershipChange=False,
            tcp_keepalive=(2, 1, 3),
            maxBindRetries=0,
        )

        def factory(path: str | None) -> DurableFileJournal:
            assert path is not None  # noqa: S101 - we always configure a journal file
            self._journal = DurableFileJournal(path, fsync=self.fsync, dump_path=dump_path)
            return self._journal

        with _JournalFactory.installed(factory):
            self._raft = _RaftKV(self, self.self_peer.raft_addr, [p.raft_addr for p in self.peers], conf)
        self._wakeup = _Wakeup(self._raft._poller)
        self._raft.addOnTickCallback(self._on_tick)
        self._expiry_thread = threading.Thread(target=self._expiry_loop, name="lease-expiry", daemon=True)
        self._expiry_thread.start()
        log.info(
            "raft node started",
            extra={
                "node_id": self.self_peer.node_id,
                "raft_addr": self.self_peer.raft_addr,
                "fsync": self.fsync,
            },
        )

    def stop(self) -> None:
        """Stop Raft (flushing the journal) and the background thread; idempotent."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._raft is not None:
            raft, self._raft = self._raft, None
            with contextlib.suppress(Exception):
                raft.destroy_synchronous()
        if self._expiry_thread is not None:
            self._expiry_thread.join(timeout=2)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _lock_data_dir(self) -> None:
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RuntimeError(
                    f"data dir {self.data_dir} is in use by another agenda-db process"
                ) from None
            raise
        self._lock_fd = fd

    # ------------------------------------------------------------------------------ tick-thread side

    def _apply(self, command: dict[str, Any]) -> dict[str, Any]:
        """Called by pysyncobj's tick thread for each committed command, in log order, on every member."""
        with self._changed:
            try:
                result = self._kv.apply_or_error(command)
            except Exception:  # a bug must not wedge the tick thread; every member fails alike
                log.exception("state machine raised while applying a committed command")
                result = {"ok": False, "error": "internal", "revision": self._kv.revision}
            self._changed.notify_all()
        with self._counters_lock:
            self.counters["applied"] += 1
        return result

    def _serialize(self, file_name: str, data: Sequence[Any]) -> None:
        """pysyncobj log-compaction hook (tick thread, state == last applied): write the dump durably."""
        with self._lock:
            snapshot = self._kv.snapshot()
        payload = encode_dump(data, snapshot)
        with open(file_name, "wb") as f:
            f.write(payload)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def _deserialize(self, file_name: str) -> tuple[Any, Any, set[str]]:
        """pysyncobj hook at start-up and on snapshot install: restore the KV, return pysyncobj's part."""
        with open(file_name, "rb") as f:
            meta, snapshot = decode_dump(f.read())
        with self._changed:
            self._kv.restore(snapshot)
            self._changed.notify_all()
        return meta

    def _on_tick(self) -> None:
        raft = self._raft
        if raft is None:
            return
        if raft._isLeader():
            self._flush_leader(raft)
        else:
            self._sent_index = self._sent_commit = -1
        leader = raft._getLeader()
        by_raft = self._by_raft
        self_addr = self.self_peer.raft_addr
        connected = frozenset(
            address
            for node in raft.otherNodes
            if (address := getattr(node, "address", None)) in by_raft
            and address != self_addr
            and raft.isNodeConnected(node)
        )
        self._status = Status(
            is_leader=raft._isLeader(),
            leader_raft_addr=getattr(leader, "address", None),
            term=raft.raftCurrentTerm,
            commit_index=raft.raftCommitIndex,
            applied_index=raft.raftLastApplied,
            connected=connected,
            has_quorum=len(connected) + 1 > len(self.members) / 2,
            updated=time.monotonic(),
        )

    def _flush_leader(self, raft: _RaftKV) -> None:
        """Tick thread, leader: ship what this tick appended/committed, then fsync the leader's journal.

        Runs after pysyncobj appended the queued proposals (``_checkCommandsToApply``). One AppendEntries
        per follower carries every new entry; the leader's own fsync then overlaps with the followers'.
        """
        last_index = raft._SyncObj__getCurrentLogIndex()
        commit_index = raft.raftCommitIndex
        if last_index != self._sent_index or commit_index != self._sent_commit:
            self._sent_index, self._sent_commit = last_index, commit_index
            raft._SyncObj__sendAppendEntries()
        journal = self._journal
        if journal is not None and journal.dirty:
            journal.sync()

    # ------------------------------------------------------------------------------------ queries

    @property
    def status(self) -> Status:
        return self._status

    @property
    def journal_syncs(self) -> int:
        return self._journal.syncs if self._journal is not None else 0

    def is_leader(self) -> bool:
        raft = self._raft
        return raft is not None and bool(raft._isLeader())

    def leader(self) -> Peer | None:
        """The member this node currently follows (itself when leading), or None."""
        raft = self._raft
        if raft is None:
            return None
        node = raft._getLeader()
        if node is None:
            return None
        return self._by_raft.get(getattr(node, "address", ""))

    def healthy(self) -> bool:
        """A leader is known and this member is connected to a majority (itself included)."""
        status = self._status
        return status.leader_raft_addr is not None and status.has_quorum and not self._stop.is_set()

    def read(self, fn: Callable[[KVStateMachine], T]) -> T:
        """Run ``fn`` on the local state under the lock (a stale read unless preceded by a barrier)."""
        with self._lock:
            return fn(self._kv)

    def wait_changed(self, predicate: Callable[[KVStateMachine], T], timeout: float) -> T:
        """Block until ``predicate(kv)`` is truthy or ``timeout`` passes; return its last value."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            while True:
                value = predicate(self._kv)
                remaining = deadline - time.monotonic()
                if value or remaining <= 0 or self._stop.is_set():
                    return value
                self._changed.wait(remaining)

    # ----------------------------------------------------------------------------------- proposals

    def propose(self, command: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Commit ``command`` through the log (this node must lead) and return its state-machine result.

        Raises :class:`~agenda.db.state.InvalidArgument` before proposing anything malformed, and a
        :class:`NodeError` when the outcome is a failure or unknown.
        """
        validate_command(command)
        raft = self._raft
        if raft is None or self._stop.is_set():
            raise LeaderUnknown("node is shutting down")
        if not raft._isLeader():
            if raft._getLeader() is None:
                raise LeaderUnknown("no leader is known")
            raise NotLeader("this member is not the leader")
        with self._counters_lock:
            self.counters["proposals"] += 1
        # Same contract as pysyncobj's ``sync=True`` (wait for the result, 'Timeout' after ``timeout``),
        # but the tick thread is woken explicitly: in batched mode pysyncobj itself does not.
        waiter = _Waiter()
        raft.apply_command(command, callback=waiter.on_result)
        if self._wakeup is not None:
            self._wakeup.notify()
        if not waiter.wait(timeout or self.proposal_timeout):
            reason: Any = "Timeout"
        elif waiter.error != FAIL_REASON.SUCCESS:
            reason = waiter.error
        else:
            result = waiter.result
            if not isinstance(result, dict):  # pragma: no cover - apply_command always returns a dict
                raise OutcomeUnknown("no result from the state machine")
            return result
        with self._counters_lock:
            self.counters["proposal_failures"] += 1
        raise map_failure(reason)

    def read_barrier(self, timeout: float | None = None) -> None:
        """Commit a no-op through the log: afterwards local state reflects every write acked before."""
        with self._counters_lock:
            self.counters["read_barriers"] += 1
        self.propose(noop_command(), timeout)

    def new_lease_id(self) -> int:
        """A fresh random positive int64 lease id (chosen by the proposer, as the state machine requires)."""
        return secrets.randbelow(2**63 - 2) + 1

    def _expiry_loop(self) -> None:
        """On the leader only: propose ``lease_expire`` with the leader's clock when a lease is due."""
        while not self._stop.wait(self._lease_check_interval):
            if not self.is_leader():
                continue
            now = time.time()
            try:
                expired = self.read(lambda kv, now=now: kv.expired_leases(now))
                if not expired:
                    continue
                with self._counters_lock:
                    self.counters["lease_expire_proposals"] += 1
                self.propose(lease_expire_command(now))
            except (NodeError, StateMachineError) as exc:
                log.info("lease expiry proposal failed: %s", exc)
            except Exception:  # the thread must survive anything
                log.exception("lease expiry loop failed")


class _Waiter:
    """Result slot of one proposal (pysyncobj calls ``on_result`` from the tick thread).

    A bare lock, held from creation and released by ``on_result``, is a one-shot event that costs far
    less than ``threading.Event`` (no Condition, no per-wait waiter lock).
    """

    __slots__ = ("_done", "error", "result")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self.result: Any = None
        self.error: Any = None

    def on_result(self, result: Any, error: Any) -> None:
        self.result = result
        self.error = error
        with contextlib.suppress(RuntimeError):  # defensive: a second result is ignored
            self._done.release()

    def wait(self, timeout: float) -> bool:
        """True once ``on_result`` ran; False after ``timeout`` seconds."""
        return self._done.acquire(timeout=timeout)


class _Wakeup:
    """Wakes pysyncobj's poller when a proposal is queued (at most one pending byte in the pipe).

    A proposer queues its command, then sets the flag and writes a byte only if the flag was clear. The
    tick thread drains the pipe, *then* clears the flag, and only after poll returns takes the queued
    proposals: a proposal queued before its proposer saw the flag set is picked up by that wake-up, and
    the flag is never left set with an empty pipe.
    """

    def __init__(self, poller: Any) -> None:
        self._pending = False
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        poller.subscribe(self._read_fd, self._on_readable, _POLL_READ)

    def notify(self) -> None:
        if self._pending:
            return
        self._pending = True
        with contextlib.suppress(BlockingIOError):  # the pipe is full: a wake-up is pending anyway
            os.write(self._write_fd, b"w")

    def _on_readable(self, _descr: int, _event: int) -> None:
        # Drain first, then clear: a proposer that set the flag after the drain has its byte still in the
        # pipe (the next poll returns at once); clearing first could swallow that byte and leave the flag
        # set with an empty pipe, after which no proposer would wake the tick thread again.
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 4096):
                pass
        self._pending = False


def durability_notes() -> list[str]:
    """What ``--fsync`` does not guarantee (also rendered in the operator docs)."""
    return [
        "pysyncobj's journal has no checksums: a power loss in the middle of an fsync can leave a torn "
        "record at the tail (or, during log compaction, which rewrites the journal in place, in the "
        "middle); the member may then refuse to start and must be wiped and re-synced from the others.",
        "with --no-fsync, data survives the processes being killed (it is in the kernel page cache) but "
        "not a power loss or kernel crash of a majority of machines at the same time.",
    ]
