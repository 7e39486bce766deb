"""The timer formulas against memberlist's own test values, Lifeguard's two timers, and the config checks."""

from __future__ import annotations

import math

import pytest

from agenda.gossip.config import Config, push_pull_scale, retransmit_limit, suspicion_timeout
from agenda.gossip.lifeguard import Awareness, Suspicion, suspicion_remaining

# ------------------------------------------------------------------------------ memberlist's formulas


@pytest.mark.parametrize(
    ("n", "expected"),
    # memberlist util_test.go TestSuspicionTimeout: suspicionTimeout(3, n, 1s) / 3
    [(5, 1.0), (10, 1.0), (50, 1.698), (100, 2.0), (500, 2.698), (1000, 3.0)],
)
def test_suspicion_timeout_matches_memberlist(n: int, expected: float) -> None:
    assert suspicion_timeout(3, n, 1.0) / 3 == pytest.approx(expected, abs=1e-9)


def test_suspicion_timeout_with_the_lan_defaults() -> None:
    cfg = Config()
    assert [suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval) for n in (1, 5, 50, 500)] == [
        pytest.approx(4.0),
        pytest.approx(4.0),
        pytest.approx(6.792),
        pytest.approx(10.792),
    ]
    # It scales with the probe interval.
    assert suspicion_timeout(4, 50, 2.0) == pytest.approx(2 * 6.792)


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    # memberlist util_test.go TestRetransmitLimit, then the LAN multiplier for our cluster sizes.
    [(3, 0, 0), (3, 1, 3), (3, 99, 6), (4, 5, 4), (4, 50, 8), (4, 500, 12), (4, 999, 12), (4, 1000, 16)],
)
def test_retransmit_limit(mult: int, n: int, expected: int) -> None:
    assert retransmit_limit(mult, n) == expected


def test_push_pull_scale_matches_memberlist() -> None:
    # memberlist util_test.go TestPushPullScale
    assert {push_pull_scale(1.0, n) for n in range(33)} == {1.0}
    assert {push_pull_scale(1.0, n) for n in range(33, 65)} == {2.0}
    assert {push_pull_scale(1.0, n) for n in range(65, 129)} == {3.0}
    assert push_pull_scale(30.0, 500) == 150.0


# ------------------------------------------------------------------------------ Lifeguard suspicion


@pytest.mark.parametrize(
    ("n", "k", "elapsed", "expected"),
    # memberlist suspicion_test.go TestSuspicion_remainingSuspicionTime (min 2 s, max 30 s)
    [
        (0, 3, 0.0, 30.0),
        (1, 3, 2.0, 14.0),
        (2, 3, 3.0, 4.81),
        (3, 3, 4.0, -2.0),
        (4, 3, 5.0, -3.0),
        (5, 3, 10.0, -8.0),
    ],
)
def test_remaining_suspicion_time_matches_memberlist(n: int, k: int, elapsed: float, expected: float) -> None:
    assert suspicion_remaining(n, k, elapsed, 2.0, 30.0) == pytest.approx(expected, abs=1e-9)


def test_no_confirmations_wanted_means_the_minimum_from_the_start() -> None:
    assert suspicion_remaining(0, 0, 0.0, 4.0, 24.0) == 4.0
    s = Suspicion("a", started=100.0, k=0, lo=4.0, hi=24.0)
    assert s.deadline == 104.0
    assert s.confirm("b") is False  # nothing to shorten
    assert s.deadline == 104.0


def test_suspicion_starts_at_the_maximum_and_shrinks_with_independent_confirmations() -> None:
    s = Suspicion("accuser", started=10.0, k=2, lo=4.0, hi=24.0)
    assert s.deadline == 34.0  # one accuser alone waits the whole maximum
    assert s.confirm("accuser") is False  # its own suspicion gossiped back: not a confirmation
    assert s.deadline == 34.0
    assert s.confirm("b") is True
    one = 24.0 - 20.0 * math.log(2) / math.log(3)
    assert s.deadline == pytest.approx(10.0 + math.floor(one * 1000) / 1000)
    assert s.confirm("b") is False  # the same confirmer twice counts once
    assert s.confirm("c") is True
    assert s.deadline == 14.0  # k confirmations: the minimum
    assert s.confirm("d") is False  # past k: no new information
    assert s.count == 2
    assert s.deadline == 14.0


# ------------------------------------------------------------------------------ Lifeguard awareness


def test_awareness_scales_timeouts_and_is_bounded() -> None:
    a = Awareness(max_multiplier=8)
    assert a.scale(1.0) == 1.0
    a.apply(3)
    assert a.scale(1.0) == 4.0
    a.apply(100)
    assert a.score == 7  # 0 <= score < max
    assert a.scale(0.5) == 4.0
    a.apply(-100)
    assert a.score == 0
    off = Awareness(max_multiplier=1)  # Lifeguard's scaling disabled
    off.apply(5)
    assert off.scale(1.0) == 1.0


# ------------------------------------------------------------------------------ config


def test_defaults_are_memberlists_lan_defaults() -> None:
    cfg = Config()
    assert (cfg.probe_interval, cfg.probe_timeout, cfg.indirect_checks) == (1.0, 0.5, 3)
    assert (cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, cfg.retransmit_mult) == (4, 6, 4)
    assert (cfg.gossip_interval, cfg.gossip_nodes, cfg.gossip_to_the_dead) == (0.2, 3, 30.0)
    assert (cfg.push_pull_interval, cfg.awareness_max_multiplier, cfg.udp_buffer_size) == (30.0, 8, 1400)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"probe_interval": 0.0}, "probe_interval"),
        ({"probe_timeout": 1.0}, "shorter than probe_interval"),
        ({"gossip_interval": -1.0}, "gossip_interval"),
        ({"awareness_max_multiplier": 0}, "at least 1"),
        ({"suspicion_mult": 0}, "at least 1"),
        ({"gossip_nodes": 0}, "gossip_nodes"),
        ({"udp_buffer_size": 200}, "512"),
        ({"replay_window": 0.0}, "replay_window"),
    ],
)
def test_config_refuses_settings_the_protocol_cannot_run_with(
    overrides: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Config(**overrides)  # type: ignore[arg-type]
