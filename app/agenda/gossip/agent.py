"""The gossip node's I/O: a UDP socket for probes and gossip, TCP for push/pull, one thread driving it.

:class:`~agenda.gossip.protocol.Node` is pure; this wraps it thinly. One *loop thread* owns the node:
it alone calls ``start``/``tick``/``receive``/``update``/``leave``, so the core needs no locks. The loop
waits in a selector on the UDP socket and a wake-up pipe until the node's next deadline, feeds every
datagram to ``receive`` and calls ``tick`` when the deadline passes; what the node returns is carried
out at once (datagrams sent from the loop, which never blocks on UDP) or handed over (streams).

Push/pull runs over TCP, one exchange per connection, each message framed by a 4-byte big-endian length:

* outgoing (a :class:`~agenda.gossip.protocol.Send` with ``stream``): a short-lived thread connects,
  writes the request, reads the answer and passes it back to the loop as a stream ``receive``. At most
  ``max_streams`` run at once; beyond that a push/pull is dropped and counted (the next one repairs
  whatever it would have), so a member with many dead peers cannot pile up threads on connect timeouts;
* incoming: the accept thread gives each connection a thread that reads one request (bounded size and
  time) and passes it to the loop under a token address (``tcp:<n>``); the node answers to that token,
  and the answer is written back on the same connection.

Other threads talk to the node only through :meth:`Agent.call`, which runs a function in the loop
thread and returns its result; :attr:`Agent.members` is an immutable snapshot the loop republishes on
every change, and ``on_change`` is called (in the loop thread, so it must be quick) with that snapshot.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from agenda.gossip.keyring import OVERHEAD
from agenda.gossip.member import Member
from agenda.gossip.messages import MAX_STREAM
from agenda.gossip.protocol import Changed, Node, NodeStatus, Output, Send

__all__ = ["Agent", "IoCounters", "format_addr", "parse_addr"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_FRAME: Final = struct.Struct(">I")
MAX_FRAME: Final = MAX_STREAM + OVERHEAD
_DATAGRAMS_PER_WAKE: Final = 64  # drained per readiness, so a flood cannot starve the timers
_RECV_BUFFER: Final = 65_535


def parse_addr(addr: str, *, any_port: bool = False) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a socket address; ValueError naming what is wrong.

    Port 0 (the kernel picks one) only with ``any_port``: a bind address in tests, never a peer's."""
    host, sep, port = addr.rpartition(":")
    lowest = 0 if any_port else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise ValueError(f"address must be host:port, got {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def format_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class IoCounters:
    """What the I/O layer dropped or failed at (the node counts what it received and decoded)."""

    datagrams_in: int = 0
    datagrams_out: int = 0
    send_errors: int = 0  # sendto failed (unreachable host, full buffer): the protocol copes with loss
    streams_out: int = 0
    streams_in: int = 0
    stream_errors: int = 0  # connect, read or write failed or timed out
    streams_dropped: int = 0  # over max_streams, or a frame too large
    callback_errors: int = 0


@dataclass
class _Inbound:
    data: bytes
    src: str
    stream: bool = False
    answer: Future[bytes | None] | None = None  # an incoming push/pull waiting for the node's answer


@dataclass
class _Command:
    fn: Callable[[Node, float], Any]
    result: Future[Any] = field(default_factory=Future)


# Port 0: the UDP port the kernel picks may be a TCP port in use (any outgoing connection's); so
# many tries that a busy machine never runs out, each a fresh UDP port.
_ANY_PORT_TRIES: Final = 20


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same port of `host`, the TCP one listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for attempt in range(1 if port else _ANY_PORT_TRIES):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((host, port))
            # The same port for both, as memberlist: one address per member.
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(64)
        except OSError as exc:
            udp.close()
            tcp.close()
            if port or exc.errno != errno.EADDRINUSE or attempt == _ANY_PORT_TRIES - 1:
                raise
            continue
        return udp, tcp
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class Agent:
    """Runs ``node`` on real sockets bound at ``bind`` (``host:port``; port 0 picks one, for tests).

    The node's own ``addr`` must be where others reach this agent; tests bind port 0 and build the node
    after :meth:`bind`, with :attr:`address`.
    """

    def __init__(
        self,
        bind: str,
        *,
        connect_timeout: float = 1.0,
        stream_timeout: float = 5.0,
        max_streams: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        host, port = parse_addr(bind, any_port=True)
        self._udp, self._tcp = _bind_pair(host, port)
        self._udp.setblocking(False)
        self.address = format_addr(host, self._udp.getsockname()[1])
        self.connect_timeout = connect_timeout
        self.stream_timeout = stream_timeout
        self.io = IoCounters()
        self._clock = clock
        self._node: Node | None = None
        self._inbox: queue.SimpleQueue[_Inbound | _Command] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._streams = threading.BoundedSemaphore(max_streams)
        self._tokens = itertools.count(1)
        self._pending: dict[str, Future[bytes | None]] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._on_change: Callable[[Mapping[str, Member]], None] | None = None
        self._members: Mapping[str, Member] = {}

    # Life cycle --------------------------------------------------------------------------------------

    def start(
        self,
        node: Node,
        seeds: Sequence[str] = (),
        *,
        on_change: Callable[[Mapping[str, Member]], None] | None = None,
    ) -> None:
        """Start ``node`` (contacting ``seeds``) in the loop thread, and accept push/pull connections."""
        if self._node is not None:
            raise RuntimeError("start() twice")
        self._node = node
        self._on_change = on_change
        self._members = node.members
        for target, name in ((self._loop, "gossip-loop"), (self._accept, "gossip-accept")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.call(lambda n, now: self._carry_out(n.start(now, seeds)))

    def leave(self, timeout: float = 5.0) -> bool:
        """Announce the leave and wait (bounded) until it has gone out; True when it did."""
        self.call(lambda n, now: self._carry_out(n.leave(now)))
        deadline = self._clock() + timeout
        while self._clock() < deadline:
            if self.call(lambda n, _now: n.status) is NodeStatus.LEFT:
                return True
            self._stopping.wait(0.05)
        return False

    def stop(self) -> None:
        """Stop the threads and close the sockets (without a leave: call :meth:`leave` first)."""
        self._stopping.set()
        self._wake()
        with contextlib.suppress(OSError):
            # Unblocks accept(): shutdown wakes it on Linux, close alone does not.
            self._tcp.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # Access from other threads -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """The loop thread is alive: False after :meth:`stop`, or when it died of an error (logged)."""
        return bool(self._threads) and self._threads[0].is_alive()

    @property
    def members(self) -> Mapping[str, Member]:
        """The node's view as of its last change (an immutable snapshot; safe from any thread)."""
        return self._members

    def call(self, fn: Callable[[Node, float], T], timeout: float = 10.0) -> T:
        """Run ``fn(node, now)`` in the loop thread and return what it returns (or raise what it raised).

        ``fn`` must carry out what it gets from the node: pass its outputs to ``self._carry_out``, as
        :meth:`update` does."""
        if self._stopping.is_set() or not self.running:
            raise RuntimeError("the agent is stopped")
        command = _Command(fn)
        self._inbox.put(command)
        self._wake()
        return command.result.result(timeout=timeout)

    def update(self, *, state: str) -> None:
        """Announce a new ``state`` (e.g. "draining") at once."""
        self.call(lambda n, now: self._carry_out(n.update(now, state=state)))

    # The loop thread ---------------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _loop(self) -> None:
        try:
            self._run_loop()
        except Exception:
            # A bug in the core: the thread ends (`running` turns False) rather than spin on it; the
            # daemon sees that and exits, so that systemd starts a fresh member.
            log.exception("the gossip loop stopped on an error")

    def _run_loop(self) -> None:
        node = self._node
        assert node is not None  # noqa: S101 - start() sets it before the thread runs
        with selectors.DefaultSelector() as selector:
            selector.register(self._udp, selectors.EVENT_READ, "udp")
            selector.register(self._wake_r, selectors.EVENT_READ, "wake")
            while not self._stopping.is_set():
                deadline = node.next_deadline()
                timeout = 1.0 if deadline is None else min(1.0, max(0.0, deadline - self._clock()))
                for key, _ in selector.select(timeout):
                    if key.data == "udp":
                        self._read_datagrams(node)
                    else:
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(4096)
                self._drain_inbox(node)
                deadline = node.next_deadline()
                now = self._clock()
                if deadline is not None and now >= deadline:
                    self._carry_out(node.tick(now))
        # Anyone still waiting on a command is told, not left hanging.
        self._drain_inbox(node, stopped=True)

    def _read_datagrams(self, node: Node) -> None:
        for _ in range(_DATAGRAMS_PER_WAKE):
            try:
                data, src = self._udp.recvfrom(_RECV_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued by an earlier send (port unreachable): nothing to read
                continue
            self.io.datagrams_in += 1
            self._carry_out(node.receive(self._clock(), format_addr(src[0], src[1]), data))

    def _drain_inbox(self, node: Node, *, stopped: bool = False) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Command):
                if stopped:
                    item.result.set_exception(RuntimeError("the agent is stopped"))
                    continue
                try:
                    item.result.set_result(item.fn(node, self._clock()))
                except Exception as exc:  # handed to the caller, which raises it
                    item.result.set_exception(exc)
                continue
            if stopped:
                if item.answer is not None:
                    item.answer.set_result(None)
                continue
            if item.answer is not None:
                self._pending[item.src] = item.answer
            try:
                self._carry_out(node.receive(self._clock(), item.src, item.data, stream=item.stream))
            finally:
                answer = self._pending.pop(item.src, None)
                if answer is not None and not answer.done():
                    answer.set_result(None)  # nothing to answer (it did not open, or was a reply)

    def _carry_out(self, outputs: list[Output]) -> None:
        changed = False
        for output in outputs:
            if isinstance(output, Changed):
                changed = True
            elif output.stream:
                self._send_stream(output)
            else:
                self._send_datagram(output)
        if changed:
            assert self._node is not None  # noqa: S101 - only the loop calls this, after start()
            self._members = self._node.members
            if self._on_change is not None:
                try:
                    self._on_change(self._members)
                except Exception:
                    self.io.callback_errors += 1
                    log.exception("gossip on_change callback failed")

    def _send_datagram(self, send: Send) -> None:
        try:
            self._udp.sendto(send.data, parse_addr(send.addr))
            self.io.datagrams_out += 1
        except (OSError, ValueError) as exc:
            self.io.send_errors += 1
            log.debug("datagram to %s not sent: %s", send.addr, exc)

    def _send_stream(self, send: Send) -> None:
        pending = self._pending.get(send.addr)
        if pending is not None:  # the answer to an incoming push/pull: its connection writes it
            pending.set_result(send.data)
            del self._pending[send.addr]
            return
        if not self._streams.acquire(blocking=False):
            self.io.streams_dropped += 1
            return
        thread = threading.Thread(target=self._exchange, args=(send,), name="gossip-push-pull", daemon=True)
        thread.start()

    # Stream threads ----------------------------------------------------------------------------------

    def _exchange(self, send: Send) -> None:
        """An outgoing push/pull: connect, send, read the answer into the loop."""
        try:
            try:
                host, port = parse_addr(send.addr)
                with socket.create_connection((host, port), timeout=self.connect_timeout) as conn:
                    conn.settimeout(self.stream_timeout)
                    conn.sendall(_FRAME.pack(len(send.data)) + send.data)
                    answer = _read_frame(conn)
            except (OSError, ValueError) as exc:
                self.io.stream_errors += 1
                log.debug("push/pull with %s failed: %s", send.addr, exc)
                return
            self.io.streams_out += 1
            if answer:
                self._inbox.put(_Inbound(answer, send.addr, stream=True))
                self._wake()
        finally:
            self._streams.release()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _peer = self._tcp.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)  # EMFILE and the like: do not spin
                continue
            if not self._streams.acquire(blocking=False):
                self.io.streams_dropped += 1
                conn.close()
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), name="gossip-serve", daemon=True)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        """An incoming push/pull: one request in, the node's answer (if any) out, on one connection."""
        try:
            with conn:
                conn.settimeout(self.stream_timeout)
                try:
                    request = _read_frame(conn)
                except (OSError, ValueError) as exc:
                    self.io.stream_errors += 1
                    log.debug("push/pull request not read: %s", exc)
                    return
                self.io.streams_in += 1
                answer: Future[bytes | None] = Future()
                self._inbox.put(_Inbound(request, f"tcp:{next(self._tokens)}", stream=True, answer=answer))
                self._wake()
                try:
                    data = answer.result(timeout=self.stream_timeout)
                    if data is not None:
                        conn.sendall(_FRAME.pack(len(data)) + data)
                except (OSError, TimeoutError) as exc:
                    self.io.stream_errors += 1
                    log.debug("push/pull answer not written: %s", exc)
        finally:
            self._streams.release()


def _read_frame(conn: socket.socket) -> bytes:
    """One length-prefixed message; ValueError when its announced length is out of bounds."""
    (length,) = _FRAME.unpack(_read_exactly(conn, _FRAME.size))
    if not 0 < length <= MAX_FRAME:
        raise ValueError(f"a frame of {length} bytes is out of bounds")
    return _read_exactly(conn, length)


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = conn.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise ConnectionError("the peer closed the connection mid-message")
        chunks += chunk
    return bytes(chunks)
