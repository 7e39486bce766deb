"""A keep-alive WSGI server for the Agenda services (Werkzeug's threaded server, keep-alive added).

Werkzeug's development server answers every request with ``Connection: close``, so every client request
costs a TCP handshake, an ``accept`` and a new thread. Under load that is most of a member's CPU. This
server is the same ``werkzeug.serving`` server (same threading model: one daemon thread per connection,
so long-polling watches never starve other requests; same TLS handling; same WSGI environ) with one
handler change: HTTP/1.1 keep-alive. The application's response is buffered (every response of the
services is a small JSON or iCalendar document), sent with a ``Content-Length`` in one write, and the
request body is drained before the next request is read from the same connection, or the connection
closed (when much is left, or when the application set `agenda.common.web.CLOSE_CONNECTION` in the
environ). The one exception is a ``text/event-stream`` response (the gateway's notification stream),
written piece by piece as the application yields it and ended by closing the connection.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import logging
import re
import socket
import sys
import time
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, Final

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wsgi import LimitedStream

from agenda.common.web import CLOSE_CONNECTION

__all__ = ["KeepAliveRequestHandler", "make_keepalive_server", "response_bytes"]

log = logging.getLogger("agenda.http")

# An idle keep-alive connection is closed after this long (also bounds reading one request).
IDLE_TIMEOUT: Final = 120.0
# Unread request body left by the application: drained up to this many bytes, else the connection closes.
MAX_DRAIN: Final = 256 * 1024
_NO_BODY_STATUS: Final = (204, 304)
_HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "transfer-encoding"})
_REQUEST_LINE: Final = re.compile(rb"([A-Z]{1,16}) (/(?!/)[!-~]*) HTTP/1\.([01])\r?\n\Z")
_MAX_LINE: Final = 65536  # as http.client
_MAX_HEADERS: Final = 100  # as http.client


class KeepAliveRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler with persistent connections and buffered, length-delimited responses."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        # Small request/response pairs: do not let Nagle delay the answer behind the previous one.
        with contextlib.suppress(OSError):  # not a TCP socket
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def parse_request(self) -> bool:
        """``BaseHTTPRequestHandler.parse_request`` with a fast path for ordinary requests.

        The standard library parses headers with the ``email`` package, a large share of a request's CPU.
        A request line of the usual form is handled here with a plain line reader producing the same
        ``http.client.HTTPMessage``; anything else goes to the standard implementation untouched.
        """
        match = _REQUEST_LINE.match(self.raw_requestline)
        if match is None:
            return bool(super().parse_request())
        self.requestline = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
        command, path, minor = match.groups()
        self.command = command.decode("ascii")
        self.path = path.decode("iso-8859-1")
        self.request_version = "HTTP/1." + minor.decode("ascii")
        self.close_connection = minor != b"1"
        headers = http.client.HTTPMessage()
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = line.decode("iso-8859-1").partition(":")
            if not sep or not name or name[0] in " \t":  # no colon, or an obsolete folded line
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad header line")
                return False
            headers[name] = value.lstrip(" \t").rstrip("\r\n")
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        self.headers = headers
        conntype = headers.get("Connection", "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive":
            self.close_connection = False
        if headers.get("Expect", "").lower() == "100-continue" and minor == b"1":
            return bool(self.handle_expect_100())
        return True

    def run_wsgi(self) -> None:
        # (an "Expect: 100-continue" was already answered by parse_request -> handle_expect_100)
        self.environ = environ = self.make_environ()
        body_stream: LimitedStream | None = None
        if environ.get("wsgi.input_terminated"):
            # Chunked request body: we cannot cheaply tell whether the application consumed it all.
            self.close_connection = True
        else:
            try:
                length = max(0, int(environ.get("CONTENT_LENGTH") or 0))
            except ValueError:
                length = 0
                self.close_connection = True
            body_stream = LimitedStream(self.rfile, length)
            environ["wsgi.input"] = body_stream
            environ["wsgi.input_terminated"] = True
        if self.request_version != "HTTP/1.1":
            self.close_connection = True

        state: dict[str, Any] = {}
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info is not None and "status" in state:
                try:
                    raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            state["status"] = status
            state["headers"] = headers
            return chunks.append

        def execute(app: Any) -> None:
            chunks.clear()
            state.clear()
            result: Iterable[bytes] = app(environ, start_response)
            try:
                if _is_stream(state.get("headers", ())):
                    self._stream(state["status"], state["headers"], chunks, result)
                    state["streamed"] = True
                    return
                for data in result:
                    if data:
                        chunks.append(data)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

        try:
            execute(self.server.app)
        except (TimeoutError, ConnectionError) as exc:
            self.connection_dropped(exc, environ)
            self.close_connection = True
            return
        except Exception:
            if self.server.passthrough_errors:  # pragma: no cover - never set by agenda-db
                raise
            log.exception("error on request %s %s", self.command, self.path)
            from werkzeug.exceptions import InternalServerError

            self.close_connection = True
            try:
                execute(InternalServerError())
            except Exception:  # pragma: no cover
                return

        if state.get("streamed"):
            return
        if environ.get(CLOSE_CONNECTION):
            self.close_connection = True  # the application refused the body: do not wait for the rest
        if body_stream is not None and not self.close_connection:
            remaining = body_stream.limit - body_stream._pos
            if remaining > MAX_DRAIN:
                self.close_connection = True
            elif remaining > 0:
                body_stream.exhaust()
        self._send(state["status"], state["headers"], b"".join(chunks))

    def _stream(
        self, status: str, headers: list[tuple[str, str]], first: list[bytes], result: Iterable[bytes]
    ) -> None:
        """Send a streamed response (Server-Sent Events): the head now, then each piece as it comes.

        The body is delimited by closing the connection (no Content-Length, no chunked coding), which
        every HTTP/1.1 client understands; the thread serving it is held until the stream ends.
        """
        self.close_connection = True
        code_text, _, reason = status.partition(" ")
        lines = [f"{self.protocol_version} {code_text} {reason}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers if name.lower() not in _HOP_BY_HOP]
        lines.append(f"Server: {self.server_version}\r\nDate: {_http_date()}\r\nConnection: close\r\n\r\n")
        self.wfile.write("".join(lines).encode("latin-1") + b"".join(first))
        self.wfile.flush()
        sent = 0
        try:
            for data in result:
                if data:
                    self.wfile.write(data)
                    self.wfile.flush()
                    sent += len(data)
        except (TimeoutError, ConnectionError):
            pass  # the client went away: the stream ends (the generator is closed by the caller)
        except Exception:
            # The head is sent: nothing but closing the connection can tell the client.
            log.exception("error while streaming %s %s", self.command, self.path)
        if _access_log.isEnabledFor(logging.INFO):
            self.log_request(int(code_text), sent)

    def _send(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        code = int(status.partition(" ")[0])
        data = response_bytes(
            self.protocol_version,
            status,
            headers,
            body,
            self.server_version,
            close=self.close_connection,
            head_only=self.command == "HEAD",
        )
        self.wfile.write(data)
        self.wfile.flush()
        if _access_log.isEnabledFor(logging.INFO):
            self.log_request(code, len(body))


def response_bytes(
    protocol: str,
    status: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    server: str,
    *,
    close: bool,
    head_only: bool = False,
) -> bytes:
    """A buffered response as this server writes it: the application's headers but the hop-by-hop ones,
    a ``Content-Length`` unless it gave one (none for 1xx, 204, 304, which also send no body),
    ``Server``, ``Date`` and, when the connection closes after it, ``Connection: close``; the body unless
    ``head_only`` (the answer to HEAD)."""
    code_text, _, reason = status.partition(" ")
    code = int(code_text)
    lines = [f"{protocol} {code} {reason}\r\n"]
    has_length = False
    for name, value in headers:
        lower = name.lower()
        if lower in _HOP_BY_HOP:
            continue
        if lower == "content-length":
            has_length = True
        lines.append(f"{name}: {value}\r\n")
    no_body = code < 200 or code in _NO_BODY_STATUS
    if not has_length and not no_body:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append(f"Server: {server}\r\nDate: {_http_date()}\r\n")
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    data = "".join(lines).encode("latin-1")
    return data if no_body or head_only else data + body


def _is_stream(headers: Iterable[tuple[str, str]]) -> bool:
    return any(
        name.lower() == "content-type" and value.split(";")[0].strip() == "text/event-stream"
        for name, value in headers
    )


_access_log = logging.getLogger("werkzeug")
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The ``Date`` header value (RFC 9110 IMF-fixdate), formatted once per second."""
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = (now, email.utils.formatdate(now, usegmt=True))
        _date_cache = cached
    return cached[1]


def make_keepalive_server(host: str, port: int, app: Any, *, ssl_context: Any = None) -> BaseWSGIServer:
    """A threaded Werkzeug server (one daemon thread per connection) using keep-alive connections."""
    server = make_server(
        host, port, app, threaded=True, request_handler=KeepAliveRequestHandler, ssl_context=ssl_context
    )
    server.daemon_threads = True
    return server


if __name__ == "__main__":  # pragma: no cover - manual smoke test

    def _hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello\n"]

    make_keepalive_server("127.0.0.1", int(sys.argv[1]), _hello).serve_forever()
