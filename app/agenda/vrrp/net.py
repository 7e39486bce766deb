"""The thin I/O under the daemon: the interface's facts, the VRRP socket, addresses, gratuitous ARP.

Interface facts (index, MAC, primary IPv4) come from netifaces; addresses change through netlink
(pyroute2), never through string-built `ip` command lines. Nothing here decides anything: the
state machine does.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import netifaces
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from agenda.vrrp.packet import VRRP_GROUP, VRRP_PROTOCOL, VRRP_TTL, gratuitous_arp, parse_mac

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
ETH_P_ARP = 0x0806
RECEIVE_BUFFER = 65535


class InterfaceError(Exception):
    """The interface is missing or unusable; the message names it."""


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    mac: bytes
    primary: IPv4Address


def lookup_interface(name: str, exclude: frozenset[IPv4Address] = frozenset()) -> Interface:
    """The interface's index, MAC and primary IPv4 address (the first that is not a VIP)."""
    if name not in netifaces.interfaces():
        raise InterfaceError(f"interface {name!r} does not exist (have: {', '.join(netifaces.interfaces())})")
    addresses = netifaces.ifaddresses(name)
    primaries = [
        IPv4Address(entry["addr"])
        for entry in addresses.get(netifaces.AF_INET, [])
        if IPv4Address(entry["addr"]) not in exclude
    ]
    if not primaries:
        raise InterfaceError(f"interface {name!r} has no IPv4 address of its own")
    links = addresses.get(netifaces.AF_LINK, [])
    mac = parse_mac(links[0]["addr"]) if links and links[0].get("addr") else b"\x00" * 6
    return Interface(name=name, index=socket.if_nametoindex(name), mac=mac, primary=primaries[0])


def interface_is_up(name: str) -> bool:
    """Administratively up with a carrier (what keepalived treats as not FAULT)."""
    base = Path("/sys/class/net") / name
    try:
        state = (base / "operstate").read_text().strip()
        flags = int((base / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & 0x1) and state in ("up", "unknown")


class VrrpSocket:
    """Raw IPPROTO_VRRP sockets on one interface: multicast group joined, TTL 255 both ways.

    Two sockets, as keepalived has: a raw socket bound to an address only receives datagrams sent
    to that address, so the sending socket (bound, to fix the source address the checksum covers)
    cannot also receive the group's adverts.
    """

    def __init__(self, interface: Interface, source: IPv4Address) -> None:
        self.interface = interface
        self.source = source
        mreqn = struct.pack("=4s4si", VRRP_GROUP.packed, source.packed, interface.index)
        receiver = socket.socket(socket.AF_INET, socket.SOCK_RAW, VRRP_PROTOCOL)
        sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, VRRP_PROTOCOL)
        try:
            for sock in (receiver, sender):
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.name.encode())
                sock.setblocking(False)
            receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, VRRP_TTL)
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            # Binding fixes the source address, which the checksum's pseudo-header covers: once the
            # VIP sits on the same interface the kernel could otherwise pick it.
            sender.bind((str(source), 0))
            # Never read: unicast adverts to `source` also reach it; keep what they can queue small.
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        except OSError:
            receiver.close()
            sender.close()
            raise
        self._receiver = receiver
        self._sender = sender

    def fileno(self) -> int:
        return self._receiver.fileno()

    def filenos(self) -> list[int]:
        return [self._receiver.fileno(), self._sender.fileno()]

    def send(self, message: bytes, destination: IPv4Address) -> None:
        # A full send queue drops one advert; the next interval sends another.
        with contextlib.suppress(BlockingIOError):
            self._sender.sendto(message, (str(destination), 0))

    def receive(self) -> bytes | None:
        try:
            return self._receiver.recv(RECEIVE_BUFFER)
        except (BlockingIOError, InterruptedError):
            return None

    def close(self) -> None:
        self._receiver.close()
        self._sender.close()


class ArpSender:
    """Gratuitous ARP frames straight onto the link (AF_PACKET)."""

    def __init__(self, interface: Interface) -> None:
        self.interface = interface
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        self._sock.bind((interface.name, ETH_P_ARP))

    def announce(self, addresses: list[IPv4Address], repeat: int) -> None:
        frames = [gratuitous_arp(self.interface.mac, address) for address in addresses]
        for _ in range(repeat):
            for frame in frames:
                try:
                    self._sock.send(frame)
                except OSError:
                    return  # the link went away; the state machine will hear about it

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


class Addresses:
    """Adds and removes VIPs through netlink; both are idempotent."""

    def __init__(self) -> None:
        self._ipr = IPRoute()

    def add(self, interface_name: str, vip: IPv4Interface) -> bool:
        """True when the address was added now, False when it was already there."""
        try:
            self._ipr.addr(
                "add",
                index=socket.if_nametoindex(interface_name),
                address=str(vip.ip),
                prefixlen=vip.network.prefixlen,
            )
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise
        return True

    def remove(self, interface_name: str, vip: IPv4Interface) -> bool:
        """True when the address was there and is gone now."""
        try:
            index = socket.if_nametoindex(interface_name)
        except OSError:
            return False  # the interface itself is gone, and its addresses with it
        try:
            self._ipr.addr("del", index=index, address=str(vip.ip), prefixlen=vip.network.prefixlen)
        except NetlinkError as exc:
            if exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True

    def present(self, interface_name: str) -> set[IPv4Address]:
        try:
            index = socket.if_nametoindex(interface_name)
        except OSError:
            return set()
        found = set()
        for message in self._ipr.get_addr(family=socket.AF_INET, index=index):
            value = message.get_attr("IFA_ADDRESS")
            if value:
                found.add(ipaddress.IPv4Address(value))
        return found

    def close(self) -> None:
        self._ipr.close()
