"""The gateway's route table (`ROUTES`) and the backends' URL maps agree.

Every route the gateway forwards is a rule of the service it forwards to, with the same method; every
rule of a backend is routed, except the few each process answers itself and the User Service's CalDAV
rules under /dav, which the gateway forwards by their prefix (`agenda.gateway.dav`), whatever they are;
and for every route, the gateway's pattern and the backend's rule match the same concrete paths. The
URL maps come from the services' real application factories.
"""

from __future__ import annotations

import re

import flask
import pytest

from agenda.db.memory import MemoryDBClient
from agenda.gateway.dav import DAV_METHODS, is_dav_path
from agenda.gateway.routes import LOCAL_ROUTES, ROUTES, Route, RouteTable

from ..backends import Clock, groups_app, url_rules, users_app

# Answered by each process for itself (the gateway has its own /v1/health), or the operator's, asked of
# one instance directly: never routed.
NOT_ROUTED = {
    ("users", "GET", "/v1/health"),
    ("users", "GET", "/internal/stats"),
    ("groups", "GET", "/v1/health"),
}
SAMPLE_PARAMS = {"event_id": "0123456789abcdef0123456789abcdef", "group_id": "f" * 32, "username": "bob"}


@pytest.fixture(scope="module")
def backends() -> dict[str, flask.Flask]:
    db, clock = MemoryDBClient(), Clock()
    return {"users": users_app(db, clock), "groups": groups_app(db, clock)}


def openapi_path(rule: str) -> str:
    """A Flask rule (``/v1/events/<event_id>``) in the route table's spelling (``/v1/events/{event_id}``)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def all_backend_rules(backends: dict[str, flask.Flask]) -> set[tuple[str, str, str]]:
    """(service, method, path) for every rule of every backend."""
    out = set()
    for service, app in backends.items():
        for route in url_rules(app):
            method, rule = route.split(" ", 1)
            out.add((service, method, openapi_path(rule)))
    return out


def backend_routes(backends: dict[str, flask.Flask]) -> set[tuple[str, str, str]]:
    """The rules routed by the gateway's table: all but the CalDAV ones (see the module)."""
    return {rule for rule in all_backend_rules(backends) if not is_dav_path(rule[2])}


def test_caldav_rules_are_the_user_services_and_use_methods_the_gateway_forwards(
    backends: dict[str, flask.Flask],
) -> None:
    dav = {rule for rule in all_backend_rules(backends) if is_dav_path(rule[2])}
    assert dav  # the User Service serves CalDAV
    assert {service for service, _, _ in dav} <= {"users"}
    assert {method for _, method, _ in dav} <= set(DAV_METHODS)


def gateway_routes() -> set[tuple[str, str, str]]:
    return {(route.service, route.method, route.path) for route in ROUTES}


def test_every_gateway_route_is_a_rule_of_its_backend_with_the_same_method(
    backends: dict[str, flask.Flask],
) -> None:
    assert {route.service for route in ROUTES} == set(backends)
    assert gateway_routes() - backend_routes(backends) == set()


def test_every_backend_rule_is_routed_but_the_ones_each_process_answers_itself(
    backends: dict[str, flask.Flask],
) -> None:
    assert backend_routes(backends) - NOT_ROUTED == gateway_routes()
    assert backend_routes(backends) >= NOT_ROUTED  # the exceptions still exist
    assert ("gateway", "GET", "/v1/health") in {(r.service, r.method, r.path) for r in LOCAL_ROUTES}
    assert len(ROUTES) == len(gateway_routes())  # no route listed twice


def _concrete(route: Route) -> str:
    return re.sub(r"\{([a-z_]+)\}", lambda m: SAMPLE_PARAMS[m[1]], route.path)


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
def test_the_gateway_and_the_backend_match_the_same_paths(
    backends: dict[str, flask.Flask], route: Route
) -> None:
    path = _concrete(route)
    matched, _ = RouteTable((*LOCAL_ROUTES, *ROUTES)).match(route.method, path)
    assert matched == route
    rule, args = (
        backends[route.service].url_map.bind("backend").match(path, method=route.method, return_rule=True)
    )
    assert openapi_path(rule.rule) == route.path
    assert args == {name: SAMPLE_PARAMS[name] for name in re.findall(r"\{([a-z_]+)\}", route.path)}
