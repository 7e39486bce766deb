"""The gateway's routing table: every public route, which backend serves it, and its OpenAPI text.

One table drives both routing and `/v1/openapi.json`, so the published contract cannot drift from
what the gateway actually forwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from agenda.calendar import MAX_INVITEES
from agenda.common.web import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_SCHEMA
from agenda.domain.model import EventKind, EventStatus, MemberState, NotificationKind, PartStat, Visibility
from agenda.domain.recurrence import MAX_EXDATES, MAX_RDATES, MAX_RRULE_LENGTH
from agenda.domain.validation import (
    MAX_DESCRIPTION,
    MAX_DISPLAY_NAME,
    MAX_GROUP_NAME,
    MAX_LEVEL,
    MAX_LOCATION,
    MAX_PASSWORD,
    MAX_SLOT_MINUTES,
    MAX_TITLE,
    MIN_PASSWORD,
)

__all__ = ["LOCAL_ROUTES", "ROUTES", "STREAM_PATH", "Query", "Route", "RouteTable", "openapi_document"]

_PARAM: Final = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Query:
    """A query parameter: its name, whether it is required, what it means and its JSON schema."""

    name: str
    required: bool
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Route:
    """`method path` is served by `service`; `public` routes need no token.

    The rest documents the contract: the request body's JSON schema, the query parameters, the success
    status and body schema (``response``), other success statuses (``also``), the error statuses this
    route can answer besides those every route shares, and OpenAPI links from the success response to
    the operations that take its ids (so a client, or schemathesis, can follow them).
    """

    method: str
    path: str
    service: str
    summary: str
    public: bool = False
    body: dict[str, Any] | None = None
    query: Sequence[Query] = ()
    headers: Sequence[Query] = ()  # request headers the operation reads (documented ``in: header``)
    success: int = 200
    content_type: str = "application/json"
    response: dict[str, Any] | None = None
    also: Sequence[int] = ()
    errors: Sequence[int] = ()
    links: dict[str, Any] = field(default_factory=dict)
    # The backend makes repeating this request harmless (a login writes nothing), so the gateway may
    # resend it when it cannot tell whether the backend received it. Keyed routes are also resendable.
    resendable: bool = False
    # Opened by the operator's token (not a user's): the gateway answers it from its own state.
    admin: bool = False
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    @property
    def keyed(self) -> bool:
        """The operation takes an Idempotency-Key: the same key twice creates once."""
        return any(h.name == IDEMPOTENCY_HEADER for h in self.headers)

    def __post_init__(self) -> None:
        regex = _PARAM.sub(
            lambda m: f"(?P<{m[1]}>[^/]+)", re.escape(self.path).replace(r"\{", "{").replace(r"\}", "}")
        )
        object.__setattr__(self, "pattern", re.compile(regex))


# ------------------------------------------------------------------------------------- schemas
# They say what the services check (agenda.domain.validation), so that generated "valid" requests are
# valid and a response outside them is a bug in the service or in this document.


def _obj(required: Sequence[str], props: dict[str, Any], *, closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": list(required), "properties": props}
    if closed:
        schema["additionalProperties"] = False
    return schema


def _out(props: dict[str, Any]) -> dict[str, Any]:
    """A response object: every listed property present; more may be added later."""
    return _obj(list(props), props, closed=False)


def _array(items: dict[str, Any], max_items: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": items}
    if max_items is not None:
        schema["maxItems"] = max_items
    return schema


def _line(minimum: int, maximum: int) -> dict[str, Any]:
    """One line of text (no control characters) of ``minimum`` to ``maximum`` characters."""
    return {"type": "string", "minLength": minimum, "maxLength": maximum, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}


def _enum(values: type[StrEnum], exclude: Sequence[StrEnum] = ()) -> dict[str, Any]:
    return {"type": "string", "enum": [v.value for v in values if v not in exclude]}


_S: Final = {"type": "string"}
_NULLABLE_S: Final = {"type": ["string", "null"]}
_TIME: Final = {"type": "string", "format": "date-time"}
_USERNAME: Final = {"type": "string", "pattern": "^[a-z0-9_.-]{3,32}$"}
_ID: Final = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
_EVENT_PROPS: Final = {
    "title": _line(1, MAX_TITLE),
    "start": _TIME,
    "end": _TIME,
    "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
    "location": _line(0, MAX_LOCATION),
    "visibility": _enum(Visibility),
}
# What a client sends (agenda.domain.recurrence.parse_recurrence) and what an event shows.
_RECURRENCE: Final = {
    **_obj(
        [],
        {
            "rrule": {
                "type": ["string", "null"],
                "maxLength": MAX_RRULE_LENGTH,
                "description": "RFC 5545 RRULE, at most daily, e.g. FREQ=WEEKLY;BYDAY=MO,WE",
            },
            "rdates": _array(_TIME, max_items=MAX_RDATES),
            "exdates": _array(_TIME, max_items=MAX_EXDATES),
            "timezone": {
                "type": "string",
                "description": "IANA zone the rule follows (default: the account's)",
            },
        },
    ),
    "description": "How the event recurs; its start and end are the first occurrence's",
}
_OCCURRENCE: Final = {**_TIME, "description": "an occurrence's recurrence-id: its original start"}
_OVERRIDE: Final = _obj(
    [],
    {
        "start": _TIME,
        "end": _TIME,
        "title": _S,
        "description": _S,
        "location": _S,
        "cancelled": {"type": "boolean"},
        "partstats": {"type": "object", "additionalProperties": _enum(PartStat)},
    },
    closed=False,
)
_CREDENTIALS: Final = {
    "username": _USERNAME,
    "password": {
        "type": "string",
        "format": "password",
        "minLength": MIN_PASSWORD,
        "maxLength": MAX_PASSWORD,
    },
}
_RANGE: Final = (
    Query("from", True, "RFC 3339 start (inclusive)", _TIME),
    Query("to", True, "RFC 3339 end (exclusive; at most 366 days after from)", _TIME),
)
_ALLOW: Final = (
    Query(
        "allow_conflict",
        False,
        "true to book despite conflicts",
        {"type": "string", "enum": ["true", "false"]},
    ),
)

_USER: Final = _out({"username": _USERNAME, "display_name": _S, "timezone": _S, "created": _TIME})
_TOKEN: Final = _out(
    {
        "access_token": _S,
        "token_type": {"type": "string", "enum": ["Bearer"]},
        "expires_in": {"type": "integer"},
    }
)
_PART_STATUS: Final = _enum(PartStat)
_EVENT: Final = {
    **_out(
        {
            "id": _ID,
            **_EVENT_PROPS,
            "organizer": _USERNAME,
            "group_id": {"type": ["string", "null"], "pattern": "^[0-9a-f]{32}$"},
            "kind": _enum(EventKind),
            "status": _enum(EventStatus),
            "participants": {
                "type": "object",
                "additionalProperties": _out(
                    {"status": _PART_STATUS, "level": {"type": ["integer", "null"]}}
                ),
            },
            "created": _TIME,
            "updated": _TIME,
            "sequence": {"type": "integer", "minimum": 0},
            "my_status": {"anyOf": [_PART_STATUS, {"type": "null"}]},
        }
    ),
}
_EVENT["properties"]["conflicts"] = _array(_ID)  # listed views only: the ids it overlaps
# Recurring events only: the series' rule, its occurrences of their own (keyed by recurrence-id), and,
# on an occurrence listed from a series, which occurrence it is.
_EVENT["properties"]["recurrence"] = _RECURRENCE
_EVENT["properties"]["overrides"] = {"type": "object", "additionalProperties": _OVERRIDE}
_EVENT["properties"]["recurrence_id"] = _OCCURRENCE
_NOTIFICATION: Final = _out(
    {
        "id": _S,
        "user": _USERNAME,
        "kind": _enum(NotificationKind),
        "event_id": _NULLABLE_S,
        "group_id": _NULLABLE_S,
        "detail": _S,
        "created": _TIME,
        "cursor": _S,
    }
)
_MEMBERSHIP_STATE: Final = _enum(MemberState)
_GROUP: Final = _out(
    {
        "id": _ID,
        "name": _line(1, MAX_GROUP_NAME),
        "hierarchical": {"type": "boolean"},
        "owner": _USERNAME,
        "members": {
            "type": "object",
            "additionalProperties": _out(
                {"level": {"type": "integer"}, "state": _MEMBERSHIP_STATE, "invited_by": _NULLABLE_S}
            ),
        },
        "created": _TIME,
    }
)
_BLOCK: Final = {
    "type": "object",
    "required": ["start", "end"],
    "properties": {
        "start": _TIME,
        "end": _TIME,
        "busy": {"type": "boolean"},
        "id": _ID,
        "title": _S,
        "recurrence_id": _OCCURRENCE,
    },
}
_SLOT: Final = _out({"start": _TIME, "end": _TIME})


def _link(operation: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation, "parameters": parameters}


_EVENT_LINKS: Final = {
    "GetEvent": _link("get_v1_events_event_id", event_id="$response.body#/id"),
    "ChangeEvent": _link("patch_v1_events_event_id", event_id="$response.body#/id"),
    "RespondToEvent": _link("post_v1_events_event_id_respond", event_id="$response.body#/id"),
    "CancelEvent": _link("delete_v1_events_event_id", event_id="$response.body#/id"),
}
_GROUP_LINKS: Final = {
    name: _link(op, group_id="$response.body#/id")
    for name, op in (
        ("GetGroup", "get_v1_groups_group_id"),
        ("InviteMember", "post_v1_groups_group_id_members"),
        ("AnswerInvitation", "post_v1_groups_group_id_membership"),
        ("CreateGroupEvent", "post_v1_groups_group_id_events"),
        ("GroupAgenda", "get_v1_groups_group_id_agenda"),
        ("GroupFreeSlots", "get_v1_groups_group_id_free"),
    )
}

# ---------------------------------------------------------------------------------------- routes

_KEYED: Final = (
    Query(
        IDEMPOTENCY_HEADER,
        False,
        "the client's name for this create: repeating the request with the same key (after a lost"
        " answer, a 502 or a 503) creates nothing new and answers with what the first one created",
        IDEMPOTENCY_KEY_SCHEMA,
    ),
)

ROUTES: Final[tuple[Route, ...]] = (
    Route(
        "POST",
        "/v1/auth/register",
        "users",
        "Create an account",
        public=True,
        body=_obj(
            ["username", "password"],
            {**_CREDENTIALS, "display_name": _line(0, MAX_DISPLAY_NAME), "timezone": _S},
        ),
        headers=_KEYED,
        success=201,
        response=_USER,
        errors=(409,),
    ),
    Route(
        "POST",
        "/v1/auth/login",
        "users",
        "Exchange credentials for an access token (rate-limited)",
        public=True,
        body=_obj(
            ["username", "password"], {"username": _S, "password": {"type": "string", "format": "password"}}
        ),
        response=_TOKEN,
        errors=(401, 429),
        resendable=True,
    ),
    Route("GET", "/v1/me", "users", "The caller's account", response=_USER, errors=(404,)),
    Route(
        "POST",
        "/v1/events",
        "users",
        "Create an event (409 on the organizer's conflicts unless allow_conflict=true)",
        body=_obj(
            ["title", "start", "end"],
            {
                **_EVENT_PROPS,
                "participants": _array(_USERNAME, max_items=MAX_INVITEES),
                "recurrence": _RECURRENCE,
            },
        ),
        query=_ALLOW,
        headers=_KEYED,
        success=201,
        response=_EVENT,
        errors=(409,),
        links=_EVENT_LINKS,
    ),
    Route(
        "GET",
        "/v1/events",
        "users",
        "The caller's agenda with conflict flags: one item per occurrence of a recurring event",
        query=_RANGE,
        response=_out({"from": _TIME, "to": _TIME, "events": _array(_EVENT)}),
    ),
    Route("GET", "/v1/events/{event_id}", "users", "One event the caller takes part in", response=_EVENT),
    Route(
        "PATCH",
        "/v1/events/{event_id}",
        "users",
        "Change an event (organizer only); with occurrence, only that occurrence of a series",
        body=_obj(
            [],
            {
                **_EVENT_PROPS,
                "recurrence": {"anyOf": [_RECURRENCE, {"type": "null"}]},
                "occurrence": _OCCURRENCE,
            },
        ),
        query=_ALLOW,
        response=_EVENT,
        errors=(403, 409),
    ),
    Route(
        "DELETE",
        "/v1/events/{event_id}",
        "users",
        "Cancel an event, or one occurrence of a series (organizer only)",
        query=(Query("occurrence", False, "cancel only this occurrence (its recurrence-id)", _TIME),),
        success=204,
        errors=(403,),
    ),
    Route(
        "POST",
        "/v1/events/{event_id}/respond",
        "users",
        "Answer an invitation (with occurrence, for that occurrence of a series only)",
        body=_obj(
            ["status"],
            {"status": _enum(PartStat, exclude=(PartStat.NEEDS_ACTION,)), "occurrence": _OCCURRENCE},
        ),
        query=_ALLOW,
        response=_EVENT,
        errors=(403, 409),
    ),
    Route(
        "GET",
        "/v1/invitations",
        "users",
        "Invitations awaiting the caller's answer",
        response=_out({"invitations": _array(_EVENT)}),
    ),
    Route(
        "GET",
        "/v1/conflicts",
        "users",
        "The caller's overlapping events",
        query=_RANGE,
        response=_out({"conflicts": _array(_EVENT)}),
    ),
    Route(
        "GET",
        "/v1/notifications",
        "users",
        "The caller's notifications after a cursor",
        query=(
            Query("since", False, "cursor of the last notification seen"),
            Query("limit", False, "how many at most", {"type": "integer", "minimum": 1, "maximum": 500}),
        ),
        response=_out({"notifications": _array(_NOTIFICATION), "next": _NULLABLE_S}),
    ),
    Route(
        "GET",
        "/v1/calendar.ics",
        "users",
        "The caller's calendar as iCalendar (RFC 5545)",
        content_type="text/calendar",
        response={"type": "string"},
    ),
    Route(
        "POST",
        "/v1/groups",
        "groups",
        "Create a group (the caller owns it, level 0)",
        body=_obj(["name"], {"name": _line(1, MAX_GROUP_NAME), "hierarchical": {"type": "boolean"}}),
        headers=_KEYED,
        success=201,
        response=_GROUP,
        links=_GROUP_LINKS,
    ),
    Route(
        "GET",
        "/v1/groups",
        "groups",
        "The caller's groups and invitations to groups",
        response=_out(
            {
                "groups": _array(
                    _out({"group_id": _ID, "level": {"type": "integer"}, "state": _MEMBERSHIP_STATE})
                )
            }
        ),
    ),
    Route(
        "GET",
        "/v1/groups/{group_id}",
        "groups",
        "A group the caller belongs or is invited to",
        response=_GROUP,
    ),
    Route(
        "POST",
        "/v1/groups/{group_id}/members",
        "groups",
        "Invite a user (hierarchical: strictly below the caller's level; flat: owner only)",
        body=_obj(
            ["username"],
            {"username": _USERNAME, "level": {"type": "integer", "minimum": 0, "maximum": MAX_LEVEL}},
        ),
        success=201,
        response=_GROUP,
        errors=(403, 409),
    ),
    Route(
        "POST",
        "/v1/groups/{group_id}/membership",
        "groups",
        "Answer an invitation to a group: accept (200, the group) or decline (204)",
        body=_obj(["accept"], {"accept": {"type": "boolean"}}),
        response=_GROUP,
        also=(204,),
        errors=(409,),
    ),
    Route(
        "DELETE",
        "/v1/groups/{group_id}/members/{username}",
        "groups",
        "Leave, or remove a member",
        success=204,
        errors=(403, 409),
    ),
    Route(
        "POST",
        "/v1/groups/{group_id}/events",
        "groups",
        "Create a group event, fanned out to every active member",
        body=_obj(["title", "start", "end"], {**_EVENT_PROPS, "recurrence": _RECURRENCE}),
        query=_ALLOW,
        headers=_KEYED,
        success=201,
        response=_EVENT,
        errors=(403, 409),
        links=_EVENT_LINKS,
    ),
    Route(
        "GET",
        "/v1/groups/{group_id}/agenda",
        "groups",
        "Members' commitments, privacy-masked",
        query=_RANGE,
        response=_out(
            {
                "group_id": _ID,
                "from": _TIME,
                "to": _TIME,
                "members": {"type": "object", "additionalProperties": _array(_BLOCK)},
            }
        ),
        errors=(403,),
    ),
    Route(
        "GET",
        "/v1/groups/{group_id}/free",
        "groups",
        "Free slots common to every active member",
        query=(
            *_RANGE,
            Query(
                "duration",
                False,
                "minutes (default 30)",
                {"type": "integer", "minimum": 1, "maximum": MAX_SLOT_MINUTES},
            ),
        ),
        response=_out({"slots": _array(_SLOT)}),
        errors=(403,),
    ),
)

STREAM_PATH: Final = "/v1/notifications/stream"
_CURSOR_SCHEMA: Final = {"type": "string", "pattern": r"^\d{20}\.[A-Za-z0-9:._-]{1,200}$"}

_MEMBER: Final = _out(
    {
        "name": _S,
        "service": _S,
        "status": {"type": "string", "enum": ["alive", "suspect", "dead", "left"]},
        "state": _S,
        "incarnation": {"type": "integer", "minimum": 0},
        "version": _S,
        "api_url": _S,
        "addr": _S,
    }
)

LOCAL_ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/v1/health", "gateway", "Gateway liveness", public=True, response=_out({"status": _S})),
    Route(
        "GET",
        "/v1/cluster/services",
        "gateway",
        "The service instances in this gateway's gossip view, with state and incarnation, and the"
        " instances this gateway process routes each backend's requests to right now (operator's token)",
        admin=True,
        response=_out(
            {
                "member": _S,
                "age_s": {"type": "number"},
                "members": _array(_MEMBER),
                "routing": {"type": "object", "additionalProperties": _array(_S)},
            }
        ),
        errors=(503,),
    ),
    Route("GET", "/v1/openapi.json", "gateway", "This document", public=True, response={"type": "object"}),
    Route(
        "GET",
        STREAM_PATH,
        "gateway",
        "The caller's notifications as Server-Sent Events (id: the notification's cursor), live",
        query=(Query("since", False, "resume after this cursor (Last-Event-ID wins)", _CURSOR_SCHEMA),),
        headers=(
            Query("Last-Event-ID", False, "resume after this event id, sent by EventSource", _CURSOR_SCHEMA),
        ),
        content_type="text/event-stream",
        response={"type": "string"},
        errors=(400, 503),
    ),
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
_REASONS: Final = {
    400: "Bad input: the problem names the field and the reason",
    401: "Missing, invalid or expired access token",
    403: "The caller may not do this",
    404: "No such resource (or not visible to the caller)",
    409: "The current state does not allow it (details in the problem)",
    413: "Request body too large",
    415: "The body must be application/json",
    429: "Too many attempts; retry after Retry-After seconds",
    502: "The backend did not answer a write; its outcome is unknown",
    503: "No backend instance is available; retry after Retry-After seconds",
}


def _error_statuses(route: Route) -> set[int]:
    """What any route of this shape can answer besides its own ``errors``."""
    statuses = {400, 503, *route.errors}
    if route.service != "gateway" and route.method != "GET" and not route.resendable:
        statuses.add(502)
    if route.body is not None:
        statuses |= {413, 415}
    if not route.public:
        statuses.add(401)
    if _PARAM.search(route.path):
        statuses.add(404)
    if route.service == "gateway":
        statuses -= {400, 503} - set(route.errors)
    return statuses


def _operation(route: Route) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _S} for name in _PARAM.findall(route.path)
    ]
    params += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "description": q.description,
            "schema": q.schema,
        }
        for q in route.query
    ]
    params += [
        {
            "name": h.name,
            "in": "header",
            "required": h.required,
            "description": h.description,
            "schema": h.schema,
        }
        for h in route.headers
    ]
    success: dict[str, Any] = {"description": "Success"}
    if route.success != 204:
        success["content"] = {route.content_type: {"schema": route.response or {}}}
    if route.links:
        success["links"] = route.links
    responses: dict[str, Any] = {str(route.success): success}
    for status in route.also:
        responses[str(status)] = {"description": "Success, no content"}
    for status in sorted(_error_statuses(route)):
        responses[str(status)] = {
            "description": _REASONS[status],
            "content": {"application/problem+json": {"schema": _PROBLEM_REF}},
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
                    "required": ["type", "title", "status"],
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
