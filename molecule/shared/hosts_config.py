#!/usr/bin/env python3
"""Write a Molecule base config for N hosts (3 to 9), derived from .config/molecule/config.yml (two).

    python molecule/shared/hosts_config.py 3 > /tmp/molecule-3.yml
    molecule -c /tmp/molecule-3.yml test -s failover-redis

The two-host file stays the one CI uses. Every added host is a copy of agenda2's platform with the
next address, in every group; the five Raft members are spread as the lab spreads them
(`inventories/lab/hosts.py`: no host holds a majority with three or more), so the system must survive
losing any one whole host.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "inventories" / "lab"))

from hosts import raft_nodes_per_host  # noqa: E402 - the lab's one rule for spreading the members


def config_for(count: int, base: dict) -> dict:
    if not 3 <= count <= 9:
        raise ValueError(f"hosts: expected 3 to 9, got {count}")
    config = copy.deepcopy(base)
    template = config["platforms"][-1]
    prefix = "${MOLECULE_NET_PREFIX:-192.168.57}"
    platforms = [*config["platforms"][:1], template]
    for index in range(3, count + 1):
        platform = copy.deepcopy(template)
        platform["name"] = platform["hostname"] = f"agenda{index}"
        platform["networks"] = [{"name": "agenda-molecule", "ipv4_address": f"{prefix}.{10 + index}"}]
        platform.pop("docker_networks", None)
        platforms.append(platform)
    config["platforms"] = platforms
    host_vars = {}
    first_member = 1
    for index, nodes in enumerate(raft_nodes_per_host(count), start=1):
        host_vars[f"agenda{index}"] = {
            "agenda_host_ip": f"{prefix}.{10 + index}",
            "raft_db_node_count": nodes,
            "raft_db_member_ids": [f"db{first_member + k}" for k in range(nodes)],
        }
        first_member += nodes
    config["provisioner"]["inventory"]["host_vars"] = host_vars
    return config


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    base = yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text())
    try:
        config = config_for(int(argv[1]), base)
    except ValueError as exc:
        print(f"hosts_config: {exc}", file=sys.stderr)
        return 2
    yaml.safe_dump(config, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
