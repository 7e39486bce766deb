"""Pure helpers of the VIP lab (bench/viplab.py), its benchmark (bench/vip.py) and fixture capture.

Nothing here starts a process, touches Docker or opens a socket, so all of it is unit-tested
(tests/unit/bench/test_vip_util.py): the lab's addressing plan, the two configuration files (Debian's
keepalived and agenda-vrrpd), parsing ``ip -j -4 addr``, reading pcap files, a small VRRP decoder used
to describe the captured fixtures, and the benchmark's table and verdict.
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_SUBNET",
    "IMPLEMENTATIONS",
    "PcapRecord",
    "VrrpAdvert",
    "decode_vrrp",
    "failover_timeline",
    "format_breakdown_table",
    "format_failover_table",
    "host_address",
    "ipv4_from_frame",
    "keepalived_conf",
    "master_down_interval",
    "parse_impls",
    "parse_intervals",
    "parse_ip_addr_json",
    "priority_for",
    "read_pcap",
    "timeline_breakdown",
    "verdict",
    "vip_address",
    "vrrp_checksum",
    "vrrpd_config",
]

DEFAULT_SUBNET = "192.168.58.0/24"  # .56 is the Vagrant lab, .57 Molecule's network
IMPLEMENTATIONS = ("ours", "keepalived")
VRRP_PROTO = 112
VRRP_GROUP = "224.0.0.18"

# ------------------------------------------------------------------------------------ addressing


def _network(subnet: str | ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    net = ipaddress.IPv4Network(subnet)
    if net.prefixlen > 24:
        raise ValueError(f"the VIP lab needs a /24 or larger subnet, got {net}")
    return net


def host_address(subnet: str | ipaddress.IPv4Network, index: int) -> str:
    """Host ``index`` (1-based) is ``.10 + index``, as in the Vagrant lab (h1 = .11)."""
    if not 1 <= index <= 9:
        raise ValueError(f"host index must be 1..9, got {index}")
    return str(_network(subnet).network_address + 10 + index)


def vip_address(subnet: str | ipaddress.IPv4Network, number: int = 0) -> str:
    """The VIP is ``.100`` (a second one ``.101``...), as in the Vagrant lab."""
    return str(_network(subnet).network_address + 100 + number)


def priority_for(index: int) -> int:
    """Priorities descending by host order: 150, 100, 90, 80, ... (h1 is the preferred master)."""
    if index < 1:
        raise ValueError(f"host index must be >= 1, got {index}")
    return 150 if index == 1 else 110 - 10 * (index - 1)


# ----------------------------------------------------------------------------------- configs


def _interval_text(advert_int: float) -> str:
    return f"{advert_int:g}"


def keepalived_conf(
    *,
    router_id: str,
    interface: str,
    vrid: int,
    priority: int,
    advert_int: float,
    vips: Sequence[str],
    prefixlen: int = 24,
    version: int = 3,
    unicast_src: str | None = None,
    unicast_peers: Sequence[str] = (),
) -> str:
    """keepalived.conf for one VRRP instance, VRRP only, every host starting in BACKUP (RFC 5798 §6.4.1:
    only the address owner, priority 255, starts as master), preemption on (keepalived's default).

    ``vrrp_version 3`` matters: without it keepalived speaks VRRPv2, whose interval is whole seconds.
    """
    lines = [
        "global_defs {",
        f"    router_id {router_id}",
        f"    vrrp_version {version}",
        "}",
        "",
        "vrrp_instance VI_1 {",
        "    state BACKUP",
        f"    interface {interface}",
        f"    virtual_router_id {vrid}",
        f"    priority {priority}",
        f"    advert_int {_interval_text(advert_int)}",
    ]
    if unicast_src:
        lines.append(f"    unicast_src_ip {unicast_src}")
    if unicast_peers:
        lines.append("    unicast_peer {")
        lines += [f"        {peer}" for peer in unicast_peers]
        lines.append("    }")
    lines.append("    virtual_ipaddress {")
    lines += [f"        {vip}/{prefixlen} dev {interface}" for vip in vips]
    lines += ["    }", "}", ""]
    return "\n".join(lines)


def vrrpd_config(
    *,
    interface: str,
    vrid: int,
    priority: int,
    advert_int: float,
    vips: Sequence[str],
    prefixlen: int = 24,
    status_addr: str = "127.0.0.1:9110",
    log_level: str = "info",
    unicast_peers: Sequence[str] = (),
) -> dict[str, Any]:
    """agenda-vrrpd's YAML (as a dict) for the same instance as :func:`keepalived_conf`."""
    instance: dict[str, Any] = {
        "name": "VI_1",
        "interface": interface,
        "virtual_router_id": vrid,
        "priority": priority,
        "advert_int": advert_int,
        "virtual_ipaddress": [f"{vip}/{prefixlen}" for vip in vips],
        "preempt": True,
    }
    if unicast_peers:
        instance["unicast_peers"] = list(unicast_peers)
    return {"log_level": log_level, "status_addr": status_addr, "instances": [instance]}


# ------------------------------------------------------------------------------------- ip addr


def parse_ip_addr_json(text: str, interface: str | None = None) -> list[str]:
    """IPv4 addresses (without prefix) in ``ip -j -4 addr`` output, optionally of one interface only."""
    found: list[str] = []
    for link in json.loads(text or "[]"):
        if interface is not None and link.get("ifname") != interface:
            continue
        for info in link.get("addr_info", []):
            if info.get("family", "inet") == "inet" and "local" in info:
                found.append(str(info["local"]))
    return found


# ----------------------------------------------------------------------------------------- pcap


@dataclass(frozen=True)
class PcapRecord:
    timestamp: float
    linktype: int
    data: bytes


def read_pcap(blob: bytes, *, allow_truncated: bool = False) -> list[PcapRecord]:
    """Records of a classic pcap file (either byte order, micro- or nanosecond timestamps).
    ``allow_truncated``: a last record cut short (a file still being written) is left out."""
    if len(blob) < 24:
        raise ValueError("not a pcap file: shorter than its 24-byte header")
    magic = blob[:4]
    formats = {
        b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
        b"\xa1\xb2\xc3\xd4": (">", 1e-6),
        b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
        b"\xa1\xb2\x3c\x4d": (">", 1e-9),
    }
    if magic not in formats:
        raise ValueError(f"not a pcap file (magic {magic.hex()}); pcapng is not supported")
    endian, unit = formats[magic]
    linktype = struct.unpack(endian + "I", blob[20:24])[0] & 0x0FFFFFFF
    records: list[PcapRecord] = []
    offset = 24
    while offset + 16 <= len(blob):
        seconds, fraction, captured, _original = struct.unpack(endian + "IIII", blob[offset : offset + 16])
        offset += 16
        if offset + captured > len(blob):
            if allow_truncated:
                break
            raise ValueError("truncated pcap record")
        records.append(PcapRecord(seconds + fraction * unit, linktype, blob[offset : offset + captured]))
        offset += captured
    return records


def ipv4_from_frame(frame: bytes, linktype: int) -> bytes | None:
    """The IPv4 packet (header + payload, link padding cut by the IP total length) in one captured
    frame, or None when the frame holds no IPv4 packet. Ethernet (with 802.1Q tags), Linux cooked
    (SLL, SLL2) and raw IP link types."""
    if linktype == 1:  # Ethernet
        offset, ethertype = 14, frame[12:14]
        while ethertype in (b"\x81\x00", b"\x88\xa8") and len(frame) >= offset + 4:
            ethertype, offset = frame[offset + 2 : offset + 4], offset + 4
    elif linktype == 113:  # Linux cooked v1
        offset, ethertype = 16, frame[14:16]
    elif linktype == 276:  # Linux cooked v2
        offset, ethertype = 20, frame[0:2]
    elif linktype in (101, 228):  # raw IP, raw IPv4
        offset, ethertype = 0, b"\x08\x00"
    else:
        raise ValueError(f"unsupported pcap link type {linktype}")
    packet = frame[offset:]
    if ethertype != b"\x08\x00" or len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    total = struct.unpack("!H", packet[2:4])[0]
    return packet[:total] if 20 <= total <= len(packet) else None


# ----------------------------------------------------------------------------------------- VRRP


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def vrrp_checksum(src: str, dst: str, vrrp: bytes, version: int = 3) -> int:
    """The checksum a VRRP message must carry (its own checksum field taken as zero). VRRPv3 (RFC 5798
    §5.2.8) covers the IPv4 pseudo-header too; VRRPv2 (RFC 3768) only the VRRP message."""
    body = vrrp[:6] + b"\x00\x00" + vrrp[8:]
    if version == 3:
        pseudo = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
        pseudo += struct.pack("!BBH", 0, VRRP_PROTO, len(vrrp))
        body = pseudo + body
    return (~_ones_complement_sum(body)) & 0xFFFF


@dataclass(frozen=True)
class VrrpAdvert:
    """What one captured IPv4 packet carrying VRRP says (only what the fixtures' README needs)."""

    src: str
    dst: str
    ttl: int
    protocol: int
    ip_length: int
    version: int
    type: int
    vrid: int
    priority: int
    count: int
    interval: int  # v3: Max Adver Int in centiseconds; v2: Adver Int in seconds
    checksum: int
    checksum_ok: bool
    addresses: list[str] = field(default_factory=list)
    tos: int = 0
    ip_id: int = 0
    dont_fragment: bool = False

    @property
    def interval_seconds(self) -> float:
        return self.interval / 100.0 if self.version == 3 else float(self.interval)

    def as_dict(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "ttl": self.ttl,
            "protocol": self.protocol,
            "ip_length": self.ip_length,
            "version": self.version,
            "type": self.type,
            "vrid": self.vrid,
            "priority": self.priority,
            "count_ip_addrs": self.count,
            "interval_field": self.interval,
            "interval_seconds": self.interval_seconds,
            "checksum": f"0x{self.checksum:04x}",
            "checksum_ok": self.checksum_ok,
            "addresses": list(self.addresses),
            "ip_tos": f"0x{self.tos:02x}",
            "ip_id": self.ip_id,
            "ip_dont_fragment": self.dont_fragment,
        }


def decode_vrrp(packet: bytes) -> VrrpAdvert:
    """Decode an IPv4 packet holding a VRRPv2 or v3 advertisement. Raises ValueError on anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise ValueError("not an IPv4 packet")
    ihl = (packet[0] & 0x0F) * 4
    ip_length = struct.unpack("!H", packet[2:4])[0]
    ttl, protocol = packet[8], packet[9]
    if protocol != VRRP_PROTO:
        raise ValueError(f"IP protocol {protocol}, not VRRP ({VRRP_PROTO})")
    if ip_length > len(packet) or ihl < 20 or ip_length < ihl + 8:
        raise ValueError("IPv4 length fields do not fit the packet")
    src = str(ipaddress.IPv4Address(packet[12:16]))
    dst = str(ipaddress.IPv4Address(packet[16:20]))
    vrrp = packet[ihl:ip_length]
    version, kind = vrrp[0] >> 4, vrrp[0] & 0x0F
    vrid, priority, count = vrrp[1], vrrp[2], vrrp[3]
    if version == 3:
        interval = struct.unpack("!H", vrrp[4:6])[0] & 0x0FFF
    elif version == 2:
        interval = vrrp[5]
    else:
        raise ValueError(f"VRRP version {version}")
    checksum = struct.unpack("!H", vrrp[6:8])[0]
    if len(vrrp) < 8 + 4 * count:
        raise ValueError(f"{count} addresses announced, {(len(vrrp) - 8) // 4} present")
    addresses = [str(ipaddress.IPv4Address(vrrp[8 + 4 * i : 12 + 4 * i])) for i in range(count)]
    return VrrpAdvert(
        src=src,
        dst=dst,
        ttl=ttl,
        protocol=protocol,
        ip_length=ip_length,
        version=version,
        type=kind,
        vrid=vrid,
        priority=priority,
        count=count,
        interval=interval,
        checksum=checksum,
        checksum_ok=checksum == vrrp_checksum(src, dst, vrrp, version),
        addresses=addresses,
        tos=packet[1],
        ip_id=struct.unpack("!H", packet[4:6])[0],
        dont_fragment=bool(packet[6] & 0x40),
    )


# ------------------------------------------------------------------------------ failover timeline


def master_down_interval(advert_int: float, priority: int) -> float:
    """RFC 5798: 3 x Master_Adver_Interval + Skew_Time, Skew_Time = (256 - priority) x interval / 256."""
    return 3 * advert_int + (256 - priority) * advert_int / 256


def _arp_sender_ip(frame: bytes) -> str | None:
    """The sender protocol address of an Ethernet ARP frame (None for anything else)."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    return str(ipaddress.IPv4Address(frame[28:32]))


def failover_timeline(
    records: Sequence[PcapRecord], *, old: str, new: str, vip: str, advert_int: float, priority: int
) -> dict[str, float | None]:
    """What the new master's link saw around a failover (pcap wall-clock timestamps, seconds):

    ``last_old_advert``: the dead master's last advertisement; ``first_new_advert``: the new master's
    first one after it (priority > 0); ``first_garp``: the first ARP frame announcing the VIP after it;
    ``master_down_interval``: what RFC 5798 says the backup (``priority``) waits after the last advert.
    """
    last_old: float | None = None
    adverts: list[tuple[float, str, int]] = []
    garps: list[float] = []
    for record in records:
        if record.linktype == 1 and _arp_sender_ip(record.data) == vip:
            garps.append(record.timestamp)
            continue
        packet = ipv4_from_frame(record.data, record.linktype)
        if packet is None:
            continue
        try:
            advert = decode_vrrp(packet)
        except ValueError:
            continue
        adverts.append((record.timestamp, advert.src, advert.priority))
        if advert.src == old and (last_old is None or record.timestamp > last_old):
            last_old = record.timestamp
    after = last_old if last_old is not None else float("-inf")
    first_new = min((t for t, src, prio in adverts if src == new and prio > 0 and t > after), default=None)
    first_garp = min((t for t in garps if t > after), default=None)
    return {
        "last_old_advert": last_old,
        "first_new_advert": first_new,
        "first_garp": first_garp,
        "master_down_interval": master_down_interval(advert_int, priority),
    }


def timeline_breakdown(timeline: Mapping[str, float | None], kill_wall: float,
                       answer_wall: float | None) -> dict[str, float | None]:
    """Milliseconds: ``phase`` (kill - last advert of the dead master: where in its cycle the kill
    landed), ``timer_late`` (takeover advert - last advert - Master_Down_Interval: how late the backup's
    timer fired), ``garp`` (first gratuitous ARP - takeover advert), ``answer`` (first HTTPS answer -
    takeover advert: adding the VIP, the ARP update and the probe's own delay)."""
    last = timeline.get("last_old_advert")
    first = timeline.get("first_new_advert")
    garp = timeline.get("first_garp")
    mdi = timeline.get("master_down_interval")

    def ms(a: float | None, b: float | None, minus: float = 0.0) -> float | None:
        return None if a is None or b is None else (a - b - minus) * 1000.0

    return {
        "phase": ms(kill_wall, last),
        "timer_late": ms(first, last, mdi or 0.0) if mdi is not None else None,
        "garp": ms(garp, first),
        "answer": ms(answer_wall, first),
    }


def format_breakdown_table(
    intervals: Sequence[float], breakdowns: Mapping[str, Mapping[float, Sequence[Mapping[str, float | None]]]]
) -> str:
    """Medians (ms) of :func:`timeline_breakdown`'s parts, one row per interval and implementation."""
    head = (f"{'advert_int':>10} {'impl':>10} | {'kill phase':>10} | {'timer late':>10} | "
            f"{'GARP after':>10} | {'answer after':>12}")
    lines = [head, "-" * len(head)]
    for interval in intervals:
        for impl in [i for i in IMPLEMENTATIONS if i in breakdowns]:
            rows = breakdowns[impl].get(interval, ())
            parts = ("phase", "timer_late", "garp")
            cells = [_ms(_median(row.get(part) for row in rows), 1) for part in parts]
            answer = _ms(_median(row.get("answer") for row in rows), 1)
            lines.append(f"{interval:>9g}s {impl:>10} | {cells[0]:>10} | {cells[1]:>10} | {cells[2]:>10} | "
                         f"{answer:>12}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------- the benchmark


def parse_intervals(text: str) -> list[float]:
    """``"1,0.1"`` -> ``[1.0, 0.1]``: VRRPv3 intervals (whole centiseconds, 0.01..40.95 s), order kept."""
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"not a number: {part!r}") from None
        if not 0.01 <= value <= 40.95 or abs(value * 100 - round(value * 100)) > 1e-9:
            raise ValueError(f"advert_int must be whole centiseconds in 0.01..40.95 s, got {part}")
        if value not in values:
            values.append(value)
    if not values:
        raise ValueError("no interval given")
    return values


def parse_impls(text: str) -> list[str]:
    """``"ours,keepalived"`` -> the implementations to measure, order kept."""
    impls: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part not in IMPLEMENTATIONS:
            raise ValueError(f"unknown implementation {part!r} (choose from {', '.join(IMPLEMENTATIONS)})")
        if part not in impls:
            impls.append(part)
    if not impls:
        raise ValueError("no implementation given")
    return impls


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_failover_table(
    intervals: Sequence[float], samples: Mapping[str, Mapping[float, Sequence[float | None]]]
) -> str:
    """One row per advert_int: each implementation's median failover (ms) and the ratio ours/keepalived,
    then every sample in kill order (``timeout`` = no answer from another host within the limit)."""
    impls = [impl for impl in IMPLEMENTATIONS if impl in samples]
    head = f"{'advert_int':>10} | " + " | ".join(f"{impl + ' median ms':>20}" for impl in impls)
    head += f" | {'ours/keepalived':>15}"
    lines = [head, "-" * len(head)]
    for interval in intervals:
        medians = {impl: _median(samples[impl].get(interval, ())) for impl in impls}
        cells = " | ".join(f"{_ms(medians[impl]):>20}" for impl in impls)
        value = _ratio(medians.get("ours"), medians.get("keepalived"))
        ratio_text = "-" if value is None else f"{value:.2f}"
        lines.append(f"{interval:>9g}s | {cells} | {ratio_text:>15}")
    lines.append("")
    lines.append("every sample (ms, in kill order):")
    for interval in intervals:
        for impl in impls:
            values = samples[impl].get(interval, ())
            shown = ", ".join("timeout" if v is None else f"{v:.0f}" for v in values) or "-"
            lines.append(f"  {interval:>5g}s {impl:>10}: {shown}")
    return "\n".join(lines)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def verdict(
    intervals: Sequence[float],
    samples: Mapping[str, Mapping[float, Sequence[float | None]]],
    *,
    fast_interval: float = 0.1,
    fast_limit_ms: float = 1000.0,
) -> tuple[bool | None, list[str]]:
    """Issue 8's target: ratio ours/keepalived <= 1.0 at each interval, and ours < 1 s at 0.1 s.

    Returns (met, reasons): ``None`` when it cannot be judged (an implementation or the 0.1 s interval
    was not measured, or every sample timed out), each reason a line for the report.
    """
    reasons: list[str] = []
    met: bool | None = True
    if "ours" not in samples or "keepalived" not in samples:
        return None, ["not judged: both ours and keepalived must be measured"]
    for interval in intervals:
        ours = _median(samples["ours"].get(interval, ()))
        theirs = _median(samples["keepalived"].get(interval, ()))
        value = _ratio(ours, theirs)
        if value is None:
            reasons.append(f"advert_int {interval:g} s: no ratio (a side has no measured sample)")
            met = None if met is not False else met
            continue
        timeouts = sum(1 for v in samples["ours"].get(interval, ()) if v is None)
        ok = value <= 1.0 and timeouts == 0
        extra = f", {timeouts} timeout(s) of ours" if timeouts else ""
        sign = "<=" if value <= 1.0 else ">"
        reasons.append(f"advert_int {interval:g} s: ratio {value:.2f} {sign} 1.0{extra}")
        if not ok:
            met = False
    if fast_interval not in intervals:
        reasons.append(f"advert_int {fast_interval:g} s not measured: the < 1 s target is not judged")
        return (None if met else met), reasons
    fast = _median(samples["ours"].get(fast_interval, ()))
    if fast is None:
        reasons.append(f"advert_int {fast_interval:g} s: ours has no measured sample")
        return (None if met else met), reasons
    under = fast < fast_limit_ms
    reasons.append(f"advert_int {fast_interval:g} s: ours median {fast:.0f} ms {'<' if under else '>='} "
                   f"{fast_limit_ms:.0f} ms")
    if not under:
        met = False
    return met, reasons
