"""VRRPv3 for IPv4 on the wire (RFC 5798 section 5): encode, decode, validate. Pure: bytes in, bytes out.

    0                   1                   2                   3
    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
   |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
   |(rsvd) |     Max Adver Int     |          Checksum             |
   |                       IPv4 Address(es)                        |

The checksum covers an IPv4 pseudo-header (source, destination, zero, protocol 112, VRRP length)
followed by the VRRP message, as for UDP; keepalived computes it the same way for `vrrp_version 3`.
The interval travels in centiseconds, 12 bits: 0.01 s to 40.95 s.

A received datagram goes through `parse_ipv4` (the raw socket hands us the IP header too, and the
RFC's TTL check needs it) and then `decode`. Anything malformed raises `PacketError` whose `reason`
is one word from `DROP_REASONS`, used as the metrics label: a hostile packet costs one counter
increment and never an exception the daemon does not expect.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

VRRP_PROTOCOL: Final = 112
VRRP_GROUP: Final = IPv4Address("224.0.0.18")
VRRP_TTL: Final = 255
VRRP_VERSION: Final = 3
TYPE_ADVERTISEMENT: Final = 1
HEADER_LENGTH: Final = 8
MAX_ADDRESSES: Final = 255
MAX_INTERVAL_CS: Final = 0x0FFF  # 12 bits of centiseconds

DROP_REASONS: Final = (
    "ip_header",  # not an IPv4 datagram we can parse (length, version, IHL, fragment)
    "protocol",  # an IP protocol other than 112
    "ttl",  # TTL not 255: the sender is not on our link (RFC 5798 7.1)
    "length",  # shorter than the header or than its address list
    "version",  # not VRRPv3
    "type",  # not an ADVERTISEMENT
    "checksum",
    "interval",  # Max Adver Int 0
    "vrid",  # a virtual router we do not run (the daemon decides; here for the label set)
    "address_list",  # the addresses differ from ours (the daemon decides)
    "own",  # our own advertisement looped back
)


class PacketError(ValueError):
    """A datagram we drop; `reason` is one of DROP_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Advertisement:
    """One VRRPv3 advertisement; `interval_cs` is Max Adver Int in centiseconds."""

    vrid: int
    priority: int
    interval_cs: int
    addresses: tuple[IPv4Address, ...]

    @property
    def interval(self) -> float:
        return self.interval_cs / 100.0


@dataclass(frozen=True)
class IPv4Datagram:
    source: IPv4Address
    destination: IPv4Address
    ttl: int
    protocol: int
    payload: bytes


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(source: IPv4Address, destination: IPv4Address, length: int) -> bytes:
    return source.packed + destination.packed + struct.pack("!BBH", 0, VRRP_PROTOCOL, length)


def interval_to_cs(seconds: float) -> int:
    """Seconds to the wire's centiseconds, refusing what 12 bits cannot carry."""
    centiseconds = round(seconds * 100)
    if not 1 <= centiseconds <= MAX_INTERVAL_CS:
        raise ValueError(f"advert interval must be 0.01..40.95 s, got {seconds}")
    return centiseconds


def encode(advert: Advertisement, source: IPv4Address, destination: IPv4Address) -> bytes:
    """The VRRP message (the kernel adds the IP header) with its pseudo-header checksum."""
    if not 1 <= advert.vrid <= 255:
        raise ValueError(f"vrid must be 1..255, got {advert.vrid}")
    if not 0 <= advert.priority <= 255:
        raise ValueError(f"priority must be 0..255, got {advert.priority}")
    if not 1 <= advert.interval_cs <= MAX_INTERVAL_CS:
        raise ValueError(f"interval must be 1..{MAX_INTERVAL_CS} centiseconds, got {advert.interval_cs}")
    if not 1 <= len(advert.addresses) <= MAX_ADDRESSES:
        raise ValueError(
            f"an advertisement carries 1..{MAX_ADDRESSES} addresses, got {len(advert.addresses)}"
        )
    body = b"".join(address.packed for address in advert.addresses)
    header = struct.pack(
        "!BBBBHH",
        (VRRP_VERSION << 4) | TYPE_ADVERTISEMENT,
        advert.vrid,
        advert.priority,
        len(advert.addresses),
        advert.interval_cs,
        0,
    )
    message = header + body
    checksum = internet_checksum(_pseudo_header(source, destination, len(message)) + message)
    return message[:6] + struct.pack("!H", checksum) + message[8:]


def decode(message: bytes, source: IPv4Address, destination: IPv4Address) -> Advertisement:
    """Parse and check one VRRP message as RFC 5798 7.1 says; PacketError on anything wrong."""
    if len(message) < HEADER_LENGTH:
        raise PacketError("length", f"{len(message)} bytes is shorter than the VRRP header")
    version_type, vrid, priority, count, interval_word, _checksum = struct.unpack_from("!BBBBHH", message)
    if version_type >> 4 != VRRP_VERSION:
        raise PacketError("version", f"version {version_type >> 4}, expected 3")
    if version_type & 0x0F != TYPE_ADVERTISEMENT:
        raise PacketError("type", f"type {version_type & 0x0F}, expected 1 (ADVERTISEMENT)")
    expected = HEADER_LENGTH + 4 * count
    if count == 0 or len(message) < expected:
        raise PacketError("length", f"{len(message)} bytes for {count} address(es) (need {expected})")
    # Only the announced length counts: trailing bytes (Ethernet padding) are not the message's.
    message = message[:expected]
    if internet_checksum(_pseudo_header(source, destination, expected) + message) != 0:
        raise PacketError("checksum", f"bad checksum from {source}")
    interval_cs = interval_word & MAX_INTERVAL_CS
    if interval_cs == 0:
        raise PacketError("interval", "Max Adver Int is 0")
    addresses = tuple(
        IPv4Address(message[offset : offset + 4]) for offset in range(HEADER_LENGTH, expected, 4)
    )
    return Advertisement(vrid=vrid, priority=priority, interval_cs=interval_cs, addresses=addresses)


def parse_ipv4(datagram: bytes) -> IPv4Datagram:
    """Split what a raw IPPROTO_VRRP socket receives into header facts and payload."""
    if len(datagram) < 20:
        raise PacketError("ip_header", f"{len(datagram)} bytes is shorter than an IPv4 header")
    version_ihl, _tos, total_length, _ident, fragment, ttl, protocol = struct.unpack_from(
        "!BBHHHBB", datagram
    )
    header_length = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or header_length < 20 or header_length > len(datagram):
        raise PacketError("ip_header", f"not a well-formed IPv4 header (byte 0 = {version_ihl:#04x})")
    if fragment & 0x3FFF:  # more-fragments flag or an offset: adverts are never fragmented
        raise PacketError("ip_header", "fragmented datagram")
    if protocol != VRRP_PROTOCOL:
        raise PacketError("protocol", f"IP protocol {protocol}")
    # The kernel may hand us the datagram with total_length already converted; trust the shorter.
    end = min(len(datagram), total_length) if total_length >= header_length else len(datagram)
    return IPv4Datagram(
        source=IPv4Address(datagram[12:16]),
        destination=IPv4Address(datagram[16:20]),
        ttl=ttl,
        protocol=protocol,
        payload=datagram[header_length:end],
    )


def build_ipv4(
    source: IPv4Address, destination: IPv4Address, payload: bytes, *, ttl: int = VRRP_TTL
) -> bytes:
    """An IPv4 datagram around a VRRP message (tests and fixtures; the kernel builds real ones)."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0xC0,
        20 + len(payload),
        0,
        0,
        ttl,
        VRRP_PROTOCOL,
        0,
        source.packed,
        destination.packed,
    )
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + payload


ARP_ETHERTYPE: Final = 0x0806
BROADCAST_MAC: Final = b"\xff" * 6


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(part, 16) for part in parts)


def gratuitous_arp(mac: bytes, address: IPv4Address) -> bytes:
    """An Ethernet frame announcing `address` at `mac`: an ARP request for our own address sent to
    broadcast (what keepalived sends), which every neighbour uses to update its cache."""
    if len(mac) != 6:
        raise ValueError("a MAC address is 6 bytes")
    arp = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, address.packed, BROADCAST_MAC, address.packed
    )
    frame = BROADCAST_MAC + mac + struct.pack("!H", ARP_ETHERTYPE) + arp
    return frame.ljust(60, b"\x00")  # Ethernet minimum frame size without FCS


def same_addresses(a: Sequence[IPv4Address], b: Sequence[IPv4Address]) -> bool:
    """RFC 5798 compares the address list as a set; order on the wire is the sender's choice."""
    return sorted(a) == sorted(b)


def parse_address(text: str) -> ipaddress.IPv4Interface:
    """'A.B.C.D' (a /32) or 'A.B.C.D/len': a VIP as configured."""
    return ipaddress.IPv4Interface(text if "/" in text else f"{text}/32")
