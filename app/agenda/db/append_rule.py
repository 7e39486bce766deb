"""Raft's AppendEntries receiver rule, applied to a message before pysyncobj's handler sees it.

Pure: the transport (:class:`~agenda.db.transport.DurableTransport`) calls it with the member's log and
holds the answer to the index it returns.
"""

from __future__ import annotations

from typing import Any

__all__ = ["trim_known_entries"]


def trim_known_entries(message: dict[str, Any], log: Any) -> tuple[dict[str, Any], int | None]:
    """An AppendEntries as Raft's receiver rule wants it handled by pysyncobj's, and the last index it
    vouches for when that is short of this member's log (else None).

    Raft (5.3): a follower deletes its entries only from the first one that *conflicts* with the
    leader's (same index, other term), and appends those it lacks. pysyncobj instead deletes everything
    after ``prevLogIdx`` whenever its log is longer - also for a heartbeat, or an AppendEntries sent
    before the leader heard this member's last answer, which are routine here because the leader ships
    each tick's entries at once (:meth:`~agenda.db.node.Node._flush_leader`) while pysyncobj sends its
    own from the member's last acknowledged index. That dropped entries this member had acknowledged
    (and synced), rewrote them, and logged "state machine may have diverged" at CRITICAL; a crash in
    between could leave an acknowledged entry on fewer disks than the leader counted.

    ``log`` holds ``(command, index, term)`` in index order. Entries this member already has with the
    same term are dropped from the message and ``prevLogIdx`` moved past them, so pysyncobj deletes
    only from a conflicting entry on. When every entry is known and the log goes further, the message
    becomes a heartbeat at the log's end that commits at most what the original covered, and the answer
    must claim no more than that (the entries past it may be another term's, not the leader's).
    A message that is not plain (a chunked transmission, a snapshot, a ``prevLogIdx`` outside the log
    or of another term) is returned as it is: pysyncobj refuses or installs it.
    """
    prev = message.get("prevLogIdx")
    if type(prev) is not int or "transmission" in message or log is None or not len(log):
        return message, None
    first, last = log[0][1], log[-1][1]
    if not first <= prev < last or log[prev - first][2] != message.get("prevLogTerm"):
        return message, None
    entries = message.get("entries") or []
    known = 0
    for _command, index, term in entries:
        if index > last or log[index - first][2] != term:
            break
        known += 1
    if known < len(entries):
        if known == 0:
            return message, None  # the first entry already conflicts or is new: pysyncobj's way is Raft's
        at = prev + known
        return {
            **message,
            "prevLogIdx": at,
            "prevLogTerm": log[at - first][2],
            "entries": entries[known:],
        }, None
    covered = prev + len(entries)
    heartbeat = {**message, "prevLogIdx": last, "prevLogTerm": log[-1][2], "entries": []}
    heartbeat["commit_index"] = min(message.get("commit_index", 0), covered)
    return heartbeat, (covered if covered < last else None)
