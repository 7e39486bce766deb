"""Flask application factory of the User Service: accounts, tokens and personal agendas.

The service is only reached through the API gateway, on the terms every backend shares
(`agenda.common.backend`: the gateway's secret, then the caller from `X-Agenda-User`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

import flask

from agenda.calendar import MAX_INVITEES
from agenda.calendar.layout import NOTIFICATION_CURSOR
from agenda.calendar.store import Change, EventNotFound, EventStore, UsernameTaken
from agenda.calendar.views import event_view
from agenda.common.backend import (
    backend_app,
    check_args,
    current_user,
    new_record_id,
    query_flag,
    query_range,
)
from agenda.common.errors import (
    bad_request,
    conflict,
    forbidden,
    json_body,
    not_found,
    problem_type,
    unauthorized,
)
from agenda.common.fastviews import FastView, fast_view_middleware
from agenda.common.tokens import TokenIssuer
from agenda.common.web import idempotency_key, keyed_id
from agenda.domain.ical import to_ical
from agenda.domain.model import (
    Event,
    EventKind,
    EventStatus,
    Participation,
    PartStat,
    format_time,
)
from agenda.domain.recurrence import parse_override, parse_recurrence, parse_recurrence_id, recheck
from agenda.domain.rules import (
    apply_response,
    cancel_event,
    cancel_occurrence,
    change_notifications,
    change_occurrence,
    expand,
    flag_conflicts,
    instance_key,
    invitation_notifications,
    occurrence_span,
    prune_overrides,
)
from agenda.domain.validation import (
    ValidationError,
    parse_event_times,
    parse_query_range,
    validate_description,
    validate_display_name,
    validate_event_details,
    validate_location,
    validate_participants,
    validate_password,
    validate_response_status,
    validate_timezone,
    validate_title,
    validate_username,
    validate_visibility,
)
from agenda.users.dav import DavDeps, dav_blueprint
from agenda.users.passwords import hash_password, verify_password

__all__ = ["Deps", "create_app"]

_EVENT_ID: Final = re.compile(r"[0-9a-f]{32}")
_EXT: Final = "agenda.users"


@dataclass
class Deps:
    """What the views need; tests build it with fakes or real clients."""

    store: EventStore
    issuer: TokenIssuer
    gateway_secret: str
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    requests_served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_request(self) -> None:
        with self.lock:
            self.requests_served += 1


def _deps() -> Deps:
    return flask.current_app.extensions[_EXT]


def _event_id(event_id: str) -> str:
    if not _EVENT_ID.fullmatch(event_id):
        raise not_found("No such event.")
    return event_id


def _load(event_id: str, me: str) -> Event:
    try:
        event, _ = _deps().store.get_event(_event_id(event_id))
    except EventNotFound:
        raise not_found("No such event.") from None
    if not event.involves(me):
        raise not_found("No such event.")  # do not reveal other people's events
    return event


# ----------------------------------------------------------------------------------------- auth

auth_bp = flask.Blueprint("auth", __name__)


@auth_bp.post("/v1/auth/register")
def register() -> Any:
    body = json_body({"username": str, "password": str}, {"display_name": str, "timezone": str})
    username = validate_username(body["username"])
    password = validate_password(body["password"])
    display_name = validate_display_name(body.get("display_name", ""))
    timezone = validate_timezone(body.get("timezone", "UTC"))
    key = idempotency_key()
    now = _deps().clock()
    record = {
        "username": username,
        "display_name": display_name,
        "timezone": timezone,
        "password": hash_password(password),
        "created": format_time(now),
    }
    if key is not None:
        # Kept with the account: a repeat of this request is then told from someone else's claim.
        record["request"] = keyed_id("account", username, key)
    try:
        _deps().store.create_user(record)
    except UsernameTaken:
        existing = _deps().store.get_user(username) if key is not None else None
        if existing is not None and existing.get("request") == record["request"]:
            return _public_user(existing), 201, {"Location": "/v1/me"}
        raise conflict(
            "That username is taken.", field="username", type=problem_type("username-taken")
        ) from None
    return _public_user(record), 201, {"Location": "/v1/me"}


def _public_user(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in ("username", "display_name", "timezone", "created")}


@auth_bp.post("/v1/auth/login")
def login() -> Any:
    body = json_body({"username": str, "password": str})
    record = None
    try:
        username = validate_username(body["username"])
        record = _deps().store.get_user(username)
    except ValidationError:
        username = None
    stored = record.get("password") if record is not None else None
    if not verify_password(body["password"], stored) or username is None:
        raise unauthorized("Wrong username or password.")
    token, expires_in = _deps().issuer.issue(username)
    return {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}


@auth_bp.get("/v1/me")
def me() -> Any:
    record = _deps().store.get_user(current_user())
    if record is None:
        raise not_found("Your account no longer exists.")
    return _public_user(record)


# --------------------------------------------------------------------------------------- events

events_bp = flask.Blueprint("events", __name__)

_EVENT_FIELDS: Final = {
    "description": str,
    "location": str,
    "visibility": str,
    "participants": list,
    "recurrence": dict,
}


@events_bp.post("/v1/events")
def create_event() -> Any:
    check_args({"allow_conflict"})
    allow = query_flag("allow_conflict")
    me = current_user()
    body = json_body({"title": str, "start": str, "end": str}, _EVENT_FIELDS)
    details = validate_event_details(body)
    participants = validate_participants(body.get("participants", []), me)
    if len(participants) > MAX_INVITEES:
        raise bad_request(f"participants must have at most {MAX_INVITEES} usernames", field="participants")
    store = _deps().store
    for index, name in enumerate(participants):
        if name in store.missing_users([name]):
            raise bad_request(f"participants[{index}] {name} has no account", field=f"participants[{index}]")
    recurrence = None
    if "recurrence" in body:
        zone = store.recurrence_timezone(me, body["recurrence"])
        recurrence = parse_recurrence(
            body["recurrence"], start=details["start"], end=details["end"], default_timezone=zone
        )
    now = _deps().clock()
    event_id = new_record_id("event", me)
    event = Event(
        id=event_id,
        organizer=me,
        created=now,
        updated=now,
        **details,
        kind=EventKind.APPOINTMENT if participants else EventKind.PERSONAL,
        participants={name: Participation() for name in participants},
        recurrence=recurrence,
    )
    notes = invitation_notifications(event, now)
    change = Change(event, notes, () if allow else (me,), checked_from=now)
    with store.booking(None if allow else me):
        stored = store.create(lambda: change, event_id=event_id)
    return event_view(stored, me), 201, {"Location": f"/v1/events/{stored.id}"}


@events_bp.get("/v1/events")
def list_events() -> Any:
    check_args(set(_LISTING_ARGS))
    start, end = query_range()
    return _listing(_deps().store, current_user(), start, end)


_LISTING_ARGS: Final = ("from", "to")


def _listing(store: EventStore, me: str, start: datetime, end: datetime) -> dict[str, Any]:
    """`me`'s agenda in [start, end), each event (each occurrence of a series) with the ids of the
    ones clashing with it."""
    events = expand(store.agenda(me, start, end), start, end)
    flags = flag_conflicts(me, events)
    listed = []
    for event in events:
        key = instance_key(event)
        if key in flags:
            listed.append(event_view(event, me, flags[key]))
    return {"from": format_time(start), "to": format_time(end), "events": listed}


def _fast_listing(store: EventStore) -> FastView:
    """`list_events` without Flask, for a query Flask would certainly accept."""

    def prepare(me: str, args: Mapping[str, str]) -> Callable[[], Any] | None:
        if args.keys() != set(_LISTING_ARGS):
            return None
        try:
            start, end = parse_query_range(args["from"], args["to"])
        except ValidationError:
            return None
        return lambda: _listing(store, me, start, end)

    return FastView(prepare)


@events_bp.get("/v1/events/<event_id>")
def get_event(event_id: str) -> Any:
    check_args(set())
    me = current_user()
    return event_view(_load(event_id, me), me)


@events_bp.patch("/v1/events/<event_id>")
def patch_event(event_id: str) -> Any:
    check_args({"allow_conflict"})
    allow = query_flag("allow_conflict")
    me = current_user()
    current = _load(event_id, me)
    if current.organizer != me:
        raise forbidden("Only the organizer may change this event.", type=problem_type("organizer-only"))
    body = json_body(
        {},
        {
            "title": str,
            "start": str,
            "end": str,
            "description": str,
            "location": str,
            "visibility": str,
            "recurrence": (dict, type(None)),
            "occurrence": str,
        },
    )
    if "occurrence" in body:
        return _patch_occurrence(current, me, body, allow)
    changes: dict[str, Any] = {}
    if "title" in body:
        changes["title"] = validate_title(body["title"])
    if "description" in body:
        changes["description"] = validate_description(body["description"])
    if "location" in body:
        changes["location"] = validate_location(body["location"])
    if "visibility" in body:
        changes["visibility"] = validate_visibility(body["visibility"])
    if "start" in body or "end" in body:
        start_raw = body.get("start", format_time(current.start))
        end_raw = body.get("end", format_time(current.end))
        changes["start"], changes["end"] = parse_event_times(start_raw, end_raw)

    zone = _deps().store.recurrence_timezone(me, body.get("recurrence"))

    def mutate(event: Event) -> Change | None:
        if event.organizer != me:
            raise forbidden("Only the organizer may change this event.", type=problem_type("organizer-only"))
        if event.status is EventStatus.CANCELLED:
            raise conflict("The event is cancelled.", type=problem_type("event-cancelled"))
        wanted = dict(changes)
        start, end = wanted.get("start", event.start), wanted.get("end", event.end)
        if "recurrence" in body:
            raw = body["recurrence"]
            wanted["recurrence"] = (
                None if raw is None else parse_recurrence(raw, start=start, end=end, default_timezone=zone)
            )
        elif event.recurrence is not None and (start, end) != (event.start, event.end):
            # A moved series keeps its rule, checked again against its new times.
            wanted["recurrence"] = recheck(event.recurrence, start=start, end=end)
        if all(getattr(event, k) == v for k, v in wanted.items()):
            return None
        now = _deps().clock()
        if wanted.get("recurrence", event.recurrence) is None:
            wanted["overrides"] = {}  # no longer a series: no occurrences of its own
        revised = event.revised(now, **wanted)
        # Overrides of occurrences that no longer exist go, with the answers they held.
        revised = replace(revised, overrides=prune_overrides(revised))
        moved = (revised.start, revised.end, revised.recurrence) != (event.start, event.end, event.recurrence)
        notes = change_notifications(revised, me, now)
        return Change(revised, notes, (me,) if moved and not allow else (), checked_from=now)

    stored = _deps().store.update(current.id, mutate)
    return event_view(stored, me)


def _patch_occurrence(current: Event, me: str, body: dict[str, Any], allow: bool) -> Any:
    """PATCH with ``occurrence``: move that occurrence or change its details, the series untouched."""
    recurrence_id = parse_recurrence_id(body["occurrence"])
    for name in ("visibility", "recurrence"):
        if name in body:
            raise bad_request(f"{name} belongs to the whole series, not to one occurrence", field=name)
    changes = parse_override({k: v for k, v in body.items() if k != "occurrence"})

    def mutate(event: Event) -> Change | None:
        if event.status is EventStatus.CANCELLED:
            raise conflict("The event is cancelled.", type=problem_type("event-cancelled"))
        now = _deps().clock()
        revised = change_occurrence(event, me, recurrence_id, changes, now=now)
        if revised is None:
            return None
        notes = change_notifications(revised, me, now)
        if changes.start is None or allow:
            return Change(revised, notes)
        return Change(revised, notes, (me,), checked_within=occurrence_span(revised, recurrence_id))

    stored = _deps().store.update(current.id, mutate)
    return event_view(stored, me)


@events_bp.delete("/v1/events/<event_id>")
def delete_event(event_id: str) -> Any:
    """Cancel the event (``?occurrence=`` one occurrence of a series): it stays, status cancelled (the
    occurrence's override says cancelled), so participants can see what happened."""
    check_args({"occurrence"})
    me = current_user()
    raw = flask.request.args.get("occurrence")
    recurrence_id = None if raw is None else parse_recurrence_id(raw)
    current = _load(event_id, me)

    def mutate(event: Event) -> Change | None:
        if recurrence_id is None:
            revised, notes = cancel_event(event, me, now=_deps().clock())
        else:
            revised, notes = cancel_occurrence(event, me, recurrence_id, now=_deps().clock())
        return None if revised is event else Change(revised, notes)

    if current.organizer != me:
        raise forbidden("Only the organizer may delete this event.", type=problem_type("organizer-only"))
    _deps().store.update(current.id, mutate)
    return "", 204


@events_bp.post("/v1/events/<event_id>/respond")
def respond(event_id: str) -> Any:
    check_args({"allow_conflict"})
    allow = query_flag("allow_conflict")
    me = current_user()
    body = json_body({"status": str}, {"occurrence": str})
    status = validate_response_status(body["status"])
    recurrence_id = parse_recurrence_id(body["occurrence"]) if "occurrence" in body else None
    current = _load(event_id, me)

    def mutate(event: Event) -> Change | None:
        now = _deps().clock()
        revised, notes = apply_response(event, me, status, now=now, occurrence=recurrence_id)
        if revised is event:
            return None
        check = (me,) if status is PartStat.ACCEPTED and not allow else ()
        # One occurrence answered: only it is checked; the series from now on otherwise.
        within = None if recurrence_id is None else occurrence_span(revised, recurrence_id)
        return Change(revised, notes, check, checked_from=now, checked_within=within)

    stored = _deps().store.update(current.id, mutate)
    return event_view(stored, me)


@events_bp.get("/v1/invitations")
def invitations() -> Any:
    check_args(set())
    me = current_user()
    pending = [
        event_view(e, me)
        for e in _deps().store.agenda(me)
        if e.status is not EventStatus.CANCELLED and e.partstat(me) is PartStat.NEEDS_ACTION
    ]
    return {"invitations": pending}


@events_bp.get("/v1/conflicts")
def conflicts() -> Any:
    check_args({"from", "to"})
    me = current_user()
    start, end = query_range()
    events = expand(_deps().store.agenda(me, start, end), start, end)
    flags = flag_conflicts(me, events)
    listed = [event_view(e, me, flags[instance_key(e)]) for e in events if flags.get(instance_key(e))]
    return {"conflicts": listed}


@events_bp.get("/v1/notifications")
def notifications() -> Any:
    check_args({"since", "limit"})
    me = current_user()
    since = flask.request.args.get("since")
    if since is not None and not NOTIFICATION_CURSOR.fullmatch(since):
        raise bad_request("since must be a cursor returned by this endpoint", field="since")
    limit_raw = flask.request.args.get("limit", "100")
    if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 500:
        raise bad_request("limit must be an integer between 1 and 500", field="limit")
    items = _deps().store.notifications(me, since, int(limit_raw))
    return {"notifications": items, "next": items[-1]["cursor"] if items else since}


@events_bp.get("/v1/calendar.ics")
def calendar() -> Any:
    check_args(set())
    me = current_user()
    events = [e for e in _deps().store.agenda(me) if e.partstat(me) is not PartStat.DECLINED]
    text = to_ical(events, now=_deps().clock(), name=f"Agenda of {me}")
    return flask.Response(text.encode(), mimetype="text/calendar", headers={"Content-Disposition": "inline"})


# ------------------------------------------------------------------------------------------ app


def _timezone_of(store: EventStore) -> Callable[[str], str]:
    """A user's account time zone, read once per request (CalDAV places all-day and floating times in it)."""

    def timezone_of(user: str) -> str:
        cache = flask.g.setdefault("agenda_timezones", {})
        if user not in cache:
            cache[user] = store.timezone_of(user)
        return cache[user]  # type: ignore[no-any-return]

    return timezone_of


def create_app(deps: Deps, *, fast_views: bool = True) -> flask.Flask:
    """The User Service; `fast_views` answers the agenda listing without Flask (`agenda.common.fastviews`)."""
    app = backend_app("users", deps.gateway_secret, on_request=deps.count_request)
    app.extensions[_EXT] = deps

    @app.get("/internal/stats")
    def stats() -> Any:
        with deps.lock:
            return {"requests": deps.requests_served}

    app.register_blueprint(auth_bp)
    app.register_blueprint(events_bp)
    dav_blueprint(app, DavDeps(deps.store, lambda: deps.clock(), _timezone_of(deps.store)))
    if fast_views:
        views = {"/v1/events": _fast_listing(deps.store)}
        app.wsgi_app = fast_view_middleware(  # type: ignore[method-assign]
            app, deps.gateway_secret, views, on_request=deps.count_request
        )
    return app
