"""HttpClient against real local HTTP servers: retries, failover, idempotency, Retry-After."""

import errno
import http.server
import json
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
import urllib3.exceptions

from agenda.common import http as http_module
from agenda.common.discovery import StaticDiscovery
from agenda.common.http import HttpClient, HttpError, Unavailable
from agenda.common.logs import bind_request_id


@dataclass
class Reply:
    status: int = 200
    body: dict = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    """Answers with the scripted replies in order, then 200 forever; records every request."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with owner._lock:
                    owner.seen.append(Seen(self.command, self.path, dict(self.headers), body))
                    reply = owner.script.pop(0) if owner.script else Reply()
                payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class TopOfRange:
    """Stands in for random.Random: full jitter always picks the ceiling, making backoff predictable."""

    def uniform(self, low: float, high: float) -> float:
        return high


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def dead_url() -> str:
    """A port nobody listens on: bound by us to get it, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


def make_client(urls: list[str], sleep: RecordingSleep, **kwargs: object) -> HttpClient:
    options: dict = {"timeout": (2.0, 5.0), "retries": 3, "backoff": 0.1, "sleep": sleep, "rng": TopOfRange()}
    options.update(kwargs)
    return HttpClient(urls, **options)


def test_get_retries_503_then_succeeds(server: ScriptedServer, sleep: RecordingSleep) -> None:
    server.script = [Reply(503), Reply(503), Reply(200, {"n": 3})]
    response = make_client([server.url], sleep).get("/things", params={"q": "x"})
    assert response.status_code == 200
    assert response.json() == {"n": 3}
    assert [seen.path for seen in server.seen] == ["/things?q=x"] * 3
    assert sleep.calls == [0.1, 0.2]  # exponential backoff, jitter at its ceiling


def test_backoff_is_capped_and_jittered(server: ScriptedServer, sleep: RecordingSleep) -> None:
    server.script = [Reply(502)] * 4
    make_client([server.url], sleep, retries=4, backoff=1.0, backoff_cap=3.0).get("/")
    assert sleep.calls == [1.0, 2.0, 3.0, 3.0]

    jittered = RecordingSleep()
    seeded = random.Random(7)  # noqa: S311 - jitter needs no cryptographic randomness
    server.script = [Reply(504)] * 5
    make_client([server.url], jittered, retries=5, backoff=1.0, backoff_cap=3.0, rng=seeded).get("/")
    ceilings = [1.0, 2.0, 3.0, 3.0, 3.0]
    assert all(0.0 <= slept <= ceiling for slept, ceiling in zip(jittered.calls, ceilings, strict=True))
    assert jittered.calls != ceilings  # full jitter really varies the pause


def test_retry_after_is_honoured_and_capped(server: ScriptedServer, sleep: RecordingSleep) -> None:
    server.script = [
        Reply(503, headers={"Retry-After": "2"}),
        Reply(503, headers={"Retry-After": "3600"}),
        Reply(200),
    ]
    response = make_client([server.url], sleep, retry_after_cap=5.0).get("/")
    assert response.status_code == 200
    assert sleep.calls == [2.0, 5.0]


def test_post_is_not_retried_on_503(server: ScriptedServer, sleep: RecordingSleep) -> None:
    server.script = [Reply(503, {"title": "Service Unavailable", "status": 503})]
    response = make_client([server.url], sleep).post("/events", json={"title": "t"})
    assert response.status_code == 503
    assert len(server.seen) == 1
    assert json.loads(server.seen[0].body) == {"title": "t"}
    assert sleep.calls == []


def test_post_is_resent_after_a_pause_when_the_answer_proves_it_was_not_carried_out(
    server: ScriptedServer, sleep: RecordingSleep
) -> None:
    """A 503 the caller's predicate recognises (the DB's "no leader": nothing entered the log) makes
    even a POST safe to send again; the pause comes first, even before an untried replica, since the
    condition is cluster-wide."""
    refused = Reply(503, {"type": "no-leader"}, headers={"Retry-After": "1"})
    server.script = [refused, refused]
    with ScriptedServer() as other:
        other.script = [refused, Reply(201)]
        client = make_client([server.url, other.url], sleep)
        response = client.post("/txn", json={"n": 1}, resend_if=lambda r: r.json()["type"] == "no-leader")
    assert response.status_code == 201
    assert len(server.seen) + len(other.seen) == 4
    assert sleep.calls == [1.0, 1.0, 1.0]


def test_post_is_not_resent_when_the_predicate_declines(
    server: ScriptedServer, sleep: RecordingSleep
) -> None:
    server.script = [Reply(503, {"type": "outcome-unknown"})]
    response = make_client([server.url], sleep).post(
        "/txn", json={}, resend_if=lambda r: r.json().get("type") == "no-leader"
    )
    assert response.status_code == 503
    assert len(server.seen) == 1
    assert sleep.calls == []


def test_post_marked_idempotent_is_retried(server: ScriptedServer, sleep: RecordingSleep) -> None:
    server.script = [Reply(503), Reply(201)]
    response = make_client([server.url], sleep).post("/events", json={}, idempotent=True)
    assert response.status_code == 201
    assert len(server.seen) == 2


def test_other_errors_are_never_retried(server: ScriptedServer, sleep: RecordingSleep) -> None:
    server.script = [Reply(500), Reply(404), Reply(429)]
    client = make_client([server.url], sleep)
    assert [client.get("/").status_code for _ in range(3)] == [500, 404, 429]
    assert len(server.seen) == 3
    assert sleep.calls == []


def test_raise_for_status_carries_problem_body(server: ScriptedServer, sleep: RecordingSleep) -> None:
    problem = {"type": "about:blank", "title": "Conflict", "status": 409, "detail": "slot taken"}
    server.script = [Reply(409, problem, content_type="application/problem+json")]
    with pytest.raises(HttpError) as info:
        make_client([server.url], sleep).put("/events/1", json={}, raise_for_status=True)
    assert info.value.status == 409
    assert info.value.problem == problem
    assert "slot taken" in str(info.value)
    assert len(server.seen) == 1


def test_failover_to_next_url_and_stickiness(
    server: ScriptedServer, dead_url: str, sleep: RecordingSleep
) -> None:
    client = make_client([dead_url, server.url], sleep)
    assert client.get("/a").status_code == 200
    assert client.active_url == server.url
    assert client.get("/b").status_code == 200
    assert [seen.path for seen in server.seen] == ["/a", "/b"]
    assert sleep.calls == []  # moving to an untried replica needs no pause


def test_a_call_that_runs_out_of_attempts_moves_the_next_call_past_the_dead_replica(
    server: ScriptedServer, dead_url: str, sleep: RecordingSleep
) -> None:
    client = make_client([dead_url, server.url], sleep, retries=0)
    with pytest.raises(Unavailable):
        client.get("/first")
    assert client.active_url == server.url
    assert client.get("/second").status_code == 200
    assert [seen.path for seen in server.seen] == ["/second"]


def test_sticky_url_is_tried_first(server: ScriptedServer, dead_url: str, sleep: RecordingSleep) -> None:
    session = RecordingSession()  # defined below, with the discovery tests
    client = make_client([dead_url, server.url], sleep, session=session)
    client.get("/1")
    client.get("/2")
    assert session.urls == [f"{dead_url}/1", f"{server.url}/1", f"{server.url}/2"]


def test_post_fails_over_when_connection_was_refused(
    server: ScriptedServer, dead_url: str, sleep: RecordingSleep
) -> None:
    response = make_client([dead_url, server.url], sleep).post("/events", json={"a": 1})
    assert response.status_code == 200
    assert [seen.method for seen in server.seen] == ["POST"]


def test_all_replicas_down_raises_unavailable_with_cause(dead_url: str, sleep: RecordingSleep) -> None:
    client = make_client([dead_url, dead_url + "/"], sleep, retries=2)
    with pytest.raises(Unavailable) as info:
        client.get("/x")
    assert info.value.attempts == 3
    assert isinstance(info.value.__cause__, requests.exceptions.ConnectionError)
    assert sleep.calls == [0.1]  # the second replica was untried, the third attempt revisits one


def test_exhausted_503_raises_unavailable_with_last_response(
    server: ScriptedServer, sleep: RecordingSleep
) -> None:
    server.script = [Reply(503)] * 3
    with pytest.raises(Unavailable) as info:
        make_client([server.url], sleep, retries=2).delete("/e/1")
    assert info.value.last_response is not None
    assert info.value.last_response.status_code == 503
    assert isinstance(info.value.__cause__, HttpError)
    assert info.value.__cause__.status == 503
    assert len(server.seen) == 3


def test_post_read_timeout_is_not_retried(sleep: RecordingSleep) -> None:
    # The kernel completes the connection from the listen backlog, but nobody ever answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = make_client([url], sleep, timeout=(2.0, 0.2))
        with pytest.raises(Unavailable, match="outcome unknown") as info:
            client.post("/events", json={})
    assert info.value.attempts == 1
    assert isinstance(info.value.__cause__, requests.exceptions.ReadTimeout)
    assert sleep.calls == []


def test_request_id_is_propagated(server: ScriptedServer, sleep: RecordingSleep) -> None:
    client = make_client([server.url], sleep)
    client.get("/none")
    with bind_request_id("req-99"):
        client.get("/bound")
        client.get("/explicit", headers={"x-request-id": "caller-chose"})
    seen = {entry.path: entry.headers for entry in server.seen}
    assert "X-Request-ID" not in seen["/none"]
    assert seen["/bound"]["X-Request-ID"] == "req-99"
    assert seen["/explicit"]["x-request-id"] == "caller-chose"


def test_base_url_prefix_is_kept(server: ScriptedServer, sleep: RecordingSleep) -> None:
    make_client([server.url + "/api/"], sleep).get("/v1/ping")
    assert server.seen[0].path == "/api/v1/ping"


@pytest.mark.parametrize(
    ("urls", "message"),
    [([], "must not be empty"), (["ftp://x"], "http"), (["127.0.0.1:80"], "http")],
)
def test_bad_construction_is_refused(urls: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpClient(urls)


def test_single_string_is_refused() -> None:
    with pytest.raises(TypeError, match="list of URLs"):
        HttpClient("http://127.0.0.1:1")  # type: ignore[arg-type]


def test_relative_path_is_refused(sleep: RecordingSleep) -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        make_client(["http://127.0.0.1:1"], sleep).get("x")


def test_spread_sends_each_request_to_the_next_instance(sleep: RecordingSleep) -> None:
    with ScriptedServer() as first, ScriptedServer() as second:
        client = make_client([first.url, second.url], sleep, spread=True)
        for index in range(6):
            assert client.get(f"/{index}").status_code == 200
        assert len(first.seen) == len(second.seen) == 3


def test_spread_still_fails_over_past_a_dead_instance(
    server: ScriptedServer, dead_url: str, sleep: RecordingSleep
) -> None:
    client = make_client([dead_url, server.url], sleep, spread=True)
    for index in range(4):
        assert client.post(f"/{index}", json={}).status_code == 200  # refused: provably never sent
    assert [seen.path for seen in server.seen] == ["/0", "/1", "/2", "/3"]
    assert sleep.calls == []


class ClosesIdleConnections:
    """A keep-alive server that answers each connection's first request and then closes it while
    the next request arrives: what a backend worker that stops does to a pooled idle connection.
    Requests it answered and requests it dropped unanswered are counted."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.answered = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @staticmethod
    def _read_request(conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        return True

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                if not self._read_request(conn):
                    continue
                self.answered += 1
                body = b'{"ok": true}'
                conn.sendall(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(body), body)
                )
                if self._read_request(conn):
                    self.dropped += 1  # read, never answered: the client cannot tell it from a crash

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def closes_idle() -> Iterator[ClosesIdleConnections]:
    server = ClosesIdleConnections()
    yield server
    server.close()


def test_post_on_a_kept_alive_connection_closed_under_it_is_outcome_unknown(
    closes_idle: ClosesIdleConnections, sleep: RecordingSleep
) -> None:
    client = make_client([closes_idle.url], sleep)
    assert client.post("/events", json={}).status_code == 201
    with pytest.raises(Unavailable, match="outcome unknown"):
        client.post("/events", json={})
    assert (closes_idle.answered, closes_idle.dropped) == (1, 1)


def test_post_marked_idempotent_is_resent_when_its_kept_alive_connection_closes_under_it(
    closes_idle: ClosesIdleConnections, sleep: RecordingSleep
) -> None:
    # What the gateway does for a create that carries an Idempotency-Key: the resend is harmless.
    client = make_client([closes_idle.url], sleep)
    assert client.post("/events", json={}).status_code == 201
    assert client.post("/events", json={}, idempotent=True).status_code == 201
    assert (closes_idle.answered, closes_idle.dropped) == (2, 1)


# --- a changing list of instances (discovery) --------------------------------------------------------


class ChangingDiscovery:
    """A discovery whose list the test changes between calls, as a gossip view would."""

    def __init__(self, *urls: str) -> None:
        self.current: tuple[str, ...] = urls

    def urls(self) -> tuple[str, ...]:
        return self.current


class RecordingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def request(self, method: str, url: str, **kwargs: object) -> requests.Response:  # type: ignore[override]
        self.urls.append(url)
        return super().request(method, url, **kwargs)


def test_a_changed_discovery_list_is_used_by_the_next_call(dead_url: str, sleep: RecordingSleep) -> None:
    with ScriptedServer() as first, ScriptedServer() as second:
        discovery = ChangingDiscovery(first.url)
        client = make_client([dead_url], sleep, discovery=discovery)
        assert client.get("/a").status_code == 200
        discovery.current = (second.url + "/",)
        assert client.get("/b").status_code == 200
        assert client.active_url == second.url
        assert [seen.path for seen in first.seen] == ["/a"]
        assert [seen.path for seen in second.seen] == ["/b"]


def test_spread_goes_round_robin_over_the_discovery_list(sleep: RecordingSleep) -> None:
    with ScriptedServer() as static, ScriptedServer() as first, ScriptedServer() as second:
        discovery = ChangingDiscovery(first.url, second.url)
        client = make_client([static.url], sleep, spread=True, discovery=discovery)
        for index in range(6):
            assert client.get(f"/{index}").status_code == 200
        assert len(first.seen) == len(second.seen) == 3
        assert static.seen == []


def test_an_instance_removed_from_the_list_is_no_longer_tried(dead_url: str, sleep: RecordingSleep) -> None:
    with ScriptedServer() as first, ScriptedServer() as second:
        session = RecordingSession()
        discovery = ChangingDiscovery(dead_url, first.url, second.url)
        client = make_client([first.url], sleep, discovery=discovery, session=session)
        assert client.get("/0").status_code == 200  # the dead one first, then first (now sticky)
        discovery.current = (dead_url, second.url)  # first left; the dead one is listed first again
        session.urls.clear()
        for index in range(1, 4):
            assert client.get(f"/{index}").status_code == 200
        # The dead one refused /0 moments ago: it is passed over (see the unreachable tests below).
        assert session.urls == [f"{second.url}/1", f"{second.url}/2", f"{second.url}/3"]
        assert [seen.path for seen in first.seen] == ["/0"]


def test_spread_skips_an_instance_removed_from_the_list(sleep: RecordingSleep) -> None:
    with ScriptedServer() as first, ScriptedServer() as second:
        discovery = ChangingDiscovery(first.url, second.url)
        client = make_client([first.url], sleep, spread=True, discovery=discovery)
        client.get("/0")
        client.get("/1")
        discovery.current = (second.url,)
        for index in range(2, 6):
            client.get(f"/{index}")
        assert len(first.seen) == 1
        assert len(second.seen) == 5


def test_an_empty_discovery_list_falls_back_to_base_urls(sleep: RecordingSleep) -> None:
    with ScriptedServer() as static, ScriptedServer() as found:
        discovery = ChangingDiscovery()
        client = make_client([static.url], sleep, discovery=discovery)
        assert client.get("/none-found").status_code == 200
        assert client.active_url == static.url
        discovery.current = (found.url,)
        assert client.get("/found").status_code == 200
        discovery.current = ()
        assert client.get("/gone").status_code == 200
        assert [seen.path for seen in static.seen] == ["/none-found", "/gone"]
        assert [seen.path for seen in found.seen] == ["/found"]


def test_replicas_are_what_discovery_lists_now_normalised_or_the_static_list(sleep: RecordingSleep) -> None:
    discovery = ChangingDiscovery("http://127.0.0.1:9101/", "http://127.0.0.1:9102")
    client = make_client(["http://127.0.0.1:9100"], sleep, discovery=discovery)
    assert client.replicas() == ("http://127.0.0.1:9101", "http://127.0.0.1:9102")
    discovery.current = ("http://127.0.0.1:9102",)
    assert client.replicas() == ("http://127.0.0.1:9102",)
    discovery.current = ()
    assert client.replicas() == ("http://127.0.0.1:9100",)
    assert make_client(["http://127.0.0.1:9100/"], sleep).replicas() == ("http://127.0.0.1:9100",)


def test_stickiness_by_url_survives_a_reordering_of_the_list(dead_url: str, sleep: RecordingSleep) -> None:
    with ScriptedServer() as first, ScriptedServer() as second:
        discovery = ChangingDiscovery(dead_url, first.url, second.url)
        client = make_client([second.url], sleep, discovery=discovery)
        assert client.get("/a").status_code == 200
        assert client.active_url == first.url
        # By position the sticky replica (index 1) would now be `second`; by value it is still `first`.
        discovery.current = (first.url, second.url, dead_url)
        assert client.active_url == first.url
        assert client.get("/b").status_code == 200
        assert [seen.path for seen in first.seen] == ["/a", "/b"]
        assert second.seen == []


def test_a_sticky_url_that_left_the_list_is_not_used(sleep: RecordingSleep) -> None:
    with ScriptedServer() as first, ScriptedServer() as second, ScriptedServer() as third:
        discovery = ChangingDiscovery(first.url)
        client = make_client([first.url], sleep, discovery=discovery)
        client.get("/a")
        discovery.current = (second.url, third.url)
        assert client.active_url == second.url
        client.get("/b")
        assert [seen.path for seen in first.seen] == ["/a"]
        assert [seen.path for seen in second.seen] == ["/b"]


def test_a_call_that_runs_out_of_attempts_moves_past_the_dead_discovered_instance(
    server: ScriptedServer, dead_url: str, sleep: RecordingSleep
) -> None:
    discovery = ChangingDiscovery(dead_url, server.url)
    client = make_client([server.url], sleep, retries=0, discovery=discovery)
    with pytest.raises(Unavailable):
        client.get("/first")
    assert client.active_url == server.url
    assert client.get("/second").status_code == 200
    assert [seen.path for seen in server.seen] == ["/second"]


def test_discovered_urls_are_normalised_once_per_distinct_list(
    server: ScriptedServer, sleep: RecordingSleep, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    original = http_module._normalise_base_url

    def counting(url: str) -> str:
        parsed.append(url)
        return original(url)

    discovery = ChangingDiscovery(server.url + "/api/")
    client = make_client([server.url], sleep, discovery=discovery)
    monkeypatch.setattr(http_module, "_normalise_base_url", counting)
    for _ in range(3):
        client.get("/v1/ping")
    assert parsed == [server.url + "/api/"]
    discovery.current = (server.url + "/v2/",)
    client.get("/ping")
    client.get("/ping")
    assert len(parsed) == 2
    assert [seen.path for seen in server.seen] == ["/api/v1/ping"] * 3 + ["/v2/ping"] * 2


def test_unusable_discovered_urls_are_skipped(sleep: RecordingSleep) -> None:
    with ScriptedServer() as static, ScriptedServer() as found:
        discovery = ChangingDiscovery("ftp://nope", found.url)
        client = make_client([static.url], sleep, discovery=discovery)
        assert client.get("/a").status_code == 200
        discovery.current = ("users-1:8080",)  # nothing usable: as good as an empty list
        assert client.get("/b").status_code == 200
        assert [seen.path for seen in found.seen] == ["/a"]
        assert [seen.path for seen in static.seen] == ["/b"]


def test_static_discovery_is_accepted(server: ScriptedServer, dead_url: str, sleep: RecordingSleep) -> None:
    client = make_client([dead_url], sleep, retries=0, discovery=StaticDiscovery([server.url]))
    assert client.get("/x").status_code == 200
    assert [seen.path for seen in server.seen] == ["/x"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_unreachable_instance_is_passed_over_for_a_while_then_tried_again(
    dead_url: str, sleep: RecordingSleep
) -> None:
    clock = Clock()
    with ScriptedServer() as live:
        session = RecordingSession()
        client = make_client([dead_url, live.url], sleep, spread=True, session=session, clock=clock)
        for index in range(6):
            assert client.get(f"/{index}").status_code == 200
        # Only the first request that met the dead instance paid for it; the others went straight on.
        assert [url for url in session.urls if url.startswith(dead_url)] == [f"{dead_url}/1"]
        clock.now += client.unreachable_for + 0.1
        session.urls.clear()
        client.get("/6")
        client.get("/7")
        assert f"{dead_url}/6" in session.urls or f"{dead_url}/7" in session.urls  # tried again
        assert sleep.calls == []


def test_when_every_instance_is_unreachable_they_are_still_tried(
    dead_url: str, sleep: RecordingSleep
) -> None:
    client = make_client([dead_url], sleep, retries=1)
    for _ in range(2):
        with pytest.raises(Unavailable) as info:
            client.get("/")
        assert info.value.attempts == 2  # not given up on without a try


@pytest.fixture
def unanswered_url() -> Iterator[str]:
    """A loopback port whose accept queue is full: a connect gets no answer, as from a crashed host."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):  # takes the one queue slot
            yield f"http://127.0.0.1:{port}"


def test_an_unanswered_connect_passes_over_every_replica_on_that_host(
    unanswered_url: str, dead_url: str, sleep: RecordingSleep
) -> None:
    with ScriptedServer() as live:
        # The live server is reached by name, so that it is another host than 127.0.0.1.
        live_url = live.url.replace("127.0.0.1", "localhost")
        session = RecordingSession()
        client = make_client([unanswered_url, dead_url, live_url], sleep, session=session, timeout=(0.3, 5.0))
        assert client.get("/1").status_code == 200
        assert client.get("/2").status_code == 200
    # One connect timeout paid; the other replica on the same host was never tried.
    assert session.urls == [f"{unanswered_url}/1", f"{live_url}/1", f"{live_url}/2"]


def test_after_a_503_the_next_attempt_passes_over_a_replica_found_unreachable(
    unanswered_url: str, sleep: RecordingSleep
) -> None:
    # The crash of a machine during an election: one replica does not answer the connect, the other
    # answers 503 (no leader yet). The retry after the 503 must not go back to the dead one.
    with ScriptedServer() as live:
        live.script = [Reply(503), Reply(503), Reply(200)]
        live_url = live.url.replace("127.0.0.1", "localhost")
        session = RecordingSession()
        client = make_client(
            [unanswered_url, live_url], sleep, session=session, timeout=(0.3, 5.0), retries=3
        )
        assert client.get("/x").status_code == 200
    assert session.urls == [f"{unanswered_url}/x", f"{live_url}/x", f"{live_url}/x", f"{live_url}/x"]


# --- the default transport sends what a requests.Session sends ----------------------------------------


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("GET", {"params": {"prefix": "a b/ü", "limit": 5, "none": None, "many": ["1", "2"]}}),
        ("GET", {"params": [("since", "0001.x"), ("limit", "100")], "headers": {"Accept": "text/calendar"}}),
        ("POST", {"json": {"title": "Plan", "n": 1.5, "ü": [True, None]}}),
        ("PUT", {"json": [1, 2], "headers": {"content-type": "application/merge-patch+json"}}),
        ("POST", {"data": b'{"raw": "bytes, as they are"}', "headers": {"Content-Type": "application/json"}}),
        ("POST", {}),
        ("DELETE", {"params": {"prev_revision": 3}}),
    ],
)
def test_the_default_transport_sends_what_a_requests_session_sends(
    server: ScriptedServer, sleep: RecordingSleep, method: str, kwargs: dict
) -> None:
    with bind_request_id("req-1"):
        make_client([server.url + "/prefix"], sleep).request(method, "/p/a%20b?x=1", **kwargs)
        make_client([server.url + "/prefix"], sleep, session=requests.Session()).request(
            method, "/p/a%20b?x=1", **kwargs
        )
    pooled, session = server.seen
    assert (pooled.method, pooled.path, pooled.body) == (session.method, session.path, session.body)
    assert pooled.headers == session.headers


def test_the_default_transport_answers_a_requests_response(
    server: ScriptedServer, sleep: RecordingSleep
) -> None:
    server.script = [Reply(201, {"id": "e1"}, {"Location": "/v1/events/e1", "Retry-After": "3"})]
    response = make_client([server.url], sleep).post("/v1/events", json={})
    assert isinstance(response, requests.Response)
    assert (response.status_code, response.reason, response.json()) == (201, "Created", {"id": "e1"})
    assert response.headers["location"] == "/v1/events/e1"
    assert response.content == b'{"id": "e1"}'
    assert response.text == '{"id": "e1"}'
    assert response.url == f"{server.url}/v1/events"
    response.close()  # the connection is back in the pool already; closing is harmless


def test_a_body_that_is_not_json_is_refused_before_anything_is_sent(
    server: ScriptedServer, sleep: RecordingSleep
) -> None:
    with pytest.raises(requests.exceptions.InvalidJSONError):
        make_client([server.url], sleep).post("/x", json={"n": float("nan")})
    assert server.seen == []


def test_json_and_data_together_are_refused(sleep: RecordingSleep) -> None:
    with pytest.raises(ValueError, match="json or data"):
        make_client(["http://127.0.0.1:9"], sleep).post("/x", json={}, data=b"{}")


def test_pooled_connections_carry_the_dead_peer_options(
    server: ScriptedServer, sleep: RecordingSleep
) -> None:
    options = http_module.dead_peer_socket_options(1.5)
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in options
    assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in options
    assert (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1500) in options
    assert (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1) in options
    # A connection the default transport opens carries them.
    client = make_client([server.url], sleep)
    conn = client._pool._pool(server.url).open(2.0, 2.0)
    try:
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 1000
        assert conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        conn.close()
    plain = make_client([server.url], sleep, dead_peer_timeout=None)
    conn = plain._pool._pool(server.url).open(2.0, 2.0)
    try:
        assert conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        conn.close()


class DeadPeerSession(RecordingSession):
    """The first URL's host crashed after the request was sent: the kernel gives up (ETIMEDOUT)."""

    def __init__(self, dead: str) -> None:
        super().__init__()
        self.dead = dead

    def request(self, method: str, url: str, **kwargs: object) -> requests.Response:  # type: ignore[override]
        if url.startswith(self.dead):
            self.urls.append(url)
            aborted = urllib3.exceptions.ProtocolError(
                "Connection aborted.", TimeoutError(errno.ETIMEDOUT, "Connection timed out")
            )
            raise requests.exceptions.ConnectionError(aborted)
        return super().request(method, url, **kwargs)


def test_a_peer_found_dead_mid_request_passes_over_its_whole_host(sleep: RecordingSleep) -> None:
    with ScriptedServer() as live:
        dead = live.url.replace("127.0.0.1", "localhost")  # another host name, same server behind it
        other_on_dead_host = dead.rsplit(":", 1)[0] + ":1"
        session = DeadPeerSession(dead)
        client = make_client([dead, other_on_dead_host, live.url], sleep, session=session)
        assert client.get("/1").status_code == 200
        assert client.get("/2").status_code == 200
    # The dead host's other replica is never tried; the next request starts past both.
    assert session.urls == [f"{dead}/1", f"{live.url}/1", f"{live.url}/2"]
    # A write whose connection died after it was sent: its outcome is unknown, so it is not re-sent.
    with pytest.raises(Unavailable, match="outcome unknown"):
        make_client([dead, live.url], sleep, session=DeadPeerSession(dead)).post("/w", json={})


def test_a_read_timeout_is_not_a_dead_peer() -> None:
    assert not http_module._dead_peer(requests.exceptions.ReadTimeout("read timed out"))
    aborted = urllib3.exceptions.ProtocolError("Connection aborted.", TimeoutError(errno.ETIMEDOUT, "x"))
    assert http_module._dead_peer(requests.exceptions.ConnectionError(aborted))


def test_the_transport_reports_a_peer_the_kernel_gave_up_on_as_dead(server: ScriptedServer) -> None:
    class GoneSocket:
        def settimeout(self, _timeout: float | None) -> None:
            pass

        def sendall(self, _data: bytes) -> None:
            raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")

    class GoneConnection:
        sock = GoneSocket()

        def close(self) -> None:
            pass

    client = HttpClient([server.url], retries=0)
    pool = client._pool._pool(server.url)
    pool.take = lambda: GoneConnection()  # type: ignore[method-assign]
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        client._pool.send("GET", server.url, "/x", None, {}, (1.0, 1.0))
    assert http_module._dead_peer(info.value)
