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
  leader cannot commit anything, nor confirm a linearizable read with a majority (ReadIndex,
  :mod:`agenda.db.readindex`) - it only makes it fail fast.)
* ``auto_tick_period = 0.02`` s: how long the tick thread blocks in poll() when idle; bounds the latency of
  timer-driven work (heartbeats, elections, our fsync group commit). Proposals wake the poller through
  our own pipe notifier (:class:`~agenda.db.tick.Wakeup`), so writes do not wait for a tick.

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

Durability (``fsync=True``) - pysyncobj's own journal never fsyncs and has no checksums; ours
(:mod:`agenda.db.durability`, checksummed and checked at start) and the transport
(:mod:`agenda.db.transport`) add fsyncs so that an acknowledged write is on the disks of a majority.

History and snapshots - two separate bounds, both node configuration (``agenda-db`` keys
``history_limit`` and ``log_compaction_entries``). The state machine keeps the last ``history_limit``
watch events (whole revisions); a watch from an older revision is answered 410 with ``compact_revision``
and ``oldest_available``, and the watcher re-reads, then watches from the read's revision. The Raft log is
compacted into a dump (KV snapshot, watch history included, written by :meth:`Node._write_dump`) once it
holds more than ``log_compaction_entries`` entries, or 5 minutes after the previous dump (pysyncobj's
``logCompactionMinTime``); a member restarts from its dump plus the journal after it, and a lagging one
is sent the leader's. Restoring a snapshot trims its history to this member's own ``history_limit``, so a
restart answers the same 410s as before it.

Transport security (``raft_tls``) - given a :class:`~agenda.db.rafttls.RaftTls` (the CLI builds one from the
member's ``tls`` files whenever ``raft_tls`` is on, by default whenever the HTTP API's TLS is), every Raft
link runs inside mutual TLS against the deployment's CA, and a dialler may only name itself with a Raft
address on a host its certificate names. A member with a certificate from another CA, or a plain-TCP
client, is refused at the handshake by every member - counted (``raft_tls_refused``) and logged - and so
never learns a term, a leader or an entry; the cluster goes on as if it did not exist. ``cluster_secret``
(pysyncobj's password) is then optional defence in depth inside TLS; without ``raft_tls`` it is the only
protection Raft traffic has. What is covered and why is in :mod:`agenda.db.rafttls`; how the handshake fits
pysyncobj's poller, in :class:`~agenda.db.pysyncobj_adapter.TlsConnection`.

Membership (``dynamicMembershipChange=True``) - pysyncobj changes the configuration one member at a time:
a MEMBERSHIP log entry carries the member's ``TCPNode``, every member switches to the new configuration as
soon as the entry is in its log (single-server changes, as in the Raft dissertation), and a log-compaction
dump records the configuration (our dump header's ``cluster``), so a change survives compaction and
restarts. What pysyncobj 0.3.17 lacks, this module adds:

* the directory: pysyncobj knows members only by Raft address. The ``TCPNode`` we put in the entry also
  carries the member's id and API address, and when the entry is applied (committed, in log order, on every
  member, also when the journal is replayed at start) :class:`_RaftKV` hands it to the state machine as a
  ``member_add``/``member_remove`` command. The directory thus changes in the very log entry that changes
  the Raft configuration, is part of every KV snapshot, and starts from the static ``--peer`` configuration
  - the same one pysyncobj starts from - which later entries and snapshots override.
* one change at a time: pysyncobj declares the rule but never records the pending entry; the adapter
  (:class:`~agenda.db.pysyncobj_adapter.RaftBase`) does, so a second change is refused until the first
  is applied on the leader.
* a joining member waits quietly: until it is added, the members hang up on it, yet pysyncobj counts the
  outgoing TCP connection as "connected" the moment it opens and therefore campaigns, raising its term at
  every election timeout; once added, that inflated term would depose the leader. The transport
  (:class:`~agenda.db.transport.DurableTransport`) counts an outgoing link as connected only once the peer
  has sent something over it, so an isolated member (new, or removed but still running) never campaigns.
* removing the leader: pysyncobj refuses it, so :meth:`Node.transfer_leadership` first hands leadership to
  the most caught-up follower (Raft's TimeoutNow) and the API forwards the removal to the new leader.
* pysyncobj's unauthenticated admin commands ``add``/``remove`` on the Raft port are refused: membership
  changes only go through the API, which keeps the directory in step.

Procedure. Adding: start the new member with ``--peer`` for every current member (it stays a follower that
knows no leader and does not campaign), then ``POST /v1/cluster/members {id, raft, api}`` on any member; the
member that receives it checks that the newcomer answers at ``api`` with that id and Raft address, and the
leader answers 201 once the change is committed; the newcomer then catches up (log entries or a snapshot).
Removing: ``DELETE /v1/cluster/members/ID``, then stop that member (it is no longer sent anything and
reports no quorum). Static ``--peer`` lists need not be edited: at restart the replicated configuration
wins over them.

Quorum: a majority of the *new* configuration must acknowledge a change, so growing a cluster of one or two
needs the newcomer running, and an even size tolerates no more failures than the odd size below it (four
members tolerate one, like three). Any size >= 1 is allowed; the last member cannot be removed.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from agenda.db.barrier import SharedBarrier
from agenda.db.commands import MEMBERSHIP_OPS, CheckedCommand, validate_command
from agenda.db.dump import DEFAULT_LOG_COMPACTION_ENTRIES, decode_dump, encode_dump
from agenda.db.durability import DurableFileJournal
from agenda.db.errors import (
    InvalidArgument,
    LastMember,
    LeaderUnknown,
    MembershipChangeInProgress,
    NodeError,
    NotLeader,
    OutcomeUnknown,
    ProposalFailed,
    StateMachineError,
)
from agenda.db.peers import Peer
from agenda.db.pysyncobj_adapter import (
    FAIL_REASON,
    RaftBase,
    SyncObjConf,
    TCPNode,
    journal_factory,
    replicated,
)
from agenda.db.rafttls import RaftTls
from agenda.db.readindex import Once, ReadIndex, majority_echoed, term_floor
from agenda.db.state import KVStateMachine
from agenda.db.tick import Waiter, Wakeup
from agenda.db.transport import DurableTransport
from agenda.db.txn import lease_expire_command, member_add_command, member_remove_command, noop_command

__all__ = [
    "DUMP_FILE",
    "JOURNAL_FILE",
    "Node",
    "RaftTimers",
    "Status",
    "map_failure",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

JOURNAL_FILE: Final = "raft.journal"
DUMP_FILE: Final = "raft.dump"
LOCK_FILE: Final = "LOCK"
# How often transfer_leadership re-asks pysyncobj: a denied request (the follower was not fully caught up)
# or a lost TimeoutNow is simply tried again.
_TRANSFER_RETRY: Final = 0.25


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


class _RaftKV(RaftBase):
    """The SyncObj: one replicated method that applies a command to the owner's state machine, plus the
    two membership hooks (see :class:`~agenda.db.pysyncobj_adapter.RaftBase`), both handed to the owner."""

    def __init__(
        self, owner: Node, self_addr: str, others: list[str], conf: SyncObjConf, tls: RaftTls | None
    ) -> None:
        self._owner = owner  # set before SyncObj.__init__: the tick thread may apply entries at once
        super().__init__(self_addr, others, conf, transport_class=DurableTransport, tls=tls)

    @replicated
    def apply_command(self, command: dict[str, Any]) -> dict[str, Any]:
        return self._owner._apply(command)

    def membership_entry_applied(self, request: list[Any]) -> Any:
        return self._owner._apply_membership_entry(request)

    def membership_entry_allowed(self, request: list[Any]) -> bool:
        return self._owner._membership_entry_allowed(request)


class Node:
    """A DB member: owns the state machine, the Raft object, the lease-expiry thread and the data dir."""

    def __init__(
        self,
        self_peer: Peer,
        peers: Sequence[Peer],
        data_dir: str | os.PathLike[str],
        *,
        cluster_secret: str | None = None,
        raft_tls: RaftTls | None = None,
        fsync: bool = True,
        timers: RaftTimers | None = None,
        proposal_timeout: float = 3.0,
        history_limit: int | None = None,
        log_compaction_entries: int = DEFAULT_LOG_COMPACTION_ENTRIES,
        lease_check_interval: float = 0.25,
    ) -> None:
        self.self_peer = self_peer
        self.peers: tuple[Peer, ...] = tuple(peers)  # the static configuration (--peer), self excluded
        self.data_dir = Path(data_dir)
        self.fsync = fsync
        self.timers = timers or RaftTimers()
        self.proposal_timeout = proposal_timeout
        self.log_compaction_entries = log_compaction_entries
        self._cluster_secret = cluster_secret
        self.raft_tls = raft_tls
        self._lease_check_interval = lease_check_interval
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._kv = KVStateMachine() if history_limit is None else KVStateMachine(history_limit=history_limit)
        # The directory starts as the static configuration, exactly as pysyncobj's member set does; the log
        # and snapshots then take over (they are applied on top of this seed at start-up).
        for peer in sorted((self_peer, *self.peers), key=lambda p: p.node_id):
            self._kv.apply(member_add_command(peer.node_id, peer.raft_addr, peer.api_addr))
        self._directory: tuple[Peer, ...] = ()
        self._by_raft: dict[str, Peer] = {}
        self._refresh_directory()
        self._membership_lock = threading.Lock()  # one membership change at a time from this member
        self._tick_calls: collections.deque[Callable[[], None]] = collections.deque()
        self._status = Status()
        self._stop = threading.Event()
        self._raft: _RaftKV | None = None
        self._journal: DurableFileJournal | None = None
        self._wakeup: Wakeup | None = None
        self._transport: DurableTransport | None = None
        self._sent_index = -1  # leader: last log index / commit index shipped by _flush_leader
        self._sent_commit = -1
        self._lock_fd: int | None = None
        self._expiry_thread: threading.Thread | None = None
        self.counters: dict[str, int] = {
            "proposals": 0,
            "proposal_failures": 0,
            "read_barriers": 0,
            "read_index_rounds": 0,
            "read_index_fallbacks": 0,
            "lease_expire_proposals": 0,
            "applied": 0,
            "raft_links_refused": 0,
            "raft_tls_refused": 0,
        }
        self._counters_lock = threading.Lock()
        self._barrier = SharedBarrier(self._read_round, lambda: map_failure("Timeout"))
        # Tick thread only: the ReadIndex rounds in flight, and whether one needs AppendEntries sent now.
        # A round unconfirmed after four heartbeat periods also proposes a no-op through the log; a
        # voter that has not echoed a stamp for that long does not count towards using ReadIndex.
        self._echo_window = 4 * self.timers.append_entries_period
        self._reads = ReadIndex(
            FAIL_REASON.SUCCESS, fallback_after=self._echo_window, forget_after=self.proposal_timeout
        )
        self._heartbeat_due = False

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Lock the data dir, open the journal, start Raft and the lease-expiry thread.

        Raises :class:`~agenda.db.journal_format.JournalCorrupted` when the journal cannot be trusted (a torn
        tail is cut and logged instead, see :mod:`agenda.db.durability`).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        journal_path = str(self.data_dir / JOURNAL_FILE)
        dump_path = str(self.data_dir / DUMP_FILE)
        conf = SyncObjConf(
            logCompactionMinEntries=self.log_compaction_entries,
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
            serializer=self._write_dump,
            deserializer=self._read_dump,
            dynamicMembershipChange=True,
            tcp_keepalive=(2, 1, 3),
            maxBindRetries=0,
        )

        def factory(path: str | None) -> DurableFileJournal:
            assert path is not None  # noqa: S101 - we always configure a journal file
            self._journal = DurableFileJournal(path, fsync=self.fsync, dump_path=dump_path)
            return self._journal

        try:
            with journal_factory(factory):
                others = [p.raft_addr for p in self.peers]
                self._raft = _RaftKV(self, self.self_peer.raft_addr, others, conf, self.raft_tls)
        except BaseException:
            # e.g. JournalCorrupted: nothing runs yet, but the data dir must not stay locked by a failed start
            self.stop()
            raise
        self._wakeup = Wakeup(self._raft.poller())
        transport = self._raft.transport()
        self._transport = transport if isinstance(transport, DurableTransport) else None
        self._raft.addOnTickCallback(self._on_tick)
        self._expiry_thread = threading.Thread(target=self._expiry_loop, name="lease-expiry", daemon=True)
        self._expiry_thread.start()
        log.info(
            "raft node started",
            extra={
                "node_id": self.self_peer.node_id,
                "raft_addr": self.self_peer.raft_addr,
                "fsync": self.fsync,
                "raft_tls": self.raft_tls is not None,
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

    def _apply_membership_entry(self, request: Sequence[Any]) -> dict[str, Any] | None:
        """Tick thread: mirror a committed pysyncobj membership entry ``[kind, address, TCPNode]`` in the
        directory; the result goes to the proposer's callback."""
        kind, _address, member = request
        raft_addr = getattr(member, "address", None)
        node_id, api_addr = getattr(member, "node_id", None), getattr(member, "api_addr", None)
        try:
            if kind == "add":
                command = member_add_command(node_id, raft_addr, api_addr)  # type: ignore[arg-type]
            elif kind == "rem":
                command = member_remove_command(raft_addr)  # type: ignore[arg-type]
            else:
                return None
        except InvalidArgument as exc:
            # Only entries written by another tool could lack our attributes; the Raft change stands.
            log.warning("membership entry %r left the directory unchanged: %s", request[:2], exc)
            return None
        result = self._apply(command)
        self._refresh_directory()
        log.info("membership changed", extra={"change": kind, "raft_addr": raft_addr, "member": node_id})
        return result

    def _membership_entry_allowed(self, request: Sequence[Any]) -> bool:
        """Tick thread, leader: the last check before a membership entry enters the log."""
        kind, _address, member = request
        if kind != "add":
            return True  # pysyncobj itself refuses to remove a non-member or the leader
        node_id, raft_addr = getattr(member, "node_id", None), getattr(member, "address", None)
        api_addr = getattr(member, "api_addr", None)
        try:
            self.read(lambda kv: kv.check_member_free(node_id, raft_addr, api_addr))  # type: ignore[arg-type]
        except StateMachineError:
            return False
        return True

    def _refresh_directory(self) -> None:
        """Republish the directory for lock-free readers (tick thread, or before Raft starts)."""
        with self._lock:
            rows = self._kv.members()
        directory = tuple(Peer(row["id"], row["raft"], row["api"]) for row in rows)
        by_raft = {peer.raft_addr: peer for peer in directory}
        by_raft.setdefault(self.self_peer.raft_addr, self.self_peer)
        self._directory, self._by_raft = directory, by_raft

    def _write_dump(self, file_name: str, data: Sequence[Any]) -> None:
        """pysyncobj log-compaction hook (tick thread, state == last applied): write the dump durably."""
        with self._lock:
            snapshot = self._kv.snapshot()
        payload = encode_dump(data, snapshot)
        with open(file_name, "wb") as f:
            f.write(payload)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def _read_dump(self, file_name: str) -> tuple[Any, Any, set[str]]:
        """pysyncobj hook at start-up and on snapshot install: restore the KV, return pysyncobj's part."""
        with open(file_name, "rb") as f:
            (last_entry, prev_entry, cluster), snapshot = decode_dump(f.read())
        with self._changed:
            self._kv.restore(snapshot)
            self._changed.notify_all()
        self._refresh_directory()
        # pysyncobj makes every address but its own self node a voter, yet compares the two as an address
        # string against a TCPNode, which never match: left in, this member would count itself twice.
        return last_entry, prev_entry, cluster - {self.self_peer.raft_addr}

    def _on_tick(self) -> None:
        raft = self._raft
        if raft is None:
            return
        if self._transport is not None and raft.is_leader():
            # This term's stamps start above every stamp of earlier terms (see agenda.db.readindex).
            floor = term_floor(raft.raftCurrentTerm)
            if self._transport.next_seq < floor:
                self._transport.next_seq = floor
        while self._tick_calls:
            call = self._tick_calls.popleft()
            try:
                call()
            except Exception:  # the tick thread must survive anything
                log.exception("call scheduled on the tick thread failed")
        if raft.is_leader():
            self._flush_leader(raft)
        else:
            self._sent_index = self._sent_commit = -1
        self._settle_reads(raft)
        if self._transport is not None:
            self.counters["raft_links_refused"] = self._transport.refused_links
            self.counters["raft_tls_refused"] = self._transport.tls_refused_links
        leader = raft.leader_node()
        self_addr = self.self_peer.raft_addr
        # pysyncobj's member set (not the directory) is what votes and commits: quorum is counted on it.
        voters = raft.otherNodes
        connected = frozenset(
            address
            for node in voters
            if (address := getattr(node, "address", None)) is not None
            and address != self_addr
            and raft.isNodeConnected(node)
        )
        self._status = Status(
            is_leader=raft.is_leader(),
            leader_raft_addr=getattr(leader, "address", None),
            term=raft.raftCurrentTerm,
            commit_index=raft.raftCommitIndex,
            applied_index=raft.raftLastApplied,
            connected=connected,
            has_quorum=len(connected) + 1 > (len(voters) + 1) / 2,
            updated=time.monotonic(),
        )

    def _call_in_tick(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the tick thread (pysyncobj's methods other than proposals are not thread-safe)."""
        self._tick_calls.append(call)
        if self._wakeup is not None:
            self._wakeup.notify()

    def _flush_leader(self, raft: _RaftKV) -> None:
        """Tick thread, leader: ship what this tick appended/committed, then fsync the leader's journal.

        Runs after pysyncobj appended the queued proposals (``_checkCommandsToApply``). One AppendEntries
        per follower carries every new entry; the leader's own fsync then overlaps with the followers'.
        """
        last_index = raft.last_log_index()
        commit_index = raft.raftCommitIndex
        if last_index != self._sent_index or commit_index != self._sent_commit or self._heartbeat_due:
            self._sent_index, self._sent_commit = last_index, commit_index
            self._heartbeat_due = False
            raft.send_append_entries()
        journal = self._journal
        if journal is not None and journal.dirty:
            journal.sync()
        if last_index > commit_index and not raft.otherNodes and self._wakeup is not None:
            # A cluster of one commits on its own fsync: nothing else (no follower's answer) would wake
            # the poller, and the write would wait a whole auto_tick_period (20 ms) for its commit.
            self._wakeup.notify()

    # ------------------------------------------------------------------------------------ queries

    @property
    def status(self) -> Status:
        return self._status

    @property
    def members(self) -> tuple[Peer, ...]:
        """The member directory (sorted by id) as this member last applied it."""
        return self._directory

    @property
    def journal_syncs(self) -> int:
        return self._journal.syncs if self._journal is not None else 0

    def is_leader(self) -> bool:
        raft = self._raft
        return raft is not None and raft.is_leader()

    def leader(self) -> Peer | None:
        """The member this node currently follows (itself when leading), or None."""
        raft = self._raft
        if raft is None:
            return None
        node = raft.leader_node()
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

        Raises :class:`~agenda.db.errors.InvalidArgument` before proposing anything malformed, and a
        :class:`NodeError` when the outcome is a failure or unknown.
        """
        # Same contract as pysyncobj's ``sync=True`` (wait for the result, 'Timeout' after ``timeout``),
        # but the tick thread is woken explicitly: in batched mode pysyncobj itself does not.
        waiter = Waiter()
        self._append(command, waiter.on_result)
        if not waiter.wait(timeout or self.proposal_timeout):
            return self._outcome(None, "Timeout")
        return self._outcome(waiter.result, waiter.error)

    def submit(
        self, command: dict[str, Any], on_done: Callable[[dict[str, Any] | None, NodeError | None], None]
    ) -> None:
        """:meth:`propose` without waiting: ``on_done(result, None)`` or ``on_done(None, error)`` is called
        once, on the tick thread, when the command is applied or has failed. Raises as :meth:`propose`
        for what fails before anything is proposed. No timeout: the caller bounds its wait and answers
        :meth:`timed_out` (the command may still commit).
        """

        def done(result: Any, error: Any) -> None:
            try:
                outcome = self._outcome(result, error)
            except NodeError as exc:
                on_done(None, exc)
                return
            on_done(outcome, None)

        self._append(command, done)

    def timed_out(self) -> NodeError:
        """The error of a submitted proposal whose result did not come in time."""
        return self._failure("Timeout")

    def _append(self, command: dict[str, Any], callback: Callable[[Any, Any], None]) -> None:
        """Check ``command`` and queue it for the tick thread, which calls ``callback(result, error)``."""
        validate_command(command)
        if type(command) is CheckedCommand:
            command = dict(command)  # the log holds plain dicts
        if command["op"] in MEMBERSHIP_OPS:
            # The directory must only change together with pysyncobj's configuration (add_member).
            raise InvalidArgument("op", "membership commands come from Raft membership entries only")
        raft = self._leading_raft()
        with self._counters_lock:
            self.counters["proposals"] += 1
        raft.apply_command(command, callback=callback)
        if self._wakeup is not None:
            self._wakeup.notify()

    def _outcome(self, result: Any, error: Any) -> dict[str, Any]:
        """A proposal's result, or its failure (pysyncobj's code, or 'Timeout') raised as a NodeError."""
        if error == FAIL_REASON.SUCCESS:
            if not isinstance(result, dict):  # pragma: no cover - apply_command always returns a dict
                raise OutcomeUnknown("no result from the state machine")
            return result
        raise self._failure(error)

    def _failure(self, reason: Any) -> NodeError:
        with self._counters_lock:
            self.counters["proposal_failures"] += 1
        return map_failure(reason)

    def _leading_raft(self) -> _RaftKV:
        """The Raft object if this member leads; LeaderUnknown / NotLeader otherwise."""
        raft = self._raft
        if raft is None or self._stop.is_set():
            raise LeaderUnknown("node is shutting down")
        if not raft.is_leader():
            if raft.leader_node() is None:
                raise LeaderUnknown("no leader is known")
            raise NotLeader("this member is not the leader")
        return raft

    # ----------------------------------------------------------------------------------- membership

    def add_member(self, peer: Peer, timeout: float | None = None) -> tuple[Peer, ...]:
        """Leader: add ``peer`` as a voting member; return the directory once the change is committed.

        Raises :class:`~agenda.db.errors.MemberExists` naming the clashing field,
        :class:`MembershipChangeInProgress` while another change is pending, or another :class:`NodeError`.
        """

        def entry(kv: KVStateMachine) -> TCPNode:
            kv.check_member_free(peer.node_id, peer.raft_addr, peer.api_addr)
            return TCPNode(peer.raft_addr, node_id=peer.node_id, api_addr=peer.api_addr)

        return self._change_membership("add", entry, timeout)

    def remove_member(self, node_id: str, timeout: float | None = None) -> tuple[Peer, ...]:
        """Leader: remove member ``node_id``; return the directory once the change is committed.

        Raises :class:`~agenda.db.errors.MemberNotFound`, :class:`LastMember`, :class:`NotLeader` when
        ``node_id`` is this leader (pysyncobj cannot remove its leader: :meth:`transfer_leadership` first),
        :class:`MembershipChangeInProgress` or another :class:`NodeError`.
        """

        def entry(kv: KVStateMachine) -> TCPNode:
            member = kv.require_member(node_id)
            if member["raft"] == self.self_peer.raft_addr:
                if len(kv.members()) == 1:
                    raise LastMember(f"{node_id} is the only member; a cluster needs at least one")
                raise NotLeader(f"{node_id} leads: transfer the leadership before removing it")
            return TCPNode(member["raft"], node_id=node_id, api_addr=member["api"])

        return self._change_membership("rem", entry, timeout)

    def _change_membership(
        self, kind: str, entry_for: Callable[[KVStateMachine], TCPNode], timeout: float | None
    ) -> tuple[Peer, ...]:
        """Append one membership entry (``entry_for`` checks the directory and builds it) and wait until it
        is applied here; the whole call, waits included, takes at most ``timeout``."""
        raft = self._leading_raft()
        deadline = time.monotonic() + (timeout or self.proposal_timeout)

        def remaining() -> float:
            return max(0.05, deadline - time.monotonic())

        if not self._membership_lock.acquire(timeout=remaining()):
            raise MembershipChangeInProgress("another membership change is being made through this member")
        try:
            # A no-op first: pysyncobj refuses changes until the leader's first entry of its term is applied
            # (a just-elected leader would refuse), and the directory then shows every earlier change.
            try:
                self.read_barrier(remaining())
            except (OutcomeUnknown, ProposalFailed) as exc:
                raise ProposalFailed(f"the no-op before the change failed, nothing changed: {exc}") from None
            entry = self.read(entry_for)
            waiter = Waiter()
            if kind == "add":
                raft.addNodeToCluster(entry, callback=waiter.on_result)
            else:
                raft.removeNodeFromCluster(entry, callback=waiter.on_result)
            if self._wakeup is not None:
                self._wakeup.notify()
            if not waiter.wait(remaining()):
                raise OutcomeUnknown("the membership change timed out; it may still be committed")
            if waiter.error == FAIL_REASON.REQUEST_DENIED:
                raise MembershipChangeInProgress(
                    "the leader refused the membership change: another change is not applied yet; retry"
                )
            if waiter.error != FAIL_REASON.SUCCESS:
                raise map_failure(waiter.error)
            return self.members
        finally:
            self._membership_lock.release()

    def transfer_leadership(self, timeout: float | None = None) -> Peer:
        """Leader: make the most caught-up connected follower the leader; return it once it leads.

        Raises :class:`LastMember` when there is no other member, and :class:`ProposalFailed` when no
        follower took over within ``timeout`` (none connected and caught up, or an election failed).
        """
        raft = self._leading_raft()
        if not raft.otherNodes:
            raise LastMember(f"{self.self_peer.node_id} is the only member")
        deadline = time.monotonic() + (timeout or self.proposal_timeout)
        next_request = 0.0
        while not self._stop.is_set() and (now := time.monotonic()) < deadline:
            successor = self.leader()
            if successor is not None and successor.raft_addr != self.self_peer.raft_addr:
                log.info("leadership transferred", extra={"leader": successor.node_id})
                return successor
            if now >= next_request and self.is_leader():
                # Denials (no follower is fully caught up yet) and lost TimeoutNow messages are retried.
                self._call_in_tick(lambda: raft.transferLeadership(None, None))
                next_request = now + _TRANSFER_RETRY
            self._stop.wait(self.timers.auto_tick_period)
        raise ProposalFailed("no follower took over the leadership in time; retry")

    def read_barrier(self, timeout: float | None = None) -> None:
        """Leader: return once local state reflects every write acknowledged before the call.

        One ReadIndex round (:mod:`agenda.db.readindex`), or a no-op through the log where ReadIndex
        cannot be used. Concurrent readers share rounds (:class:`~agenda.db.barrier.SharedBarrier`):
        each waits for one begun after it arrived.
        """
        with self._counters_lock:
            self.counters["read_barriers"] += 1
        self._barrier.wait(timeout or self.proposal_timeout)

    def _read_round(self, timeout: float) -> None:
        """One shared read round (see `read_barrier`, which counted its readers), waited for."""
        waiter = Waiter()
        self.read_round(lambda error: waiter.on_result(None, error), readers=0)
        if not waiter.wait(timeout):
            raise map_failure("Timeout")
        if waiter.error is not None:
            raise waiter.error

    def read_round(self, on_done: Callable[[NodeError | None], None], readers: int = 1) -> None:
        """One read round without waiting and without sharing (the caller shares it among the ``readers``
        that arrived before it began, and bounds their wait): ``on_done(None)`` on the tick thread once it
        has completed (see :meth:`read_barrier`), ``on_done(error)`` if it failed. Raises as a proposal
        would when this member does not lead."""
        self._leading_raft()
        with self._counters_lock:
            self.counters["read_barriers"] += readers

        def outcome(_result: Any, error: Any) -> None:
            on_done(None if error == FAIL_REASON.SUCCESS else map_failure(error))

        self._call_in_tick(lambda: self._begin_read(outcome))

    def _begin_read(self, on_result: Callable[[Any, Any], None]) -> None:
        """Tick thread: begin a ReadIndex round for `on_result`, or propose its no-op (see the module)."""
        raft, transport = self._raft, self._transport
        if raft is None or transport is None or not raft.is_leader():
            on_result(None, FAIL_REASON.NOT_LEADER)
            return
        start = raft.term_start_index()
        commit_index = raft.raftCommitIndex
        term, now = raft.raftCurrentTerm, time.monotonic()
        # Voters that echoed a stamp of this term lately: without a majority of them, straight to the log.
        echoing = {
            node: seq
            for node, seq in transport.acked.items()
            if now - transport.echoed_at.get(node, float("-inf")) <= self._echo_window
        }
        done = Once(on_result)
        if (
            start is None
            or commit_index < start
            or not majority_echoed(raft.otherNodes, echoing, term_floor(term))
        ):
            self._read_by_noop(raft, done)
            return
        self._reads.begin(term=term, commit_index=commit_index, seq=transport.next_seq, now=now, done=done)
        self._heartbeat_due = True  # _flush_leader sends AppendEntries in this very tick
        with self._counters_lock:
            self.counters["read_index_rounds"] += 1

    def _settle_reads(self, raft: _RaftKV) -> None:
        """Tick thread: serve the ReadIndex rounds that can be, redo by the log those that cannot."""
        if not self._reads.pending or self._transport is None:
            return
        redo = self._reads.settle(
            now=time.monotonic(),
            leading=raft.is_leader(),
            term=raft.raftCurrentTerm,
            applied=raft.raftLastApplied,
            voters=raft.otherNodes,
            acked=self._transport.acked,
        )
        for read in redo:
            with self._counters_lock:
                self.counters["read_index_fallbacks"] += 1
            self._read_by_noop(raft, read.done)

    def _read_by_noop(self, raft: _RaftKV, done: Callable[[Any, Any], None]) -> None:
        """Tick thread: a read barrier the old way, a no-op through the log; `done` gets its outcome."""

        def outcome(result: Any, error: Any) -> None:
            if error != FAIL_REASON.SUCCESS:
                with self._counters_lock:
                    self.counters["proposal_failures"] += 1
            done(result, error)

        with self._counters_lock:
            self.counters["proposals"] += 1
        raft.apply_command(noop_command(), callback=outcome)
        if self._wakeup is not None:
            self._wakeup.notify()  # _checkCommandsToApply already ran in this tick

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
