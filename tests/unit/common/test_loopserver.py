"""The event-loop server on its own (agenda.common.loopserver): a fast handler answering from another
thread, worker threads for the rest, and a failure that costs a request, not the server."""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agenda.common.httpserver import response_bytes
from agenda.common.loopserver import LoopWSGIServer, Request, make_loop_server


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"worker " + environ["PATH_INFO"].encode()]


class FastHandler:
    """Answers /fast/... from a thread of its own; /boom schedules a failing call, then answers."""

    def __init__(self, server: LoopWSGIServer) -> None:
        self.server = server
        self.handled: list[str] = []

    def handle(self, request: Request, respond: Callable[[bytes, bool], None]) -> bool:
        if request.path == "/boom":
            self.server.call_soon(lambda: 1 / 0)
        elif not request.path.startswith("/fast/"):
            return False
        self.handled.append(request.path)
        data = response_bytes("HTTP/1.1", "200 OK", [], b"fast " + request.body, "t", close=request.close)
        threading.Thread(target=respond, args=(data, request.close)).start()
        return True

    def expire(self, now: float) -> None:
        pass


@pytest.fixture
def served() -> Iterator[tuple[LoopWSGIServer, FastHandler]]:
    server = make_loop_server("127.0.0.1", 0, app)
    handler = server.fast_handler = FastHandler(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, handler
    finally:
        server.shutdown()


def exchange(address: Any, data: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_fast_and_worker_answers_keep_their_order_on_one_connection(served):
    server, handler = served
    reply = exchange(
        server.server_address,
        b"POST /fast/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /fast/b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\ntwo",
    )
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in reply.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert bodies == [b"fast one", b"worker /slow", b"fast two"]
    assert handler.handled == ["/fast/a", "/fast/b"]


def test_a_failing_call_costs_nothing_else(served):
    server, _ = served
    assert exchange(
        server.server_address, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ).startswith(b"HTTP/1.1 200 OK")
    reply = exchange(server.server_address, b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.endswith(b"worker /after")


def test_a_request_the_loop_does_not_frame_is_served_by_a_thread_with_what_was_read(served):
    server, handler = served
    reply = exchange(
        server.server_address,
        b"POST /fast/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert reply.endswith(b"worker /fast/x")  # the WSGI app, not the fast handler
    assert handler.handled == []


def test_the_loops_own_answers_are_in_the_access_log_like_a_workers(served, caplog):
    server, _ = served
    caplog.set_level(logging.INFO, logger="werkzeug")
    exchange(server.server_address, b"POST /fast/a?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none")
    exchange(server.server_address, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    lines = [record.getMessage() for record in caplog.records if record.name == "werkzeug"]
    assert len(lines) == 2
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "POST /fast/a\?x=1 HTTP/1\.1" 200 8', lines[0]), lines
    assert '"GET /slow HTTP/1.1" 200 12' in lines[1]
