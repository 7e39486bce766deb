#!/usr/bin/env python3
"""Dynamic inventory of the local lab: the machines the Vagrantfile defines.

One source of truth for the lab's shape. The Vagrantfile runs this script to learn which
machines to create and at which addresses, and Ansible reads it (with the group_vars beside it)
to provision them, whether Vagrant's provisioner or a user runs `ansible-playbook`.

Environment:
  LAB_HOSTS   number of machines (default 2, at most 9): agenda1, agenda2, ...
  LAB_SUBNET  the private network, an IPv4 /24 (default 192.168.56.0/24); host N gets .10+N,
              the VIP is .100
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RAFT_NODES_TOTAL = 5
PROVIDERS = ("docker", "virtualbox", "libvirt")
ROLE_GROUPS = ("gateways", "services", "redis", "raft")


class LabConfigError(Exception):
    """A lab setting is wrong; the message names the variable."""


def lab_hosts_count(environ: dict[str, str]) -> int:
    raw = environ.get("LAB_HOSTS", "2")
    try:
        count = int(raw)
    except ValueError:
        raise LabConfigError(f"LAB_HOSTS: expected a whole number from 2 to 9, got {raw!r}") from None
    if not 2 <= count <= 9:
        raise LabConfigError(f"LAB_HOSTS: expected a whole number from 2 to 9, got {count}")
    return count


def lab_subnet(environ: dict[str, str]) -> ipaddress.IPv4Network:
    raw = environ.get("LAB_SUBNET", "192.168.56.0/24")
    try:
        net = ipaddress.IPv4Network(raw)
    except ValueError as exc:
        raise LabConfigError(f"LAB_SUBNET: not an IPv4 network ({exc})") from None
    if net.prefixlen != 24:
        raise LabConfigError(f"LAB_SUBNET: must be a /24, got /{net.prefixlen}")
    return net


def raft_nodes_per_host(count: int) -> list[int]:
    """Five Raft nodes spread so that no host holds a majority when there are three or more.

    With two hosts the design's split is 3 + 2 (the first host's loss costs the quorum; that is
    the accepted trade-off of a two-machine deployment).
    """
    nodes = [0] * count
    for i in range(RAFT_NODES_TOTAL):
        nodes[i % count] += 1
    return nodes


def ssh_key_for(name: str) -> str | None:
    """The key Vagrant generated for this machine, whichever provider created it."""
    for provider in PROVIDERS:
        key = REPO_ROOT / ".vagrant" / "machines" / name / provider / "private_key"
        if key.exists():
            return str(key)
    return None


def build(environ: dict[str, str]) -> dict:
    count = lab_hosts_count(environ)
    net = lab_subnet(environ)
    base = net.network_address
    raft_nodes = raft_nodes_per_host(count)
    hostvars: dict[str, dict] = {}
    # Raft members are named explicitly (db1.. over the hosts in order), so that a member's name and
    # data directory never depend on the inventory's order.
    next_member = 1
    for index in range(1, count + 1):
        name = f"agenda{index}"
        ip = str(base + 10 + index)
        host = {
            "ansible_host": ip,
            "ansible_user": "vagrant",
            "agenda_host_ip": ip,
            "raft_db_node_count": raft_nodes[index - 1],
            "raft_db_member_ids": [f"db{next_member + k}" for k in range(raft_nodes[index - 1])],
        }
        next_member += raft_nodes[index - 1]
        key = ssh_key_for(name)
        if key:
            host["ansible_ssh_private_key_file"] = key
        hostvars[name] = host
    names = list(hostvars)
    groups: dict[str, dict] = {
        "all": {
            "children": ["agenda"],
            "vars": {"agenda_vip": str(base + 100), "agenda_subnet": str(net)},
        },
        "agenda": {"children": list(ROLE_GROUPS)},
    }
    for group in ROLE_GROUPS:
        members = [n for n in names if group != "raft" or hostvars[n]["raft_db_node_count"] > 0]
        groups[group] = {"hosts": members}
    groups["_meta"] = {"hostvars": hostvars}
    return groups


def main(argv: list[str]) -> int:
    try:
        inventory = build(dict(os.environ))
    except LabConfigError as exc:
        print(f"lab inventory: {exc}", file=sys.stderr)
        return 2
    if len(argv) > 1 and argv[1] == "--host":
        print(json.dumps(inventory["_meta"]["hostvars"].get(argv[2], {}) if len(argv) > 2 else {}))
    else:
        print(json.dumps(inventory, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
