"""Interoperability with keepalived: its captured adverts (fixtures/README.md) decode to the fields
manifest.json records, and our encoder reproduces their VRRP bytes exactly, checksum included."""

import json
import struct
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from agenda.vrrp.packet import (
    VRRP_PROTOCOL,
    Advertisement,
    PacketError,
    build_ipv4,
    decode,
    encode,
    internet_checksum,
    parse_ipv4,
)

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "manifest.json").read_text())
FILES: dict[str, dict[str, Any]] = MANIFEST["files"]
V3 = sorted(name for name, facts in FILES.items() if facts["version"] == 3)
V2 = sorted(name for name, facts in FILES.items() if facts["version"] == 2)

# What the README's table states, restated here so a regenerated manifest cannot silently drift.
README_TABLE = {
    "keepalived_v2_int1s_prio150_1vip.bin": (2, 150, 1, ["192.168.58.100"], "224.0.0.18", 0x4DBD),
    "keepalived_v3_int100cs_prio0_1vip.bin": (3, 0, 100, ["192.168.58.100"], "224.0.0.18", 0xF817),
    "keepalived_v3_int100cs_prio150_1vip.bin": (3, 150, 100, ["192.168.58.100"], "224.0.0.18", 0x6217),
    "keepalived_v3_int100cs_prio150_1vip_unicast.bin": (
        3,
        150,
        100,
        ["192.168.58.100"],
        "192.168.58.12",
        0x4775,
    ),
    "keepalived_v3_int100cs_prio150_2vips.bin": (
        3,
        150,
        100,
        ["192.168.58.100", "192.168.58.101"],
        "224.0.0.18",
        0x6704,
    ),
    "keepalived_v3_int10cs_prio150_1vip.bin": (3, 150, 10, ["192.168.58.100"], "224.0.0.18", 0x6271),
}


def packet(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_every_capture_is_described() -> None:
    on_disk = {p.name for p in FIXTURES.glob("*.bin")}
    assert on_disk == set(FILES)
    assert set(README_TABLE) <= on_disk
    assert V3
    assert V2


@pytest.mark.parametrize("name", sorted(README_TABLE))
def test_manifest_agrees_with_the_readme(name: str) -> None:
    facts = FILES[name]
    version, priority, interval, addresses, dst, checksum = README_TABLE[name]
    assert facts["version"] == version
    assert facts["priority"] == priority
    assert facts["interval_field"] == interval
    assert facts["addresses"] == addresses
    assert facts["dst"] == dst
    assert int(facts["checksum"], 16) == checksum
    assert facts["src"] == "192.168.58.11"
    assert facts["vrid"] == 51
    assert facts["ttl"] == 255
    assert facts["bytes"] == len(packet(name)) == facts["ip_length"]


@pytest.mark.parametrize("name", sorted(FILES))
def test_ip_header_as_captured(name: str) -> None:
    facts = FILES[name]
    data = packet(name)
    ip = parse_ipv4(data)
    assert ip.source == IPv4Address(facts["src"])
    assert ip.destination == IPv4Address(facts["dst"])
    assert ip.ttl == facts["ttl"] == 255
    assert ip.protocol == facts["protocol"] == VRRP_PROTOCOL
    assert len(ip.payload) == len(data) - 20
    assert internet_checksum(data[:20]) == 0  # keepalived's header checksum holds


@pytest.mark.parametrize("name", V3)
def test_keepalived_v3_advert_decodes(name: str) -> None:
    facts = FILES[name]
    ip = parse_ipv4(packet(name))
    advert = decode(ip.payload, ip.source, ip.destination)
    assert advert.vrid == facts["vrid"]
    assert advert.priority == facts["priority"]
    assert advert.interval_cs == facts["interval_field"]
    assert advert.interval == facts["interval_seconds"]
    assert [str(a) for a in advert.addresses] == facts["addresses"]
    assert len(advert.addresses) == facts["count_ip_addrs"]
    assert struct.unpack_from("!H", ip.payload, 6)[0] == int(facts["checksum"], 16)


@pytest.mark.parametrize("name", V3)
def test_our_encoder_reproduces_keepalived_byte_for_byte(name: str) -> None:
    facts = FILES[name]
    ip = parse_ipv4(packet(name))
    ours = encode(
        Advertisement(
            vrid=facts["vrid"],
            priority=facts["priority"],
            interval_cs=facts["interval_field"],
            addresses=tuple(IPv4Address(a) for a in facts["addresses"]),
        ),
        IPv4Address(facts["src"]),
        IPv4Address(facts["dst"]),
    )
    assert ours.hex() == ip.payload.hex()
    assert struct.unpack_from("!H", ours, 6)[0] == int(facts["checksum"], 16)


@pytest.mark.parametrize("name", V3)
def test_build_ipv4_matches_keepalived_but_for_the_ip_id(name: str) -> None:
    data = packet(name)
    ip = parse_ipv4(data)
    ours = build_ipv4(ip.source, ip.destination, ip.payload)
    # keepalived numbers its datagrams (ID 1, 2); ours carry 0, so the header checksum differs too.
    assert ours[:4] + ours[6:10] + ours[12:] == data[:4] + data[6:10] + data[12:]


@pytest.mark.parametrize("name", V2)
def test_keepalived_v2_advert_is_dropped_as_version(name: str) -> None:
    ip = parse_ipv4(packet(name))
    with pytest.raises(PacketError) as info:
        decode(ip.payload, ip.source, ip.destination)
    assert info.value.reason == "version"


def test_priority_zero_capture_differs_from_the_periodic_one_only_in_priority_and_checksum() -> None:
    periodic = parse_ipv4(packet("keepalived_v3_int100cs_prio150_1vip.bin")).payload
    leaving = parse_ipv4(packet("keepalived_v3_int100cs_prio0_1vip.bin")).payload
    assert periodic[:2] + periodic[3:6] + periodic[8:] == leaving[:2] + leaving[3:6] + leaving[8:]
    assert leaving[2] == 0


@pytest.mark.parametrize("name", V3)
def test_a_captured_advert_from_another_source_fails_the_checksum(name: str) -> None:
    ip = parse_ipv4(packet(name))
    with pytest.raises(PacketError) as info:
        decode(ip.payload, IPv4Address("192.168.58.13"), ip.destination)
    assert info.value.reason == "checksum"
