"""A small keep-alive HTTP/1.1 client transport for `agenda.common.http.HttpClient`.

The services call each other with small request/response pairs on kept-alive connections. urllib3
(under requests) spent more CPU per call than the rest of a gateway request: its connection-pool
bookkeeping, its URL re-parsing, ``http.client``'s header handling (one ``putheader`` call per header,
and an ``email`` parser for every response's headers). This transport writes a request in one
``sendall`` and reads the response with plain line reads, and keeps what HttpClient's rules depend on:

* the same exceptions, shaped as requests/urllib3 shape them (``_never_sent`` in
  `agenda.common.http` reads them): a connection refused or unreachable is a
  ``requests.ConnectionError`` around ``MaxRetryError(NewConnectionError)``; no answer to the connect
  within the connect timeout is ``ConnectTimeout``; a TLS failure is ``SSLError`` (a handshake that
  times out, bounded by the connect timeout, is a ``ReadTimeout``, as urllib3 reported it); once the
  request may have been sent, a timeout is ``ReadTimeout`` and a closed or reset connection a
  ``ConnectionError`` around ``ProtocolError``;
* connections per base URL kept for reuse up to ``maxsize`` (more are closed after their request), and
  an idle one that the server closed meanwhile is noticed before it is used (as urllib3 does);
* TLS as urllib3 sets it up: the CA file or directory (certifi's bundle for ``verify=True``), the
  client certificate, hostname checking (none with ``verify=False``), TLS 1.2 at least;
* responses delimited by Content-Length, chunked coding or the connection's end; HEAD, 1xx, 204 and
  304 without a body; ``Connection: close`` and HTTP/1.0 honoured; gzip/deflate bodies decoded (the
  requests default headers ask for them).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import ssl
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_encoding_from_headers, requote_uri
from urllib3.util.wait import wait_for_read

__all__ = ["Http11Transport"]

_MAX_LINE: Final = 65536
_MAX_HEADERS: Final = 100
_PLAIN_TARGET: Final = re.compile(r"[!-~]*")  # printable ASCII, no space: sent as it is
_NO_BODY_STATUS: Final = frozenset({204, 304})
_STATUS_LINE: Final = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: ([^\r\n]*))?\r?\n")


class _Connection:
    __slots__ = ("file", "idle_since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.idle_since = 0.0

    def dropped(self) -> bool:
        """The server closed (or wrote to) this idle connection: it cannot carry a request.

        urllib3's own check (poll where it works, so descriptors above 1024 are fine; select where
        gevent's monkey-patching took poll away)."""
        try:
            return wait_for_read(self.sock, timeout=0.0)
        except OSError:
            return True

    def close(self) -> None:
        for closer in (self.file.close, self.sock.close):
            with contextlib.suppress(OSError):
                closer()


class _Pool:
    """The idle connections to one base URL, and how to open a new one."""

    def __init__(
        self,
        base_url: str,
        context: ssl.SSLContext | None,
        maxsize: int,
        socket_options: Sequence[tuple[int, int, int]] = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        max_idle: float | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if self.tls else 80
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.context = context
        self.maxsize = maxsize
        self.socket_options = tuple(socket_options)
        self.max_idle = max_idle
        self.idle: list[_Connection] = []
        self.lock = threading.Lock()

    def take(self) -> _Connection | None:
        while True:
            with self.lock:
                if not self.idle:
                    return None
                conn = self.idle.pop()
            # Idle past max_idle: the server's keep-alive timeout may close it while the request is
            # on its way (a POST then fails with an unknown outcome): not worth the risk.
            stale = self.max_idle is not None and time.monotonic() - conn.idle_since > self.max_idle
            if not stale and not conn.dropped():
                return conn
            conn.close()

    def give_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        with self.lock:
            if len(self.idle) < self.maxsize:
                self.idle.append(conn)
                return
        conn.close()  # more connections than the pool keeps: as urllib3, discard this one

    def open(self, connect_timeout: float | None, read_timeout: float | None) -> _Connection:
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
        except TimeoutError as exc:
            reason = urllib3.exceptions.ConnectTimeoutError(
                None, f"Connection to {self.host} timed out. (connect timeout={connect_timeout})"
            )
            raise requests.exceptions.ConnectTimeout(_max_retry(where, reason)) from exc
        except OSError as exc:
            reason = urllib3.exceptions.NewConnectionError(
                where,  # type: ignore[arg-type]
                f"Failed to establish a new connection: {exc}",
            )
            raise requests.exceptions.ConnectionError(_max_retry(where, reason)) from exc
        try:
            for level, option, value in self.socket_options:
                sock.setsockopt(level, option, value)
            if self.context is not None:
                # The handshake is bounded by the connect timeout, as urllib3 bounds it.
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(read_timeout)
        except TimeoutError as exc:
            # As urllib3 reported it: a read timeout (so a POST is not resent elsewhere, and the host
            # is not passed over: a loaded backend may just be slow to finish handshakes).
            sock.close()
            raise requests.exceptions.ReadTimeout(
                urllib3.exceptions.ReadTimeoutError(
                    None,  # type: ignore[arg-type]
                    where,
                    f"Read timed out. (read timeout={connect_timeout})",
                )
            ) from exc
        except (ssl.SSLError, ssl.CertificateError) as exc:
            sock.close()
            raise requests.exceptions.SSLError(_max_retry(where, urllib3.exceptions.SSLError(exc))) from exc
        except OSError as exc:
            sock.close()  # reset during the handshake: urllib3 called it an aborted connection
            raise _aborted(exc) from exc
        return _Connection(sock)

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


def _max_retry(where: str, reason: Exception) -> urllib3.exceptions.MaxRetryError:
    return urllib3.exceptions.MaxRetryError(None, where, reason)  # type: ignore[arg-type]


def _aborted(exc: BaseException | str) -> requests.exceptions.ConnectionError:
    """The request may have been sent and the connection ended: the outcome is unknown."""
    return requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.", exc))


def _context(verify: bool | str, cert: tuple[str, str] | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        location = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
        if os.path.isdir(location):
            context.load_verify_locations(capath=location)
        else:
            context.load_verify_locations(cafile=location)
    if cert is not None:
        context.load_cert_chain(cert[0], cert[1])
    return context


class Http11Transport:
    """Sends one request and reads its whole answer, over connections kept per base URL."""

    def __init__(
        self,
        verify: bool | str,
        cert: tuple[str, str] | None,
        num_pools: int,
        maxsize: int,
        *,
        socket_options: Sequence[tuple[int, int, int]] = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        max_idle: float | None = None,
    ) -> None:
        """`socket_options`: (level, option, value) set on every new connection before TLS;
        `max_idle`: seconds a kept connection may stay idle and still be reused (below the servers'
        keep-alive timeout; None: no limit)."""
        self._socket_options = tuple(socket_options)
        self._max_idle = max_idle
        self._verify = verify
        self._cert = cert
        self._context: ssl.SSLContext | None = None  # made on first https use
        if cert is not None or isinstance(verify, str):
            # Our own TLS files: a missing or broken one fails the service's start, not (as a bare
            # OSError that HttpClient does not handle) every request later.
            self._context = _context(verify, cert)
        self._num_pools = max(1, num_pools)
        self._maxsize = maxsize
        self._pools: OrderedDict[str, _Pool] = OrderedDict()
        self._lock = threading.Lock()

    def _pool(self, base_url: str) -> _Pool:
        with self._lock:
            pool = self._pools.get(base_url)
            if pool is not None:
                self._pools.move_to_end(base_url)  # least recently used first out, as urllib3's
            else:
                context = None
                if base_url.startswith("https:"):
                    if self._context is None:
                        self._context = _context(self._verify, self._cert)
                    context = self._context
                pool = _Pool(base_url, context, self._maxsize, self._socket_options, self._max_idle)
                self._pools[base_url] = pool
                # As urllib3's PoolManager: at most num_pools hosts keep connections.
                while len(self._pools) > self._num_pools:
                    _, evicted = self._pools.popitem(last=False)
                    evicted.close()
            return pool

    def close(self) -> None:
        """Close every idle connection (a request in flight closes or keeps its own when done)."""
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()

    def send(
        self,
        method: str,
        base_url: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float | tuple[float, float],
    ) -> requests.Response:
        pool = self._pool(base_url)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        path = pool.prefix + target
        if not _PLAIN_TARGET.fullmatch(path):
            path = requote_uri(path)  # what requests did to every URL
        head = [f"{method} {path} HTTP/1.1\r\nHost: {pool.host_header}\r\n"]
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
                raise ValueError(f"Invalid header {name!r}: {value!r}")  # as http.client refuses it
            head.append(f"{name}: {value}\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if body:
            data += body

        conn = pool.take()
        if conn is None:
            conn = pool.open(connect, read)
        else:
            conn.sock.settimeout(read)
        try:
            conn.sock.sendall(data)
            status, reason, response_headers, content, reusable = self._read_response(conn, method)
        except TimeoutError as exc:
            conn.close()
            if exc.errno == errno.ETIMEDOUT:
                # The kernel gave up on the peer (TCP_USER_TIMEOUT, keepalive): no answer, no reset.
                raise _aborted(exc) from exc
            raise requests.exceptions.ReadTimeout(
                urllib3.exceptions.ReadTimeoutError(None, base_url, f"Read timed out. (read timeout={read})")  # type: ignore[arg-type]
            ) from exc
        except (OSError, _MalformedError) as exc:
            conn.close()
            raise _aborted(exc) from exc
        except BaseException:
            conn.close()
            raise
        if reusable:
            pool.give_back(conn)
        else:
            conn.close()

        response = requests.Response()
        response.status_code = status
        response.headers = response_headers
        response.reason = reason
        response.url = base_url + target
        response.encoding = get_encoding_from_headers(response_headers)
        response._content = content
        response._content_consumed = True
        return response

    @staticmethod
    def _read_response(
        conn: _Connection, method: str
    ) -> tuple[int, str, CaseInsensitiveDict[str], bytes, bool]:
        file = conn.file
        while True:
            line = file.readline(_MAX_LINE + 1)
            if not line:
                raise _MalformedError("Remote end closed connection without response")
            match = _STATUS_LINE.fullmatch(line)
            if match is None:
                raise _MalformedError(f"bad status line {line[:80]!r}")
            minor, status = match[1], int(match[2])
            reason = (match[3] or b"").decode("latin-1").strip()
            fields = _read_headers(file)
            if status == 101:
                raise _MalformedError("101 Switching Protocols without an Upgrade asked for")
            if not 100 <= status < 200:  # 1xx (100 Continue, 103 Early Hints...): the answer follows
                break
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for name, value in fields:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        options = {token.strip() for token in headers.get("Connection", "").lower().split(",")}
        reusable = "close" not in options and (minor == b"1" or "keep-alive" in options)
        if method == "HEAD" or status in _NO_BODY_STATUS:
            content = b""
        elif "chunked" in headers.get("Transfer-Encoding", "").lower():
            content = _read_chunked(file)
        elif "Content-Length" in headers:
            values = {value.strip() for value in headers["Content-Length"].split(",")}
            value = values.pop() if len(values) == 1 else ""
            if not (value.isascii() and value.isdigit()):  # differing copies, a sign, no digits
                raise _MalformedError(f"bad Content-Length {headers['Content-Length']!r}")
            length = int(value)
            content = file.read(length) if length > 0 else b""
            if len(content) != length:
                raise _MalformedError(f"IncompleteRead({len(content)} bytes read, {length} more expected)")
        else:
            content = file.read()  # delimited by the end of the connection
            reusable = False
        encoding = headers.get("Content-Encoding", "").lower().strip()
        if content and encoding in ("gzip", "deflate"):
            content = _decoded(content, encoding)
        return status, reason, headers, content, reusable


class _MalformedError(Exception):
    """The answer is not HTTP/1.x as expected, or stopped short."""


def _read_headers(file: Any) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for _ in range(_MAX_HEADERS + 1):
        line = file.readline(_MAX_LINE + 1)
        if not line:
            raise _MalformedError("connection closed in the response headers")
        if line in (b"\r\n", b"\n"):
            return fields
        if len(line) > _MAX_LINE:
            raise _MalformedError("header line too long")
        text = line.decode("latin-1")
        name, sep, value = text.partition(":")
        if not sep:
            raise _MalformedError(f"bad header line {text[:80]!r}")
        fields.append((name.strip(), value.strip()))
    raise _MalformedError("too many headers")


def _read_chunked(file: Any) -> bytes:
    parts = []
    while True:
        line = file.readline(_MAX_LINE + 1)
        if not line:
            raise _MalformedError("connection closed in a chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _MalformedError(f"bad chunk size {line[:40]!r}") from None
        if size == 0:
            _read_headers(file)  # trailers, if any, end with an empty line
            return b"".join(parts)
        chunk = file.read(size)
        if len(chunk) != size or file.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n"):
            raise _MalformedError("a chunk stopped short")
        parts.append(chunk)


def _decoded(content: bytes, encoding: str) -> bytes:
    try:
        if encoding == "gzip":
            return zlib.decompress(content, 16 + zlib.MAX_WBITS)
        try:
            return zlib.decompress(content)
        except zlib.error:
            return zlib.decompress(content, -zlib.MAX_WBITS)  # raw deflate, as some servers send it
    except zlib.error as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
