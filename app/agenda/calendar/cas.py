"""The one compare-and-swap loop both stores commit through.

A change is read, decided and written as ONE transaction compared on what was read (revisions of the
record and of any guard keys). A failed compare means someone else changed something first: the
change is decided again from fresh reads, a bounded number of times. A transaction whose outcome is
unknown (the member serving it went away mid-request) is recognised by reading back a key it writes,
because blindly repeating a create or a notification-writing change could apply it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from agenda.db.client import DBClient, DBUnavailable

__all__ = ["ATTEMPTS", "Contention", "Write", "commit"]

log = logging.getLogger(__name__)

ATTEMPTS: Final = 8

T = TypeVar("T")


class Contention(Exception):  # noqa: N818 - the condition the caller handles
    """The change lost its compare too many times in a row; the client may retry later."""


@dataclass(frozen=True)
class Write:
    """One transaction, and how to tell afterwards whether it was applied.

    `witness` is a key the transaction writes and `written` the value it leaves there (None when it
    deletes the key). Only this transaction writes that exact value (a new record, or a revision of
    one with a new sequence), so finding it there means the transaction was applied.
    """

    compare: Sequence[Mapping[str, Any]]
    ops: Sequence[Mapping[str, Any]]
    witness: str
    written: Any


def commit(db: DBClient, attempt: Callable[[], tuple[T, Write | None]], *, what: str) -> T:
    """Run `attempt` and its transaction until the compare holds; return what `attempt` returned.

    `attempt` reads, decides and returns (result, Write), or (result, None) when there is nothing to
    write; it is called again after every lost race, so it must read afresh. Exceptions it raises (a
    rule broken, a conflict found) end the loop. `what` names the record for the log and `Contention`.
    """
    for _attempt in range(ATTEMPTS):
        result, write = attempt()
        if write is None:
            return result
        try:
            answer = db.txn(write.compare, write.ops)
        except DBUnavailable as exc:
            if not exc.outcome_unknown:
                raise
            kv = db.get(write.witness)
            if (None if kv is None else kv["value"]) == write.written:
                return result
            continue  # not found applied: decide again from fresh reads (the compare guards the retry)
        if answer["succeeded"]:
            return result
        log.info("%s txn lost a race; retrying", what, extra={"key": write.witness})
    raise Contention(f"too many concurrent changes to the {what}; try again")
