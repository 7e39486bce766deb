"""The Redis supervisor's decision function: every rule of :mod:`agenda.redis_supervisor.decide`.

Pure: each Observation carries its own clock value (``now``), nothing sleeps or polls.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agenda.redis_supervisor.decide import (
    NO_CANDIDATE,
    WAIT_DOWN_AFTER,
    WAIT_LOCK,
    WAIT_QUORUM,
    Follow,
    Memory,
    Observation,
    Promote,
    Record,
    Recorded,
    ServerView,
    Verdict,
    best_candidate,
    decide,
)

A, B, C, D = "10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379", "10.0.0.4:6379"


def srv(
    name: str,
    role: str | None = "slave",
    *,
    reachable: bool = True,
    master: str | None = None,
    offset: int = 0,
    priority: int = 100,
    link_up: bool = True,
) -> ServerView:
    host, port = name.rsplit(":", 1)
    if not reachable:
        return ServerView(name, host, int(port), reachable=False, priority=priority)
    return ServerView(
        name,
        host,
        int(port),
        reachable=True,
        role=role,  # type: ignore[arg-type]
        master=master if role == "slave" else None,
        link_up=link_up if role == "slave" else False,
        offset=offset,
        priority=priority,
    )


def primary(name: str, offset: int = 1000, priority: int = 100) -> ServerView:
    return srv(name, "master", offset=offset, priority=priority)


def replica(name: str, of: str = A, offset: int = 900, priority: int = 100) -> ServerView:
    return srv(name, "slave", master=of, offset=offset, priority=priority)


def down(name: str, priority: int = 100) -> ServerView:
    return srv(name, reachable=False, priority=priority)


def rec(name: str = A, epoch: int = 7) -> Recorded:
    host, port = name.rsplit(":", 1)
    return Recorded(name, host, int(port), epoch)


def obs(
    servers: list[ServerView],
    recorded: Recorded | None = None,
    *,
    now: float = 100.0,
    lock: bool = True,
    quorum: bool = True,
    down_after: float = 1.0,
    bootstrap: str | None = None,
) -> Observation:
    return Observation(
        now=now,
        servers=servers,
        recorded=recorded,
        holds_lock=lock,
        db_quorum=quorum,
        down_after=down_after,
        bootstrap=bootstrap,
    )


def follows(verdict: Verdict) -> dict[str, str]:
    return {a.name: a.primary for a in verdict.actions if isinstance(a, Follow)}


def kinds(verdict: Verdict) -> list[str]:
    return [type(a).__name__ for a in verdict.actions]


# --- healthy primary -------------------------------------------------------------------------------


def test_healthy_primary_with_converged_replicas_does_nothing() -> None:
    v = decide(obs([primary(A), replica(B), replica(C)], rec()), Memory())
    assert v.actions == []
    assert v.primary_ok is True
    assert v.waiting is None
    assert v.memory == Memory()
    assert A in v.summary
    assert "epoch 7" in v.summary


def test_healthy_primary_ignores_unreachable_servers() -> None:
    v = decide(obs([primary(A), replica(B), down(C)], rec()), Memory())
    assert v.actions == []
    assert v.primary_ok


def test_replica_link_down_but_pointing_at_primary_is_left_alone() -> None:
    v = decide(obs([primary(A), srv(B, master=A, link_up=False)], rec()), Memory())
    assert v.actions == []


def test_mispointed_replica_is_told_to_follow_the_recorded_primary() -> None:
    v = decide(obs([primary(A), replica(B, of=C), replica(C), replica(D, of=None)], rec()), Memory())
    assert v.actions == [
        Follow(B, A, "10.0.0.1", 6379, f"replica of the recorded primary {A}"),
        Follow(D, A, "10.0.0.1", 6379, f"replica of the recorded primary {A}"),
    ]
    assert v.primary_ok


def test_reachable_server_without_role_is_told_to_follow() -> None:
    v = decide(obs([primary(A), srv(B, None)], rec()), Memory())
    assert follows(v) == {B: A}


def test_second_master_after_a_heal_is_told_to_follow_the_record() -> None:
    # Split brain healed: B was promoted on the other side, but the DB records A.
    v = decide(obs([primary(A, offset=10), primary(B, offset=5000), replica(C, of=B)], rec()), Memory())
    assert kinds(v) == ["Follow", "Follow"]
    assert follows(v) == {B: A, C: A}
    assert v.primary_ok


def test_healthy_primary_converges_even_without_quorum() -> None:
    # Nothing is recorded, so no quorum is needed to bring servers in line with the record.
    v = decide(obs([primary(A), replica(B, of=C)], rec(), quorum=False), Memory())
    assert follows(v) == {B: A}
    assert not any(isinstance(a, Record) for a in v.actions)


def test_healthy_primary_resets_failing_since() -> None:
    v = decide(obs([primary(A), replica(B)], rec(), now=100.5), Memory(failing_since=100.0))
    assert v.memory == Memory()
    assert v.actions == []


# --- primary failing: down_after ------------------------------------------------------------------


def test_primary_unreachable_starts_the_clock() -> None:
    v = decide(obs([down(A), replica(B)], rec(), now=50.0, down_after=2.0), Memory())
    assert v.actions == []
    assert v.memory == Memory(failing_since=50.0)
    assert v.waiting == WAIT_DOWN_AFTER
    assert v.primary_ok is False
    assert "unreachable" in v.summary


def test_primary_unreachable_below_down_after_keeps_waiting() -> None:
    v = decide(obs([down(A), replica(B)], rec(), now=51.9, down_after=2.0), Memory(failing_since=50.0))
    assert v.actions == []
    assert v.memory == Memory(failing_since=50.0)  # the first failure time is carried, not renewed
    assert v.waiting == WAIT_DOWN_AFTER
    assert "1.90s" in v.summary


def test_primary_unreachable_at_down_after_fails_over() -> None:
    v = decide(
        obs([down(A), replica(B, offset=10)], rec(epoch=3), now=52.0, down_after=2.0),
        Memory(failing_since=50.0),
    )
    assert kinds(v) == ["Record", "Promote"]
    record, promote = v.actions
    assert isinstance(record, Record)
    assert isinstance(promote, Promote)
    assert (record.name, record.host, record.port, record.epoch) == (B, "10.0.0.2", 6379, 4)
    assert promote.name == B
    assert A in record.reason
    assert "down_after 2s" in record.reason
    assert v.memory == Memory()
    assert v.waiting is None
    assert "promoting" in v.summary
    assert "epoch 4" in v.summary


def test_zero_down_after_fails_over_at_first_failure() -> None:
    v = decide(obs([down(A), replica(B)], rec(), down_after=0.0), Memory())
    assert kinds(v) == ["Record", "Promote"]


def test_recovery_before_down_after_resets_and_restarts_the_clock() -> None:
    m = decide(obs([down(A), replica(B)], rec(), now=10.0, down_after=2.0), Memory()).memory
    assert m == Memory(failing_since=10.0)
    m = decide(obs([down(A), replica(B)], rec(), now=11.5, down_after=2.0), m).memory
    assert m == Memory(failing_since=10.0)
    v = decide(obs([primary(A), replica(B)], rec(), now=11.8, down_after=2.0), m)
    assert v.primary_ok
    assert v.memory == Memory()
    # It fails again: down_after counts from the new failure, not the first one.
    v = decide(obs([down(A), replica(B)], rec(), now=12.5, down_after=2.0), v.memory)
    assert v.actions == []
    assert v.memory == Memory(failing_since=12.5)
    v = decide(obs([down(A), replica(B)], rec(), now=14.4, down_after=2.0), v.memory)
    assert v.actions == []
    assert v.waiting == WAIT_DOWN_AFTER
    v = decide(obs([down(A), replica(B)], rec(), now=14.5, down_after=2.0), v.memory)
    assert kinds(v) == ["Record", "Promote"]


def test_primary_answering_as_replica_counts_as_failing() -> None:
    v = decide(obs([replica(A, of=B), primary(B)], rec(), now=5.0), Memory())
    assert v.actions == []
    assert v.waiting == WAIT_DOWN_AFTER
    assert v.memory == Memory(failing_since=5.0)
    assert "slave not acting as primary" in v.summary


def test_primary_answering_as_replica_is_a_candidate_itself() -> None:
    # It restarted with an old configuration but holds the most data: it is promoted again, new epoch.
    v = decide(
        obs(
            [replica(A, of=B, offset=900), replica(B, of=A, offset=800), primary(C, offset=10)],
            rec(epoch=2),
            now=5.0,
        ),
        Memory(failing_since=3.0),
    )
    assert kinds(v) == ["Record", "Promote", "Follow"]
    assert v.actions[0] == Record(A, "10.0.0.1", 6379, 3, v.actions[0].reason)  # type: ignore[union-attr]
    assert v.actions[1] == Promote(A, v.actions[1].reason)
    assert follows(v) == {C: A}  # B already replicates A


def test_primary_answering_as_replica_loses_to_a_better_replica_and_follows_it() -> None:
    v = decide(
        obs(
            [replica(A, of=None, offset=100), replica(B, of=A, offset=800), replica(C, offset=700)],
            rec(epoch=2),
            now=5.0,
        ),
        Memory(failing_since=3.0),
    )
    assert kinds(v) == ["Record", "Promote", "Follow", "Follow"]
    assert v.actions[0].name == B
    assert v.actions[0].epoch == 3
    assert follows(v) == {A: B, C: B}


# --- failover: candidate ranking --------------------------------------------------------------------


def _promoted(servers: list[ServerView]) -> str | None:
    v = decide(obs([down(A), *servers], rec(), now=10.0), Memory(failing_since=0.0))
    names = [a.name for a in v.actions if isinstance(a, Promote)]
    return names[0] if names else None


def test_highest_offset_wins() -> None:
    assert _promoted([replica(B, offset=10), replica(C, offset=30), replica(D, offset=20)]) == C


def test_offset_beats_priority() -> None:
    assert _promoted([replica(B, offset=10, priority=1), replica(C, offset=11, priority=200)]) == C


def test_equal_offset_lowest_priority_wins() -> None:
    assert (
        _promoted(
            [
                replica(B, offset=10, priority=50),
                replica(C, offset=10, priority=10),
                replica(D, offset=10, priority=100),
            ]
        )
        == C
    )


def test_equal_offset_and_priority_lowest_name_wins() -> None:
    assert _promoted([replica(D, offset=10), replica(B, offset=10), replica(C, offset=10)]) == B


def test_priority_zero_is_never_promoted() -> None:
    assert _promoted([replica(B, offset=9999, priority=0), replica(C, offset=1)]) == C


def test_unreachable_is_never_promoted() -> None:
    assert _promoted([down(B), replica(C, offset=1)]) == C


def test_unreachable_primary_is_excluded_from_the_candidates() -> None:
    assert best_candidate([down(A), replica(B)], exclude=A) == replica(B)
    assert best_candidate([primary(A), replica(B)], exclude=A) == replica(B)
    assert best_candidate([primary(A, offset=1), replica(B, offset=0)]) == primary(A, offset=1)
    assert best_candidate([]) is None


def test_failover_converges_every_other_reachable_server_to_the_new_primary() -> None:
    v = decide(
        obs([down(A), replica(B, offset=5), replica(C, offset=9), down(D)], rec(), now=10.0),
        Memory(failing_since=0.0),
    )
    assert kinds(v) == ["Record", "Promote", "Follow"]
    follow = v.actions[2]
    assert follow == Follow(B, C, "10.0.0.3", 6379, f"replica of the new primary {C} (epoch 8)")


def test_failover_leaves_replicas_already_following_the_new_primary() -> None:
    v = decide(
        obs(
            [down(A), replica(B, offset=5, of=C), replica(C, offset=9), replica(D, offset=1)], rec(), now=10.0
        ),
        Memory(failing_since=0.0),
    )
    assert kinds(v) == ["Record", "Promote", "Follow"]
    assert follows(v) == {D: C}


def test_failover_to_a_second_master_still_records_and_promotes() -> None:
    # A stray master may hold the most data: it is recorded (new epoch) and the Promote is harmless.
    v = decide(
        obs([down(A), primary(B, offset=50), replica(C, offset=40)], rec(), now=10.0),
        Memory(failing_since=0.0),
    )
    assert kinds(v) == ["Record", "Promote", "Follow"]
    assert v.actions[0].name == B
    assert v.actions[0].epoch == 8
    assert follows(v) == {C: B}


def test_no_candidate_waits_and_keeps_the_clock() -> None:
    v = decide(obs([down(A), replica(B, priority=0), down(C)], rec(), now=10.0), Memory(failing_since=2.0))
    assert v.actions == []
    assert v.waiting == NO_CANDIDATE
    assert v.memory == Memory(failing_since=2.0)
    assert not v.primary_ok


def test_everything_down_no_candidate() -> None:
    v = decide(obs([down(A), down(B)], rec(), now=10.0), Memory(failing_since=2.0))
    assert v.actions == []
    assert v.waiting == NO_CANDIDATE


# --- lock and quorum --------------------------------------------------------------------------------


def test_without_the_lock_nothing_even_with_mispointed_replicas() -> None:
    v = decide(obs([primary(A), replica(B, of=C), primary(C)], rec(), lock=False), Memory())
    assert v.actions == []
    assert v.waiting == WAIT_LOCK
    assert v.summary == WAIT_LOCK


def test_without_the_lock_no_failover_and_no_memory() -> None:
    v = decide(obs([down(A), replica(B)], rec(), now=99.0, lock=False), Memory(failing_since=0.0))
    assert v.actions == []
    assert v.waiting == WAIT_LOCK
    assert v.memory == Memory()


def test_without_the_lock_no_bootstrap() -> None:
    v = decide(obs([primary(A), replica(B)], None, lock=False), Memory())
    assert v.actions == []
    assert v.waiting == WAIT_LOCK


def test_without_quorum_no_failover_but_says_why() -> None:
    v = decide(
        obs([down(A), replica(B, of=A), replica(C, of=D)], rec(), now=10.0, quorum=False),
        Memory(failing_since=0.0),
    )
    assert v.actions == []  # not even the mis-pointed C: the primary it should follow is down
    assert v.waiting == WAIT_QUORUM
    assert v.memory == Memory(failing_since=0.0)
    assert not v.primary_ok


def test_without_quorum_below_down_after_waits_for_down_after() -> None:
    v = decide(obs([down(A), replica(B)], rec(), now=0.5, quorum=False), Memory(failing_since=0.0))
    assert v.actions == []
    assert v.waiting == WAIT_DOWN_AFTER


def test_quorum_returns_and_failover_happens_at_once() -> None:
    m = decide(obs([down(A), replica(B)], rec(), now=10.0, quorum=False), Memory(failing_since=0.0)).memory
    v = decide(obs([down(A), replica(B)], rec(), now=10.1), m)
    assert kinds(v) == ["Record", "Promote"]


# --- recorded primary missing from the configured servers ------------------------------------------


def test_recorded_primary_not_configured_is_treated_as_unreachable() -> None:
    gone = "10.9.9.9:6380"
    v = decide(
        obs([replica(B, of=gone, offset=3), replica(C, of=gone, offset=4)], rec(gone, epoch=11), now=1.0),
        Memory(),
    )
    assert v.actions == []
    assert v.waiting == WAIT_DOWN_AFTER
    assert gone in v.summary
    assert "unreachable" in v.summary
    v = decide(
        obs([replica(B, of=gone, offset=3), replica(C, of=gone, offset=4)], rec(gone, epoch=11), now=2.0),
        v.memory,
    )
    assert kinds(v) == ["Record", "Promote", "Follow"]
    assert v.actions[0] == Record(C, "10.0.0.3", 6379, 12, v.actions[0].reason)  # type: ignore[union-attr]
    assert follows(v) == {B: C}


def test_recorded_primary_not_configured_and_no_servers() -> None:
    v = decide(obs([], rec("10.9.9.9:6380"), now=5.0), Memory(failing_since=0.0))
    assert v.actions == []
    assert v.waiting == NO_CANDIDATE


# --- bootstrap (empty record) -----------------------------------------------------------------------


def test_bootstrap_the_only_acting_master() -> None:
    v = decide(
        obs([replica(A, of=None, offset=99), primary(B, offset=1), replica(C, of=B)], None, bootstrap=A),
        Memory(),
    )
    assert kinds(v) == ["Record", "Follow"]  # no Promote: it already acts as primary
    assert v.actions[0] == Record(B, "10.0.0.2", 6379, 1, "first primary: the only server acting as primary")
    assert follows(v) == {A: B}
    assert v.memory == Memory()
    assert "epoch 1" in v.summary


def test_bootstrap_only_master_even_with_priority_zero() -> None:
    v = decide(obs([primary(A, priority=0), replica(B, of=A)], None), Memory())
    assert v.actions == [Record(A, "10.0.0.1", 6379, 1, "first primary: the only server acting as primary")]


def test_bootstrap_configured_server_when_no_master() -> None:
    v = decide(
        obs(
            [replica(A, of=None, offset=5), replica(B, of=None, offset=1), replica(C, of=B)],
            None,
            bootstrap=B,
        ),
        Memory(),
    )
    assert kinds(v) == ["Record", "Promote", "Follow"]
    assert v.actions[0].name == B
    assert v.actions[0].epoch == 1
    assert "the configured first primary" in v.actions[0].reason
    assert v.actions[1] == Promote(B, v.actions[1].reason)
    assert follows(v) == {A: B}  # C already replicates B


def test_bootstrap_configured_server_when_several_masters() -> None:
    v = decide(
        obs([primary(A, offset=10), primary(B, offset=5), primary(C, offset=1)], None, bootstrap=C), Memory()
    )
    assert kinds(v) == ["Record", "Follow", "Follow"]
    assert v.actions[0].name == C  # type: ignore[union-attr]
    assert follows(v) == {A: C, B: C}


def test_bootstrap_several_masters_no_configured_picks_best_master() -> None:
    # A replica with more data does not win: only the masters are considered.
    v = decide(obs([primary(A, offset=10), primary(B, offset=50), replica(C, offset=999)], None), Memory())
    assert kinds(v) == ["Record", "Follow", "Follow"]
    assert v.actions[0].name == B
    assert "the best reachable server" in v.actions[0].reason
    assert follows(v) == {A: B, C: B}


def test_bootstrap_configured_unreachable_falls_back_to_best_candidate() -> None:
    v = decide(
        obs(
            [
                down(A),
                replica(B, offset=1),
                replica(C, offset=2, priority=0),
                replica(D, offset=1, priority=5),
            ],
            None,
            bootstrap=A,
        ),
        Memory(),
    )
    assert kinds(v) == ["Record", "Promote", "Follow", "Follow"]
    assert v.actions[0].name == D  # type: ignore[union-attr]
    assert follows(v) == {B: D, C: D}


def test_bootstrap_configured_not_among_servers_falls_back() -> None:
    v = decide(obs([replica(B, offset=1), replica(C, offset=2)], None, bootstrap="10.9.9.9:1"), Memory())
    assert v.actions[0].name == C  # type: ignore[union-attr]


def test_bootstrap_configured_priority_zero_replica_is_not_promoted() -> None:
    # replica-priority 0 means never promoted, also at bootstrap: the best candidate is chosen instead.
    v = decide(obs([replica(A, of=None, priority=0), replica(B, of=None)], None, bootstrap=A), Memory())
    assert kinds(v) == ["Record", "Promote", "Follow"]
    assert v.actions[0].name == B  # type: ignore[union-attr]
    assert follows(v) == {A: B}


def test_bootstrap_configured_priority_zero_master_is_recorded() -> None:
    # Already acting as primary among several: nothing is promoted, so its priority does not matter.
    v = decide(obs([primary(A, priority=0), primary(B)], None, bootstrap=A), Memory())
    assert kinds(v) == ["Record", "Follow"]
    assert v.actions[0].name == A  # type: ignore[union-attr]


def test_bootstrap_nothing_reachable() -> None:
    v = decide(obs([down(A), down(B)], None, bootstrap=A), Memory())
    assert v.actions == []
    assert v.waiting == NO_CANDIDATE


def test_bootstrap_only_priority_zero_replicas() -> None:
    v = decide(obs([replica(A, of=None, priority=0)], None), Memory())
    assert v.actions == []
    assert v.waiting == NO_CANDIDATE


def test_bootstrap_without_quorum_records_nothing_but_says_what_it_would() -> None:
    v = decide(obs([primary(A), replica(B, of=C)], None, quorum=False), Memory())
    assert v.actions == []
    assert v.waiting == WAIT_QUORUM
    assert A in v.summary


def test_bootstrap_resets_memory() -> None:
    v = decide(obs([primary(A)], None), Memory(failing_since=3.0))
    assert v.memory == Memory()
    assert kinds(v) == ["Record"]


# --- order and epoch --------------------------------------------------------------------------------


def test_order_is_record_then_promote_then_follows_in_server_order() -> None:
    v = decide(
        obs(
            [replica(D, of=A, offset=1), down(A), replica(C, of=A, offset=9), replica(B, of=A, offset=2)],
            rec(epoch=41),
            now=3.0,
        ),
        Memory(failing_since=1.0),
    )
    assert kinds(v) == ["Record", "Promote", "Follow", "Follow"]
    assert v.actions[0].epoch == 42  # type: ignore[union-attr]
    assert [a.name for a in v.actions] == [C, C, D, B]


def test_epoch_is_recorded_plus_one() -> None:
    for epoch in (1, 2, 1000):
        v = decide(obs([down(A), replica(B)], rec(epoch=epoch), now=3.0), Memory(failing_since=1.0))
        assert v.actions[0].epoch == epoch + 1  # type: ignore[union-attr]


# --- properties -------------------------------------------------------------------------------------

NAMES = [A, B, C, D]


@st.composite
def server_views(draw: st.DrawFn, name: str) -> ServerView:
    reachable = draw(st.booleans())
    priority = draw(st.sampled_from([0, 1, 10, 100]))
    if not reachable:
        return srv(name, reachable=False, priority=priority)
    role = draw(st.sampled_from(["master", "slave", None]))
    return srv(
        name,
        role,
        master=draw(st.sampled_from([*NAMES, "10.9.9.9:6379", None])),
        offset=draw(st.integers(0, 5)),
        priority=priority,
        link_up=draw(st.booleans()),
    )


@st.composite
def observations(draw: st.DrawFn) -> tuple[Observation, Memory]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    servers = [draw(server_views(n)) for n in names]
    recorded = draw(
        st.one_of(st.none(), st.builds(rec, st.sampled_from([*NAMES, "10.9.9.9:6379"]), st.integers(1, 50)))
    )
    now = draw(st.floats(0, 100))
    failing_since = draw(st.one_of(st.none(), st.floats(0, 100).filter(lambda t: t <= now)))
    o = Observation(
        now=now,
        servers=servers,
        recorded=recorded,
        holds_lock=draw(st.booleans()),
        db_quorum=draw(st.booleans()),
        down_after=draw(st.sampled_from([0.0, 1.0, 5.0])),
        bootstrap=draw(st.sampled_from([*NAMES, None])),
    )
    return o, Memory(failing_since)


@given(observations())
@settings(max_examples=300, deadline=None, derandomize=True)
def test_decide_properties(case: tuple[Observation, Memory]) -> None:
    o, memory = case
    v = decide(o, memory)
    actions = v.actions
    records = [a for a in actions if isinstance(a, Record)]
    promotes = [a for a in actions if isinstance(a, Promote)]
    recorded_name = o.recorded.name if o.recorded else None
    by_name = {s.name: s for s in o.servers}

    # (4) no action without the lock
    if not o.holds_lock:
        assert actions == []
    # (5) never a Record without a quorum
    if not o.db_quorum:
        assert records == []
    # at most one Record, and a Record's epoch is the recorded one + 1 (or 1 on bootstrap)
    assert len(records) <= 1
    for r in records:
        assert r.epoch == (o.recorded.epoch + 1 if o.recorded else 1)
        assert r.name in by_name
        assert (r.host, r.port) == (by_name[r.name].host, by_name[r.name].port)
    # (1) Record first, unless the Promote targets the already-recorded primary
    if records or (promotes and promotes[0].name != recorded_name):
        assert isinstance(actions[0], Record)
    # (2) never two Promotes; a Promote is for the server just (or already) recorded
    assert len(promotes) <= 1
    new_primary = records[0].name if records else None
    for p in promotes:
        assert p.name in (new_primary, recorded_name)
        # (6) the promoted server is reachable and promotable
        assert by_name[p.name].reachable
        assert by_name[p.name].priority > 0
    # (3) every Follow points at the recorded primary or the newly recorded one
    targets = {new_primary} if new_primary else {recorded_name}
    for f in (a for a in actions if isinstance(a, Follow)):
        assert f.primary in targets
        assert f.name != f.primary
        assert by_name[f.name].reachable
        assert (f.host, f.port) == (by_name[f.primary].host, by_name[f.primary].port)
    # Record, then Promote, then Follows
    order = {"Record": 0, "Promote": 1, "Follow": 2}
    ranks = [order[type(a).__name__] for a in actions]
    assert ranks == sorted(ranks)
    # no one is told to follow twice
    follow_names = [a.name for a in actions if isinstance(a, Follow)]
    assert len(follow_names) == len(set(follow_names))
    # memory: only carried while the recorded primary fails and no failover happened
    if v.primary_ok or records or not o.holds_lock:
        assert v.memory == Memory()
    if v.memory.failing_since is not None:
        assert v.memory.failing_since == (memory.failing_since if memory.failing_since is not None else o.now)
