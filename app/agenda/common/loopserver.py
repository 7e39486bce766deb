"""An event-loop front for the keep-alive WSGI server: one thread owns every connection.

The threaded server (:mod:`agenda.common.httpserver`) gives each connection a thread that blocks in
``recv``. Under many concurrent clients that costs more than the requests themselves in a Python
process: every request wakes its thread, which then contends with all the others (and with the Raft
tick thread, in agenda-db) for the GIL, and most of the process's time goes to the kernel handing the
GIL and the CPU back and forth. This server keeps the same WSGI application, the same handler and the
same bytes on the wire, and changes who waits:

* one loop thread accepts, completes TLS handshakes without blocking, reads, and frames requests
  (request line, headers, ``Content-Length`` body), with an ``epoll`` selector;
* a complete request is first offered to a *fast handler* (:class:`FastHandler`), which may answer it
  asynchronously from another thread (agenda-db's writes: the Raft tick thread hands back a batch of
  results in one wake-up), without any thread per request;
* otherwise a worker thread (a pool that grows with the number of requests in flight, so long-polling
  watches never starve anything) runs the unchanged :class:`~agenda.common.httpserver.KeepAliveRequestHandler`
  on exactly that request and gives the connection back to the loop;
* a request the loop does not frame itself (a chunked body, ``Expect: 100-continue``, a body or header
  block over the limits, anything not plain HTTP/1.1) hands the connection over for good to a thread
  of its own, as the threaded server would have served it, with the bytes already read put back in
  front. The loop only ever accepts what it frames exactly; anything else is answered by the same code
  as before, so both servers give the same answers.

A connection is read only while it has no request in flight, so pipelined requests are answered in
order. An idle connection, or one that does not complete its handshake or request, is closed after
``IDLE_TIMEOUT`` (as the threaded server's read timeout).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import logging
import os
import queue
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from werkzeug.serving import ThreadedWSGIServer

from agenda.common.httpserver import IDLE_TIMEOUT, KeepAliveRequestHandler

__all__ = ["FastHandler", "LoopWSGIServer", "Request", "make_loop_server", "parse_head"]

log = logging.getLogger("agenda.http")
# The access log of the threaded server (Werkzeug's logger, INFO; the services enable it at DEBUG level):
# the loop's own answers go to it too, in the same format, so the log lists every request.
_access_log = logging.getLogger("werkzeug")

MAX_HEAD: Final = 64 * 1024  # a bigger header block goes to a thread (which answers 431 as before)
MAX_FRAMED_BODY: Final = 4 * 1024 * 1024  # bodies the loop buffers itself; larger ones go to a thread
_RECV_SIZE: Final = 256 * 1024
_SWEEP_INTERVAL: Final = 1.0
_WORKER_IDLE: Final = 60.0  # a worker thread with nothing to do for this long ends
_REQUEST_LINE: Final = re.compile(rb"([A-Z]{1,16}) (/(?!/)[!-~]*) HTTP/1\.1\Z")
# Header names the loop must see exactly once to frame a request, or not at all.
_FRAMING: Final = frozenset({"content-length", "transfer-encoding", "expect", "connection"})


@dataclass(frozen=True, slots=True)
class Request:
    """One framed HTTP/1.1 request: method, target (path and query), headers (lower-case names; a name
    sent twice has its values joined with ``,`` as WSGI does), body, and whether the client asked to
    close the connection after it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    close: bool
    raw: bytes  # the request as received (head and body): what a worker thread is given

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]] | None:
    """Method, target and headers of a header block (without its final blank line), or None when the
    loop should not frame it itself: not ``METHOD /target HTTP/1.1``, a line without a colon, a folded
    line, a name with a space or not ASCII, a framing header repeated, more than 100 headers."""
    lines = head.split(b"\r\n")
    match = _REQUEST_LINE.match(lines[0])
    if match is None or len(lines) > 101:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or not name.isascii() or b" " in name or b"\t" in name or b"\n" in line:
            return None
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("iso-8859-1")
        if key in headers:
            if key in _FRAMING:
                return None
            text = f"{headers[key]},{text}"
        headers[key] = text
    return match.group(1).decode("ascii"), match.group(2).decode("ascii"), headers


def _log_access(address: str, request: Request, data: bytes) -> None:
    """One access-log line as Werkzeug writes it: client, time, request line, status, body size."""
    code = data[9:12].decode("ascii", "replace")  # "HTTP/1.1 200 ..."
    head_end = data.find(b"\r\n\r\n")
    size = len(data) - head_end - 4 if head_end >= 0 else 0
    # The target needs no escaping: the loop only frames printable ASCII targets (_REQUEST_LINE).
    when = time.strftime("%d/%b/%Y %H:%M:%S")
    _access_log.info(
        '%s - - [%s] "%s %s HTTP/1.1" %s %s', address, when, request.method, request.target, code, size
    )


class FastHandler(Protocol):
    """What the loop offers each framed request to before a worker thread gets it."""

    def handle(self, request: Request, respond: Callable[[bytes, bool], None]) -> bool:
        """Start answering ``request`` and return True, or return False (before any side effect) to let
        a worker thread answer it. ``respond(data, close)`` must then be called exactly once, from any
        thread, with the whole response (``close``: close the connection after it)."""

    def expire(self, now: float) -> None:
        """Called on the loop thread about once a second: answer what has waited too long."""


class _Conn:
    __slots__ = ("addr", "busy", "close_after", "handshaking", "inbuf", "last", "outbuf", "sock")

    def __init__(self, sock: socket.socket, addr: Any, handshaking: bool) -> None:
        self.sock = sock
        self.addr = addr
        self.inbuf = bytearray()
        self.outbuf = b""
        self.busy = False  # a request is in flight: the connection is not read
        self.close_after = False
        self.handshaking = handshaking
        self.last = time.monotonic()


class _PrefixedReader(io.RawIOBase):
    """The bytes the loop already read, then the socket: what a connection handed over for good reads."""

    def __init__(self, prefix: bytes, sock: socket.socket) -> None:
        self._prefix = memoryview(prefix)
        self._raw = socket.SocketIO(sock, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        return self._raw.readinto(buffer)


class _LoopRequestHandler(KeepAliveRequestHandler):
    """The keep-alive handler, given what the loop read before the connection came to its thread."""

    def setup(self) -> None:
        super().setup()
        prefix = self.server.take_prefetched(self.connection)
        if prefix:
            size = self.rbufsize if self.rbufsize > 0 else io.DEFAULT_BUFFER_SIZE
            self.rfile = io.BufferedReader(_PrefixedReader(prefix, self.connection), size)


class _OneRequestHandler(KeepAliveRequestHandler):
    """The keep-alive handler answering one framed request (read from memory) on a worker thread."""

    def __init__(self, raw: bytes, sock: socket.socket, addr: Any, server: Any) -> None:
        self._raw = raw
        super().__init__(sock, addr, server)

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BytesIO(self._raw)

    def handle(self) -> None:
        self.close_connection = True  # unless the request is answered and asks for nothing else
        try:
            self.handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away while being answered
        except Exception as exc:
            self.close_connection = True  # whatever was sent of the answer, nothing more can be
            if self.server.ssl_context is not None and isinstance(exc, ssl.SSLError):
                self.log_error("SSL error occurred: %s", exc)
            else:
                log.exception("error on a request")


class LoopWSGIServer(ThreadedWSGIServer):
    """Werkzeug's threaded server with :meth:`serve_forever` replaced by the event loop (module doc).

    Same constructor, same ``app``, ``ssl_context`` and handler; ``fast_handler`` may be set before
    :meth:`serve_forever` starts.
    """

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("handler", _LoopRequestHandler)
        super().__init__(*args, **kwargs)
        self.fast_handler: FastHandler | None = None
        self._selector = selectors.DefaultSelector()
        self._conns: dict[int, _Conn] = {}
        self._inbox: collections.deque[Callable[[], None]] = collections.deque()
        self._wake_pending = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._stopping = False
        self._stopped = threading.Event()
        self._prefetched: dict[int, bytes] = {}
        self._prefetched_lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[_Conn, bytes] | None] = queue.SimpleQueue()
        self._workers_lock = threading.Lock()
        self._idle_workers = 0

    @property
    def server_version(self) -> str:
        """The ``Server`` header the handler sends (Werkzeug's)."""
        return self._server_version

    # ------------------------------------------------------------------ loop control (any thread)

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop thread (thread-safe; one wake-up for many calls)."""
        self._inbox.append(callback)
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_write, b"w")

    def shutdown(self) -> None:
        self._stopping = True
        self.call_soon(lambda: None)
        self._stopped.wait()

    def take_prefetched(self, sock: socket.socket) -> bytes:
        with self._prefetched_lock:
            return self._prefetched.pop(id(sock), b"")

    # ------------------------------------------------------------------ the loop

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        listener = self.socket
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        next_sweep = time.monotonic() + _SWEEP_INTERVAL
        try:
            while not self._stopping:
                for key, events in self._selector.select(_SWEEP_INTERVAL):
                    conn = key.data
                    try:
                        if conn is None:
                            if key.fileobj is listener:
                                self._accept(listener)
                            else:
                                self._drain_inbox()
                        elif events & selectors.EVENT_WRITE:
                            self._flush(conn)
                        else:
                            self._on_readable(conn)
                    except Exception:  # a bug must cost one connection, never the server
                        log.exception(
                            "the HTTP loop failed on %s", "a wake-up" if conn is None else conn.addr[0]
                        )
                        if conn is not None:
                            self._close(conn)
                if self._inbox:
                    self._drain_inbox()
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + _SWEEP_INTERVAL
                    try:
                        self._sweep(now)
                    except Exception:  # see above
                        log.exception("the HTTP loop's sweep failed")
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            for _ in range(self._idle_workers):
                self._jobs.put(None)
            self._selector.close()
            self.server_close()
            self._stopped.set()

    def _drain_inbox(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass
        self._wake_pending = False  # after the drain: see agenda.db.tick.Wakeup
        inbox = self._inbox
        while inbox:
            try:
                inbox.popleft()()
            except Exception:  # see serve_forever
                log.exception("an answer handed to the HTTP loop failed")

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, addr = socket.socket.accept(listener)  # a plain socket even if `listener` is TLS
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, a connection reset before accept...
                if exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            conn = _Conn(sock, addr, handshaking=self.ssl_context is not None)
            self._conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _sweep(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if not c.busy and now - c.last > IDLE_TIMEOUT]:
            self._close(conn)
        if self.fast_handler is not None:
            self.fast_handler.expire(now)

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock.fileno(), None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _watch(self, conn: _Conn, events: int) -> None:
        with contextlib.suppress(KeyError):
            self._selector.modify(conn.sock, events, conn)
            return
        self._selector.register(conn.sock, events, conn)

    def _unwatch(self, conn: _Conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)

    def _on_readable(self, conn: _Conn) -> None:
        sock = conn.sock
        conn.last = time.monotonic()
        if conn.handshaking:
            try:
                sock.do_handshake()  # type: ignore[attr-defined]
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            except (OSError, ValueError) as exc:  # a client without an accepted certificate, a scan...
                log.info("TLS handshake with %s failed: %s", conn.addr[0], exc)
                self._close(conn)
                return
            conn.handshaking = False
            self._watch(conn, selectors.EVENT_READ)
        try:
            while True:
                data = sock.recv(_RECV_SIZE)
                if not data:
                    self._close(conn)
                    return
                conn.inbuf += data
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    break
        except (BlockingIOError, ssl.SSLWantReadError, InterruptedError):
            pass
        except ssl.SSLWantWriteError:  # renegotiation is off in TLS 1.3; wait and read again
            pass
        except (OSError, ValueError):
            self._close(conn)
            return
        self._next_request(conn)

    def _next_request(self, conn: _Conn) -> None:
        """Frame the next request in ``conn``'s buffer and start it, or wait for more bytes."""
        buffer = conn.inbuf
        if not buffer:
            return
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        if end < 0:
            line_end = buffer.find(b"\n")
            # over the limit, or not CRLF-delimited (a bare-LF client would wait for CRLFCRLF forever)
            if (
                len(buffer) > MAX_HEAD
                or (line_end >= 0 and buffer[line_end - 1 : line_end] != b"\r")
                or (b"\n\n" in buffer)
            ):
                self._hand_over(conn)
            return
        parsed = parse_head(bytes(buffer[:end]))
        if parsed is None:
            self._hand_over(conn)
            return
        method, target, headers = parsed
        if "transfer-encoding" in headers or "expect" in headers:
            self._hand_over(conn)
            return
        length_text = headers.get("content-length", "0")
        if not (length_text.isascii() and length_text.isdigit() and len(length_text) < 10):
            self._hand_over(conn)
            return
        length = int(length_text)
        if length > MAX_FRAMED_BODY:
            self._hand_over(conn)
            return
        total = end + 4 + length
        if len(buffer) < total:
            return
        raw = bytes(buffer[:total])
        del buffer[:total]
        connection = headers.get("connection", "").lower()
        request = Request(method, target, headers, raw[end + 4 :], connection == "close", raw)
        conn.busy = True
        self._unwatch(conn)
        fast = self.fast_handler
        if fast is not None:
            try:
                started = fast.handle(request, lambda data, close: self._respond(conn, request, data, close))
            except Exception:
                log.exception("fast handler failed before answering; a worker answers instead")
                started = False
            if started:
                return
        self._to_worker(conn, raw)

    # ------------------------------------------------------------------ answers

    def _respond(self, conn: _Conn, request: Request, data: bytes, close: bool) -> None:
        """The fast handler's answer (any thread): written by the loop, and logged as a worker's would be."""
        if _access_log.isEnabledFor(logging.INFO):
            _log_access(conn.addr[0], request, data)
        self.call_soon(lambda: self._write(conn, data, close))

    def _is_open(self, conn: _Conn) -> bool:
        return conn.sock.fileno() >= 0 and self._conns.get(conn.sock.fileno()) is conn

    def _write(self, conn: _Conn, data: bytes, close: bool) -> None:
        if not self._is_open(conn):
            return  # closed meanwhile (shutdown)
        conn.outbuf = data
        conn.close_after = close
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        if conn.handshaking:  # the handshake wanted to write
            self._on_readable(conn)
            return
        try:
            while conn.outbuf:
                sent = conn.sock.send(conn.outbuf)
                conn.outbuf = conn.outbuf[sent:]
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError, InterruptedError):
            self._watch(conn, selectors.EVENT_WRITE)
            return
        except (OSError, ValueError):
            self._close(conn)
            return
        self._resume(conn, conn.close_after)

    def _resume(self, conn: _Conn, close: bool) -> None:
        """The answer is sent: close, or read the next request (perhaps already buffered)."""
        if not self._is_open(conn):
            return  # closed meanwhile (shutdown)
        if close:
            self._close(conn)
            return
        conn.busy = False
        conn.last = time.monotonic()
        self._watch(conn, selectors.EVENT_READ)
        if conn.inbuf:
            self._next_request(conn)

    # ------------------------------------------------------------------ threads

    def _to_worker(self, conn: _Conn, raw: bytes) -> None:
        with self._workers_lock:
            start = self._idle_workers == 0
            if not start:
                self._idle_workers -= 1
        self._jobs.put((conn, raw))
        if start:
            threading.Thread(target=self._work, name="http-worker", daemon=True).start()

    def _work(self) -> None:
        """A worker thread: answer framed requests with the keep-alive handler, one at a time."""
        while True:
            try:
                job = self._jobs.get(timeout=_WORKER_IDLE)
            except queue.Empty:
                with self._workers_lock:
                    if self._idle_workers == 0:
                        continue  # a job was promised to an idle worker: stay for it
                    self._idle_workers -= 1
                return
            if job is None:
                return
            conn, raw = job
            close = True
            try:  # (the handler's setup gives the socket the handler's timeout for writing the answer)
                handler = _OneRequestHandler(raw, conn.sock, conn.addr, self)
                close = handler.close_connection
                conn.sock.setblocking(False)
            except Exception:
                log.exception("error on a request from %s", conn.addr[0])
            self.call_soon(lambda conn=conn, close=close: self._resume(conn, close))
            with self._workers_lock:
                self._idle_workers += 1

    def _hand_over(self, conn: _Conn) -> None:
        """Give the connection to a thread of its own for good (see the module doc)."""
        self._unwatch(conn)
        self._conns.pop(conn.sock.fileno(), None)
        with self._prefetched_lock:
            self._prefetched[id(conn.sock)] = bytes(conn.inbuf)
        conn.sock.setblocking(True)
        self.process_request(conn.sock, conn.addr)


def make_loop_server(host: str, port: int, app: Any, *, ssl_context: Any = None) -> LoopWSGIServer:
    """The event-loop keep-alive server (bound, not yet serving); ``fast_handler`` is set by the caller."""
    return LoopWSGIServer(host, port, app, ssl_context=ssl_context)
