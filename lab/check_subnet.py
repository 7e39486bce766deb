#!/usr/bin/env python3
"""Refuse to start the lab when its subnet is already routed anywhere but its own bridge.

The lab's private network must not shadow a network this machine really uses: traffic meant for
a real host would go to the lab, or the reverse. The lab's own bridge is the Docker network that
Vagrant created for the subnet (named vagrant_network_<subnet>); any other route that overlaps
the subnet, except the default route, is a collision.

Exit status: 0 when free (or routed only through the lab's bridge), 3 on a collision, 2 on a
bad setting. Stdlib only: it runs before the project's virtualenv exists.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys


def lab_bridges(subnet: ipaddress.IPv4Network) -> set[str]:
    """Bridge devices of Docker networks Vagrant created for this subnet."""
    if not shutil.which("docker"):
        return set()
    name = f"vagrant_network_{subnet}"
    out = subprocess.run(  # noqa: S603 - fixed argv, no shell
        ["docker", "network", "inspect", name, "--format", "{{.Id}} {{index .Options \"com.docker.network.bridge.name\"}}"],  # noqa: S607, E501
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return set()
    network_id, _, bridge_option = out.stdout.strip().partition(" ")
    bridge = bridge_option.strip()
    if not bridge or bridge == "<no value>":
        bridge = f"br-{network_id[:12]}"
    return {bridge}


def routes() -> list[dict]:
    out = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"],  # noqa: S607
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "[]")


def collisions(subnet: ipaddress.IPv4Network, table: list[dict], own: set[str]) -> list[str]:
    found = []
    for route in table:
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("type") in ("broadcast", "local", "multicast"):
            continue
        try:
            net = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if net.prefixlen == 0 or not net.overlaps(subnet):
            continue
        if route.get("dev") in own:
            continue
        via = f" via {route['gateway']}" if "gateway" in route else ""
        found.append(f"{dst} dev {route.get('dev', '?')}{via}")
    return found


def main() -> int:
    raw = os.environ.get("LAB_SUBNET", "192.168.56.0/24")
    try:
        subnet = ipaddress.IPv4Network(raw)
    except ValueError as exc:
        print(f"lab: LAB_SUBNET={raw!r} is not an IPv4 network: {exc}", file=sys.stderr)
        return 2
    found = collisions(subnet, routes(), lab_bridges(subnet))
    if found:
        print(f"lab: refusing to start: LAB_SUBNET {subnet} is already routed here ({'; '.join(found)}). "
              "Set LAB_SUBNET to a free /24, e.g. LAB_SUBNET=192.168.77.0/24 make lab", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
