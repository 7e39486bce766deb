"""Whole clusters in simulated time (agenda.gossip.sim): convergence, detection, false positives, faults.

Seeded, so every run is the same run; the bounds are the protocol's (timer formulas), with the margins
said where they are taken. The 500-member cluster starts converged (preloaded) and is only run for a
few simulated seconds; longer runs and tables are bench/gossip_sim.py's.
"""

from __future__ import annotations

import pytest

from agenda.gossip.config import Config, suspicion_timeout
from agenda.gossip.member import Status
from agenda.gossip.protocol import NodeStatus
from agenda.gossip.sim import Simulation, address


def all_alive(names: list[str]) -> dict[str, Status]:
    return dict.fromkeys(names, Status.ALIVE)


# ------------------------------------------------------------------------------ convergence


@pytest.mark.parametrize(("n", "within"), [(5, 2.0), (50, 5.0)])
def test_every_view_converges_after_joining_through_one_seed(n: int, within: float) -> None:
    sim = Simulation(seed=11)
    names = sim.add_cluster(n, converged=False)
    took = sim.run_until_converged(all_alive(names), limit=30.0)
    assert took <= within
    assert all(sim.node(name).status is NodeStatus.JOINED for name in names)
    assert all(len(view) == n for view in sim.views().values())
    assert sim.false_suspect == []


def test_500_members_converge_on_a_change_and_on_a_newcomer_in_seconds() -> None:
    sim = Simulation(seed=12)
    names = sim.add_cluster(500)
    assert sim.converged(all_alive(names))
    sim.run_for(1.0)
    # A member starts draining: every view shows it (gossip alone: no push/pull is due yet).
    sim.call("n7", sim.node("n7").update(sim.now, state="draining"))
    t0 = sim.now
    while not all(sim.node(x).members["n7"].meta.state == "draining" for x in names):
        sim.run_for(0.1)
        assert sim.now - t0 < 5.0, "draining did not reach every view in 5 s"
    spread = sim.now - t0
    # A newcomer joins through one seed: everyone knows it.
    sim.add("late", addr=address(501), seeds=[sim.hosts["n1"].addr])
    t1 = sim.now
    took = sim.run_until_converged({"late": Status.ALIVE}, limit=5.0)
    assert took < 5.0
    assert len(sim.node("late").members) == 501  # it learnt the whole cluster from its seed
    assert spread < 3.0
    assert sim.now - t1 < 5.0
    assert sim.false_dead == []


# ------------------------------------------------------------------------------ failure detection


@pytest.mark.parametrize("n", [5, 50])
def test_a_crashed_member_is_declared_dead_everywhere_within_the_suspicion_bounds(n: int) -> None:
    cfg = Config()
    sim = Simulation(seed=21, config=cfg)
    names = sim.add_cluster(n)
    sim.run_for(5.0)
    victim = names[-1]
    sim.crash(victim)
    crashed = sim.now
    doubt = 0
    for _ in range(60):
        sim.run_for(0.5)
        doubt = max(doubt, *(sim.node(x).awareness.score for x in names if x != victim))
    # The relays nacked in time: probing a dead member never made a healthy prober doubt itself.
    assert doubt == 0
    first_suspect, _ = sim.detection(victim, Status.SUSPECT, crashed)
    first_dead, all_dead = sim.detection(victim, Status.DEAD, crashed)
    assert first_suspect is not None
    assert first_dead is not None
    assert all_dead is not None
    lo = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
    # A failed probe takes a probe interval; a suspicion at least the minimum timeout.
    assert first_suspect >= cfg.probe_timeout
    assert first_dead >= first_suspect + lo - 1e-9
    # Independent confirmations (every member probes it) bring it well under Lifeguard's maximum.
    assert all_dead <= first_suspect + lo + 3.0 < first_suspect + cfg.suspicion_max_timeout_mult * lo
    assert all_dead - first_dead < 1.0  # the verdict spreads in well under a second
    assert sim.false_dead == []
    assert sim.false_suspect == []


def test_no_false_positives_under_5_percent_packet_loss() -> None:
    sim = Simulation(seed=31, loss=0.05)
    names = sim.add_cluster(50)
    sim.run_for(60.0)
    failures = sum(sim.node(x).counters.probe_failures for x in names)
    refutations = sum(sim.node(x).counters.refutations for x in names)
    assert sim.lost > 0.04 * sim.datagrams
    assert sim.false_dead == []  # the losses cost suspicions at most, each refuted
    assert failures >= 1  # the losses did make probes fail...
    assert refutations >= 1  # ...and their suspicions were refuted
    assert sim.converged(all_alive(names))


def test_heavy_loss_does_cause_false_positives_so_the_check_above_is_not_vacuous() -> None:
    sim = Simulation(seed=32, loss=0.4)
    sim.add_cluster(8)
    sim.run_for(40.0)
    assert sim.false_dead != []


def slow_member_run(awareness_max_multiplier: int) -> Simulation:
    sim = Simulation(seed=41, config=Config(awareness_max_multiplier=awareness_max_multiplier))
    sim.add_cluster(5)
    sim.run_for(2.0)
    sim.set_slow("n3", 1.2)  # every packet waits 1.2 s in its receive queue: acks come back late
    sim.run_for(120.0)
    return sim


def test_a_slow_member_with_local_health_awareness_accuses_far_less() -> None:
    aware, blind = slow_member_run(8), slow_member_run(1)
    aware_failed = aware.node("n3").counters.probe_failures
    blind_failed = blind.node("n3").counters.probe_failures
    # Without awareness nearly every probe of the slow member fails (its acks arrive after the
    # interval); with it, its probe interval stretches until they fit.
    assert blind_failed > 100
    assert aware_failed * 3 < blind_failed
    assert aware.node("n3").counters.probes < blind.node("n3").counters.probes
    healthy = ["n1", "n2", "n4", "n5"]
    aware_false = sum(1 for e in aware.false_suspect if e.member in healthy)
    blind_false = sum(1 for e in blind.false_suspect if e.member in healthy)
    assert aware_false * 2 < blind_false
    # Either way the healthy members refute every accusation in time: none is ever declared dead.
    # (The slow member itself may be: it hears of its suspicions, and refutes them, 1.2 s late.)
    assert [e for e in aware.false_dead + blind.false_dead if e.member in healthy] == []


# ------------------------------------------------------------------------------ refutation and rejoin


def test_a_member_cut_off_briefly_is_suspected_then_refutes_and_is_never_dead() -> None:
    sim = Simulation(seed=51)
    names = sim.add_cluster(5)
    sim.run_for(2.0)
    sim.partition(["n2"])
    start = sim.now
    sim.run_for(3.0)  # well under the 4 s minimum suspicion timeout
    sim.partition()
    sim.run_for(10.0)
    assert sim.detection("n2", Status.SUSPECT, start)[0] is not None  # it was suspected...
    assert sim.node("n2").counters.refutations >= 1  # ...refuted...
    assert sim.detection("n2", Status.DEAD, start) == (None, None)  # ...and never declared dead
    assert sim.converged(all_alive(names))
    assert {sim.node(x).members["n2"].incarnation for x in names} == {sim.node("n2").me.incarnation}


def test_a_restarted_member_rejoins_by_outbidding_its_own_tombstone() -> None:
    sim = Simulation(seed=61)
    names = sim.add_cluster(5)
    sim.run_for(2.0)
    sim.crash("n5")
    sim.run_for(30.0)
    assert sim.converged({"n5": Status.DEAD})
    old = sim.node("n1").members["n5"].incarnation
    sim.restart("n5", seeds=[sim.hosts["n1"].addr], incarnation=0)
    took = sim.run_until_converged(all_alive(names), limit=10.0)
    assert took < 2.0
    assert sim.node("n5").me.incarnation > old
    assert {sim.node(x).members["n5"].incarnation for x in names} == {sim.node("n5").me.incarnation}


def test_the_two_sides_of_a_long_partition_find_each_other_again() -> None:
    sim = Simulation(seed=71)
    names = sim.add_cluster(5)
    sim.run_for(2.0)
    sim.partition(["n1", "n2"], ["n3", "n4", "n5"])
    sim.run_for(60.0)  # each side declares the other dead (and gossip to the dead has stopped)
    assert sim.node("n1").view()["n3"] is Status.DEAD
    assert sim.node("n3").view()["n1"] is Status.DEAD
    sim.partition()
    took = sim.run_until_converged(all_alive(names), limit=120.0)
    assert took < 60.0  # about one reconnect interval


def test_a_member_whose_seed_is_not_there_yet_starts_alone_and_joins_when_it_appears() -> None:
    sim = Simulation(seed=81)
    seed_addr = address(2)
    sim.add("n1", addr=address(1), seeds=[seed_addr])
    sim.run_for(12.0)
    assert sim.node("n1").status is NodeStatus.ALONE
    sim.add("n2", addr=seed_addr)  # the seed starts, itself with no seed
    assert sim.node("n2").status is NodeStatus.ALONE
    took = sim.run_until_converged(all_alive(["n1", "n2"]), limit=10.0)
    assert took <= Config().seed_retry_interval + 0.1
    assert sim.node("n1").status is sim.node("n2").status is NodeStatus.JOINED


# ------------------------------------------------------------------------------ drain and leave


def test_a_draining_member_is_seen_draining_then_left_and_never_dead() -> None:
    sim = Simulation(seed=91)
    names = sim.add_cluster(5)
    sim.run_for(2.0)
    start = sim.now
    sim.call("n2", sim.node("n2").update(sim.now, state="draining"))
    sim.run_for(1.0)
    others = [x for x in names if x != "n2"]
    assert all(sim.node(x).members["n2"].meta.state == "draining" for x in others)
    assert all(sim.node(x).view()["n2"] is Status.ALIVE for x in others)
    sim.call("n2", sim.node("n2").leave(sim.now))
    sim.run_for(1.0)
    assert sim.node("n2").status is NodeStatus.LEFT
    assert all(sim.node(x).view()["n2"] is Status.LEFT for x in others)
    sim.run_for(30.0)
    assert sim.detection("n2", Status.DEAD, start) == (None, None)
    assert sim.detection("n2", Status.SUSPECT, start) == (None, None)  # a left member is not probed


# ------------------------------------------------------------------- keys, anti-entropy, determinism


def test_a_key_is_rotated_in_a_running_cluster_without_a_dropped_packet() -> None:
    sim = Simulation(seed=101)
    names = sim.add_cluster(5)
    sim.run_for(2.0)
    new = b"N" * 32
    for ring in ([sim.key, new], [new, sim.key], [new]):  # each round rolled out member by member
        for name in names:
            node = sim.node(name)
            node.keyring = node.keyring.rotated(ring)
            sim.run_for(0.7)
    sim.run_for(5.0)
    assert sum(sim.node(x).counters.dropped_auth for x in names) == 0
    assert sim.false_suspect == []
    # The old key is now useless: a member still on it is deaf and mute to the others.
    stale = sim.node("n1")
    stale.keyring = stale.keyring.rotated([sim.key])
    sim.run_for(3.0)
    assert sum(sim.node(x).counters.dropped_auth for x in names) > 0


def test_push_pull_repairs_a_view_that_gossip_never_reached() -> None:
    sim = Simulation(seed=111, config=Config(push_pull_interval=5.0))
    names = sim.add_cluster(4)
    # "x" is known to n1 alone, silently (no gossip carries it), and knows only n1.
    records = {name: sim.node("n1").members[name] for name in ("n1",)}
    sim.add("x", addr=address(99), preload=records.values())
    sim.node("n1").preload([sim.node("x").me])
    sim.run_for(0.5)
    assert "x" not in sim.node("n2").view()
    took = sim.run_until_converged(all_alive([*names, "x"]), limit=30.0)
    assert took <= 2 * 5.0  # within a push/pull interval or two (the first is staggered)
    assert sim.false_suspect == []


def test_a_run_is_determined_by_its_seed() -> None:
    def run(seed: int) -> list[tuple[float, str, str, Status]]:
        sim = Simulation(seed=seed, loss=0.1)
        sim.add_cluster(8, converged=False)
        sim.run_for(3.0)
        sim.crash("n4")
        sim.run_for(15.0)
        return [(e.time, e.observer, e.member, e.status) for e in sim.events]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_clocks_within_the_replay_window_do_not_matter_and_beyond_it_a_member_is_cut_off() -> None:
    sim = Simulation(seed=121)
    names = sim.add_cluster(5)
    sim.hosts["n3"].skew = 20.0  # within the 30 s window
    sim.run_for(10.0)
    assert sum(sim.node(x).counters.dropped_stale for x in names) == 0
    sim.hosts["n3"].skew = -45.0
    sim.run_for(3.0)
    # Everything n3 sends is stale to the others, and what they send is from the future to n3.
    assert sum(sim.node(x).counters.dropped_stale for x in names if x != "n3") > 0
    assert sim.node("n3").counters.dropped_stale > 0
