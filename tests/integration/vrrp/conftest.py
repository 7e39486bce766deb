"""Real agenda-vrrpd processes on a real link, without containers: network namespaces.

Each "host" is a network namespace with one veth interface, `eth0`, plugged into a Linux bridge
that lives in a namespace of its own (the "switch"). Multicast adverts, gratuitous ARP, link
failures and partitions are the kernel's own. Addresses are in the namespaces this fixture creates
(192.168.59.0/24 by default, VRRP_TEST_SUBNET to change), so no traffic leaves the machine. Needs
root (CI and the build machines run as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import wait_until

SUBNET_PREFIX = os.environ.get("VRRP_TEST_SUBNET_PREFIX", "192.168.59")
VIP = f"{SUBNET_PREFIX}.100"
TAG = f"vr{os.getpid() % 10000}"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv, check=check)


@dataclass
class Host:
    name: str
    ns: str
    port: str  # the bridge port in the switch namespace
    address: str
    priority: int
    workdir: Path
    config_path: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config_path = self.workdir / f"{self.name}.yml"

    @property
    def notify_log(self) -> Path:
        return self.workdir / f"{self.name}.notify"

    @property
    def health_file(self) -> Path:
        return self.workdir / f"{self.name}.healthy"

    def write_config(self, **instance: Any) -> None:
        self.overrides.update(instance)
        config = {
            "log_level": "debug",
            "status_addr": "127.0.0.1:9110",
            "track_scripts": [
                {
                    "name": "service",
                    "script": f"test -e {self.health_file}",
                    "interval": 0.1,
                    "fall": 1,
                    "rise": 1,
                    "weight": 0,
                }
            ],
            "instances": [
                {
                    "name": "VI_1",
                    "interface": "eth0",
                    "virtual_router_id": 51,
                    "priority": self.priority,
                    "advert_int": 0.1,
                    "virtual_ipaddress": [f"{VIP}/24"],
                    "track_scripts": ["service"],
                    "notify": f"/bin/sh -c 'echo \"$*\" >> {self.notify_log}' notify",
                    "garp_master_delay": 1,
                    **self.overrides,
                }
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self) -> None:
        if not self.config_path.exists():
            self.write_config()
        self.health_file.touch()
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                sys.executable,
                "-m",
                "agenda.vrrp",
                "--config",
                str(self.config_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def holds_vip(self) -> bool:
        return (
            f" {VIP}/" in in_ns(self.ns, "ip", "-4", "-o", "addr", "show", "dev", "eth0", check=False).stdout
        )

    def vrrpd(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """`agenda-vrrpd --config <this host's file> ARGV` inside the host's namespace."""
        return in_ns(
            self.ns,
            sys.executable,
            "-m",
            "agenda.vrrp",
            "--config",
            str(self.config_path),
            *argv,
            check=False,
        )

    def status(self) -> dict[str, Any]:
        out = self.vrrpd("status", "--json")
        if out.returncode != 0:
            raise OSError(out.stderr.strip())
        return json.loads(out.stdout)

    def http_status(self) -> dict[str, Any]:
        """GET /status straight from the daemon: unlike `status`, works while the file is broken."""
        code = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9110/status',timeout=3).read().decode())"
        out = in_ns(self.ns, sys.executable, "-c", code, check=False)
        if out.returncode != 0:
            raise OSError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "no status")
        return json.loads(out.stdout)

    def mac(self) -> str:
        return in_ns(self.ns, "cat", "/sys/class/net/eth0/address").stdout.strip()

    def state(self) -> str:
        return self.status()["instances"][0]["state"]

    def notifications(self) -> list[str]:
        return self.notify_log.read_text().splitlines() if self.notify_log.exists() else []

    @property
    def log(self) -> str:
        path = self.workdir / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @contextlib.contextmanager
    def address_events(self) -> Iterator[Path]:
        """`ip monitor address` on the host for the block: a file of every address added or
        deleted, so even a deletion shorter than any polling interval is caught."""
        path = self.workdir / f"{self.name}.addr-events"
        with path.open("wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "ip", "-o", "monitor", "address"], stdout=out
            )
        try:
            # The monitor is listening once it reports a change of our own (on lo, which no daemon
            # uses); until it has subscribed, changes go unseen, so each poll makes another.
            def seen() -> bool:
                if "127.0.0.9" in path.read_text():
                    return True
                in_ns(self.ns, "ip", "addr", "del", "127.0.0.9/8", "dev", "lo", check=False)
                in_ns(self.ns, "ip", "addr", "add", "127.0.0.9/8", "dev", "lo")
                return False

            wait_until(seen, 10, 0.05, f"ip monitor on {self.name}")
            in_ns(self.ns, "ip", "addr", "del", "127.0.0.9/8", "dev", "lo")
            yield path
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@dataclass
class Link:
    switch: str
    hosts: list[Host]

    def holders(self) -> list[str]:
        return [h.name for h in self.hosts if h.holds_vip()]

    def wait_single_holder(self, expected: str | None = None, timeout: float = 10.0) -> str:
        def single() -> str | None:
            holders = self.holders()
            if len(holders) == 1 and (expected is None or holders[0] == expected):
                return holders[0]
            return None

        return wait_until(
            single, timeout, 0.02, f"exactly one VIP holder ({expected or 'any'}); now {self.holders()}"
        )

    def client_arp_entry(self) -> str | None:
        """The MAC the switch's own address (a client on the link) resolves the VIP to, after
        sending it one datagram."""
        code = (
            "import socket,sys; socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'x',(sys.argv[1],9))"
        )
        in_ns(self.switch, sys.executable, "-c", code, VIP)
        fields = in_ns(self.switch, "ip", "neigh", "show", VIP, "dev", "br0").stdout.split()
        return fields[fields.index("lladdr") + 1] if "lladdr" in fields else None

    def cut(self, host: Host) -> None:
        """Partition: the host's link stays up but its bridge port forwards nothing."""
        in_ns(self.switch, "ip", "link", "set", host.port, "nomaster")

    def heal(self, host: Host) -> None:
        in_ns(self.switch, "ip", "link", "set", host.port, "master", "br0")

    def send_raw(
        self,
        datagram_payload: bytes,
        *,
        ttl: int = 255,
        vrrp_proto: int = 112,
        destination: str = "224.0.0.18",
    ) -> None:
        """Inject a hostile packet from the switch's own address (.1) onto the link."""
        code = (
            "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_RAW,int(sys.argv[1]));"
            "s.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_TTL,int(sys.argv[2]));"
            "s.setsockopt(socket.IPPROTO_IP,socket.IP_TTL,int(sys.argv[2]));"
            f"s.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_IF,socket.inet_aton('{SUBNET_PREFIX}.1'));"
            "s.sendto(bytes.fromhex(sys.argv[3]),(sys.argv[4],0))"
        )
        in_ns(
            self.switch,
            sys.executable,
            "-c",
            code,
            str(vrrp_proto),
            str(ttl),
            datagram_payload.hex(),
            destination,
        )


# The bridge floods link-local multicast to its own interface too: each advert shows there once.
SNIFFER = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
print("ready", flush=True)
while True:
    ip, (ifname, *_) = s.recvfrom(2048)
    if ifname != "br0" or len(ip) < 28 or ip[9] != 112:
        continue
    ihl = (ip[0] & 15) * 4
    print(f"{time.time():.6f} {socket.inet_ntoa(ip[12:16])} {ip[ihl + 2]}", flush=True)
"""


@dataclass
class Adverts:
    """VRRP adverts seen on the switch: (epoch seconds, source address, priority)."""

    path: Path

    def seen(self) -> list[tuple[float, str, int]]:
        out = []
        for line in self.path.read_text().splitlines()[1:]:
            at, source, priority = line.split()
            out.append((float(at), source, int(priority)))
        return out


@contextlib.contextmanager
def sniff_adverts(link: Link, workdir: Path) -> Iterator[Adverts]:
    """Record every VRRP advert crossing the bridge (AF_PACKET in the switch namespace)."""
    path = workdir / "adverts"
    with path.open("wb") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", link.switch, sys.executable, "-c", SNIFFER], stdout=out
        )
    try:
        wait_until(lambda: path.read_text().startswith("ready"), 10, 0.02, "the advert sniffer")
        yield Adverts(path)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _teardown(switch: str, hosts: list[str]) -> None:
    for ns in [*hosts, switch]:
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "delete", ns, check=False)


@pytest.fixture
def link(tmp_path: Path) -> Iterator[Link]:
    """Three hosts (priorities 150, 140, 130) on one bridge; daemons not started yet."""
    if os.geteuid() != 0:
        pytest.fail("the VRRP integration tests need root (network namespaces, raw sockets)")
    switch = f"{TAG}sw"
    names = [f"{TAG}h{i}" for i in (1, 2, 3)]
    _teardown(switch, names)
    try:
        sh("ip", "netns", "add", switch)
        in_ns(switch, "ip", "link", "add", "br0", "type", "bridge")
        in_ns(switch, "ip", "addr", "add", f"{SUBNET_PREFIX}.1/24", "dev", "br0")
        in_ns(switch, "ip", "link", "set", "br0", "up")
        in_ns(switch, "ip", "link", "set", "lo", "up")
        hosts = []
        for index, ns in enumerate(names, start=1):
            sh("ip", "netns", "add", ns)
            port = f"p{index}"
            sh("ip", "link", "add", f"{ns}e", "type", "veth", "peer", "name", port, "netns", switch)
            sh("ip", "link", "set", f"{ns}e", "netns", ns)
            in_ns(ns, "ip", "link", "set", f"{ns}e", "name", "eth0")
            address = f"{SUBNET_PREFIX}.{10 + index}"
            in_ns(ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            in_ns(ns, "ip", "link", "set", "eth0", "up")
            in_ns(ns, "ip", "link", "set", "lo", "up")
            in_ns(switch, "ip", "link", "set", port, "master", "br0")
            in_ns(switch, "ip", "link", "set", port, "up")
            hosts.append(Host(f"h{index}", ns, port, address, 160 - 10 * index, tmp_path))
        yield Link(switch, hosts)
    finally:
        for host in locals().get("hosts", []):
            host.signal(signal.SIGKILL)
        _teardown(switch, names)


def wait_state(host: Host, state: str, timeout: float = 10.0) -> None:
    wait_until(lambda: host.state() == state, timeout, 0.05, f"{host.name} in {state}")
