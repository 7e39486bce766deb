"""One node driven by hand: the test plays its peers, sealing what they say and opening what it sends.

Exact timers (probe, relay, suspicion), the precedence rules, refutation, Lifeguard's awareness,
piggybacking and its limit, push/pull, joining, leaving, and every kind of packet that must be dropped.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from agenda.gossip.config import Config
from agenda.gossip.keyring import Keyring
from agenda.gossip.member import Member, Meta, Status
from agenda.gossip.messages import (
    MAX_STREAM,
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    Packet,
    Ping,
    PushPull,
    Suspect,
    decode_packet,
    encode_packet,
)
from agenda.gossip.protocol import Changed, Node, NodeStatus, Output, Send

KEY = b"k" * 32
EPOCH = 1_700_000_000.0
T0 = 100.0
ME = "me"
PEERS = {"a": "10.0.0.2:7946", "b": "10.0.0.3:7946", "c": "10.0.0.4:7946", "d": "10.0.0.5:7946"}
ADDR = "10.0.0.1:7946"
META = Meta(service="agenda", api_url="http://10.0.0.1:8000", version="1.0")
RING = Keyring([KEY])


def member(name: str, incarnation: int = 0, status: Status = Status.ALIVE, addr: str | None = None) -> Member:
    return Member(name, addr or PEERS[name], incarnation, status, META, T0)


def make_node(peers: Iterable[str] = PEERS, *, config: Config | None = None, seed: int = 1) -> Node:
    node = Node(ME, ADDR, Keyring([KEY]), meta=META, config=config, rng=random.Random(seed), wall=wall)  # noqa: S311
    node.preload(member(p) for p in peers)
    node.start(T0)
    return node


def wall(now: float) -> float:
    return EPOCH + now


def says(sender: str, *messages: Message, at: float = T0, ring: Keyring = RING) -> bytes:
    return ring.seal(encode_packet(Packet(sender, messages)), wall(at))


def opened(send: Send) -> Packet:
    return decode_packet(RING.open(send.data)[2], limit=MAX_STREAM)


def sends(outputs: list[Output]) -> list[tuple[str, Packet]]:
    return [(o.addr, opened(o)) for o in outputs if isinstance(o, Send)]


def changes(outputs: list[Output]) -> list[tuple[str, Status]]:
    return [(o.member.name, o.member.status) for o in outputs if isinstance(o, Changed)]


def deliver(node: Node, sender: str, *messages: Message, at: float = T0) -> list[Output]:
    return node.receive(at, PEERS.get(sender, "10.9.9.9:7946"), says(sender, *messages, at=at))


def step(node: Node, after: float) -> tuple[float, list[Output]]:
    """Tick the node at its next deadline, which must lie after the last tick (a timer left in the
    past would make every loop of these tests spin forever)."""
    when = node.next_deadline()
    assert when is not None
    assert when > after, f"a timer stuck at {when}, after a tick at {after}"
    return when, node.tick(when)


def start_probe(node: Node) -> tuple[float, str, int]:
    """Tick until the node pings someone; (when, whom, seq)."""
    when = float("-inf")
    for _ in range(100):
        when, out = step(node, when)
        for addr, packet in sends(out):
            ping = packet.messages[0]
            if isinstance(ping, Ping):
                assert PEERS[ping.target] == addr
                return when, ping.target, ping.seq
    raise AssertionError("no probe in 100 ticks")


# ------------------------------------------------------------------------------ answering


def test_a_ping_is_acked_to_its_source() -> None:
    node = make_node()
    out = deliver(node, "a", Ping(7, ME))
    assert [(addr, p.messages[0]) for addr, p in sends(out)] == [(PEERS["a"], Ack(7))]
    assert sends(out)[0][1].sender == ME


def test_a_ping_for_another_name_is_not_acked() -> None:
    """An address now used by another member: acking would vouch for the one that is gone."""
    node = make_node()
    assert deliver(node, "a", Ping(7, "someone-else")) == []
    assert node.counters.dropped_misdirected == 1


def test_an_indirect_ping_is_relayed_and_its_ack_forwarded() -> None:
    node = make_node()
    out = deliver(node, "a", IndirectPing(41, "b", PEERS["b"]))
    [(addr, packet)] = sends(out)
    relay = packet.messages[0]
    assert addr == PEERS["b"]
    assert isinstance(relay, Ping)
    assert relay.target == "b"
    back = deliver(node, "b", Ack(relay.seq), at=T0 + 0.01)
    assert [(a, p.messages[0]) for a, p in sends(back)] == [(PEERS["a"], Ack(41))]
    # Answered: no nack later.
    assert all(not isinstance(p.messages[0], Nack) for _, p in sends(node.tick(T0 + 0.6)))


def test_a_relay_that_hears_nothing_nacks_in_time_for_the_probers_deadline() -> None:
    """The request comes half a second into the prober's one-second probe: the nack, at 80% of the
    probe timeout, has a tenth of a second to get back before the prober concludes."""
    node = make_node()
    deliver(node, "a", IndirectPing(41, "b", PEERS["b"]))
    assert not [p for _, p in sends(node.tick(T0 + 0.399)) if isinstance(p.messages[0], Nack)]
    nacks = [(a, p.messages[0]) for a, p in sends(node.tick(T0 + 0.4)) if isinstance(p.messages[0], Nack)]
    assert nacks == [(PEERS["a"], Nack(41))]


# ------------------------------------------------------------------------------ probing


def test_probe_timeline_ping_then_three_relays_at_half_a_second_then_suspicion_at_one() -> None:
    node = make_node()
    started, target, seq = start_probe(node)
    assert T0 <= started < T0 + 1.0  # staggered start, within the first interval
    assert node.next_deadline() == pytest.approx(started + 0.5)
    assert node.tick(started + 0.49) == []
    relays = sends(node.tick(started + 0.5))
    assert sorted(addr for addr, _ in relays) == sorted(a for n, a in PEERS.items() if n != target)
    assert {p.messages[0] for _, p in relays} == {IndirectPing(seq, target, PEERS[target])}
    assert node.next_deadline() == pytest.approx(started + 1.0)
    out = node.tick(started + 1.0)
    assert changes(out) == [(target, Status.SUSPECT)]
    assert node.counters.probe_failures == 1
    # Three relays, no nack from any: the problem may be ours (Lifeguard).
    assert node.awareness.score == 3
    # n = 5: two confirmations wanted, so a lone accuser waits the maximum: 6 x 4 s.
    suspicion = node.suspicion(target)
    assert suspicion is not None
    assert suspicion.deadline == pytest.approx(started + 1.0 + 24.0)


def test_an_ack_ends_the_probe_and_improves_our_health() -> None:
    node = make_node()
    node.awareness.score = 2
    started, target, seq = start_probe(node)
    assert deliver(node, target, Ack(seq), at=started + 0.01) == []
    assert node.awareness.score == 1
    # No relays, no suspicion: the next thing is the next probe, one interval after this one.
    assert node.next_deadline() == pytest.approx(started + 1.0)
    _, _, next_seq = start_probe(node)
    assert next_seq == seq + 1
    assert node.view()[target] is Status.ALIVE


def test_a_relayed_ack_saves_the_target() -> None:
    node = make_node()
    started, target, seq = start_probe(node)
    node.tick(started + 0.5)
    helper = next(n for n in PEERS if n != target)
    deliver(node, helper, Ack(seq), at=started + 0.6)
    assert changes(node.tick(started + 1.0)) == []
    assert node.view()[target] is Status.ALIVE


def test_nacks_from_every_relay_keep_our_health_score() -> None:
    node = make_node()
    started, target, seq = start_probe(node)
    node.tick(started + 0.5)
    for helper in (n for n in PEERS if n != target):
        deliver(node, helper, Nack(seq), at=started + 0.9)
    assert changes(node.tick(started + 1.0)) == [(target, Status.SUSPECT)]
    assert node.awareness.score == 0  # the relays answered: the target is the problem, not us


def test_a_slow_node_stretches_its_probe_deadline_but_not_the_direct_timeout() -> None:
    node = make_node()
    node.awareness.score = 3
    started, target, seq = start_probe(node)
    assert node.next_deadline() == pytest.approx(started + 0.5)  # relays asked as early as ever
    node.tick(started + 0.5)
    assert node.next_deadline() == pytest.approx(started + 4.0)  # but acks awaited 4 intervals
    deliver(node, target, Ack(seq), at=started + 3.0)  # late, yet in time
    assert changes(node.tick(started + 4.0)) == []
    assert node.awareness.score == 2


def test_a_suspect_member_is_probed_with_the_suspicion_so_it_can_refute() -> None:
    node = make_node(["a"])
    deliver(node, "c", Suspect("a", 0, "c"))  # c is unknown to the node: still a valid accusation of a
    assert node.view()["a"] is Status.SUSPECT
    now, target, _ = start_probe(node)
    assert target == "a"
    last = None
    while last is None:  # the round's next ping to "a"
        now, out = step(node, now)
        assert now < T0 + 10
        for _, packet in sends(out):
            if isinstance(packet.messages[0], Ping):
                last = packet
    assert last.messages[:2] == (Ping(last.messages[0].seq, "a"), Suspect("a", 0, ME))  # type: ignore[union-attr]


# ------------------------------------------------------------------------------ suspicion and death


def test_independent_confirmations_bring_the_suspicion_timeout_to_its_minimum() -> None:
    node = make_node()
    deliver(node, "a", Suspect("b", 0, "a"))
    s = node.suspicion("b")
    assert s is not None
    assert s.deadline == pytest.approx(T0 + 24.0)
    out = deliver(node, "c", Suspect("b", 0, "c"), at=T0 + 1)
    assert node.queued() >= 1  # a new confirmation is gossiped on
    assert T0 + 4.0 < s.deadline < T0 + 24.0
    assert changes(out) == []  # still suspect: a confirmation changes the timer, not the status
    deliver(node, "d", Suspect("b", 0, "d"), at=T0 + 2)
    assert s.deadline == pytest.approx(T0 + 4.0)
    # Time is up: b is declared dead, by us.
    out = node.tick(T0 + 4.0)
    assert changes(out) == [("b", Status.DEAD)]
    assert node.suspicion("b") is None


def test_a_refuted_suspicion_never_becomes_death() -> None:
    node = make_node()
    deliver(node, "a", Suspect("b", 0, "a"))
    deliver(node, "b", Alive("b", PEERS["b"], 1, META), at=T0 + 1)
    assert node.view()["b"] is Status.ALIVE
    assert node.suspicion("b") is None
    node.tick(T0 + 30)
    assert node.view()["b"] is Status.ALIVE


# ------------------------------------------------------------------------------ precedence


@pytest.mark.parametrize(
    ("claims", "status", "incarnation"),
    [
        ([Alive("b", PEERS["b"], 0, Meta(state="draining"))], Status.ALIVE, 1),  # older: ignored
        ([Alive("b", PEERS["b"], 1, Meta(state="draining"))], Status.ALIVE, 1),  # same: ignored
        ([Suspect("b", 0, "a")], Status.ALIVE, 1),  # about an older incarnation
        ([Suspect("b", 1, "a")], Status.SUSPECT, 1),
        ([Suspect("b", 2, "a")], Status.SUSPECT, 2),
        ([Dead("b", 0, "a")], Status.ALIVE, 1),
        ([Dead("b", 1, "a")], Status.DEAD, 1),
        ([Dead("b", 1, "b")], Status.LEFT, 1),  # accused by itself: a leave
        ([Suspect("b", 1, "a"), Alive("b", PEERS["b"], 1, META)], Status.SUSPECT, 1),  # must outbid
        ([Suspect("b", 1, "a"), Alive("b", PEERS["b"], 2, META)], Status.ALIVE, 2),
        ([Suspect("b", 1, "a"), Dead("b", 1, "c")], Status.DEAD, 1),
        ([Dead("b", 1, "a"), Suspect("b", 5, "c")], Status.DEAD, 1),  # dead stays dead...
        ([Dead("b", 1, "a"), Alive("b", PEERS["b"], 1, META)], Status.DEAD, 1),
        ([Dead("b", 1, "a"), Alive("b", PEERS["b"], 2, META)], Status.ALIVE, 2),  # ...until it outbids
        ([Dead("b", 1, "b"), Dead("b", 3, "a")], Status.LEFT, 1),  # already gone
    ],
)
def test_precedence_of_claims_about_a_member(claims: list[Message], status: Status, incarnation: int) -> None:
    node = make_node()
    deliver(node, "b", Alive("b", PEERS["b"], 1, META))
    for i, claim in enumerate(claims):
        deliver(node, "c", claim, at=T0 + 0.1 * (i + 1))
    record = node.members["b"]
    assert (record.status, record.incarnation) == (status, incarnation)


def test_claims_about_an_unknown_member_add_nothing_but_its_own_alive() -> None:
    node = make_node()
    deliver(node, "a", Suspect("z", 9, "a"), Dead("y", 9, "a"))
    assert set(node.view()) == {ME, *PEERS}
    out = deliver(node, "a", Alive("z", "10.0.0.99:7946", 0, META))
    assert changes(out) == [("z", Status.ALIVE)]
    assert out[0].previous is None  # type: ignore[union-attr]


def test_a_live_member_does_not_move_to_another_address() -> None:
    node = make_node()
    deliver(node, "a", Alive("b", "10.6.6.6:7946", 5, META))
    assert node.members["b"].addr == PEERS["b"]
    assert node.counters.conflicts == 1
    deliver(node, "a", Dead("b", 0, "a"))
    deliver(node, "a", Alive("b", "10.6.6.6:7946", 5, META))  # once dead it may come back elsewhere
    assert (node.members["b"].addr, node.view()["b"]) == ("10.6.6.6:7946", Status.ALIVE)


def test_new_metadata_is_a_change_even_without_a_status_change() -> None:
    node = make_node()
    out = deliver(node, "b", Alive("b", PEERS["b"], 1, Meta(state="draining")))
    assert changes(out) == [("b", Status.ALIVE)]
    assert node.members["b"].meta.state == "draining"


# ------------------------------------------------------------------------------ refutation


@pytest.mark.parametrize(
    ("claim", "incarnation"),
    [
        (Suspect(ME, 0, "a"), 1),
        (Suspect(ME, 7, "a"), 8),
        (Dead(ME, 0, "a"), 1),
        (Dead(ME, 3, ME), 4),  # "me, left": a former life's leave, still in some queue
        (Alive(ME, ADDR, 0, Meta(state="old")), 1),  # same incarnation, other content: a former life
        (Alive(ME, ADDR, 4, META), 5),
    ],
)
def test_claims_about_ourselves_are_refuted_with_a_higher_incarnation(
    claim: Message, incarnation: int
) -> None:
    node = make_node()
    out = deliver(node, "a", claim, Ping(1, ME))
    assert node.me.incarnation == incarnation
    assert node.view()[ME] is Status.ALIVE
    assert node.counters.refutations == 1
    assert node.awareness.score == 1  # being accused hints that we are slow
    # The refutation rides on the very next packet, the ack.
    [(_, packet)] = sends(out)
    assert packet.messages == (Ack(1), Alive(ME, ADDR, incarnation, META))


@pytest.mark.parametrize(
    "claim",
    [Suspect(ME, 0, "a"), Dead(ME, 0, "a"), Alive(ME, ADDR, 0, Meta(state="old")), Alive(ME, ADDR, 1, META)],
)
def test_an_old_or_identical_claim_about_ourselves_needs_no_refutation(claim: Message) -> None:
    node = make_node()
    node.update(T0, META)  # incarnation 1
    deliver(node, "a", claim)
    assert node.me.incarnation == 1
    assert node.counters.refutations == 0


# ------------------------------------------------------------------------------ dissemination


def test_an_update_is_gossiped_to_three_members_until_its_retransmit_limit() -> None:
    node = make_node()
    deliver(node, "a", Alive("z", "10.0.0.99:7946", 0, META))
    assert node.cluster_size == 6  # retransmit limit: 4 x ceil(log10(7)) = 4
    carried = 0
    now = T0
    while now < T0 + 3:
        now, out = step(node, now)
        for _, packet in sends(out):
            carried += packet.messages.count(Alive("z", "10.0.0.99:7946", 0, META))
    assert carried == 4
    assert node.queued() == 0


def test_gossip_sends_nothing_when_nothing_is_queued() -> None:
    node = make_node()
    for addr, packet in sends(node.tick(T0 + 0.5)):
        assert isinstance(packet.messages[0], Ping), (addr, packet)
    assert node.queued() == 0


def test_piggybacking_never_overflows_the_datagram() -> None:
    node = make_node()
    for i in range(200):  # two hundred new members: far more than one datagram holds
        deliver(node, "a", Alive(f"z{i:03}", f"10.1.0.{i}:7946", 0, META))
    out = deliver(node, "a", Ping(3, ME))
    [(_, packet)] = sends(out)
    sealed = next(o for o in out if isinstance(o, Send)).data
    assert len(sealed) <= Config().udp_buffer_size
    assert packet.messages[0] == Ack(3)
    assert len(packet.messages) > 5  # and it is filled


# ------------------------------------------------------------------------------ push/pull and joining


def test_a_push_pull_is_merged_then_answered_with_the_merged_state() -> None:
    node = make_node(["a"])
    request = PushPull(
        join=True,
        reply=False,
        members=(
            MemberState("a", PEERS["a"], 0, Status.ALIVE, META),
            MemberState("b", PEERS["b"], 2, Status.ALIVE, META),
            MemberState(ME, ADDR, 0, Status.DEAD, META),  # our tombstone, from a former life
        ),
    )
    out = node.receive(T0, "10.0.0.2:50123", says("a", request), stream=True)
    assert node.me.incarnation == 1  # refuted
    [reply] = [o for o in out if isinstance(o, Send)]
    assert (reply.addr, reply.stream) == ("10.0.0.2:50123", True)  # back on the request's connection
    [answer] = opened(reply).messages
    assert isinstance(answer, PushPull)
    assert (answer.join, answer.reply) == (True, True)
    states = {s.name: (s.status, s.incarnation) for s in answer.members}
    assert states == {ME: (Status.ALIVE, 1), "a": (Status.ALIVE, 0), "b": (Status.ALIVE, 2)}


def test_merging_a_remote_dead_only_suspects_and_a_remote_left_is_left() -> None:
    node = make_node(["a", "b", "c"])
    states = (
        MemberState("b", PEERS["b"], 0, Status.DEAD, META),
        MemberState("c", PEERS["c"], 0, Status.LEFT, META),
    )
    node.receive(T0, PEERS["a"], says("a", PushPull(join=False, reply=True, members=states)), stream=True)
    assert node.view()["b"] is Status.SUSPECT
    assert node.view()["c"] is Status.LEFT


def test_a_node_whose_seeds_are_unreachable_stays_alone_and_retries_them() -> None:
    node = Node(ME, ADDR, Keyring([KEY]), rng=random.Random(3), wall=wall)  # noqa: S311
    out = node.start(T0, seeds=["10.0.0.2:7946", ADDR, "10.0.0.2:7946"])  # itself and a duplicate dropped
    assert [(o.addr, o.stream) for o in out if isinstance(o, Send)] == [("10.0.0.2:7946", True)]
    assert isinstance(opened(out[0]).messages[0], PushPull)  # type: ignore[arg-type]
    assert node.status is NodeStatus.ALONE
    retries = []
    now = T0
    while now < T0 + 16:
        now, out = step(node, now)
        retries += [now for o in out if isinstance(o, Send) and o.stream]
    assert retries == pytest.approx([T0 + 5, T0 + 10, T0 + 15])
    # The seed comes up and answers: joined, and no more retries.
    reply = PushPull(join=True, reply=True, members=(MemberState("a", PEERS["a"], 0, Status.ALIVE, META),))
    node.receive(now, PEERS["a"], says("a", reply, at=now), stream=True)
    assert node.status is NodeStatus.JOINED
    assert node.next_deadline() is not None
    joins = [
        p
        for _, p in sends(node.tick(now + 5.5))
        if isinstance(p.messages[0], PushPull) and p.messages[0].join
    ]
    assert joins == []


# ------------------------------------------------------------------------------ update and leave


def test_update_announces_the_new_state_at_once_with_a_higher_incarnation() -> None:
    node = make_node()
    out = node.update(T0 + 1, state="draining")
    assert node.me.incarnation == 1
    assert node.me.meta == Meta(
        service="agenda", api_url="http://10.0.0.1:8000", version="1.0", state="draining"
    )
    gossiped = sends(out)
    assert len(gossiped) == 3  # gossip_nodes, now rather than at the next gossip tick
    assert all(p.messages == (Alive(ME, ADDR, 1, node.me.meta),) for _, p in gossiped)


def test_update_refuses_metadata_that_would_not_fit_or_decode() -> None:
    node = make_node()
    with pytest.raises(ValueError, match="api_url"):
        node.update(T0, Meta(api_url="x" * 600))


def test_leave_announces_itself_and_the_node_goes_inert_once_heard() -> None:
    node = make_node()
    out = node.leave(T0 + 1)
    assert changes(out) == [(ME, Status.LEFT)]
    assert {p.messages[0] for _, p in sends(out)} == {Dead(ME, 0, ME)}
    assert node.status is NodeStatus.LEAVING
    # A leaving node does not refute: the accusation it makes of itself stands.
    deliver(node, "a", Suspect(ME, 0, "a"), at=T0 + 1.05)
    assert node.counters.refutations == 0
    now = T0 + 1
    while node.status is NodeStatus.LEAVING:
        now, _ = step(node, now)
        assert now <= T0 + 1 + Config().leave_timeout
    assert node.status is NodeStatus.LEFT
    assert now < T0 + 2  # the limit (4 sends) is reached in the second gossip round, not at the timeout
    assert node.next_deadline() is None
    assert deliver(node, "a", Ping(1, ME), at=now + 1) == []
    with pytest.raises(RuntimeError):
        node.update(now, state="serving")


def test_a_node_with_a_single_peer_still_announces_its_leave() -> None:
    node = make_node(["a"])
    out = node.leave(T0)
    assert [(addr, p.messages[0]) for addr, p in sends(out)] == [(PEERS["a"], Dead(ME, 0, ME))]
    assert node.status is NodeStatus.LEAVING


def test_a_node_alone_leaves_at_once() -> None:
    node = make_node([])
    assert node.status is NodeStatus.ALONE
    assert sends(node.leave(T0)) == []
    assert node.status is NodeStatus.LEFT


# ------------------------------------------------------------------------------ what is dropped


def test_packets_that_fail_authentication_or_decoding_are_dropped_and_counted() -> None:
    node = make_node()
    view = node.view()
    intruder = Keyring([b"x" * 32])
    cases = [
        says("z", Alive("z", "10.0.0.99:7946", 0, META), ring=intruder),  # another key
        says("z", Alive("z", "10.0.0.99:7946", 0, META), ring=Keyring([KEY], label="other")),
        b"garbage",
        b"",
        RING.seal(b'[1,"z",[["alive","z","10.0.0.99:7946",0]]]', wall(T0)),  # a field missing
        RING.seal(b"\xff" * 40, wall(T0)),
    ]
    for data in cases:
        assert node.receive(T0, "10.0.0.99:7946", data) == []
    assert node.view() == view  # nobody added, nothing changed
    c = node.counters
    assert (c.dropped_auth, c.dropped_decode, c.received) == (4, 2, 6)


def test_a_replayed_packet_is_acted_on_once() -> None:
    node = make_node()
    data = says("a", Ping(5, ME), at=T0)
    assert len(sends(node.receive(T0, PEERS["a"], data))) == 1
    assert node.receive(T0 + 1, PEERS["a"], data) == []
    assert node.counters.dropped_replay == 1


def test_a_packet_sent_outside_the_replay_window_is_dropped() -> None:
    node = make_node()
    window = Config().replay_window
    assert node.receive(T0, PEERS["a"], says("a", Ping(5, ME), at=T0 - window - 1)) == []
    assert node.receive(T0, PEERS["a"], says("a", Ping(6, ME), at=T0 + window + 1)) == []  # a clock ahead
    assert node.counters.dropped_stale == 2
    assert len(sends(node.receive(T0, PEERS["a"], says("a", Ping(7, ME), at=T0 - window + 1)))) == 1


def test_a_node_not_started_or_left_ignores_the_wire() -> None:
    node = Node(ME, ADDR, Keyring([KEY]), wall=wall)
    assert node.receive(T0, PEERS["a"], says("a", Ping(1, ME))) == []
    assert node.tick(T0) == []
    assert node.next_deadline() is None
    node.start(T0)
    with pytest.raises(RuntimeError):
        node.start(T0)


# ------------------------------------------------------------------------------ robustness


def test_random_valid_traffic_never_breaks_the_nodes_invariants() -> None:
    """Authenticated but arbitrary claims, in any order, interleaved with ticks: no exception, the node
    stays alive in its own view, its cluster size matches its view, and its timers keep moving."""
    rng = random.Random(2024)  # noqa: S311 - a reproducible storm, not a secret
    names = [ME, *PEERS, "x", "y"]
    addrs = [ADDR, *PEERS.values(), "10.0.0.8:7946", "10.0.0.9:7946"]
    statuses = list(Status)

    def claim() -> Message:
        name, addr = rng.choice(names), rng.choice(addrs)
        incarnation = rng.choice([0, 1, 2, 3, rng.randrange(100), 2**63 - 1])
        meta = Meta(state=rng.choice(["serving", "draining"]))
        match rng.randrange(9):
            case 0:
                return Ping(rng.randrange(50), rng.choice(names))
            case 1:
                return IndirectPing(rng.randrange(50), rng.choice(names), addr)
            case 2:
                return Ack(rng.randrange(50))
            case 3:
                return Nack(rng.randrange(50))
            case 4:
                return Alive(name, addr, incarnation, meta)
            case 5:
                return Suspect(name, incarnation, rng.choice(names))
            case 6:
                return Dead(name, incarnation, rng.choice(names))
            case _:
                states = tuple(
                    MemberState(
                        rng.choice(names), rng.choice(addrs), rng.randrange(5), rng.choice(statuses), meta
                    )
                    for _ in range(rng.randrange(4))
                )
                return PushPull(join=rng.random() < 0.5, reply=rng.random() < 0.5, members=states)

    node = make_node()
    now = T0
    for _ in range(1500):
        now += rng.uniform(0, 0.3)
        deadline = node.next_deadline()
        assert deadline is not None
        if deadline <= now:
            node.tick(deadline)
            assert (node.next_deadline() or 0) > deadline
        sender = rng.choice(names[1:])
        messages = tuple(claim() for _ in range(rng.randint(1, 4)))
        node.receive(now, PEERS.get(sender, "10.0.0.9:7946"), says(sender, *messages, at=now), stream=True)
        view = node.view()
        assert view[ME] is Status.ALIVE
        assert node.cluster_size == sum(1 for s in view.values() if s in (Status.ALIVE, Status.SUSPECT))
    assert node.counters.refutations > 0  # the storm did accuse it, and it answered
    assert node.counters.dropped_decode == node.counters.dropped_auth == 0
