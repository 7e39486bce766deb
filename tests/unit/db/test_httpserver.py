"""The keep-alive WSGI server of agenda-db: persistent connections, body draining, edge cases."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agenda.common.httpserver import make_keepalive_server
from agenda.db.api import create_app
from unit.db.test_api_errors import FakeNode


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    srv = make_keepalive_server("127.0.0.1", 0, create_app(FakeNode()))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv.server_address[0], srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def _raw(addr: tuple[str, int], data: bytes) -> bytes:
    with socket.create_connection(addr, timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_many_requests_share_one_connection(server):
    conn = http.client.HTTPConnection(*server, timeout=5)
    for i in range(5):
        conn.request(
            "PUT", "/v1/kv/a", body=b'{"value": %d}' % i, headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Connection") is None
        assert response.read() == b'{"revision":%d,"create_revision":1,"version":%d}\n' % (i + 1, i + 1)
    first_sock = conn.sock
    conn.request("GET", "/v1/kv/a")
    response = conn.getresponse()
    assert response.status == 200
    assert b'"value":4' in response.read()
    assert conn.sock is first_sock  # never reconnected
    conn.close()


def test_unread_body_is_drained_before_the_next_request(server):
    conn = http.client.HTTPConnection(*server, timeout=5)
    # 415: the view never reads this body; the next request on the connection must still parse.
    conn.request("PUT", "/v1/kv/a", body=b"x" * 5000, headers={"Content-Type": "text/plain"})
    response = conn.getresponse()
    assert response.status == 415
    response.read()
    conn.request("GET", "/v1/health")
    assert conn.getresponse().status == 200
    conn.close()


def test_http_1_0_and_connection_close_end_the_connection(server):
    reply = _raw(server, b"GET /v1/health HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in reply
    reply = _raw(server, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in reply


def test_pipelined_requests_are_answered_in_order(server):
    body = b'{"value": 1}'
    put = (
        b"PUT /v1/kv/p HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (
            len(body),
            body,
        )
    )
    reply = _raw(server, put + put + b"GET /v1/kv/p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200 ") == 3
    assert b'"version":2' in reply


def test_chunked_body_works_and_closes(server):
    data = (
        b"PUT /v1/kv/c HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"val\r\n8\r\nue": 7}\r\n0\r\n\r\n'
    )
    reply = _raw(server, data)
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in reply


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /v1/health HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", b"400"),
        (b"GET /v1/health HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET /v1/health HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", b"431"),
        (b"GET /v1/health HTTP/2.0\r\n\r\n", b"505"),  # the standard parser (HTTP/0.9-style reply)
        (b"GET //v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"200"),
    ],
)
def test_malformed_or_unusual_requests(server, request_bytes, status):
    reply = _raw(server, request_bytes)
    if reply.startswith(b"HTTP/"):
        assert reply.split(b" ", 2)[1] == status
    else:
        assert b"Error code: " + status in reply


def test_head_has_no_body(server):
    reply = _raw(server, b"HEAD /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: " in head
    assert body == b""


def test_app_exception_is_a_500_and_closes(monkeypatch):
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    srv = make_keepalive_server("127.0.0.1", 0, broken)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        reply = _raw(srv.server_address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        srv.shutdown()
        srv.server_close()
    assert reply.startswith(b"HTTP/1.1 500 ")
    assert b"\r\nConnection: close\r\n" in reply
