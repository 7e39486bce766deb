"""The gateway's routing table: every public route, which backend serves it, and its OpenAPI text.

One table drives both routing and `/v1/openapi.json`, so the published contract cannot drift from
what the gateway actually forwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["ROUTES", "Route", "RouteTable", "openapi_document"]

_PARAM: Final = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    """`method path` is served by `service`; `public` routes need no token."""

    method: str
    path: str
    service: str
    summary: str
    public: bool = False
    body: dict[str, Any] | None = None  # JSON schema of the request body
    query: Sequence[tuple[str, bool, str]] = ()  # (name, required, description)
    success: int = 200
    content_type: str = "application/json"
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = _PARAM.sub(
            lambda m: f"(?P<{m[1]}>[^/]+)", re.escape(self.path).replace(r"\{", "{").replace(r"\}", "}")
        )
        object.__setattr__(self, "pattern", re.compile(regex))


def _obj(required: Sequence[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": props, "additionalProperties": False}


_S: Final = {"type": "string"}
_TIME: Final = {"type": "string", "format": "date-time"}
_EVENT_PROPS: Final = {
    "title": _S,
    "start": _TIME,
    "end": _TIME,
    "description": _S,
    "location": _S,
    "visibility": {"type": "string", "enum": ["private", "public"]},
}
_RANGE: Final = (("from", True, "RFC 3339 start (inclusive)"), ("to", True, "RFC 3339 end (exclusive)"))
_ALLOW: Final = (("allow_conflict", False, "true to book despite conflicts"),)
_CREDENTIALS: Final = {"username": _S, "password": {"type": "string", "format": "password"}}

ROUTES: Final[tuple[Route, ...]] = (
    Route(
        "POST",
        "/v1/auth/register",
        "users",
        "Create an account",
        public=True,
        body=_obj(["username", "password"], {**_CREDENTIALS, "display_name": _S, "timezone": _S}),
        success=201,
    ),
    Route(
        "POST",
        "/v1/auth/login",
        "users",
        "Exchange credentials for an access token (rate-limited)",
        public=True,
        body=_obj(["username", "password"], _CREDENTIALS),
    ),
    Route("GET", "/v1/me", "users", "The caller's account"),
    Route(
        "POST",
        "/v1/events",
        "users",
        "Create an event (409 on the organizer's conflicts unless allow_conflict=true)",
        body=_obj(
            ["title", "start", "end"],
            {**_EVENT_PROPS, "participants": {"type": "array", "items": _S}},
        ),
        query=_ALLOW,
        success=201,
    ),
    Route("GET", "/v1/events", "users", "The caller's agenda with conflict flags", query=_RANGE),
    Route("GET", "/v1/events/{event_id}", "users", "One event the caller takes part in"),
    Route(
        "PATCH",
        "/v1/events/{event_id}",
        "users",
        "Change an event (organizer only)",
        body=_obj([], _EVENT_PROPS),
        query=_ALLOW,
    ),
    Route("DELETE", "/v1/events/{event_id}", "users", "Cancel an event (organizer only)", success=204),
    Route(
        "POST",
        "/v1/events/{event_id}/respond",
        "users",
        "Answer an invitation",
        body=_obj(["status"], {"status": {"type": "string", "enum": ["accepted", "declined", "tentative"]}}),
        query=_ALLOW,
    ),
    Route("GET", "/v1/invitations", "users", "Invitations awaiting the caller's answer"),
    Route("GET", "/v1/conflicts", "users", "The caller's overlapping events", query=_RANGE),
    Route(
        "GET",
        "/v1/notifications",
        "users",
        "The caller's notifications after a cursor",
        query=(("since", False, "cursor of the last notification seen"), ("limit", False, "1..500")),
    ),
    Route(
        "GET", "/v1/calendar.ics", "users", "The caller's calendar as iCalendar", content_type="text/calendar"
    ),
    Route(
        "POST",
        "/v1/groups",
        "groups",
        "Create a group (the caller owns it, level 0)",
        body=_obj(["name"], {"name": _S, "hierarchical": {"type": "boolean"}}),
        success=201,
    ),
    Route("GET", "/v1/groups", "groups", "The caller's groups and invitations to groups"),
    Route("GET", "/v1/groups/{group_id}", "groups", "A group the caller belongs or is invited to"),
    Route(
        "POST",
        "/v1/groups/{group_id}/members",
        "groups",
        "Invite a user (hierarchical: strictly below the caller's level; flat: owner only)",
        body=_obj(["username"], {"username": _S, "level": {"type": "integer", "minimum": 0}}),
        success=201,
    ),
    Route(
        "POST", "/v1/groups/{group_id}/members/{username}/accept", "groups", "Accept an invitation to a group"
    ),
    Route(
        "DELETE",
        "/v1/groups/{group_id}/members/{username}",
        "groups",
        "Leave, or remove a member",
        success=204,
    ),
    Route(
        "POST",
        "/v1/groups/{group_id}/events",
        "groups",
        "Create a group event, fanned out to every active member",
        body=_obj(["title", "start", "end"], _EVENT_PROPS),
        query=_ALLOW,
        success=201,
    ),
    Route(
        "GET", "/v1/groups/{group_id}/agenda", "groups", "Members' commitments, privacy-masked", query=_RANGE
    ),
    Route(
        "GET",
        "/v1/groups/{group_id}/free",
        "groups",
        "Free slots common to every active member",
        query=(*_RANGE, ("duration", False, "minutes, 1..1440 (default 30)")),
    ),
)

LOCAL_ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/v1/health", "gateway", "Gateway liveness", public=True),
    Route("GET", "/v1/openapi.json", "gateway", "This document", public=True),
)


class RouteTable:
    """Finds the route for a request; tells "no such path" (404) from "wrong method" (405)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)

    def match(self, method: str, path: str) -> tuple[Route | None, list[str]]:
        """(route, []) on a match; (None, allowed methods) otherwise (empty: unknown path)."""
        allowed = []
        for route in self.routes:
            if route.pattern.fullmatch(path):
                if route.method == method.upper():
                    return route, []
                allowed.append(route.method)
        return None, sorted(set(allowed))


_PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}


def _operation(route: Route) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _S} for name in _PARAM.findall(route.path)
    ]
    params += [
        {"name": name, "in": "query", "required": required, "description": text, "schema": _S}
        for name, required, text in route.query
    ]
    problem = {
        "description": "Problem details (RFC 9457)",
        "content": {"application/problem+json": {"schema": _PROBLEM_REF}},
    }
    responses: dict[str, Any] = {
        str(route.success): {"description": "Success"}
        if route.success == 204
        else {"description": "Success", "content": {route.content_type: {}}},
        "400": problem,
        "default": problem,
    }
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.path.lower()).strip('_')}",
        "responses": responses,
    }
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.body}}}
    if route.public:
        op["security"] = []
    else:
        responses["401"] = problem
    if route.path == "/v1/auth/login":
        responses["429"] = problem
    return op


def openapi_document(routes: Iterable[Route]) -> dict[str, Any]:
    """An OpenAPI 3.1 document describing `routes`."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Agenda Distribuida", "version": "1.0.0"},
        "paths": paths,
        "security": [{"bearerAuth": []}],
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Problem": {
                    "type": "object",
                    "properties": {
                        "type": _S,
                        "title": _S,
                        "status": {"type": "integer"},
                        "detail": _S,
                        "field": _S,
                        "request_id": _S,
                    },
                }
            },
        },
    }
