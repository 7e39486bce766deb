"""A member's journal damaged while it is down, in the five-member cluster: a torn tail is cut, reported and
caught up from the leader; damage in the middle stops the member with the recovery, which then works.

Every wait is a bounded poll; no assertion depends on how long anything took.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from agenda.db.journal_format import RECORD_OVERHEAD, JournalRecord, scan_journal
from agenda.db.node import JOURNAL_FILE


def put(cluster: Any, node: str, key: str, value: object) -> None:
    response = cluster.request(node, "PUT", "/v1/kv/" + quote(key, safe="/"), json={"value": value})
    assert response.status_code == 200, response.text


def keyspace(cluster: Any, node: str) -> tuple[int, list[dict[str, Any]]]:
    """The member's whole keyspace as it applied it (a stale read): its revision and every key."""
    body = cluster.request(node, "GET", "/v1/kv", params={"consistency": "stale"}).json()
    assert body["more"] is False
    return body["revision"], body["items"]


def same_data_as_the_leader(cluster: Any, node: str, leader: str) -> bool:
    return keyspace(cluster, node) == keyspace(cluster, leader)


def stop_after_writes(cluster: Any, wait: Any, prefix: str) -> tuple[str, str, Path]:
    """Write through the leader until a follower has applied it, SIGKILL that follower; (leader, follower,
    its journal)."""
    leader = cluster.leader()
    victim = cluster.followers(leader)[0]
    for i in range(20):
        put(cluster, leader, f"{prefix}/{i}", i)
    wait(lambda: same_data_as_the_leader(cluster, victim, leader), 20, 0.1, f"{victim} to apply the writes")
    cluster.kill(victim, signal.SIGKILL)
    return leader, victim, cluster.members[victim].data_dir / JOURNAL_FILE


def log_since(cluster: Any, node: str, offset: int) -> str:
    return cluster.members[node].log_path.read_bytes()[offset:].decode(errors="replace")


def test_a_torn_tail_is_cut_reported_and_caught_up_from_the_leader(cluster, wait):
    leader, victim, journal = stop_after_writes(cluster, wait, "/it/journal/torn")
    raw = journal.read_bytes()
    last: JournalRecord = scan_journal(raw).records[-1]
    # The write of the last record stopped halfway: its second half never reached the disk.
    half = last.offset + (last.end - last.offset) // 2
    journal.write_bytes(raw[:half] + bytes(last.end - half) + raw[last.end :])
    for i in range(20, 30):  # more for it to catch up on
        put(cluster, leader, f"/it/journal/torn/{i}", i)
    log_start = cluster.members[victim].log_path.stat().st_size

    cluster.start(victim)
    report = f"journal {journal}: cut off a torn or damaged tail at offset {last.offset}"
    wait(lambda: report in log_since(cluster, victim, log_start), 20, 0.1, "the cut to be reported")
    assert "WARNING" in next(
        line for line in log_since(cluster, victim, log_start).splitlines() if report in line
    )
    wait(lambda: same_data_as_the_leader(cluster, victim, leader), 30, 0.1, f"{victim} to catch up")
    cluster.wait_healthy()


def test_damage_in_the_middle_stops_the_member_with_the_recovery_which_works(cluster, wait):
    leader, victim, journal = stop_after_writes(cluster, wait, "/it/journal/middle")
    raw = journal.read_bytes()
    records = scan_journal(raw).records
    # A record that a later one shows to have been on disk: its loss cannot be a torn write.
    damaged = next(r for r in records if any(later.synced_end > r.offset for later in records))
    flipped = bytearray(raw)
    flipped[damaged.offset + RECORD_OVERHEAD] ^= 0x04  # a bit of the command, after the record's head
    journal.write_bytes(bytes(flipped))
    member = cluster.members[victim]
    log_start = member.log_path.stat().st_size

    cluster.start(victim)
    assert member.proc is not None
    wait(lambda: member.proc.poll() is not None, 30, 0.1, f"{victim} to refuse to start")
    assert member.proc.returncode == 3
    output = log_since(cluster, victim, log_start)
    assert f"journal {journal} is corrupted at offset {damaged.offset}" in output
    assert f"remove its data directory {member.data_dir}" in output
    assert "Traceback" not in output

    # The recovery the message gives: remove the data directory, start the member with the same settings.
    shutil.rmtree(member.data_dir)
    put(cluster, leader, "/it/journal/middle/after", "wiped")
    cluster.start(victim)
    wait(
        lambda: same_data_as_the_leader(cluster, victim, leader), 30, 0.1, f"{victim} to catch up from empty"
    )
    cluster.wait_healthy()
