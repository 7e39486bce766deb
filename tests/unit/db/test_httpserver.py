"""agenda-db's HTTP servers: the threaded keep-alive server and the event-loop server (with the DB's fast
paths answered on the loop), held to the same behaviour - persistent connections, body draining, edge
cases - plus what only the loop does (asynchronous answers, timeouts, idle connections)."""

from __future__ import annotations

import http.client
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agenda.common import loopserver
from agenda.common.httpserver import make_keepalive_server
from agenda.common.loopserver import make_loop_server
from agenda.db.api import create_app
from agenda.db.api.fastput import LoopFastPath
from agenda.db.errors import NodeError, OutcomeUnknown
from agenda.db.txn import put_command
from unit.common.test_loopserver import exchange
from unit.db.test_api_errors import FakeNode
from unit.db.test_barrier import wait_for


class SubmittingNode(FakeNode):
    """FakeNode with the asynchronous proposal the loop's fast path uses; ``hold`` keeps results back."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.submitted: list[dict[str, Any]] = []
        self.timeouts = 0
        self.rounds = 0
        self.round_readers: list[int] = []  # how many readers each round served
        self.held_rounds: list[Any] = []  # with hold: the rounds' callbacks, for the test to complete

    def submit(self, command: dict[str, Any], on_done: Any) -> None:
        self.submitted.append(command)
        if self.hold:
            return
        try:
            result = self.propose(command)
        except NodeError as exc:
            on_done(None, exc)
            return
        on_done(result, None)

    def read_round(self, on_done: Any, readers: int = 1) -> None:
        self.rounds += 1
        self.round_readers.append(readers)
        if self.hold:
            self.held_rounds.append(on_done)
        else:
            on_done(self.fail_with)

    def timed_out(self) -> NodeError:
        self.timeouts += 1
        return OutcomeUnknown("the proposal timed out; it may still be committed")


def _start(kind: str, node: FakeNode) -> Any:
    app = create_app(node)
    if kind == "threaded":
        srv = make_keepalive_server("127.0.0.1", 0, app)
    else:
        srv = make_loop_server("127.0.0.1", 0, app)
        srv.fast_handler = LoopFastPath(app, app.extensions["agenda_db"], srv.call_soon, srv.server_version)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


@pytest.fixture(params=["threaded", "loop"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    srv = _start(request.param, SubmittingNode())
    try:
        yield srv.server_address[0], srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def loop() -> Iterator[tuple[Any, SubmittingNode]]:
    node = SubmittingNode()
    srv = _start("loop", node)
    try:
        yield srv, node
    finally:
        srv.shutdown()


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
    reply = exchange(server, b"GET /v1/health HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in reply
    reply = exchange(server, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
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
    reply = exchange(server, put + put + b"GET /v1/kv/p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200 ") == 3
    assert b'"version":2' in reply


def test_chunked_body_works_and_closes(server):
    data = (
        b"PUT /v1/kv/c HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"val\r\n8\r\nue": 7}\r\n0\r\n\r\n'
    )
    reply = exchange(server, data)
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
    reply = exchange(server, request_bytes)
    if reply.startswith(b"HTTP/"):
        assert reply.split(b" ", 2)[1] == status
    else:
        assert b"Error code: " + status in reply


def test_head_has_no_body(server):
    reply = exchange(server, b"HEAD /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: " in head
    assert body == b""


@pytest.mark.parametrize("make", [make_keepalive_server, make_loop_server])
def test_app_exception_is_a_500_and_closes(make):
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    srv = make("127.0.0.1", 0, broken)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        reply = exchange(srv.server_address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        srv.shutdown()
        srv.server_close()
    assert reply.startswith(b"HTTP/1.1 500 ")
    assert b"\r\nConnection: close\r\n" in reply


def _put(key: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"PUT /v1/kv/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"%sContent-Length: %d\r\n\r\n%s" % (key.encode(), extra, len(body), body)
    )


def test_loop_answers_writes_itself_and_the_rest_on_workers(loop):
    srv, node = loop
    reply = exchange(
        srv.server_address,
        _put("k", b'{"value": 1}', b"X-Request-ID: mine-1\r\n")
        + b"GET /v1/kv/k HTTP/1.1\r\nHost: x\r\n\r\n"
        + _put("k", b'{"value": 2}', b"Connection: close\r\n"),
    )
    answers = reply.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200", b"200", b"200"]
    assert b"X-Request-ID: mine-1\r\n" in answers[0]
    assert answers[0].endswith(b'{"revision":1,"create_revision":1,"version":1}\n')
    assert b'"value":1' in answers[1]
    assert b"Connection: close\r\n" in answers[2]
    assert len(node.submitted) == 2  # both PUTs went through submit (the GET did not propose)


def test_loop_answers_a_failed_proposal_with_the_views_problem(loop):
    srv, node = loop
    node.fail_with = OutcomeUnknown("lost the leadership (injected)")
    reply = exchange(srv.server_address, _put("k", b'{"value": 1}', b"Connection: close\r\n"))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"Content-Type: application/problem+json" in head
    assert b"X-Request-ID: " in head
    assert b"lost the leadership" in body
    assert len(node.submitted) == 1


def test_loop_answers_a_proposal_without_result_as_timed_out(loop):
    srv, node = loop
    node.hold = True  # no result ever comes: the loop answers after proposal_timeout (1 s)
    with socket.create_connection(srv.server_address, timeout=10) as sock:
        sock.sendall(_put("k", b'{"value": 1}'))
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 503 ")
    assert b"timed out" in reply
    assert node.timeouts == 1


def test_loop_declines_what_the_view_must_answer(loop):
    srv, node = loop
    for data in (
        _put("k", b'{"value": 1, "extra": 2}'),  # an unknown field: the view's 400
        _put("k", b"[1]"),
        _put("k?x=1", b'{"value": 1}'),  # a query string
    ):
        reply = exchange(srv.server_address, data)
        assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert node.submitted == []


def test_loop_closes_idle_connections(loop, monkeypatch):
    srv, _ = loop
    monkeypatch.setattr(loopserver, "IDLE_TIMEOUT", 0.2)
    with socket.create_connection(srv.server_address, timeout=10) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert sock.recv(65536) == b""  # closed by the server's sweep, not by the socket timeout


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (
            b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Y:  v \r\nx-y: w",
            ("GET", "/a?b=1", {"host": "x", "x-y": "v,w"}),
        ),
        (b"GET /a HTTP/1.1", ("GET", "/a", {})),
        (b"GET /a HTTP/1.0", None),
        (b"GET http://x/a HTTP/1.1", None),
        (b"GET //a HTTP/1.1", None),
        (b"GET /a HTTP/1.1\r\n folded", None),
        (b"GET /a HTTP/1.1\r\nno colon", None),
        (b"GET /a HTTP/1.1\r\nBad Name: v", None),
        (b"GET /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1", None),
        (b"GET /a HTTP/1.1" + b"\r\nX: y" * 101, None),
    ],
)
def test_parse_head_frames_only_plain_http11(head, expected):
    assert loopserver.parse_head(head) == expected


def _exchange(addr: tuple[str, int], requests_: list[bytes]) -> list[bytes]:
    """Each request on one keep-alive connection, its answer with the Date header taken out."""
    answers = []
    with socket.create_connection(addr, timeout=10) as sock, sock.makefile("rb") as replies:
        for data in requests_:
            sock.sendall(data)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += replies.readline()
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            answers.append(re.sub(rb"Date: [^\r]*\r\n", b"", head) + replies.read(length))
    return answers


def test_loop_answers_exactly_what_the_threaded_server_answers():
    rid = b"X-Request-ID: same-id\r\n"
    txn = b'{"compare": [{"key": "t", "target": "mod_revision", "op": "eq", "value": 0}], '
    txn += b'"success": [{"put": {"key": "t", "value": {"n": "\xc3\xa9"}}}]}'
    post = b"POST /v1/txn HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    script = [
        _put("a", b'{"value": {"x": [1, "\xc3\xa9"]}}', rid),
        _put("b", b'{"value": 2, "prev_revision": 99}', rid),  # refused: the view's 409 problem
        post + b"%sContent-Length: %d\r\n\r\n%s" % (rid, len(txn), txn),
        b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n%s\r\n" % rid,
        b"GET /v1/kv/a?consistency=stale HTTP/1.1\r\nHost: x\r\n%s\r\n" % rid,
        b"GET /v1/kv/missing HTTP/1.1\r\nHost: x\r\n%s\r\n" % rid,
        b"GET /v1/kv?prefix=&limit=5 HTTP/1.1\r\nHost: x\r\n%s\r\n" % rid,
        b"GET /v1/kv?prefix=a&consistency=stale HTTP/1.1\r\nHost: x\r\n%s\r\n" % rid,
    ]
    answers = {}
    for kind in ("threaded", "loop"):
        node = SubmittingNode()
        srv = _start(kind, node)
        try:
            answers[kind] = _exchange(srv.server_address, script)
        finally:
            srv.shutdown()
            srv.server_close()
        if kind == "loop":
            assert len(node.submitted) == 3  # all of it answered on the loop
            assert node.rounds == 3  # the linearizable reads; the stale ones need none
    assert [a.split(b" ", 2)[1] for a in answers["loop"]] == [
        b"200", b"409", b"200", b"200", b"200", b"404", b"200", b"200"
    ]  # fmt: skip
    assert answers["loop"] == answers["threaded"]


def test_loop_readers_share_a_read_round(loop):
    srv, node = loop
    node.propose(put_command("a", 1))
    node.hold = True  # the test completes each round itself
    socks = [socket.create_connection(srv.server_address, timeout=10) for _ in range(3)]
    try:
        socks[0].sendall(b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: len(node.held_rounds) == 1)
        for sock in socks[1:]:  # they arrive while the first round is in flight: they wait for the next
            sock.sendall(b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: len(srv.fast_handler._next_readers) == 2)
        assert node.round_readers == [1]
        node.held_rounds[0](None)
        assert socks[0].recv(65536).startswith(b"HTTP/1.1 200 ")
        wait_for(lambda: len(node.held_rounds) == 2)
        assert node.round_readers == [1, 2]  # one round for both
        node.held_rounds[1](None)
        replies = [sock.recv(65536) for sock in socks[1:]]
    finally:
        for sock in socks:
            sock.close()
    assert all(reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b'"lease":0}\n') for reply in replies)
