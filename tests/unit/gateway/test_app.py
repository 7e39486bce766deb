"""The gateway app with a recording fake backend: what reaches a backend, and what never does."""

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agenda.common.http import Unavailable
from agenda.common.tokens import TokenIssuer, TokenVerifier
from agenda.common.web import IDENTITY_HEADER, MAX_BODY, SECRET_HEADER
from agenda.gateway.app import GatewayDeps, create_app
from agenda.gateway.ratelimit import RateLimiter

KEY = Ed25519PrivateKey.generate()
SECRET = "s" * 32


@dataclass
class FakeBackend:
    calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    fail: bool = False
    urls: tuple[str, ...] = ("http://127.0.0.1:9100",)

    def replicas(self) -> tuple[str, ...]:
        return self.urls

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        self.calls.append({"method": method, "path": path, **kwargs})
        if self.fail:
            raise Unavailable("down", attempts=1)
        response = requests.Response()
        response.status_code = self.status
        response._content = json.dumps({"ok": True}).encode()
        response.headers["Content-Type"] = "application/json"
        response.headers["Set-Cookie"] = "leak=1"
        return response


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(backend: FakeBackend) -> Any:
    deps = GatewayDeps(
        verifier=TokenVerifier({"k1": KEY.public_key()}, "agenda-users", "agenda"),
        backends={"users": backend},  # type: ignore[dict-item]
        gateway_secret=SECRET,
        login_limiter=RateLimiter(2, 60),
    )
    return create_app(deps).test_client()


def token(
    sub: str = "alice", key: Ed25519PrivateKey = KEY, aud: str = "agenda", now: float | None = None
) -> str:
    issuer = TokenIssuer(
        key, "k1", "agenda-users", aud, ttl=600, clock=lambda: time.time() if now is None else now
    )
    return issuer.issue(sub)[0]


def auth(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_valid_token_forwards_identity_and_secret_only(client: Any, backend: FakeBackend) -> None:
    headers = {**auth(token()), IDENTITY_HEADER: "mallory", SECRET_HEADER: "guess", "X-Request-ID": "req-1"}
    response = client.get("/v1/events?from=a&to=b", headers=headers)
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-1"
    assert "Set-Cookie" not in response.headers
    (call,) = backend.calls
    assert call["headers"][IDENTITY_HEADER] == "alice"
    assert call["headers"][SECRET_HEADER] == SECRET
    assert call["params"] == {"from": ["a"], "to": ["b"]}
    assert call["path"] == "/v1/events"


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"Authorization": "Basic abc"},
        auth("garbage"),
        auth(token(key=Ed25519PrivateKey.generate())),
        auth(token(aud="other")),
        auth(token(now=time.time() - 7200)),
    ],
    ids=["missing", "basic", "garbage", "forged", "wrong-aud", "expired"],
)
def test_bad_tokens_never_reach_a_backend(client: Any, backend: FakeBackend, bad: dict[str, str]) -> None:
    response = client.get("/v1/me", headers=bad)
    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert backend.calls == []


def test_public_routes_need_no_token(client: Any, backend: FakeBackend) -> None:
    response = client.post("/v1/auth/register", json={"username": "alice", "password": "x" * 8})
    assert response.status_code == 200
    assert IDENTITY_HEADER not in backend.calls[0]["headers"]


def test_login_is_rate_limited_per_username_and_address(client: Any, backend: FakeBackend) -> None:
    backend.status = 401
    body = {"username": "alice", "password": "wrong-password"}
    assert [client.post("/v1/auth/login", json=body).status_code for _ in range(2)] == [401, 401]
    limited = client.post("/v1/auth/login", json=body)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert len(backend.calls) == 2
    assert client.post("/v1/auth/login", json={**body, "username": "bob"}).status_code == 401


def test_body_checks_happen_before_the_backend(client: Any, backend: FakeBackend) -> None:
    headers = {**auth(token()), "Content-Type": "application/json"}
    assert client.post("/v1/events", data="{nope", headers=headers).status_code == 400
    assert client.post("/v1/events", data="[1]", headers=headers).status_code == 400
    assert client.post("/v1/events", data="{}", headers={**auth(token())}).status_code == 415
    huge = json.dumps({"title": "x" * MAX_BODY})
    assert client.post("/v1/events", data=huge, headers=headers).status_code == 413
    assert backend.calls == []


def test_unknown_route_and_wrong_method(client: Any) -> None:
    assert client.get("/v1/nothing", headers=auth(token())).status_code == 404
    response = client.put("/v1/events/abc", headers=auth(token()))
    assert response.status_code == 405
    assert response.headers["Allow"] == "DELETE, GET, PATCH"


def test_backend_down_is_503_for_reads_and_502_for_writes(client: Any, backend: FakeBackend) -> None:
    backend.fail = True
    assert client.get("/v1/me", headers=auth(token())).status_code == 503
    assert client.post("/v1/events", json={}, headers=auth(token())).status_code == 502


def test_openapi_and_health_are_served_locally(client: Any, backend: FakeBackend) -> None:
    doc = client.get("/v1/openapi.json").get_json()
    assert "/v1/events/{event_id}/respond" in doc["paths"]
    assert "/v1/groups" not in doc["paths"]  # no groups backend configured
    assert client.get("/v1/health").get_json()["status"] == "ok"
    assert backend.calls == []


def test_a_create_carries_an_idempotency_key_so_the_gateway_may_resend_it(
    client: Any, backend: FakeBackend
) -> None:
    body = {"title": "T", "start": "2031-01-01T10:00:00Z", "end": "2031-01-01T11:00:00Z"}
    client.post("/v1/events", json=body, headers={**auth(token()), "Idempotency-Key": "mine-1"})
    client.post("/v1/events", json=body, headers=auth(token()))
    client.post("/v1/auth/login", json={"username": "alice", "password": "x" * 12})
    client.post("/v1/events/" + "a" * 32 + "/respond", json={"status": "accepted"}, headers=auth(token()))
    mine, made, login, respond = backend.calls
    assert mine["headers"]["Idempotency-Key"] == "mine-1"
    assert len(made["headers"]["Idempotency-Key"]) == 32  # the gateway's own, fresh for this request
    assert (mine["idempotent"], made["idempotent"], login["idempotent"]) == (True, True, True)
    # A response is not keyed: its outcome stays unknown when its answer is lost.
    assert "Idempotency-Key" not in respond["headers"]
    assert respond["idempotent"] is None


def test_a_lost_create_is_503_with_the_clients_key_and_502_without(client: Any, backend: FakeBackend) -> None:
    backend.fail = True
    body = {"title": "T", "start": "2031-01-01T10:00:00Z", "end": "2031-01-01T11:00:00Z"}
    keyed = client.post("/v1/events", json=body, headers={**auth(token()), "Idempotency-Key": "k"})
    assert (keyed.status_code, keyed.headers["Retry-After"]) == (503, "1")
    unkeyed = client.post("/v1/events", json=body, headers=auth(token()))
    assert unkeyed.status_code == 502
    assert "Idempotency-Key" in unkeyed.get_json()["detail"]
    assert client.post("/v1/auth/login", json={"username": "a", "password": "b"}).status_code == 503


@pytest.mark.parametrize("key", ["", "x" * 256, "two words"])
def test_a_malformed_idempotency_key_is_400_before_the_backend(
    client: Any, backend: FakeBackend, key: str
) -> None:
    response = client.post("/v1/events", json={}, headers={**auth(token()), "Idempotency-Key": key})
    assert response.status_code == 400
    assert response.get_json()["field"] == "Idempotency-Key"
    assert backend.calls == []


def test_cluster_services_shows_the_gossip_view_to_the_operator_only(
    backend: FakeBackend, tmp_path: Any
) -> None:
    import hashlib

    from agenda.common.discovery import ViewMember, write_view

    view = tmp_path / "view.json"
    write_view(
        view,
        "agenda1-gateway",
        [
            ViewMember(
                "agenda1-users",
                "10.0.0.1:7947",
                17,
                "alive",
                "users",
                "https://10.0.0.1:8100",
                "1.2",
                "serving",
            ),
            ViewMember(
                "agenda2-users",
                "10.0.0.2:7947",
                9,
                "suspect",
                "users",
                "https://10.0.0.2:8100",
                "1.2",
                "draining",
            ),
        ],
    )
    operator = "operator-token-0123456789"

    def app_with(admin: str, gossip_view: str) -> Any:
        deps = GatewayDeps(
            verifier=TokenVerifier({"k1": KEY.public_key()}, "agenda-users", "agenda"),
            backends={"users": backend},  # type: ignore[dict-item]
            gateway_secret=SECRET,
            login_limiter=RateLimiter(2, 60),
            admin_token_sha256=admin,
            gossip_view=gossip_view,
        )
        return create_app(deps).test_client()

    client = app_with(hashlib.sha256(operator.encode()).hexdigest(), str(view))
    shown = client.get("/v1/cluster/services", headers=auth(operator))
    assert shown.status_code == 200
    body = shown.get_json()
    assert body["member"] == "agenda1-gateway"
    assert [(m["name"], m["status"], m["state"], m["incarnation"]) for m in body["members"]] == [
        ("agenda1-users", "alive", "serving", 17),
        ("agenda2-users", "suspect", "draining", 9),
    ]
    # What this process routes to, from its client: not necessarily the view (re-read periodically).
    assert body["routing"] == {"users": ["http://127.0.0.1:9100"]}
    # A user's token, a wrong one, none: 401, and the view is never shown.
    for headers in (auth(token()), auth("operator-token-guess"), {}):
        refused = client.get("/v1/cluster/services", headers=headers)
        assert refused.status_code == 401
        assert refused.mimetype == "application/problem+json"
    # No operator token configured: nothing opens it.
    assert app_with("", str(view)).get("/v1/cluster/services", headers=auth(operator)).status_code == 401
    # No view, or one that cannot be read: 503, never a stack trace.
    admin = hashlib.sha256(operator.encode()).hexdigest()
    assert app_with(admin, "").get("/v1/cluster/services", headers=auth(operator)).status_code == 503
    view.write_text("{not json")
    broken = client.get("/v1/cluster/services", headers=auth(operator))
    assert broken.status_code == 503
    assert broken.mimetype == "application/problem+json"
    assert backend.calls == []


def test_a_checked_body_is_passed_on_as_the_client_sent_it(client: Any, backend: FakeBackend) -> None:
    raw = b'{"title": "Plan",\n "start":"2031-01-01T10:00:00Z", "end": "2031-01-01T11:00:00Z"}'
    headers = {**auth(token()), "Content-Type": "application/json; charset=utf-8"}
    assert client.post("/v1/events", data=raw, headers=headers).status_code == 200
    (call,) = backend.calls
    assert call["data"] == raw  # not decoded and encoded again
    assert call["headers"]["Content-Type"] == "application/json"
    assert "json" not in call


def test_a_request_without_a_body_is_passed_on_without_one(client: Any, backend: FakeBackend) -> None:
    client.get("/v1/me", headers=auth(token()))
    (call,) = backend.calls
    assert call["data"] is None
    assert "Content-Type" not in call["headers"]
