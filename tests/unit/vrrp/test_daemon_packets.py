"""The daemon's receive path without sockets: every bad datagram is counted under its reason and never
reaches the state machine, a good one does, and a hostile flood costs counters, not log lines."""

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agenda.vrrp import config as vrrp_config
from agenda.vrrp import fsm
from agenda.vrrp.daemon import DROP_LOG_PERIOD, Daemon
from agenda.vrrp.packet import DROP_REASONS, VRRP_GROUP, Advertisement, build_ipv4, encode

IFACE = "vrrptest0"  # never opened: the harness hands datagrams straight to handle_datagram
OTHER_IFACE = "vrrptest1"
ME = IPv4Address("192.168.58.12")
PEER = IPv4Address("192.168.58.11")
VIP = IPv4Address("192.168.58.100")
VIP2 = IPv4Address("192.168.58.101")
FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Clock:
    now: float = 500.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    daemon: Daemon
    clock: Clock
    sock: Any
    router: fsm.Router
    received: list[tuple[float, IPv4Address, Advertisement]] = field(default_factory=list)

    @property
    def inst(self) -> Any:
        return self.daemon.instances[0]

    def feed(self, datagram: bytes, sock: Any = None) -> None:
        self.daemon.handle_datagram(sock or self.sock, datagram)


def fake_socket(source: IPv4Address, interface: str) -> Any:
    return SimpleNamespace(source=source, interface=SimpleNamespace(name=interface))


@pytest.fixture
def harness() -> Iterator[Harness]:
    cfg = vrrp_config.load(
        data={
            "status_addr": "",
            "instances": [
                {
                    "name": "VI_1",
                    "interface": IFACE,
                    "virtual_router_id": 51,
                    "priority": 100,
                    "virtual_ipaddress": ["192.168.58.100/24", "192.168.58.101/24"],
                },
                {
                    "name": "VI_OTHER",
                    "interface": OTHER_IFACE,
                    "virtual_router_id": 52,
                    "priority": 100,
                    "virtual_ipaddress": ["192.168.59.100/24"],
                },
            ],
        }
    )
    clock = Clock()
    daemon = Daemon(cfg, clock=clock)
    inst = daemon.instances[0]
    router = fsm.Router(
        fsm.Settings(
            name=inst.name,
            vrid=51,
            priority=100,
            advert_int=1.0,
            addresses=(VIP, VIP2),
            primary=ME,
        )
    )
    router.start(clock.now)
    inst.router = router
    h = Harness(daemon=daemon, clock=clock, sock=fake_socket(ME, IFACE), router=router)
    original = router.receive

    def recording(now: float, source: IPv4Address, advert: Advertisement) -> list[fsm.Action]:
        h.received.append((now, source, advert))
        return original(now, source, advert)

    router.receive = recording  # type: ignore[method-assign]
    try:
        yield h
    finally:
        daemon.addresses.close()
        daemon._wake_r.close()
        daemon._wake_w.close()


def advert_datagram(
    *,
    vrid: int = 51,
    priority: int = 150,
    addresses: tuple[IPv4Address, ...] = (VIP, VIP2),
    source: IPv4Address = PEER,
    destination: IPv4Address = VRRP_GROUP,
    ttl: int = 255,
    interval_cs: int = 100,
) -> bytes:
    message = encode(Advertisement(vrid, priority, interval_cs, addresses), source, destination)
    return build_ipv4(source, destination, message, ttl=ttl)


def corrupt_checksum(datagram: bytes) -> bytes:
    return datagram[:26] + bytes([datagram[26] ^ 0x01]) + datagram[27:]


# ---------------------------------------------------------------- a valid advert


def test_a_valid_advert_reaches_the_router(harness: Harness) -> None:
    harness.clock.now += 0.25
    harness.feed(advert_datagram())
    assert harness.inst.adverts_received == 1
    assert harness.daemon.dropped == {}
    ((now, source, advert),) = harness.received
    assert now == harness.clock.now
    assert source == PEER
    assert advert == Advertisement(51, 150, 100, (VIP, VIP2))
    assert harness.router.state is fsm.State.BACKUP
    assert harness.router.master_address == PEER


def test_address_order_on_the_wire_does_not_matter(harness: Harness) -> None:
    harness.feed(advert_datagram(addresses=(VIP2, VIP)))
    assert harness.inst.adverts_received == 1
    assert len(harness.received) == 1


def test_a_unicast_advert_is_accepted(harness: Harness) -> None:
    harness.feed(advert_datagram(destination=ME))
    assert harness.inst.adverts_received == 1


def test_each_advert_counts(harness: Harness) -> None:
    for _ in range(5):
        harness.clock.now += 1.0
        harness.feed(advert_datagram())
    assert harness.inst.adverts_received == 5
    assert len(harness.received) == 5


def test_keepalived_captured_advert_reaches_the_router(harness: Harness) -> None:
    path = FIXTURES / "keepalived_v3_int100cs_prio150_2vips.bin"
    if not path.exists():
        pytest.fail(f"missing fixture {path.name} (see fixtures/README.md)")
    harness.feed(path.read_bytes())
    assert harness.daemon.dropped == {}
    assert harness.inst.adverts_received == 1
    assert harness.received[0][1] == PEER
    assert harness.received[0][2].priority == 150


# ---------------------------------------------------------------- drops, each under its reason


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (advert_datagram(ttl=254), "ttl"),
        (advert_datagram(ttl=1), "ttl"),
        (advert_datagram(ttl=0), "ttl"),
        (advert_datagram(vrid=50), "vrid"),
        (advert_datagram(vrid=52), "vrid"),  # configured, but on another interface
        (advert_datagram(addresses=(VIP,)), "address_list"),
        (advert_datagram(addresses=(VIP, VIP2, IPv4Address("192.168.58.102"))), "address_list"),
        (advert_datagram(addresses=(VIP, IPv4Address("192.168.58.102"))), "address_list"),
        (corrupt_checksum(advert_datagram()), "checksum"),
        (advert_datagram()[:20] + advert_datagram(source=IPv4Address("192.168.58.13"))[20:], "checksum"),
        (advert_datagram()[:30], "length"),
        (advert_datagram()[:20] + b"\x21" + advert_datagram()[21:], "version"),
        (b"\x45" + b"\x00" * 10, "ip_header"),
        (b"\x60" + b"\x00" * 40, "ip_header"),
        (advert_datagram()[:9] + b"\x11" + advert_datagram()[10:], "protocol"),
    ],
)
def test_bad_datagrams_are_counted_and_never_reach_the_router(
    harness: Harness, datagram: bytes, reason: str
) -> None:
    assert reason in DROP_REASONS
    harness.feed(datagram)
    assert harness.daemon.dropped == {reason: 1}
    assert harness.received == []
    assert harness.inst.adverts_received == 0
    assert harness.router.master_address is None


def test_keepalived_v2_capture_is_dropped_as_version(harness: Harness) -> None:
    path = FIXTURES / "keepalived_v2_int1s_prio150_1vip.bin"
    if not path.exists():
        pytest.fail(f"missing fixture {path.name} (see fixtures/README.md)")
    harness.feed(path.read_bytes())
    assert harness.daemon.dropped == {"version": 1}
    assert harness.received == []


def test_vrid_of_another_interface_is_not_delivered_to_it(harness: Harness) -> None:
    # VI_OTHER runs VRID 52 on OTHER_IFACE; an advert for 52 arriving on IFACE belongs to neither.
    harness.feed(
        advert_datagram(vrid=52, addresses=(IPv4Address("192.168.59.100"),)),
    )
    assert harness.daemon.dropped == {"vrid": 1}
    assert harness.daemon.instances[1].adverts_received == 0


def test_our_own_advert_is_ignored_silently(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="agenda.vrrp"):
        harness.feed(advert_datagram(source=ME))
        harness.feed(advert_datagram(source=ME, ttl=1))  # even one that would otherwise be dropped
    assert harness.daemon.dropped == {}
    assert harness.received == []
    assert harness.inst.adverts_received == 0
    assert caplog.records == []


def test_drops_appear_in_status_and_metrics(harness: Harness) -> None:
    harness.feed(advert_datagram(ttl=64))
    harness.feed(advert_datagram(ttl=64))
    harness.feed(advert_datagram(vrid=9))
    status = harness.daemon.status()
    assert status["instances"][0]["counters"]["dropped"] == {"ttl": 2, "vrid": 1}
    metrics = harness.daemon.metrics()
    assert 'agenda_vrrp_packets_dropped_total{reason="ttl"} 2' in metrics
    assert 'agenda_vrrp_packets_dropped_total{reason="vrid"} 1' in metrics
    assert 'agenda_vrrp_packets_dropped_total{reason="checksum"} 0' in metrics


# ---------------------------------------------------------------- a hostile flood


def hostile(rng: random.Random) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return advert_datagram(ttl=rng.randrange(255))
    if kind == 1:
        return advert_datagram(vrid=rng.choice([v for v in range(1, 256) if v != 51]))
    if kind == 2:
        return corrupt_checksum(advert_datagram(priority=rng.randrange(256)))
    if kind == 3:
        return advert_datagram(addresses=(IPv4Address(rng.getrandbits(32)),))
    if kind == 4:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(60)))
    if kind == 5:
        good = bytearray(advert_datagram())
        good[rng.randrange(20, len(good))] ^= 1 << rng.randrange(8)
        return bytes(good)
    if kind == 6:
        return advert_datagram()[: rng.randrange(20, 35)]
    return advert_datagram()[:9] + bytes([rng.choice([1, 6, 17, 89])]) + advert_datagram()[10:]


def test_a_flood_of_hostile_packets_logs_a_few_lines(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(5798)  # noqa: S311 - a reproducible flood, not a secret
    packets = [hostile(rng) for _ in range(10_000)]
    with caplog.at_level(logging.DEBUG, logger="agenda.vrrp"):
        for datagram in packets:
            harness.clock.now += 0.0005  # 10,000 packets in 5 s
            harness.feed(datagram)
    assert sum(harness.daemon.dropped.values()) == 10_000
    assert harness.received == []
    assert harness.inst.adverts_received == 0
    assert harness.router.state is fsm.State.BACKUP
    assert set(harness.daemon.dropped) <= set(DROP_REASONS)
    # At most one line per reason per DROP_LOG_PERIOD: a handful, not thousands.
    assert len(caplog.records) <= len(harness.daemon.dropped)
    assert len(caplog.records) <= len(DROP_REASONS)
    assert all(r.getMessage().startswith("vrrp: dropped a packet: ") for r in caplog.records)


def test_suppressed_drops_are_summed_in_the_next_line(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agenda.vrrp"):
        for _ in range(1000):
            harness.feed(advert_datagram(ttl=64))
        assert len(caplog.records) == 1
        harness.clock.now += DROP_LOG_PERIOD - 0.01
        harness.feed(advert_datagram(ttl=64))
        assert len(caplog.records) == 1
        harness.clock.now += 0.01
        harness.feed(advert_datagram(ttl=64))
    assert len(caplog.records) == 2
    assert "TTL 64" in caplog.records[0].getMessage()
    assert "(1000 more since the last report)" in caplog.records[1].getMessage()
    assert harness.daemon.dropped == {"ttl": 1002}


def test_a_valid_advert_still_gets_through_during_a_flood(harness: Harness) -> None:
    rng = random.Random(1)  # noqa: S311 - a reproducible flood, not a secret
    for i in range(2000):
        harness.feed(hostile(rng))
        if i % 500 == 0:
            harness.clock.now += 1.0
            harness.feed(advert_datagram())
    assert harness.inst.adverts_received == 4
    assert len(harness.received) == 4
