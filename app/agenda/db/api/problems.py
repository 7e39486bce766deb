"""How DB errors and refused state-machine results become problem details (RFC 9457) on the wire."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agenda.common.errors import Problem, bad_request, conflict, not_found, problem_type, unavailable
from agenda.db.api.context import RETRY_AFTER
from agenda.db.errors import (
    Compacted,
    InvalidArgument,
    LastMember,
    LeaderUnknown,
    LeaseExists,
    LeaseNotFound,
    MemberExists,
    MemberNotFound,
    MembershipChangeInProgress,
    NodeError,
    NotLeader,
    OutcomeUnknown,
    StateMachineError,
)

__all__ = ["problem_for_error", "problem_for_result", "raise_for_result"]


def problem_for_error(exc: Exception) -> Problem:
    """Map state-machine and node errors to problem details."""
    if isinstance(exc, InvalidArgument):
        return bad_request(str(exc), field=exc.field, type=problem_type("invalid-argument"))
    if isinstance(exc, Compacted):
        return Problem(
            410,
            detail=str(exc),
            type=problem_type("compacted"),
            extras={"oldest_available": exc.oldest_available, "compact_revision": exc.compact_revision},
        )
    if isinstance(exc, LeaseNotFound):
        return not_found(str(exc), type=problem_type("lease-not-found"), lease=exc.lease_id)
    if isinstance(exc, LeaseExists):
        return conflict(str(exc), field="id", type=problem_type("lease-exists"), lease=exc.lease_id)
    if isinstance(exc, MemberExists):
        return conflict(str(exc), field=exc.field, type=problem_type("member-exists"), member=exc.member)
    if isinstance(exc, MemberNotFound):
        return not_found(str(exc), type=problem_type("member-not-found"), member=exc.node_id)
    if isinstance(exc, LastMember):
        return conflict(str(exc), field="id", type=problem_type("last-member"))
    if isinstance(exc, MembershipChangeInProgress):
        return unavailable(RETRY_AFTER, str(exc), type=problem_type("membership-change-in-progress"))
    if isinstance(exc, OutcomeUnknown):
        return unavailable(RETRY_AFTER, str(exc), type=problem_type("outcome-unknown"), outcome="unknown")
    if isinstance(exc, (LeaderUnknown, NotLeader)):
        return unavailable(RETRY_AFTER, str(exc), type=problem_type("no-leader"))
    if isinstance(exc, NodeError):
        return unavailable(RETRY_AFTER, str(exc), type=problem_type("proposal-failed"))
    if isinstance(exc, StateMachineError):
        return bad_request(str(exc), type=problem_type(exc.code.replace("_", "-")))
    raise TypeError(f"not a DB error: {exc!r}")


def problem_for_result(result: Mapping[str, Any], *, lease_in_body: bool = True) -> Problem | None:
    """None for a successful state-machine result, else the problem to answer with.

    A missing lease referenced from a request body (put/txn) is a client error about that field (400);
    a missing lease addressed by URL (keepalive/revoke) is a 404.
    """
    if result.get("ok", False):
        return None
    code = result.get("error")
    revision = result.get("revision")
    if code == "conflict":
        return conflict(
            f"key {result.get('key')!r} has mod_revision {result.get('mod_revision')}",
            field="prev_revision",
            type=problem_type("revision-mismatch"),
            key=result.get("key"),
            mod_revision=result.get("mod_revision"),
            revision=revision,
        )
    if code == "lease_not_found":
        if lease_in_body:
            return bad_request(
                str(result.get("message", "lease not found")),
                field="lease",
                type=problem_type("lease-not-found"),
                lease=result.get("lease"),
            )
        return not_found(
            str(result.get("message", "lease not found")),
            type=problem_type("lease-not-found"),
            lease=result.get("lease"),
        )
    if code == "lease_exists":
        return conflict(
            str(result.get("message", "lease exists")), field="id", type=problem_type("lease-exists")
        )
    if code == "invalid_argument":
        return bad_request(
            str(result.get("message", "invalid argument")),
            field=result.get("field"),
            type=problem_type("invalid-argument"),
        )
    return Problem(500, detail=f"state machine refused the command: {code}")


def raise_for_result(result: Mapping[str, Any], *, lease_in_body: bool = True) -> None:
    """Raise the problem for a refused result (see :func:`problem_for_result`); return on success."""
    problem = problem_for_result(result, lease_in_body=lease_in_body)
    if problem is not None:
        raise problem
