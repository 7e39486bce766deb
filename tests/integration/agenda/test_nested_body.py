"""Every JSON endpoint of every service refuses an over-deep body and a JSON constant with a 400
problem+json naming the reason, and never answers 500: the User and Group Services (called directly,
as the gateway calls them, since the gateway refuses these bodies before any backend sees them), the
API gateway, and every DB member (so the leader's fast PUT path and the followers are both covered).

The endpoints are read from the apps' own URL maps (the gateway's from its route table), so a new
POST, PUT or PATCH endpoint is covered without editing this file.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import flask
import pytest
import requests

from agenda.common.web import IDENTITY_HEADER, SECRET_HEADER
from agenda.db.api import create_app as create_db_app
from agenda.gateway.routes import ROUTES
from agenda.groups.app import GroupDeps
from agenda.groups.app import create_app as create_groups_app
from agenda.users.app import Deps
from agenda.users.app import create_app as create_users_app
from unit.db.test_api_errors import FakeNode

from .conftest import GATEWAY_SECRET, Stack

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
PROBLEM = "application/problem+json"
BODIES = {
    "nested": (b"[" * 200_000, "nested deeper than 64 levels"),  # 200 KB: RecursionError in json
    "nan": (b'{"a": NaN}', "NaN is not JSON"),
}
# Endpoints that take no body: sent the bodies all the same, they must ignore them (never a 5xx).
NO_BODY = frozenset({("db", "POST", "/v1/leases/<lease_id>/keepalive")})


def _endpoints(app: flask.Flask) -> list[tuple[str, str]]:
    # CalDAV's bodies are XML and iCalendar, not JSON: its bad bodies are tests/unit/users/test_dav.py's.
    return sorted(
        (m, rule.rule)
        for rule in app.url_map.iter_rules()
        for m in rule.methods & BODY_METHODS
        if not rule.rule.startswith("/dav")
    )


def _url_maps() -> dict[str, list[tuple[str, str]]]:
    """(method, rule) of every endpoint that may take a body, per service, from the apps themselves."""
    # The factories only register views: the stores and keys are never touched to build the URL map.
    unused: Any = None
    users = create_users_app(Deps(store=unused, issuer=unused, gateway_secret=GATEWAY_SECRET))
    groups = create_groups_app(GroupDeps(groups=unused, events=unused, gateway_secret=GATEWAY_SECRET))
    gateway = sorted((r.method, r.path) for r in ROUTES if r.method in BODY_METHODS)
    return {
        "users": _endpoints(users),
        "groups": _endpoints(groups),
        "gateway": gateway,
        "db": _endpoints(create_db_app(FakeNode())),
    }


URL_MAPS = _url_maps()
CASES = [(service, method, rule) for service, endpoints in URL_MAPS.items() for method, rule in endpoints]


def test_the_enumeration_sees_every_service() -> None:
    # That the gateway routes exactly the backends' rules: tests/unit/gateway/test_routes_match_backends.py.
    assert ("POST", "/v1/events") in URL_MAPS["users"]
    assert ("POST", "/v1/groups/<group_id>/events") in URL_MAPS["groups"]
    assert ("POST", "/v1/events") in URL_MAPS["gateway"]
    assert ("POST", "/v1/txn") in URL_MAPS["db"]
    assert ("PUT", "/v1/kv/<key:key>") in URL_MAPS["db"]
    assert set(CASES) >= NO_BODY  # a body-less endpoint that disappears must leave this list too


@dataclass
class Caller:
    """A user with an event they organize and a group they own, so that every path reaches its parser."""

    name: str
    token: str
    params: dict[str, str]


@pytest.fixture(scope="module")
def caller(stack: Stack) -> Caller:
    name, token = stack.user("nb")
    event = stack.call(
        "POST",
        "/v1/events",
        token,
        json={"title": "Nested", "start": "2033-01-10T10:00:00Z", "end": "2033-01-10T11:00:00Z"},
    )
    assert event.status_code == 201, event.text
    group = stack.call("POST", "/v1/groups", token, json={"name": "Nested"})
    assert group.status_code == 201, group.text
    params = {
        "event_id": event.json()["id"],
        "group_id": group.json()["id"],
        "key": f"nested-body-{uuid.uuid4().hex[:8]}",
        "lease_id": "1",
    }
    return Caller(name, token, params)


def _fill(rule: str, params: dict[str, str]) -> str:
    """The rule with its parameters (Flask ``<conv:name>`` or OpenAPI ``{name}``) filled in."""

    def fill(match: re.Match[str]) -> str:
        return params[match[1]]  # a KeyError names a parameter a new endpoint brought: add it to `caller`

    return re.sub(r"\{([a-z_]+)\}", fill, re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", fill, rule))


def _bases(stack: Stack, service: str) -> list[str]:
    return {
        "users": stack.dev.users_urls,
        "groups": stack.dev.groups_urls,
        "gateway": [stack.gateway_url],
        "db": stack.dev.db_urls,
    }[service]


def _headers(service: str, caller: Caller) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if service == "gateway":
        headers["Authorization"] = f"Bearer {caller.token}"
    elif service in ("users", "groups"):
        headers |= {SECRET_HEADER: GATEWAY_SECRET, IDENTITY_HEADER: caller.name}
    return headers


@pytest.mark.parametrize(("service", "method", "rule"), CASES, ids=[" ".join(case) for case in CASES])
def test_every_json_endpoint_refuses_nested_and_constant_bodies(
    stack: Stack, caller: Caller, service: str, method: str, rule: str
) -> None:
    path = _fill(rule, caller.params)
    failures: list[str] = []
    for base in _bases(stack, service):
        for name, (body, reason) in BODIES.items():
            response: requests.Response = stack.session.request(
                method, base + path, data=body, headers=_headers(service, caller), timeout=30
            )
            got = f"{base} {name}: {response.status_code} {response.text[:200]}"
            if (service, method, rule) in NO_BODY:
                if response.status_code >= 500:
                    failures.append(got)
                continue
            content_type = response.headers.get("Content-Type", "")
            detail: Any = response.json().get("detail") if content_type.startswith(PROBLEM) else None
            if response.status_code != 400 or not isinstance(detail, str) or reason not in detail:
                failures.append(got)
    assert failures == []
