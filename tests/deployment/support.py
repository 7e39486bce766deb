"""What the deployment checks need to know about the hosts under test.

The checks run against Molecule's hosts (Molecule sets MOLECULE_INVENTORY_FILE) and against the
Vagrant lab (tests/lab sets AGENDA_INVENTORY=inventories/lab); both inventories keep the
deployment's CA and operator certificate in a `.pki` folder beside them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import testinfra.utils.ansible_runner

from agenda.db.client import DBClient

INVENTORY = os.environ.get("AGENDA_INVENTORY") or os.environ["MOLECULE_INVENTORY_FILE"]
_RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
HOSTS: list[str] = sorted(_RUNNER.get_hosts("agenda"))
# Explicit ansible:// specs: a bare host name would get testinfra's default (paramiko) backend.
SPECS: list[str] = [f"ansible://{name}?ansible_inventory={INVENTORY}" for name in HOSTS]
PKI_DIR = (Path(INVENTORY) if Path(INVENTORY).is_dir() else Path(INVENTORY).parent) / ".pki"
DB_API_PORT_BASE = 7101


def host_vars(name: str) -> dict[str, Any]:
    return _RUNNER.get_variables(name)


def group_hosts(group: str) -> list[str]:
    """The inventory hosts of one role group (gateways, services, redis, raft)."""
    return sorted(_RUNNER.get_hosts(group))


def gateway_urls() -> list[str]:
    """The public base URL of each host's gateway: HTTPS at the host's own address."""
    urls = []
    for name in group_hosts("gateways"):
        variables = host_vars(name)
        port = int(variables.get("agenda_gateway_port", 443))
        urls.append(f"https://{variables['agenda_host_ip']}" + ("" if port == 443 else f":{port}"))
    return urls


def group_specs(group: str) -> list[str]:
    """testinfra host specs of one group's hosts (for checks that apply to those hosts only)."""
    return [f"ansible://{name}?ansible_inventory={INVENTORY}" for name in group_hosts(group)]


def vip() -> str:
    """The VIP the gateways share (agenda_vip)."""
    return str(host_vars(HOSTS[0])["agenda_vip"])


def vip_url() -> str:
    """The public base URL at the VIP: what users are given."""
    port = int(host_vars(group_hosts("gateways")[0]).get("agenda_gateway_port", 443))
    return f"https://{vip()}" + ("" if port == 443 else f":{port}")


VRRPD_STATUS = "/opt/agenda/venv/bin/agenda-vrrpd --config /etc/agenda/vrrp/vrrpd.yml status --json"


def vrrpd_status(target: Any) -> dict[str, Any]:
    """`agenda-vrrpd status --json` on a host (the daemon's own view: state, priority, counters)."""
    with target.sudo():
        return json.loads(target.check_output(VRRPD_STATUS))


def ipv4_addresses(target: Any) -> list[tuple[str, str]]:
    """(interface, address/prefix) of every IPv4 address on a host, as `ip -4 addr` lists them."""
    output = target.check_output("ip -4 -o addr show")
    return re.findall(r"^\d+:\s+(\S+)\s+inet\s+(\S+)", output, flags=re.MULTILINE)


def vip_holders() -> dict[str, list[str]]:
    """Every host that has the VIP on an interface (all hosts are checked, not only gateways),
    with the interface and prefix it holds it with."""
    address = vip()
    holders: dict[str, list[str]] = {}
    for name in HOSTS:
        addresses = ipv4_addresses(host(name))
        held = [f"{ifname} {cidr}" for ifname, cidr in addresses if cidr.split("/")[0] == address]
        if held:
            holders[name] = held
    return holders


def public_tls() -> dict[str, Any]:
    """requests' verify for the public gateway: the deployment CA, as `curl --cacert` and no client cert."""
    return {"verify": str(PKI_DIR / "ca.crt")}


def host(name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def db_members() -> list[dict[str, str]]:
    """Every DB member as the inventory places them: id, host and API URL (named as the role names
    them: the host's raft_db_member_ids, else numbered in inventory order)."""
    members = []
    for name in HOSTS:
        variables = host_vars(name)
        ids = list(variables.get("raft_db_member_ids") or [])
        for k in range(int(variables.get("raft_db_node_count", 0))):
            members.append(
                {
                    "id": ids[k] if k < len(ids) else f"db{len(members) + 1}",
                    "host": name,
                    "url": f"https://{variables['agenda_host_ip']}:{DB_API_PORT_BASE + k}",
                }
            )
    return members


def tls_settings() -> dict[str, Any]:
    """requests' verify/cert for talking to internal APIs as the operator."""
    return {
        "verify": str(PKI_DIR / "ca.crt"),
        "cert": (str(PKI_DIR / "admin.crt"), str(PKI_DIR / "admin.key")),
    }


def db_client(urls: list[str] | None = None, *, retries: int = 3) -> DBClient:
    settings = tls_settings()
    return DBClient(
        urls or [m["url"] for m in db_members()],
        timeout=(2.0, 5.0),
        retries=retries,
        verify=settings["verify"],
        cert=settings["cert"],
    )


# Each HTTP service, the inventory group whose hosts run it.
SERVICES = {"users": "services", "groups": "services", "gateway": "gateways"}


def services_on(target: Any) -> list[str]:
    """The services `target` (testinfra's host) runs, by its inventory groups."""
    groups = target.ansible.get_variables()["group_names"]
    return [service for service, group in SERVICES.items() if group in groups]
