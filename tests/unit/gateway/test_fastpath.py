"""The gateway's fast path answers, and calls the backend, exactly as the Flask dispatch (differential)."""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from werkzeug.test import create_environ, run_wsgi_app
from werkzeug.wsgi import LimitedStream

from agenda.common.http import Unavailable
from agenda.common.logs import current_request_id
from agenda.common.tokens import TokenIssuer, TokenVerifier
from agenda.common.web import IDEMPOTENCY_HEADER, MAX_BODY
from agenda.gateway.app import GatewayDeps, create_app
from agenda.gateway.ratelimit import RateLimiter

KEY = Ed25519PrivateKey.generate()
SECRET = "s" * 32
TOKEN = TokenIssuer(KEY, "k1", "agenda-users", "agenda", ttl=600, clock=time.time).issue("alice")[0]
OTHER = TokenIssuer(Ed25519PrivateKey.generate(), "k1", "agenda-users", "agenda", ttl=600).issue("eve")[0]


@dataclass
class Scripted:
    """A backend answering from `answers` (status, headers, body) or raising; records every call."""

    answers: list[Any] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        call = {"method": method, "path": path, **kwargs}
        headers = dict(call.get("headers") or {})
        if len(headers.get(IDEMPOTENCY_HEADER, "")) == 32:
            headers[IDEMPOTENCY_HEADER] = "<minted>"  # uuid4().hex: random in both paths
        call["headers"] = headers
        bound = current_request_id()  # what HttpClient would send on as X-Request-ID
        call["request_id"] = bound if bound == "req-1" else len(bound or "")
        self.calls.append(call)
        answer = self.answers.pop(0) if self.answers else (200, {"Content-Type": "application/json"}, b"{}")
        if isinstance(answer, Exception):
            raise answer
        status, headers_out, body = answer
        response = requests.Response()
        response.status_code = status
        response._content = body
        for name, value in headers_out.items():
            response.headers[name] = value
        return response


def app_pair() -> tuple[Any, Scripted, Any, Scripted]:
    clients = []
    for fast in (True, False):
        backend = Scripted()
        deps = GatewayDeps(
            verifier=TokenVerifier({"k1": KEY.public_key()}, "agenda-users", "agenda"),
            backends={"users": backend, "groups": Scripted()},  # type: ignore[dict-item]
            gateway_secret=SECRET,
            login_limiter=RateLimiter(2, 60),
        )
        clients += [create_app(deps, fast_forward=fast).test_client(), backend]
    return clients[0], clients[1], clients[2], clients[3]


AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}
EVENT = b'{"title": "Plan", "start": "2031-01-01T10:00:00Z", "end": "2031-01-01T11:00:00Z"}'

# (method, url, headers, body, backend answer or exception)
CASES: list[tuple[str, str, dict[str, str], bytes | None, Any]] = [
    ("GET", "/v1/events?from=a&to=b", AUTH, None, None),
    ("GET", "/v1/events?a=1&b=2&a=3&blank=&plus=x+y&pct=%2F%C3%BC&bad=%FF", AUTH, None, None),
    ("GET", "/v1/me", {**AUTH, "Accept": "application/json", "Accept-Language": "es"}, None, None),
    ("GET", "/v1/events/abc", AUTH, None, (404, {"Content-Type": "application/problem+json"}, b'{"x":1}')),
    ("DELETE", "/v1/events/abc", AUTH, None, (204, {}, b"")),
    (
        "POST",
        "/v1/events",
        JSON,
        EVENT,
        (201, {"Content-Type": "application/json", "Location": "/v1/e/1"}, b"{}"),
    ),
    (
        "POST",
        "/v1/events?allow_conflict=true",
        {**JSON, "Content-Type": "application/json; charset=utf-8"},
        EVENT,
        None,
    ),
    ("POST", "/v1/events", {**JSON, IDEMPOTENCY_HEADER: "key-1"}, EVENT, None),
    ("POST", "/v1/events", {**JSON, IDEMPOTENCY_HEADER: "bad key"}, EVENT, None),  # 400
    ("POST", "/v1/events", {**JSON, "Content-Type": "application/merge-patch+json"}, EVENT, None),
    ("POST", "/v1/events", {**JSON, "Content-Type": "text/plain"}, EVENT, None),  # 415
    ("POST", "/v1/events", JSON, b"{nope", None),  # 400
    ("POST", "/v1/events", JSON, b"[1]", None),  # 400
    ("POST", "/v1/events", JSON, json.dumps({"t": "x" * MAX_BODY}).encode(), None),  # 413
    ("POST", "/v1/events/abc/respond", AUTH, None, None),  # no body at all
    ("PATCH", "/v1/events/abc", JSON, b'{"title": "T"}', (503, {"Retry-After": "2"}, b"busy")),
    ("GET", "/v1/me", {}, None, None),  # 401
    ("GET", "/v1/me", {"Authorization": "Basic abc"}, None, None),
    ("GET", "/v1/me", {"Authorization": f"Bearer {OTHER}"}, None, None),
    ("GET", "/v1/nothing", AUTH, None, None),  # 404
    ("PUT", "/v1/me", AUTH, None, None),  # 405
    (
        "POST",
        "/v1/auth/login",
        {"Content-Type": "application/json"},
        b'{"username": "a", "password": "b"}',
        None,
    ),
    ("GET", "/v1/health", {}, None, None),
    ("GET", "/v1/events/%C3%BC", AUTH, None, None),  # a non-ASCII path
    ("GET", "/v1/me", AUTH, None, Unavailable("down", attempts=2)),  # 503
    (
        "POST",
        "/v1/events/abc/respond",
        JSON,
        b'{"status": "accepted"}',
        Unavailable("down", attempts=1),
    ),  # 502
    ("POST", "/v1/events", JSON, EVENT, Unavailable("down", attempts=1)),  # keyed, minted key: 502
    ("POST", "/v1/events", {**JSON, IDEMPOTENCY_HEADER: "k"}, EVENT, Unavailable("down", attempts=1)),  # 503
    ("GET", "/v1/me", AUTH, RuntimeError("boom"), None),  # an opaque 500
]


def run(client: Any, backend: Scripted, request_id: str | None) -> list[Any]:
    out = []
    for method, url, headers, body, answer in CASES:
        if isinstance(body, Exception):
            backend.answers.append(body)
            body = None
        elif answer is not None:
            backend.answers.append(answer)
        sent = dict(headers)
        if request_id is not None:
            sent["X-Request-ID"] = request_id
        response = client.open(url, method=method, headers=sent, data=body)
        text = response.get_data()
        echoed = response.headers["X-Request-ID"]
        if echoed != request_id:  # none sent, or refused: each path minted a random one
            assert len(echoed) == 32
            text = text.replace(echoed.encode(), b"<id>")
            echoed = "<id>"
        headers_out = [(k, echoed if k == "X-Request-ID" else v) for k, v in response.headers.items()]
        out.append((method, url, response.status_code, headers_out, text))
        backend.answers.clear()
    return out


@pytest.mark.parametrize("request_id", ["req-1", None, "bad id with spaces"])
def test_the_fast_path_answers_as_flask_and_sends_the_same_calls(request_id: str | None) -> None:
    fast, fast_backend, slow, slow_backend = app_pair()
    assert run(fast, fast_backend, request_id) == run(slow, slow_backend, request_id)
    assert fast_backend.calls == slow_backend.calls


def test_a_plain_user_request_never_enters_flask() -> None:
    fast, backend, _, _ = app_pair()
    app = fast.application

    def dispatch_not_expected(**_kwargs: Any) -> Any:
        raise AssertionError("Flask dispatched a plain user request")

    app.view_functions["dispatch"] = dispatch_not_expected
    assert fast.get("/v1/events?from=a&to=b", headers=AUTH).status_code == 200
    assert fast.post("/v1/events", headers=JSON, data=EVENT).status_code == 200
    assert len(backend.calls) == 2
    assert fast.get("/v1/me").status_code == 500  # no token: Flask's, whose view is gone here


class _BoundIds(logging.Handler):
    """Each record's message with the request id bound when it was logged (what JsonFormatter shows)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), current_request_id()))


@pytest.mark.parametrize("fast", [True, False])
def test_an_unavailable_backend_is_logged_with_the_request_id(fast: bool) -> None:
    fast_client, fast_backend, slow_client, slow_backend = app_pair()
    client, backend = (fast_client, fast_backend) if fast else (slow_client, slow_backend)
    handler = _BoundIds()
    logger = logging.getLogger("agenda.gateway.app")
    logger.addHandler(handler)
    try:
        backend.answers.append(Unavailable("down", attempts=2))
        response = client.get("/v1/me", headers={**AUTH, "X-Request-ID": "req-7"})
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 503
    assert handler.seen == [("backend users unavailable: down", "req-7")]


@pytest.mark.parametrize("fast", [True, False])
def test_a_client_gone_mid_body_gets_flasks_answer(fast: bool) -> None:
    # The keep-alive server hands the app a werkzeug LimitedStream of Content-Length bytes; a client
    # that closes early makes it raise ClientDisconnected (a 400), which must not escape the app.
    fast_client, fast_backend, slow_client, slow_backend = app_pair()
    client, backend = (fast_client, fast_backend) if fast else (slow_client, slow_backend)
    environ = create_environ("/v1/events", method="POST", headers={**JSON, "X-Request-ID": "req-8"})
    environ["CONTENT_LENGTH"] = "100"
    environ["wsgi.input"] = LimitedStream(io.BytesIO(b'{"title": "Plan"}'), 100)
    environ["wsgi.input_terminated"] = True
    _body, status, headers = run_wsgi_app(client.application, environ, buffered=True)
    assert status.startswith("400")
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["X-Request-ID"] == "req-8"
    assert backend.calls == []


def test_a_refused_token_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import agenda.common.tokens as tokens_module

    calls: list[str] = []
    real = tokens_module.jwt.decode

    def decode(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(tokens_module.jwt, "decode", decode)
    fast, _, _, _ = app_pair()
    response = fast.get("/v1/me", headers={"Authorization": f"Bearer {OTHER}"})
    assert response.status_code == 401
    assert calls == [OTHER]


def test_the_fast_path_never_forwards_a_truncated_body() -> None:
    # gunicorn's body reader returns what it got when the client closes before Content-Length.
    fast, backend, _, _ = app_pair()
    environ = create_environ("/v1/events", method="POST", headers=JSON)
    environ["CONTENT_LENGTH"] = str(len(EVENT) + 10)
    environ["wsgi.input"] = io.BytesIO(EVENT)
    environ["wsgi.input_terminated"] = True
    _body, status, _headers = run_wsgi_app(fast.application, environ, buffered=True)
    assert status.startswith("400")
    assert backend.calls == []
