"""Errors of the DB Service: the command layer and state machine's, and the Raft node's.

:class:`StateMachineError` and its subclasses carry a stable machine-readable ``code``. They live apart
from the state machine because both sides of the wire raise them: the command builders
(:mod:`agenda.db.txn`) and parsers (:mod:`agenda.db.commands`) refuse malformed input with
:class:`InvalidArgument` in the caller's frame, and the state machine (:mod:`agenda.db.state`) raises the
state-dependent ones while applying.

:class:`NodeError` and its subclasses are how a proposal, read barrier or membership change ends when it
did not produce a state-machine result (:mod:`agenda.db.node`). They are plain exceptions, so the HTTP
layer (:mod:`agenda.db.api`) maps every error here to a status without importing Raft.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Compacted",
    "InvalidArgument",
    "LastMember",
    "LeaderUnknown",
    "LeaseExists",
    "LeaseNotFound",
    "MemberExists",
    "MemberNotFound",
    "MembershipChangeInProgress",
    "NodeError",
    "NotLeader",
    "OutcomeUnknown",
    "ProposalFailed",
    "StateMachineError",
]


class StateMachineError(Exception):
    """Base of every error the DB command layer and state machine raise on purpose.

    Each carries a stable machine-readable ``code`` and can render itself as a result dict, so the Raft
    wrapper can hand the same answer to the client whichever node applied the command.
    """

    code: str = "error"

    def details(self) -> dict[str, Any]:
        """Extra JSON-serialisable fields describing the error (overridden by subclasses)."""
        return {}

    def to_result(self) -> dict[str, Any]:
        """Render as ``{"ok": False, "error": code, "message": str, ...details}``."""
        return {"ok": False, "error": self.code, "message": str(self), **self.details()}


class InvalidArgument(StateMachineError, ValueError):  # noqa: N818 - names fixed by the DB service contract
    """A command or read argument is malformed; raised before any state change (HTTP 400 later)."""

    code = "invalid_argument"

    def __init__(self, field: str, reason: str) -> None:
        """Remember which field was wrong and why, so the HTTP layer can tell the client precisely."""
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def details(self) -> dict[str, Any]:
        """Expose the offending field and reason."""
        return {"field": self.field, "reason": self.reason}


class LeaseNotFound(StateMachineError, LookupError):  # noqa: N818 - names fixed by the DB service contract
    """The lease does not exist (never granted, revoked, expired, or past its deadline on keepalive)."""

    code = "lease_not_found"

    def __init__(self, lease_id: int) -> None:
        """Keep the id so the client learns which lease is gone."""
        super().__init__(f"lease {lease_id} not found")
        self.lease_id = lease_id

    def details(self) -> dict[str, Any]:
        """Expose the lease id."""
        return {"lease": self.lease_id}


class LeaseExists(StateMachineError):  # noqa: N818 - names fixed by the DB service contract
    """A grant reused the id of a live lease; proposers must pick fresh ids."""

    code = "lease_exists"

    def __init__(self, lease_id: int) -> None:
        """Keep the id so the proposer can retry with another."""
        super().__init__(f"lease {lease_id} already exists")
        self.lease_id = lease_id

    def details(self) -> dict[str, Any]:
        """Expose the lease id."""
        return {"lease": self.lease_id}


class Compacted(StateMachineError):  # noqa: N818 - names fixed by the DB service contract
    """The watch history no longer reaches back to the requested revision (HTTP 410 later).

    ``oldest_available`` is the oldest revision whose events are still retained; the smallest revision
    ``events_since`` accepts is therefore ``compact_revision == oldest_available - 1``. A watcher that gets
    this error must re-read the keys it cares about and watch again from the current revision.
    """

    code = "compacted"

    def __init__(self, oldest_available: int) -> None:
        """Record the oldest retained revision."""
        super().__init__(
            f"revision {oldest_available - 1} and older are compacted; oldest available is {oldest_available}"
        )
        self.oldest_available = oldest_available

    @property
    def compact_revision(self) -> int:
        """The smallest ``since`` revision ``events_since`` still accepts."""
        return self.oldest_available - 1

    def details(self) -> dict[str, Any]:
        """Expose both boundaries."""
        return {"oldest_available": self.oldest_available, "compact_revision": self.compact_revision}


class MemberExists(StateMachineError):  # noqa: N818 - reads as the condition, like LeaseExists
    """A new member would reuse the id, Raft address or API address of a current member (HTTP 409)."""

    code = "member_exists"

    def __init__(self, field: str, reason: str, member: str) -> None:
        """Name the request field that clashes and the member it clashes with."""
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.member = member

    def details(self) -> dict[str, Any]:
        """Expose the clashing field and member id."""
        return {"field": self.field, "member": self.member}


class MemberNotFound(StateMachineError, LookupError):  # noqa: N818 - reads as the condition
    """No current member has this id (HTTP 404)."""

    code = "member_not_found"

    def __init__(self, node_id: str) -> None:
        """Keep the id so the client learns which member is unknown."""
        super().__init__(f"member {node_id!r} is not in the cluster")
        self.node_id = node_id

    def details(self) -> dict[str, Any]:
        """Expose the member id."""
        return {"member": self.node_id}


# ----------------------------------------------------------------------------------------------------------
# Errors of the Raft node (raised to the HTTP layer)
# ----------------------------------------------------------------------------------------------------------


class NodeError(Exception):
    """Base of the errors a proposal or read barrier can end with; all mean "try again later"."""

    outcome_known = True


class NotLeader(NodeError):  # noqa: N818 - reads as the condition
    """This member is not the leader (the HTTP layer forwards or redirects)."""


class LeaderUnknown(NodeError):  # noqa: N818
    """No leader is known right now (election in progress or no quorum)."""


class ProposalFailed(NodeError):  # noqa: N818 - reads as the condition
    """The proposal was refused before it entered the log (queue full, leadership lost before append)."""


class OutcomeUnknown(NodeError):  # noqa: N818
    """The command may or may not be committed (timeout, leader change after append)."""

    outcome_known = False


class MembershipChangeInProgress(NodeError):  # noqa: N818 - reads as the condition
    """A membership change was refused because another one is still pending (pysyncobj allows one)."""


class LastMember(Exception):  # noqa: N818 - reads as the condition
    """The only member of the cluster cannot be removed (nothing would be left to remove it)."""
