"""Watch compaction end to end (issue 13): five real members keeping a short watch history.

A watcher's bookmark is the revision R it has seen everything up to; it continues with
``GET /v1/watch?since=R`` (the events after R). Each member keeps the last ``--history-limit`` events,
so once enough writes land the events after an old bookmark are gone: the watch is answered 410
``application/problem+json`` with ``compact_revision`` (the oldest ``since`` still served) and
``oldest_available`` (its successor, the oldest event kept), and the watcher resumes from a fresh read.
The leader and a follower (followers serve watches from their own state) answer alike, and so does a
member restarted from the snapshot its Raft log was compacted into (``--log-compaction-entries``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from agenda.db.client import Compacted, DBClient
from agenda.db.dump import decode_dump
from agenda.db.node import DUMP_FILE
from agenda.db.state import KVStateMachine

PROBLEM = "application/problem+json"
HISTORY = 16  # watch events each member keeps
LOG_COMPACTION = 8  # Raft log entries after which a member writes its snapshot (raft.dump)
FLAGS = ("--history-limit", str(HISTORY), "--log-compaction-entries", str(LOG_COMPACTION))
PREFIX = "/compaction/"


@pytest.fixture
def small_history(make_cluster: Callable[..., Any]) -> Any:
    return make_cluster(5, FLAGS)


@pytest.fixture
def db(small_history: Any) -> Iterator[DBClient]:
    """A client of every member (fails over, waits out elections): the writer of these tests."""
    client = DBClient([m.url for m in small_history.members.values()], timeout=(1.0, 10.0))
    yield client
    client.close()


def watch(cluster: Any, node: str, since: int, prefix: str = "") -> requests.Response:
    """One watch on ``node`` that answers at once (what it holds now, or 410)."""
    params = {"prefix": prefix, "since": since, "timeout": 0}
    return cluster.request(node, "GET", "/v1/watch", params=params)


def gone(response: requests.Response) -> dict[str, Any]:
    """The body of a 410 "compacted" problem, checked against the contract."""
    assert response.status_code == 410, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"].endswith("/compacted")
    assert body["oldest_available"] == body["compact_revision"] + 1
    return body


def local_revision(cluster: Any, node: str) -> int:
    """The revision ``node`` has applied (a stale read is served from its own state); -1 while starting."""
    response = cluster.request(node, "GET", "/v1/kv", params={"prefix": PREFIX, "consistency": "stale"})
    return int(response.json()["revision"]) if response.status_code == 200 else -1


def write_keys(db: DBClient, count: int, tag: str) -> int:
    """``count`` single-key puts (one event per revision); the last revision."""
    revision = 0
    for i in range(count):
        revision = db.put(f"{PREFIX}{tag}/{i}", i)
    return revision


def assert_boundary(cluster: Any, node: str, revision: int) -> None:
    """``node`` (at ``revision``) serves exactly the last HISTORY events and refuses one step older."""
    compact = revision - HISTORY  # every revision of these tests holds exactly one event
    below = gone(watch(cluster, node, compact - 1))
    assert (below["compact_revision"], below["oldest_available"]) == (compact, compact + 1)
    oldest = watch(cluster, node, compact)  # from oldest_available on
    assert oldest.status_code == 200, oldest.text
    assert [e["revision"] for e in oldest.json()["events"]] == list(range(compact + 1, revision + 1))
    assert oldest.json()["revision"] == revision


def resume_after_410(cluster: Any, db: DBClient, node: str, bookmark: int, tag: str) -> None:
    """Through DBClient pinned to ``node``: 410 for the bookmark, a fresh read, a watch from its revision
    that sees the next write, exactly, and nothing older."""
    pinned = DBClient([cluster.url(node)], timeout=(1.0, 30.0), retries=0)
    try:
        with pytest.raises(Compacted) as compacted:
            pinned.watch(PREFIX, bookmark, timeout=0)
        assert compacted.value.status == 410
        assert compacted.value.compact_revision > bookmark

        fresh = pinned.range(PREFIX, limit=1)  # the re-read; only its revision matters here
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(pinned.watch, PREFIX, fresh["revision"], timeout=20.0)
            written = db.put(f"{PREFIX}{tag}/resumed", tag)
            result = waiting.result(timeout=40)
    finally:
        pinned.close()
    assert written > fresh["revision"]
    assert result["events"] == [
        {
            "type": "put",
            "revision": written,
            "kv": {
                "key": f"{PREFIX}{tag}/resumed",
                "value": tag,
                "create_revision": written,
                "mod_revision": written,
                "version": 1,
                "lease": 0,
            },
        }
    ]
    assert result["revision"] == written


def test_a_watcher_behind_the_history_gets_410_and_resumes_from_a_fresh_read(
    small_history: Any, db: DBClient, wait: Callable[..., Any]
) -> None:
    cluster = small_history
    leader = cluster.leader()
    follower = cluster.followers(leader)[0]
    db.put(f"{PREFIX}seen", 0)
    bookmark = db.range(PREFIX)["revision"]  # R0: the watcher has seen everything up to here
    revision = write_keys(db, 2 * HISTORY, "filler")  # pushes R0 + 1 out of every member's history

    for node in (leader, follower):
        # The follower's watch is served from its own state: wait until it has applied the writes.
        wait(
            lambda node=node, revision=revision: local_revision(cluster, node) >= revision,
            30,
            message=f"{node} to catch up",
        )
        compacted = gone(watch(cluster, node, bookmark, PREFIX))
        assert compacted["compact_revision"] == revision - HISTORY > bookmark
        assert_boundary(cluster, node, revision)
        resume_after_410(cluster, db, node, bookmark, tag=node)
        revision += 1  # the resumed watch's write


def test_a_member_restarted_from_its_snapshot_answers_the_same_410(
    small_history: Any, db: DBClient, wait: Callable[..., Any]
) -> None:
    cluster = small_history
    leader = cluster.leader()
    victim = cluster.followers(leader)[0]
    db.put(f"{PREFIX}seen", 0)
    bookmark = db.range(PREFIX)["revision"]
    revision = write_keys(db, 2 * HISTORY + 2 * LOG_COMPACTION, "filler")

    # The victim compacts its Raft log on its own (more than LOG_COMPACTION entries): wait for a snapshot
    # whose history no longer reaches the bookmark, then kill the victim and read what it left.
    dump = cluster.members[victim].data_dir / DUMP_FILE

    def snapshot() -> KVStateMachine | None:
        if not dump.exists():
            return None
        _meta, data = decode_dump(dump.read_bytes())  # written to a temporary file, then renamed
        state = KVStateMachine.from_snapshot(data, history_limit=HISTORY)
        return state if state.compact_revision > bookmark else None

    wait(snapshot, 30, message=f"{victim}'s snapshot past revision {bookmark}")
    cluster.kill(victim)
    left = snapshot()
    assert left is not None
    assert bookmark < left.compact_revision == left.revision - HISTORY

    cluster.start(victim)
    # Once it holds the snapshot's state (its own dump, loaded by its first tick, or the leader's), it
    # holds the snapshot's history too: the bookmark is refused, not answered with an empty watch.
    wait(lambda: local_revision(cluster, victim) >= left.revision, 60, message=f"{victim} to load its dump")
    assert gone(watch(cluster, victim, bookmark, PREFIX))["compact_revision"] >= left.compact_revision

    wait(lambda: local_revision(cluster, victim) >= revision, 60, message=f"{victim} to catch up")
    for node in (victim, leader):
        assert gone(watch(cluster, node, bookmark, PREFIX))["compact_revision"] == revision - HISTORY
    assert_boundary(cluster, victim, revision)
    resume_after_410(cluster, db, victim, bookmark, tag=victim)
