"""CalDAV through the gateway (`agenda.gateway.dav`), against a recording fake User Service.

The User Service's /dav answers are scripted here (its own are tested in tests/unit/users/test_dav.py);
its login is imitated (a password table, real signed tokens), so what the gateway does with Basic
credentials is what it would do with the real one (tests/integration/agenda/test_caldav_via_gateway.py
runs that one).
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agenda.common.config import ConfigError
from agenda.common.errors import Problem, problem_type
from agenda.common.http import Unavailable
from agenda.common.httpserver import make_keepalive_server
from agenda.common.tokens import TokenIssuer, TokenVerifier
from agenda.common.web import CLOSE_CONNECTION, IDENTITY_HEADER, SECRET_HEADER
from agenda.gateway import cli
from agenda.gateway.app import GatewayDeps, create_app, deps_of
from agenda.gateway.dav import (
    BASIC_CHALLENGE,
    DAV_METHODS,
    DAV_REQUEST_HEADERS,
    DAV_RESPONSE_HEADERS,
    BasicLoginCache,
    DavSettings,
    parse_basic,
    read_body,
)
from agenda.gateway.ratelimit import RateLimiter

KEY = Ed25519PrivateKey.generate()
SECRET = "s" * 32
PASSWORDS = {"alice": "correct horse", "bob": "battery staple", "carol": "pässwörd:with colon"}
PROBLEM = "application/problem+json"
MULTISTATUS = b'<?xml version="1.0"?><d:multistatus xmlns:d="DAV:"/>'
MAX_BODY = 8192
LOGIN = "/v1/auth/login"


def token(sub: str = "alice", ttl: int = 600, key: Ed25519PrivateKey = KEY) -> str:
    return TokenIssuer(key, "k1", "agenda-users", "agenda", ttl=ttl).issue(sub)[0]


def basic(username: str, password: str | None = None) -> dict[str, str]:
    secret = PASSWORDS[username] if password is None else password
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def answer(status: int, headers: dict[str, str], body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    for name, value in headers.items():
        response.headers[name] = value
    return response


@dataclass
class UserService:
    """The User Service as the gateway calls it: a login checking `PASSWORDS` that returns real tokens
    (`token_ttl` s), and /dav answered from `answers` (status, headers, body) or a 207; `down`: no
    instance answers. Records every call."""

    answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    token_ttl: int = 600
    down: bool = False

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        self.calls.append({"method": method, "path": path, **kwargs})
        if self.down:
            raise Unavailable("no instance answered", attempts=3)
        if path == LOGIN:
            # The gateway's Basic check sends `json`; the JSON login passes the client's body on.
            grant_request = kwargs.get("json") or json.loads(kwargs["data"])
            username, password = grant_request["username"], grant_request["password"]
            if PASSWORDS.get(username) != password:
                return answer(401, {"Content-Type": PROBLEM}, b'{"status": 401}')
            grant = {"access_token": token(username, self.token_ttl), "token_type": "Bearer"}
            return answer(200, {"Content-Type": "application/json"}, json.dumps(grant).encode())
        if self.answers:
            return answer(*self.answers.pop(0))
        return answer(207, {"Content-Type": "application/xml; charset=utf-8"}, MULTISTATUS)

    @property
    def logins(self) -> list[dict[str, Any]]:
        return [call for call in self.calls if call["path"] == LOGIN]

    @property
    def forwarded(self) -> list[dict[str, Any]]:
        return [call for call in self.calls if call["path"] != LOGIN]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Gateway:
    client: Any
    deps: GatewayDeps
    users: UserService
    clock: Clock


def gateway(
    *,
    login_limit: int = 2,
    cache_ttl: float = 300.0,
    cache_size: int = 100,
    token_ttl: int = 600,
    body_timeout: float = 5.0,
    fast_forward: bool = True,
) -> Gateway:
    users, clock = UserService(token_ttl=token_ttl), Clock()
    deps = GatewayDeps(
        verifier=TokenVerifier({"k1": KEY.public_key()}, "agenda-users", "agenda"),
        backends={"users": users},  # type: ignore[dict-item]
        gateway_secret=SECRET,
        login_limiter=RateLimiter(login_limit, 60),
        dav=DavSettings(max_body=MAX_BODY, body_timeout=body_timeout),
        dav_logins=BasicLoginCache(cache_ttl, cache_size, clock=clock),
    )
    return Gateway(create_app(deps, fast_forward=fast_forward).test_client(), deps, users, clock)


@pytest.fixture
def gw() -> Gateway:
    return gateway()


def assert_challenge(response: Any, detail: str | None = None) -> dict[str, Any]:
    assert response.status_code == 401
    assert response.mimetype == PROBLEM
    assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE
    body = response.get_json()
    if detail is not None:
        assert detail in body["detail"]
    return body


# ------------------------------------------------------------------------------------- routing


@pytest.mark.parametrize("method", DAV_METHODS)
def test_every_caldav_method_reaches_the_user_service_with_path_and_query_unchanged(
    gw: Gateway, method: str
) -> None:
    target = "/dav/alice/calendars/work/ev%20one@example.com.ics?expand=1&x=%2F%C3%BC&blank="
    response = gw.client.open(target, method=method, data=b"<d:propfind/>", headers=bearer(token()))
    assert response.status_code == 207
    (call,) = gw.users.calls
    assert (call["method"], call["path"]) == (method, target)
    assert call["data"] == b"<d:propfind/>"
    assert call["headers"][IDENTITY_HEADER] == "alice"
    assert call["headers"][SECRET_HEADER] == SECRET
    assert "params" not in call  # the query travels in the target, as the client wrote it
    # Resent after a lost answer only when doing it twice is harmless.
    assert call["idempotent"] is (method not in ("MKCALENDAR", "MKCOL", "MOVE", "COPY", "POST"))


@pytest.mark.parametrize("path", ["/dav", "/dav/", "/dav/alice/"])
def test_the_dav_root_and_everything_under_it_is_forwarded(gw: Gateway, path: str) -> None:
    assert gw.client.open(path, method="PROPFIND", headers=bearer(token())).status_code == 207
    assert [call["path"] for call in gw.users.calls] == [path]


@pytest.mark.parametrize("path", ["/davx", "/dav-other/x", "/v1/dav/x"])
def test_a_path_that_only_starts_like_dav_is_not_forwarded(gw: Gateway, path: str) -> None:
    assert gw.client.get(path, headers=bearer(token())).status_code == 404
    assert gw.users.calls == []


@pytest.mark.parametrize("method", ["PATCH", "LOCK", "UNLOCK", "TRACE", "SEARCH"])
def test_a_method_outside_caldav_is_405_with_the_caldav_methods_in_allow(gw: Gateway, method: str) -> None:
    response = gw.client.open("/dav/alice/", method=method, headers=bearer(token()))
    assert response.status_code == 405
    assert response.mimetype == PROBLEM
    assert response.headers["Allow"] == (
        "COPY, DELETE, GET, HEAD, MKCALENDAR, MKCOL, MOVE, OPTIONS, POST, PROPFIND, PROPPATCH, PUT, REPORT"
    )
    assert method in response.get_json()["detail"]
    assert gw.users.calls == []


def test_dot_segments_are_refused_before_the_backend(gw: Gateway) -> None:
    response = gw.client.get("/dav/alice/../../v1/me", headers=bearer(token()))
    assert response.status_code == 400
    assert response.get_json()["field"] == "path"
    assert gw.users.calls == []


def test_the_json_api_answers_unknown_methods_as_before(gw: Gateway) -> None:
    # A DAV method on a JSON API path is still Flask's 405, problem+json, and never forwarded.
    response = gw.client.open("/v1/events", method="PROPFIND", headers=bearer(token()))
    assert response.status_code == 405
    assert response.mimetype == PROBLEM
    assert gw.users.calls == []


# ------------------------------------------------------------------------------------- headers


def test_the_caldav_request_headers_are_passed_on_and_nothing_else(gw: Gateway) -> None:
    sent = {
        "Content-Type": "text/calendar; charset=utf-8",
        "Depth": "1",
        "If-Match": '"etag-1"',
        "If-None-Match": "*",
        "If-Schedule-Tag-Match": '"tag-1"',
        "Destination": "https://agenda.example/dav/alice/calendars/home/moved.ics",
        "Overwrite": "F",
        "Brief": "t",
        "Prefer": "return=minimal",
        "Accept": "application/xml",
    }
    assert set(sent) == set(DAV_REQUEST_HEADERS)
    hostile = {
        IDENTITY_HEADER: "mallory",
        SECRET_HEADER: "guess",
        "Cookie": "a=b",
        "X-Forwarded-For": "1.2.3.4",
    }
    gw.client.put("/dav/alice/x.ics", data=b"BEGIN:VCALENDAR", headers={**sent, **hostile, **basic("alice")})
    (call,) = gw.users.forwarded
    assert call["headers"] == {**sent, IDENTITY_HEADER: "alice", SECRET_HEADER: SECRET}
    assert call["idempotent"] is False  # a conditional PUT resent could answer 412 to its own success


def test_an_unconditional_put_may_be_resent(gw: Gateway) -> None:
    gw.client.put("/dav/alice/x.ics", data=b"BEGIN:VCALENDAR", headers=bearer(token()))
    assert gw.users.forwarded[0]["idempotent"] is True


@pytest.mark.parametrize("status", [200, 201, 204, 207, 403, 404, 409, 412, 415, 423, 507])
def test_the_backends_status_body_and_caldav_headers_come_back_unchanged(gw: Gateway, status: int) -> None:
    headers = {
        "ETag": '"2-abc"',
        "DAV": "1, 3, calendar-access",
        "Allow": "OPTIONS, PROPFIND, REPORT",
        "Content-Type": "application/xml; charset=utf-8",
        "Location": "/dav/alice/calendars/new/",
        "Schedule-Tag": '"s-1"',
        "Preference-Applied": "return=minimal",
        "WWW-Authenticate": 'Basic realm="Agenda", charset="UTF-8"',
        "Retry-After": "3",
        "Content-Disposition": "attachment",
    }
    assert set(DAV_RESPONSE_HEADERS) == set(headers)
    body = b"" if status == 204 else MULTISTATUS
    gw.users.answers.append((status, {**headers, "Set-Cookie": "leak=1", "Server": "internal/1.0"}, body))
    response = gw.client.open("/dav/alice/", method="PROPFIND", headers=bearer(token()))
    assert response.status_code == status
    assert response.data == body
    for name, value in headers.items():
        assert response.headers[name] == value
    assert "Set-Cookie" not in response.headers
    assert response.headers.get("Server") != "internal/1.0"
    assert response.headers["X-Request-ID"]


def test_an_answer_without_a_content_type_gets_none(gw: Gateway) -> None:
    gw.users.answers.append((201, {"ETag": '"1"'}, b""))
    response = gw.client.put("/dav/alice/x.ics", data=b"BEGIN:VCALENDAR", headers=bearer(token()))
    assert (response.status_code, response.headers["ETag"]) == (201, '"1"')
    assert "Content-Type" not in response.headers


def test_head_keeps_the_length_the_backend_announced(gw: Gateway) -> None:
    gw.users.answers.append(
        (200, {"Content-Type": "text/calendar", "Content-Length": "1234", "ETag": '"9"'}, b"")
    )
    response = gw.client.head("/dav/alice/x.ics", headers=bearer(token()))
    assert (response.status_code, response.headers["Content-Length"], response.data) == (200, "1234", b"")


def test_a_401_from_the_backend_challenges_for_basic(gw: Gateway) -> None:
    gw.users.answers.append(
        (401, {"Content-Type": PROBLEM, "WWW-Authenticate": 'Bearer realm="agenda"'}, b"{}")
    )
    response = gw.client.open("/dav/alice/", method="PROPFIND", headers=bearer(token()))
    assert (response.status_code, response.headers["WWW-Authenticate"]) == (401, BASIC_CHALLENGE)


def test_an_unavailable_backend_is_503_for_reads_and_502_for_writes_it_cannot_repeat(gw: Gateway) -> None:
    auth = bearer(token())
    gw.users.down = True
    read = gw.client.open("/dav/alice/", method="PROPFIND", headers=auth)
    assert (read.status_code, read.headers["Retry-After"], read.mimetype) == (503, "1", PROBLEM)
    made = gw.client.open("/dav/alice/calendars/new/", method="MKCALENDAR", headers=auth)
    assert (made.status_code, made.mimetype) == (502, PROBLEM)
    assert "outcome is unknown" in made.get_json()["detail"]


# ------------------------------------------------------------------------------------ redirect


@pytest.mark.parametrize("method", ["GET", "PROPFIND", "OPTIONS", "HEAD"])
@pytest.mark.parametrize("path", ["/.well-known/caldav", "/.well-known/caldav/"])
def test_well_known_caldav_redirects_to_dav_without_credentials(gw: Gateway, method: str, path: str) -> None:
    response = gw.client.open(path, method=method)
    assert (response.status_code, response.headers["Location"]) == (301, "/dav/")
    assert gw.users.calls == []


# ------------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("method", ["OPTIONS", "PROPFIND", "GET", "PUT", "REPORT"])
def test_no_credentials_is_a_basic_challenge(gw: Gateway, method: str) -> None:
    assert_challenge(gw.client.open("/dav/alice/", method=method, data=b"<x/>"), "username and password")
    assert gw.users.calls == []


def test_a_bad_bearer_token_is_a_basic_challenge(gw: Gateway) -> None:
    other = token(key=Ed25519PrivateKey.generate())
    body = assert_challenge(gw.client.open("/dav/alice/", method="PROPFIND", headers=bearer(other)))
    assert body["type"] == problem_type("invalid-token")
    assert gw.users.calls == []


def test_basic_credentials_are_checked_by_the_user_services_login(gw: Gateway) -> None:
    headers = {**basic("carol"), "X-Request-ID": "dav-req-1"}  # a colon in the password, and UTF-8
    response = gw.client.open("/dav/carol/", method="PROPFIND", headers=headers)
    assert response.status_code == 207
    assert response.headers["X-Request-ID"] == "dav-req-1"
    login, forwarded = gw.users.calls
    assert login["method"] == "POST"
    assert login["json"] == {"username": "carol", "password": PASSWORDS["carol"]}
    assert login["headers"] == {SECRET_HEADER: SECRET}  # no identity: nobody is signed in yet
    # The backend sees what it sees for a bearer request: the secret and the token's subject.
    assert forwarded["headers"] == {SECRET_HEADER: SECRET, IDENTITY_HEADER: "carol"}


def test_a_wrong_password_is_a_401_and_counts_against_the_login_limit(gw: Gateway) -> None:
    wrong = basic("alice", "guess")
    for _ in range(2):
        assert_challenge(gw.client.open("/dav/alice/", method="PROPFIND", headers=wrong), "Wrong username")
    limited = gw.client.open("/dav/alice/", method="PROPFIND", headers=wrong)
    assert (limited.status_code, limited.mimetype) == (429, PROBLEM)
    assert int(limited.headers["Retry-After"]) >= 1
    # One budget per username and address, whichever way the password comes: the JSON login and the
    # right password are refused too, without asking the User Service.
    assert gw.client.post(LOGIN, json={"username": "alice", "password": "x"}).status_code == 429
    assert gw.client.open("/dav/alice/", method="PROPFIND", headers=basic("alice")).status_code == 429
    assert len(gw.users.logins) == 2
    assert gw.users.forwarded == []
    # Another user is not affected.
    assert gw.client.open("/dav/bob/", method="PROPFIND", headers=basic("bob")).status_code == 207


def test_a_failed_json_login_counts_against_basic_and_a_success_resets_both(gw: Gateway) -> None:
    assert gw.client.post(LOGIN, json={"username": "alice", "password": "x"}).status_code == 401
    assert gw.client.open("/dav/alice/", method="PROPFIND", headers=basic("alice")).status_code == 207
    # The success forgot the failure: two more wrong attempts are 401s, not a 429.
    for password in ("guess-1", "guess-2"):
        assert_challenge(gw.client.open("/dav/", method="PROPFIND", headers=basic("alice", password)))


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Basic", "empty"),
        ("Basic    ", "empty"),
        ("Basic !!!!", "not base64"),
        ("Basic " + base64.b64encode(b"\xff\xfe:pw").decode(), "not UTF-8"),
        ("Basic " + base64.b64encode(b"alice").decode(), "username:password"),
        ("Basic " + base64.b64encode(b":pw").decode(), "empty username"),
        ("Basic " + base64.b64encode(b"alice:pw\n").decode(), "control characters"),
        ("Digest username=alice", "Basic (username and password) or Bearer"),
    ],
)
def test_a_malformed_authorization_is_a_401_naming_the_reason(
    gw: Gateway, authorization: str, reason: str
) -> None:
    response = gw.client.open("/dav/", method="PROPFIND", headers={"Authorization": authorization})
    body = assert_challenge(response, reason)
    assert body["type"] == problem_type("malformed-credentials")
    assert gw.users.calls == []
    assert len(gw.deps.login_limiter) == 0  # not a password attempt


def test_parse_basic_splits_at_the_first_colon_and_accepts_missing_padding() -> None:
    assert parse_basic(base64.b64encode("ana:a:b:ü".encode()).decode()) == ("ana", "a:b:ü")
    assert parse_basic(base64.b64encode(b"ab:c").decode().rstrip("=")) == ("ab", "c")


def test_a_login_that_cannot_be_checked_is_503_and_not_remembered(gw: Gateway) -> None:
    gw.users.down = True
    response = gw.client.open("/dav/", method="PROPFIND", headers=basic("alice"))
    assert (response.status_code, response.headers["Retry-After"], response.mimetype) == (503, "1", PROBLEM)
    gw.users.down = False
    assert gw.client.open("/dav/", method="PROPFIND", headers=basic("alice")).status_code == 207
    assert len(gw.users.logins) == 2


# ------------------------------------------------------------------------------------- caching


def test_a_verified_password_is_reused_without_another_login(gw: Gateway) -> None:
    for _ in range(5):
        assert gw.client.open("/dav/alice/", method="PROPFIND", headers=basic("alice")).status_code == 207
    assert len(gw.users.logins) == 1
    assert len(gw.users.forwarded) == 5
    assert {call["headers"][IDENTITY_HEADER] for call in gw.users.forwarded} == {"alice"}


def test_requests_arriving_together_share_one_check_of_their_password() -> None:
    gw = gateway()
    entered, release = threading.Event(), threading.Event()
    login = gw.users.request

    def slow_login(method: str, path: str, **kwargs: Any) -> requests.Response:
        if path == LOGIN:
            entered.set()
            assert release.wait(10)
        return login(method, path, **kwargs)

    gw.users.request = slow_login  # type: ignore[method-assign]
    looked_up: list[str] = []
    get = gw.deps.dav_logins.get

    def counting_get(authorization: str) -> str | None:
        looked_up.append(authorization)
        return get(authorization)

    gw.deps.dav_logins.get = counting_get  # type: ignore[method-assign]
    statuses: list[int] = []

    def sync() -> None:
        client = gw.client.application.test_client()
        statuses.append(client.open("/dav/alice/", method="PROPFIND", headers=basic("alice")).status_code)

    threads = [threading.Thread(target=sync) for _ in range(6)]
    for thread in threads:
        thread.start()
    # Every request has missed the cache (and so waits for the one checking) before the check ends: six
    # lookups, and the checking request's second one under the lock.
    assert entered.wait(10)
    deadline = time.monotonic() + 10
    while len(looked_up) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(looked_up) == 7
    release.set()
    for thread in threads:
        thread.join(10)
    assert statuses == [207] * 6  # none refused by the login limit (2 attempts here)
    assert len(gw.users.logins) == 1


def test_a_wrong_password_is_never_remembered() -> None:
    gw = gateway(login_limit=10)
    gw.client.open("/dav/", method="PROPFIND", headers=basic("alice"))  # the right one, remembered
    for _ in range(3):
        assert_challenge(gw.client.open("/dav/", method="PROPFIND", headers=basic("alice", "guess")))
    assert len(gw.users.logins) == 4  # each wrong attempt paid its check


def test_a_verified_password_is_checked_again_after_the_cache_ttl(gw: Gateway) -> None:
    gw.client.open("/dav/", method="PROPFIND", headers=basic("alice"))
    gw.clock.now += 299
    gw.client.open("/dav/", method="PROPFIND", headers=basic("alice"))
    assert len(gw.users.logins) == 1
    gw.clock.now += 2
    gw.client.open("/dav/", method="PROPFIND", headers=basic("alice"))
    assert len(gw.users.logins) == 2


def test_a_verified_password_is_never_reused_past_its_tokens_lifetime() -> None:
    gw = gateway(token_ttl=60, cache_ttl=300)
    gw.client.open("/dav/", method="PROPFIND", headers=basic("alice"))
    gw.clock.now += 55
    gw.client.open("/dav/", method="PROPFIND", headers=basic("alice"))
    assert len(gw.users.logins) == 1
    gw.clock.now += 6
    gw.client.open("/dav/", method="PROPFIND", headers=basic("alice"))
    assert len(gw.users.logins) == 2


def test_a_zero_ttl_checks_every_request() -> None:
    gw = gateway(cache_ttl=0)
    for _ in range(3):
        gw.client.open("/dav/", method="PROPFIND", headers=basic("alice"))
    assert len(gw.users.logins) == 3


def test_the_cache_keeps_the_most_recently_used_entries() -> None:
    gw = gateway(cache_size=2)
    for name in ("alice", "bob", "alice", "carol"):  # bob is the least recently used when carol comes
        gw.client.open("/dav/", method="PROPFIND", headers=basic(name))
    assert [call["json"]["username"] for call in gw.users.logins] == ["alice", "bob", "carol"]
    gw.client.open("/dav/", method="PROPFIND", headers=basic("alice"))
    gw.client.open("/dav/", method="PROPFIND", headers=basic("bob"))
    assert [call["json"]["username"] for call in gw.users.logins][3:] == ["bob"]
    assert len(gw.deps.dav_logins) == 2


def test_the_cache_holds_keyed_digests_not_credentials() -> None:
    header = basic("alice")["Authorization"]
    first, second = BasicLoginCache(), BasicLoginCache()
    first.put(header, "alice", 60)
    second.put(header, "alice", 60)
    assert first.get(header) == second.get(header) == "alice"
    assert first.get(header + "x") is None
    (key,) = first._entries
    assert PASSWORDS["alice"].encode() not in key
    assert header.encode() not in key
    assert key != next(iter(second._entries))  # each process draws its own HMAC key


def test_an_expired_or_lifeless_entry_is_not_kept() -> None:
    clock = Clock()
    cache = BasicLoginCache(300, 10, clock=clock)
    cache.put("Basic a", "alice", 0)
    cache.put("Basic b", "bob", -5)
    assert len(cache) == 0
    cache.put("Basic c", "carol", 10)
    clock.now += 10
    assert cache.get("Basic c") is None
    assert len(cache) == 0


# ---------------------------------------------------------------------------------------- bodies


class NeverRead(io.BytesIO):
    """A request body that must not be read."""

    def read(self, size: int | None = -1) -> bytes:
        raise AssertionError("the body was read")

    def readinto(self, buffer: Any) -> int:
        raise AssertionError("the body was read")


def test_a_body_of_the_limit_is_passed_on_whole(gw: Gateway) -> None:
    body = b"x" * MAX_BODY
    assert gw.client.put("/dav/alice/x.ics", data=body, headers=bearer(token())).status_code == 207
    assert gw.users.forwarded[0]["data"] == body


def test_a_declared_body_over_the_limit_is_413_without_reading_it(gw: Gateway) -> None:
    response = gw.client.put(
        "/dav/alice/x.ics",
        input_stream=NeverRead(),
        headers={**bearer(token()), "Content-Type": "text/calendar"},
        environ_overrides={"CONTENT_LENGTH": str(50_000_000)},  # the test client would count the stream
    )
    assert (response.status_code, response.mimetype) == (413, PROBLEM)
    assert response.get_json()["max_body"] == MAX_BODY
    assert gw.users.calls == []


def test_a_chunked_body_over_the_limit_is_413(gw: Gateway) -> None:
    for size, status in ((MAX_BODY + 1, 413), (MAX_BODY, 207)):
        response = gw.client.put(
            "/dav/alice/x.ics",
            input_stream=io.BytesIO(b"y" * size),
            headers={**bearer(token()), "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},
        )
        assert response.status_code == status
    assert [len(call["data"]) for call in gw.users.forwarded] == [MAX_BODY]


def test_a_body_shorter_than_its_content_length_is_400(gw: Gateway) -> None:
    response = gw.client.put(
        "/dav/alice/x.ics",
        input_stream=io.BytesIO(b"short"),
        headers=bearer(token()),
        environ_overrides={"CONTENT_LENGTH": "100"},
    )
    assert (response.status_code, response.get_json()["field"]) == (400, "body")
    assert gw.users.calls == []


class BrokenChunks(io.BytesIO):
    """A chunked body whose connection ends after the first piece (gunicorn's reader raises then)."""

    def read(self, size: int | None = -1) -> bytes:
        if self.tell():
            raise OSError("No more data after: b'0'")
        return super().read(4)


def test_a_chunked_body_cut_short_is_400_and_never_forwarded(gw: Gateway) -> None:
    response = gw.client.put(
        "/dav/alice/x.ics",
        input_stream=BrokenChunks(b"BEGIN:VCALENDAR"),
        headers={**bearer(token()), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert (response.status_code, response.get_json()["field"]) == (400, "body")
    assert gw.users.calls == []


def test_read_body_asks_the_server_to_close_after_a_refusal() -> None:
    environ: dict[str, Any] = {"CONTENT_LENGTH": "10", "wsgi.input": io.BytesIO(b"x" * 10)}
    assert read_body(environ, 10, 1.0) == b"x" * 10
    assert CLOSE_CONNECTION not in environ
    environ = {"CONTENT_LENGTH": "11", "wsgi.input": NeverRead()}
    with pytest.raises(Problem) as info:
        read_body(environ, 10, 1.0)
    assert info.value.status == 413
    assert environ[CLOSE_CONNECTION] is True


@pytest.fixture
def served() -> Iterator[tuple[Gateway, tuple[str, int]]]:
    """A gateway served by the services' keep-alive server on loopback (real sockets)."""
    gw = gateway(body_timeout=0.5)
    server = make_keepalive_server("127.0.0.1", 0, gw.client.application)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield gw, (server.server_address[0], server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _response_then_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout if it never does)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_that_never_arrives_is_408_within_the_body_timeout(
    served: tuple[Gateway, tuple[str, int]],
) -> None:
    gw, address = served
    head = (
        f"PUT /dav/alice/x.ics HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token()}\r\n"
        "Content-Type: text/calendar\r\nContent-Length: 1000\r\n\r\nBEGIN:VCALENDAR\r\n"
    )
    # The body timeout is 0.5 s; the server's idle timeout, 120 s, would end the wait with TimeoutError.
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(head.encode())  # and nothing more, the connection left open
        data = _response_then_close(sock)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"application/problem+json" in data
    assert gw.users.calls == []


def test_a_huge_upload_is_413_at_once_and_the_connection_closed(
    served: tuple[Gateway, tuple[str, int]],
) -> None:
    gw, address = served
    head = (
        f"PUT /dav/alice/x.ics HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token()}\r\n"
        "Content-Type: text/calendar\r\nContent-Length: 50000000\r\n\r\n"
    )
    with socket.create_connection(address, timeout=5) as sock:  # a server reading the body: TimeoutError
        sock.sendall(head.encode() + b"z" * 65536)
        data = _response_then_close(sock)
    assert data.startswith(b"HTTP/1.1 413 ")
    assert b'"max_body": 8192' in data
    assert gw.users.calls == []


# ----------------------------------------------------------------------------------- fast path


def test_the_fast_path_leaves_dav_to_flask() -> None:
    # The fast path forwards what matches a JSON API route; a /dav GET with a bearer token (its kind
    # of request) must come out as the Flask path forwards it.
    answers = []
    for fast in (True, False):
        gw = gateway(fast_forward=fast)
        response = gw.client.get("/dav/alice/x.ics?a=1", headers={**bearer(token()), "X-Request-ID": "r-1"})
        answers.append((response.status_code, response.data, dict(response.headers), gw.users.calls))
    assert answers[0] == answers[1]
    assert answers[0][3][0]["path"] == "/dav/alice/x.ics?a=1"


# -------------------------------------------------------------------------------------- config


def _public_key(tmp_path: Path) -> Path:
    path = tmp_path / "k1.pub"
    path.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def _config(tmp_path: Path, dav: dict[str, Any] | None = None) -> list[str]:
    settings: dict[str, Any] = {
        "users_urls": ["http://127.0.0.1:1"],
        "public_keys": [f"k1={_public_key(tmp_path)}"],
        "gateway_secret": SECRET,
        "tls": {"enabled": False},
        "backend_tls": {"enabled": False},
    }
    if dav is not None:
        settings["dav"] = dav
    path = tmp_path / "gateway.yml"
    path.write_text(yaml.safe_dump(settings))
    return ["--config", str(path)]


def test_the_dav_settings_have_defaults_and_reach_the_app(tmp_path: Path) -> None:
    cfg = cli.load(_config(tmp_path))
    assert (cfg.dav.max_body, cfg.dav.body_timeout) == (1024 * 1024, 10.0)
    assert (cfg.dav.basic_cache_ttl, cfg.dav.basic_cache_size) == (300.0, 10_000)
    settings = {"max_body": 65536, "body_timeout": 3, "basic_cache_ttl": 60, "basic_cache_size": 50}
    deps = deps_of(cli.build_app(cli.load(_config(tmp_path, settings))))
    assert (deps.dav.max_body, deps.dav.body_timeout) == (65536, 3.0)
    assert (deps.dav_logins.ttl, deps.dav_logins.max_entries) == (60.0, 50)


@pytest.mark.parametrize(
    ("dav", "key"),
    [
        ({"max_body": 100}, "dav.max_body"),
        ({"max_body": 1 << 30}, "dav.max_body"),
        ({"body_timeout": 0}, "dav.body_timeout"),
        ({"basic_cache_ttl": -1}, "dav.basic_cache_ttl"),
        ({"basic_cache_ttl": 86400}, "dav.basic_cache_ttl"),
        ({"basic_cache_size": 0}, "dav.basic_cache_size"),
        ({"max_bodyy": 1}, "dav.max_bodyy"),
    ],
)
def test_a_bad_dav_setting_fails_at_start_naming_the_key(
    tmp_path: Path, dav: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        cli.load(_config(tmp_path, dav))
    assert info.value.key == key
