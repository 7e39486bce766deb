"""The VRRPv3 codec: RFC 5798 bytes out, every malformed datagram refused as PacketError with its reason."""

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenda.vrrp.packet import (
    DROP_REASONS,
    VRRP_GROUP,
    VRRP_PROTOCOL,
    Advertisement,
    PacketError,
    build_ipv4,
    decode,
    encode,
    gratuitous_arp,
    internet_checksum,
    interval_to_cs,
    parse_address,
    parse_ipv4,
    parse_mac,
    same_addresses,
)

SRC = IPv4Address("192.168.56.11")
DST = VRRP_GROUP
VIP = IPv4Address("192.168.56.100")
ADVERT = Advertisement(vrid=51, priority=150, interval_cs=100, addresses=(VIP,))

# vrid 51, priority 150, 1 s, 192.168.56.100 from 192.168.56.11 to 224.0.0.18, summed by hand:
# pseudo-header c0a8+380b+e000+0012+0070+000c, message 3133+9601+0064+0000+c0a8+3864
# = 0x399e5 -> folded 0x99e8 -> complement 0x6617.
HAND_COMPUTED = bytes.fromhex("3133 9601 0064 6617 c0a8 3864")


def ones_complement_checksum(data: bytes) -> int:
    """An independent RFC 1071 checksum: add 16-bit words with end-around carry, then complement."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def vrrp_message(
    *,
    version: int = 3,
    kind: int = 1,
    vrid: int = 51,
    priority: int = 150,
    count: int | None = None,
    interval_word: int = 100,
    addresses: tuple[IPv4Address, ...] = (VIP,),
    source: IPv4Address = SRC,
    destination: IPv4Address = DST,
    checksum: int | None = None,
) -> bytes:
    """A VRRP message built field by field, with a correct checksum unless one is given."""
    count = len(addresses) if count is None else count
    body = b"".join(a.packed for a in addresses)
    header = bytes([(version << 4) | kind, vrid, priority, count]) + struct.pack("!HH", interval_word, 0)
    message = header + body
    if checksum is None:
        pseudo = source.packed + destination.packed + bytes([0, 112]) + struct.pack("!H", len(message))
        checksum = ones_complement_checksum(pseudo + message)
    return message[:6] + struct.pack("!H", checksum) + message[8:]


def ip_header(
    payload: bytes,
    *,
    version_ihl: int = 0x45,
    total_length: int | None = None,
    fragment: int = 0,
    ttl: int = 255,
    protocol: int = 112,
    source: IPv4Address = SRC,
    destination: IPv4Address = DST,
    options: bytes = b"",
) -> bytes:
    total = 20 + len(options) + len(payload) if total_length is None else total_length
    header = struct.pack(
        "!BBHHHBBH4s4s",
        version_ihl,
        0,
        total,
        7,
        fragment,
        ttl,
        protocol,
        0,
        source.packed,
        destination.packed,
    )
    return header + options + payload


# ---------------------------------------------------------------- encode / decode


def test_encode_matches_the_hand_computed_rfc_example() -> None:
    assert encode(ADVERT, SRC, DST) == HAND_COMPUTED


def test_encode_checksum_agrees_with_an_independent_implementation() -> None:
    addresses = tuple(IPv4Address(f"10.1.2.{i}") for i in range(1, 6))
    advert = Advertisement(vrid=7, priority=254, interval_cs=4095, addresses=addresses)
    source, destination = IPv4Address("10.1.2.200"), IPv4Address("10.1.2.201")
    assert encode(advert, source, destination) == vrrp_message(
        vrid=7, priority=254, interval_word=4095, addresses=addresses, source=source, destination=destination
    )


def test_the_module_checksum_is_rfc_1071() -> None:
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == ones_complement_checksum(
        bytes.fromhex("0001f203f4f5f6f7")
    )
    assert internet_checksum(b"\x01") == ones_complement_checksum(b"\x01")  # odd length: zero-padded
    # A message carrying its own checksum sums to zero.
    pseudo = SRC.packed + DST.packed + bytes([0, 112, 0, 12])
    assert internet_checksum(pseudo + HAND_COMPUTED) == 0


def test_decode_the_hand_computed_example() -> None:
    advert = decode(HAND_COMPUTED, SRC, DST)
    assert advert == ADVERT
    assert advert.interval == 1.0


@pytest.mark.parametrize(
    "advert",
    [
        ADVERT,
        Advertisement(vrid=1, priority=0, interval_cs=1, addresses=(IPv4Address("0.0.0.1"),)),
        Advertisement(
            vrid=255,
            priority=255,
            interval_cs=4095,
            addresses=tuple(IPv4Address(0x0A000000 + i) for i in range(255)),
        ),
    ],
)
def test_round_trip(advert: Advertisement) -> None:
    message = encode(advert, SRC, DST)
    assert len(message) == 8 + 4 * len(advert.addresses)
    assert decode(message, SRC, DST) == advert


@given(
    vrid=st.integers(1, 255),
    priority=st.integers(0, 255),
    interval_cs=st.integers(1, 4095),
    addresses=st.lists(st.integers(0, 2**32 - 1).map(IPv4Address), min_size=1, max_size=20),
    source=st.integers(0, 2**32 - 1).map(IPv4Address),
    destination=st.integers(0, 2**32 - 1).map(IPv4Address),
)
@settings(max_examples=100, deadline=None, derandomize=True)
def test_round_trip_property(
    vrid: int,
    priority: int,
    interval_cs: int,
    addresses: list[IPv4Address],
    source: IPv4Address,
    destination: IPv4Address,
) -> None:
    advert = Advertisement(vrid, priority, interval_cs, tuple(addresses))
    message = encode(advert, source, destination)
    assert message == vrrp_message(
        vrid=vrid,
        priority=priority,
        interval_word=interval_cs,
        addresses=tuple(addresses),
        source=source,
        destination=destination,
    )
    assert decode(message, source, destination) == advert


def test_encode_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="vrid"):
        encode(Advertisement(0, 100, 100, (VIP,)), SRC, DST)
    with pytest.raises(ValueError, match="vrid"):
        encode(Advertisement(256, 100, 100, (VIP,)), SRC, DST)
    with pytest.raises(ValueError, match="priority"):
        encode(Advertisement(1, 256, 100, (VIP,)), SRC, DST)
    with pytest.raises(ValueError, match="interval"):
        encode(Advertisement(1, 100, 0, (VIP,)), SRC, DST)
    with pytest.raises(ValueError, match="interval"):
        encode(Advertisement(1, 100, 4096, (VIP,)), SRC, DST)
    with pytest.raises(ValueError, match="addresses"):
        encode(Advertisement(1, 100, 100, ()), SRC, DST)
    with pytest.raises(ValueError, match="addresses"):
        encode(Advertisement(1, 100, 100, (VIP,) * 256), SRC, DST)


def test_reserved_bits_of_the_interval_word_are_ignored() -> None:
    # RFC 5798 5.2.5: rsvd MUST be zero when sent and ignored when received.
    advert = decode(vrrp_message(interval_word=0xF000 | 250), SRC, DST)
    assert advert.interval_cs == 250


def test_trailing_ethernet_padding_is_not_part_of_the_message() -> None:
    padded = HAND_COMPUTED + b"\0" * 34  # a 12-byte message padded to a 60-byte frame's worth
    assert decode(padded, SRC, DST) == ADVERT
    assert decode(HAND_COMPUTED + b"\xaa\x55\x01", SRC, DST) == ADVERT  # odd, non-zero padding


def test_decode_checks_the_checksum_over_the_pseudo_header() -> None:
    # The same bytes "from" another source: the pseudo-header differs, so the checksum does not hold.
    with pytest.raises(PacketError) as info:
        decode(HAND_COMPUTED, IPv4Address("192.168.56.12"), DST)
    assert info.value.reason == "checksum"
    # Unicast destination is covered too.
    with pytest.raises(PacketError) as info:
        decode(HAND_COMPUTED, SRC, IPv4Address("192.168.56.12"))
    assert info.value.reason == "checksum"


# ---------------------------------------------------------------- each drop reason


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"", "length"),
        (HAND_COMPUTED[:7], "length"),
        (vrrp_message(count=0, addresses=()), "length"),
        (vrrp_message(count=2), "length"),  # announces 2 addresses, carries 1
        (HAND_COMPUTED[:-1], "length"),
        (vrrp_message(version=2), "version"),
        (vrrp_message(version=0), "version"),
        (vrrp_message(version=15), "version"),
        (vrrp_message(kind=0), "type"),
        (vrrp_message(kind=2), "type"),
        (vrrp_message(kind=15), "type"),
        (vrrp_message(checksum=0), "checksum"),
        (HAND_COMPUTED[:6] + b"\x66\x18" + HAND_COMPUTED[8:], "checksum"),
        (HAND_COMPUTED[:2] + b"\x97" + HAND_COMPUTED[3:], "checksum"),  # priority changed in flight
        (vrrp_message(interval_word=0), "interval"),
        (vrrp_message(interval_word=0xF000), "interval"),  # reserved bits only: still 0 cs
    ],
)
def test_decode_drop_reasons(message: bytes, reason: str) -> None:
    with pytest.raises(PacketError) as info:
        decode(message, SRC, DST)
    assert info.value.reason == reason
    assert reason in DROP_REASONS
    assert str(info.value).startswith(f"{reason}: ")
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- IPv4


def test_build_ipv4_layout_and_header_checksum() -> None:
    datagram = build_ipv4(SRC, DST, HAND_COMPUTED)
    assert len(datagram) == 20 + len(HAND_COMPUTED)
    version_ihl, _tos, total, _ident, fragment, ttl, protocol, _csum = struct.unpack_from(
        "!BBHHHBBH", datagram
    )
    assert version_ihl == 0x45
    assert total == 32
    assert fragment == 0
    assert ttl == 255
    assert protocol == VRRP_PROTOCOL
    assert datagram[12:16] == SRC.packed
    assert datagram[16:20] == DST.packed
    assert ones_complement_checksum(datagram[:20]) == 0  # a valid header checksums to zero
    assert datagram[20:] == HAND_COMPUTED
    assert build_ipv4(SRC, DST, HAND_COMPUTED, ttl=1)[8] == 1


def test_parse_ipv4_of_build_ipv4() -> None:
    ip = parse_ipv4(build_ipv4(SRC, DST, HAND_COMPUTED, ttl=64))
    assert ip.source == SRC
    assert ip.destination == DST
    assert ip.ttl == 64
    assert ip.protocol == VRRP_PROTOCOL
    assert ip.payload == HAND_COMPUTED
    assert decode(ip.payload, ip.source, ip.destination) == ADVERT


def test_parse_ipv4_skips_options_and_trims_ethernet_padding() -> None:
    options = bytes([0x94, 0x04, 0x00, 0x00])  # Router Alert
    datagram = ip_header(HAND_COMPUTED, version_ihl=0x46, options=options) + b"\0" * 14
    ip = parse_ipv4(datagram)
    assert ip.payload == HAND_COMPUTED
    assert decode(ip.payload, ip.source, ip.destination) == ADVERT


def test_parse_ipv4_tolerates_a_total_length_the_kernel_rewrote() -> None:
    # Some stacks hand raw sockets the payload length (or a bogus value) in total_length.
    assert parse_ipv4(ip_header(HAND_COMPUTED, total_length=12)).payload == HAND_COMPUTED
    assert parse_ipv4(ip_header(HAND_COMPUTED, total_length=0xFFFF)).payload == HAND_COMPUTED


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "ip_header"),
        (ip_header(HAND_COMPUTED)[:19], "ip_header"),
        (ip_header(HAND_COMPUTED, version_ihl=0x65), "ip_header"),  # IPv6 version nibble
        (ip_header(HAND_COMPUTED, version_ihl=0x35), "ip_header"),
        (ip_header(HAND_COMPUTED, version_ihl=0x44), "ip_header"),  # IHL 4: 16 bytes < 20
        (ip_header(HAND_COMPUTED, version_ihl=0x40), "ip_header"),  # IHL 0
        (ip_header(b"", version_ihl=0x46), "ip_header"),  # IHL 6 but only 20 bytes there
        (ip_header(HAND_COMPUTED, version_ihl=0x4F), "ip_header"),  # IHL 15: 60 > 32 bytes
        (ip_header(HAND_COMPUTED, fragment=0x2000), "ip_header"),  # more fragments
        (ip_header(HAND_COMPUTED, fragment=0x0001), "ip_header"),  # an offset
        (ip_header(HAND_COMPUTED, fragment=0x1FFF), "ip_header"),
        (ip_header(HAND_COMPUTED, protocol=17), "protocol"),
        (ip_header(HAND_COMPUTED, protocol=2), "protocol"),
        (ip_header(HAND_COMPUTED, protocol=0), "protocol"),
    ],
)
def test_parse_ipv4_drop_reasons(datagram: bytes, reason: str) -> None:
    with pytest.raises(PacketError) as info:
        parse_ipv4(datagram)
    assert info.value.reason == reason


def test_dont_fragment_flag_is_not_a_fragment() -> None:
    assert parse_ipv4(ip_header(HAND_COMPUTED, fragment=0x4000)).payload == HAND_COMPUTED


# ---------------------------------------------------------------- interval, ARP, helpers


@pytest.mark.parametrize(
    ("seconds", "cs"), [(0.01, 1), (0.29, 29), (1.0, 100), (1, 100), (3.5, 350), (40.95, 4095)]
)
def test_interval_to_cs(seconds: float, cs: int) -> None:
    assert interval_to_cs(seconds) == cs


@pytest.mark.parametrize("seconds", [0, 0.0, 0.004, -1.0, 40.96, 41, 1e9])
def test_interval_to_cs_refuses_out_of_range(seconds: float) -> None:
    with pytest.raises(ValueError, match=r"0\.01\.\.40\.95"):
        interval_to_cs(seconds)


def test_gratuitous_arp_frame_layout() -> None:
    mac = bytes.fromhex("080027a1b2c3")
    frame = gratuitous_arp(mac, VIP)
    assert len(frame) == 60
    assert frame[0:6] == b"\xff" * 6  # to broadcast
    assert frame[6:12] == mac
    assert frame[12:14] == b"\x08\x06"  # ethertype ARP
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)  # Ethernet/IPv4, request
    assert frame[22:28] == mac  # sender hardware address
    assert frame[28:32] == VIP.packed  # sender IP = the VIP
    assert frame[32:38] == b"\xff" * 6  # target hardware address, as keepalived sends it
    assert frame[38:42] == VIP.packed  # target IP = the VIP: gratuitous
    assert frame[42:] == b"\0" * 18  # padded to the Ethernet minimum


def test_gratuitous_arp_refuses_a_bad_mac() -> None:
    with pytest.raises(ValueError, match="6 bytes"):
        gratuitous_arp(b"\x00" * 5, VIP)


def test_parse_mac() -> None:
    assert parse_mac("08:00:27:a1:B2:c3") == bytes.fromhex("080027a1b2c3")
    with pytest.raises(ValueError, match="not a MAC address"):
        parse_mac("08:00:27:a1:b2")
    with pytest.raises(ValueError, match="invalid literal"):
        parse_mac("08:00:27:a1:b2:zz")


def test_same_addresses_ignores_order() -> None:
    a, b = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    assert same_addresses([a, b], [b, a])
    assert not same_addresses([a], [a, b])
    assert not same_addresses([a, a], [a, b])


def test_parse_address() -> None:
    assert str(parse_address("192.168.56.100")) == "192.168.56.100/32"
    assert str(parse_address("192.168.56.100/24")) == "192.168.56.100/24"
    for bad in ("192.168.56.300", "::1", "192.168.56.100/33", "vip"):
        with pytest.raises(ValueError, match=r"(?i)octet|netmask"):
            parse_address(bad)


# ---------------------------------------------------------------- fuzz: only PacketError escapes


def parse_and_decode(datagram: bytes) -> Advertisement | None:
    """What the daemon does with a datagram: only PacketError, with a known reason, may escape."""
    reason = None
    try:
        ip = parse_ipv4(datagram)
        return decode(ip.payload, ip.source, ip.destination)
    except PacketError as exc:
        reason = exc.reason
    assert reason in DROP_REASONS
    return None


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_fuzz_arbitrary_bytes(datagram: bytes) -> None:
    parse_and_decode(datagram)


@given(st.binary(min_size=20, max_size=120).map(lambda b: bytes([0x45]) + b[1:9] + bytes([112]) + b[10:]))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_fuzz_ipv4_shaped_bytes(datagram: bytes) -> None:
    parse_and_decode(datagram)


VALID_DATAGRAM = build_ipv4(
    SRC,
    DST,
    encode(Advertisement(51, 150, 100, (VIP, IPv4Address("192.168.56.101"))), SRC, DST),
)


@given(
    flips=st.lists(st.tuples(st.integers(0, len(VALID_DATAGRAM) - 1), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, len(VALID_DATAGRAM)),
    tail=st.binary(max_size=40),
)
@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutations_of_a_valid_datagram(flips: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    mutated = bytearray(VALID_DATAGRAM)
    for index, value in flips:
        mutated[index] = value
    parse_and_decode(bytes(mutated[:cut]) + tail)


def test_the_valid_fuzz_seed_decodes() -> None:
    advert = parse_and_decode(VALID_DATAGRAM)
    assert advert is not None
    assert advert.addresses == (VIP, IPv4Address("192.168.56.101"))
