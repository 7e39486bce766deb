"""The keep-alive HTTP/1.1 transport against a raw socket server: framing, reuse, and failures shaped as
requests/urllib3 shape them (HttpClient's retry rules read them)."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import requests
import urllib3.exceptions

from agenda.common.http import HttpClient, Unavailable, _never_sent
from agenda.common.http11 import Http11Transport

Reply = Callable[[bytes], bytes | None]  # the request's bytes -> the raw answer (None: close, no answer)


class RawServer:
    """Answers each request with `reply(request)`; counts connections and requests."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as file:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = file.readline()
                    if not line:
                        return
                    head += line
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + file.read(length)
                self.requests.append(request)
                answer = self.reply(request)
                if answer is None:
                    return
                conn.sendall(answer)
                if b"connection: close" in answer.lower() or answer.startswith(b"HTTP/1.0"):
                    return

    def close(self) -> None:
        self.listener.close()


def raw(status: str, headers: dict[str, str], body: bytes, *, length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items()]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], RawServer]]:
    servers: list[RawServer] = []

    def start(reply: Reply) -> RawServer:
        servers.append(RawServer(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def transport() -> Http11Transport:
    return Http11Transport(True, None, num_pools=8, maxsize=2)


def get(t: Http11Transport, server: RawServer, method: str = "GET", body: bytes | None = None):  # type: ignore[no-untyped-def]
    return t.send(method, server.url, "/x", body, {"Accept": "*/*"}, (2.0, 2.0))


def test_kept_alive_connections_are_reused(serve: Callable[[Reply], RawServer]) -> None:
    server = serve(lambda _r: raw("200 OK", {"Content-Type": "application/json"}, b'{"ok": true}'))
    t = transport()
    for _ in range(5):
        response = get(t, server)
        assert (response.status_code, response.json()) == (200, {"ok": True})
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:")


def test_framing_chunked_close_delimited_and_bodiless(serve: Callable[[Reply], RawServer]) -> None:
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n",
            raw("204 No Content", {}, b"", length=False),
            b"HTTP/1.1 100 Continue\r\n\r\n" + raw("201 Created", {"Set": "a", "set": "b"}, b"made"),
            raw("200 OK", {"Content-Encoding": "gzip"}, gzip.compress(b"zipped")),
            b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
        ]
    )
    server = serve(lambda _r: next(answers))
    t = transport()
    assert get(t, server).content == b"Wikipedia"
    assert get(t, server).content == b""
    created = get(t, server)
    assert (created.status_code, created.reason, created.content) == (201, "Created", b"made")
    assert created.headers["set"] == "a, b"
    assert get(t, server).content == b"zipped"
    assert get(t, server).content == b"until the end"
    assert server.connections == 1  # every answer but the last left the connection usable


def test_connection_close_and_http_10_are_not_reused(serve: Callable[[Reply], RawServer]) -> None:
    server = serve(lambda _r: raw("200 OK", {"Connection": "close"}, b"bye"))
    t = transport()
    assert [get(t, server).content for _ in range(3)] == [b"bye"] * 3
    assert server.connections == 3


def test_an_idle_connection_the_server_closed_is_replaced_before_use(
    serve: Callable[[Reply], RawServer],
) -> None:
    answered: list[int] = []

    def reply(_request: bytes) -> bytes | None:
        answered.append(1)
        return raw("200 OK", {}, b"ok")

    server = serve(reply)
    t = transport()
    assert get(t, server).content == b"ok"
    # The server side of the idle connection goes away (an idle timeout, a restart).
    t._pools[server.url].idle[0].sock.shutdown(socket.SHUT_RD)  # type: ignore[attr-defined]
    assert get(t, server, "POST", b"{}").content == b"ok"  # a POST too: it was never sent on the dead one
    assert server.connections == 2


def test_at_most_maxsize_idle_connections_are_kept(serve: Callable[[Reply], RawServer]) -> None:
    gate = threading.Barrier(4)

    def reply(_request: bytes) -> bytes:
        gate.wait(5)
        return raw("200 OK", {}, b"ok")

    server = serve(reply)
    t = transport()
    threads = [threading.Thread(target=get, args=(t, server)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert server.connections == 4
    assert len(t._pools[server.url].idle) == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "answer",
    [
        None,  # closed without an answer
        b"NOT HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["no-answer", "bad-status", "short-body", "bad-chunk"],
)
def test_a_broken_answer_is_a_connection_error_with_an_unknown_outcome(
    serve: Callable[[Reply], RawServer], answer: bytes | None
) -> None:
    server = serve(lambda _r: answer)
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        get(transport(), server, "POST", b"{}")
    assert isinstance(info.value.args[0], urllib3.exceptions.ProtocolError)
    assert not _never_sent(info.value)  # it may have been carried out


def test_a_refused_connection_was_never_sent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        Http11Transport(True, None, 8, 2).send("POST", url, "/x", b"{}", {}, (1.0, 1.0))
    assert isinstance(info.value.args[0].reason, urllib3.exceptions.NewConnectionError)
    assert _never_sent(info.value)


def test_a_silent_server_is_a_read_timeout(serve: Callable[[Reply], RawServer]) -> None:
    release = threading.Event()
    server = serve(lambda _r: (release.wait(5), None)[1])
    with pytest.raises(requests.exceptions.ReadTimeout):
        Http11Transport(True, None, 8, 2).send("GET", server.url, "/x", None, {}, (1.0, 0.2))
    release.set()


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(
    serve: Callable[[Reply], RawServer],
) -> None:
    server = serve(lambda _r: raw("200 OK", {}, b"ok"))
    with pytest.raises(ValueError, match="Invalid header"):
        transport().send("GET", server.url, "/x", None, {"X-A": "1\r\nX-Injected: 2"}, (1.0, 1.0))
    assert server.requests == []


def test_a_target_with_unsafe_characters_is_quoted_as_requests_quoted_it(
    serve: Callable[[Reply], RawServer],
) -> None:
    server = serve(lambda _r: raw("200 OK", {}, b"ok"))
    transport().send("GET", server.url + "/pre", "/a b/ü?q=x y", None, {}, (1.0, 1.0))
    assert server.requests[0].startswith(b"GET /pre/a%20b/%C3%BC?q=x%20y HTTP/1.1\r\n")


def test_http_client_over_it_fails_over_and_keeps_its_rules(serve: Callable[[Reply], RawServer]) -> None:
    server = serve(lambda _r: raw("503 Service Unavailable", {"Retry-After": "0"}, b"{}"))
    client = HttpClient([server.url], retries=1, sleep=lambda _s: None)
    with pytest.raises(Unavailable) as info:
        client.get("/x")
    assert info.value.attempts == 2
    assert info.value.last_response is not None
    assert info.value.last_response.status_code == 503
    client.close()
    assert server.connections == 1


def test_a_tls_handshake_without_an_answer_is_a_read_timeout_as_urllib3_said() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks TLS
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(requests.exceptions.ReadTimeout):
            Http11Transport(False, None, 8, 2).send("POST", url, "/x", b"{}", {}, (0.2, 5.0))


def test_an_interim_1xx_answer_is_skipped_not_taken_for_the_answer(
    serve: Callable[[Reply], RawServer],
) -> None:
    bodies = iter([b"first", b"second"])

    def reply(_request: bytes) -> bytes:
        hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        return hints + raw("200 OK", {}, next(bodies))

    server = serve(reply)
    t = transport()
    first = get(t, server)
    assert (first.status_code, first.content) == (200, b"first")
    second = get(t, server)  # on the same kept-alive connection: must not read the first one's answer
    assert (second.status_code, second.content) == (200, b"second")


def test_close_among_several_connection_options_is_honoured(serve: Callable[[Reply], RawServer]) -> None:
    server = serve(lambda _r: raw("200 OK", {"Connection": "close, X-Hop"}, b"bye"))
    t = transport()
    assert get(t, server).content == b"bye"
    assert t._pools[server.url].idle == []  # type: ignore[attr-defined]


def test_differing_content_lengths_are_refused(serve: Callable[[Reply], RawServer]) -> None:
    server = serve(lambda _r: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nhello")
    with pytest.raises(requests.exceptions.ConnectionError):
        get(transport(), server)


def test_the_least_recently_used_pool_is_the_one_evicted(serve: Callable[[Reply], RawServer]) -> None:
    a, b, c = (serve(lambda _r: raw("200 OK", {}, b"ok")) for _ in range(3))
    t = Http11Transport(True, None, num_pools=2, maxsize=2)
    for server in (a, b, a, c):  # a was used after b: b goes, a keeps its connection
        get(t, server)
    assert set(t._pools) == {a.url, c.url}  # type: ignore[attr-defined]
    get(t, a)
    assert a.connections == 1


def test_a_connection_idle_longer_than_max_idle_is_not_reused(serve: Callable[[Reply], RawServer]) -> None:
    server = serve(lambda _r: raw("200 OK", {}, b"ok"))
    t = Http11Transport(True, None, num_pools=8, maxsize=2, max_idle=0.05)
    get(t, server)
    get(t, server)
    assert server.connections == 1
    for conn in t._pools[server.url].idle:  # type: ignore[attr-defined]
        conn.idle_since -= 0.1  # idle for longer than max_idle: the server may be about to close it
    get(t, server)
    assert server.connections == 2


def test_a_callers_framing_headers_do_not_duplicate_the_transports(
    serve: Callable[[Reply], RawServer],
) -> None:
    server = serve(lambda _r: raw("200 OK", {}, b"ok"))
    HttpClient([server.url]).post("/x", json={"a": 1}, headers={"content-length": "999"})
    lengths = [
        line for line in server.requests[0].lower().split(b"\r\n") if line.startswith(b"content-length:")
    ]
    assert lengths == [b"content-length: 8"]


def test_a_missing_ca_file_fails_at_construction(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError):
        Http11Transport(str(tmp_path / "missing-ca.pem"), None, 8, 2)
