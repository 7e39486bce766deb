"""The VIP as deployed: agenda-vrrpd under a hardened unit on every gateway host, exactly one host
holding the VIP, and the gateway answering there with nothing but the deployment CA, as
`curl --cacert ca.crt https://VIP/v1/health` does. Non-disruptive: safe against any running
deployment."""

from __future__ import annotations

import ipaddress
from typing import Any

import requests
import yaml

from deployment.support import (
    group_hosts,
    group_specs,
    host,
    host_vars,
    ipv4_addresses,
    public_tls,
    vip,
    vip_holders,
    vip_url,
    vrrpd_status,
)

testinfra_hosts = group_specs("gateways")

UNIT = "agenda-vrrpd"
CONFIG = "/etc/agenda/vrrp/vrrpd.yml"
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "Restart": "always",
}


def unit_properties(target: Any, *names: str) -> dict[str, str]:
    flags = " ".join(f"-p {name}" for name in names)
    output = target.check_output(f"systemctl show {flags} {UNIT}")
    return dict(line.split("=", 1) for line in output.splitlines())


def read_config(target: Any) -> dict[str, Any]:
    with target.sudo():
        return yaml.safe_load(target.file(CONFIG).content_string)


# ------------------------------------------------------------------------------------ on each host


def test_the_daemon_runs_as_its_own_user_with_only_the_two_network_capabilities(host):
    unit = host.service(UNIT)
    assert unit.is_running
    assert unit.is_enabled
    props = unit_properties(host, *HARDENING, "User", "MainPID", "ExecStopPost")
    assert {name: props[name] for name in HARDENING} == HARDENING
    assert props["User"] not in ("", "root", "agenda")
    assert "release" in props["ExecStopPost"], "a killed daemon must not leave the VIP behind"
    status = host.file(f"/proc/{props['MainPID']}/status").content_string
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[1] != "0", f"{UNIT} runs as root"
    assert host.user(props["User"]).uid == int(fields["Uid"].split()[1])
    expected = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
    assert int(fields["CapEff"], 16) == expected
    assert int(fields["CapBnd"], 16) == expected


def test_the_daemon_sees_its_configuration_and_the_ca_but_no_secret(host):
    pid = unit_properties(host, "MainPID")["MainPID"]
    with host.sudo():
        # /proc/PID/root is the file system as the daemon sees it (its own mount namespace).
        seen = host.check_output(f"find /proc/{pid}/root/etc/agenda -type f").split()
    assert sorted(path.split("/etc/agenda/", 1)[1] for path in seen) == ["pki/ca.crt", "vrrp/vrrpd.yml"]
    config = host.file(CONFIG)
    assert (config.user, config.mode) == ("root", 0o640)
    assert config.group == unit_properties(host, "Group")["Group"]


def test_the_instance_is_on_the_interface_of_the_host_address_with_the_subnet_prefix(host):
    variables = host.ansible.get_variables()
    [carrier] = [
        ifname for ifname, cidr in ipv4_addresses(host) if cidr.split("/")[0] == variables["agenda_host_ip"]
    ]
    [instance] = read_config(host)["instances"]
    prefix = ipaddress.ip_network(variables["agenda_subnet"]).prefixlen
    assert instance["interface"] == carrier
    assert instance["virtual_ipaddress"] == [f"{variables['agenda_vip']}/{prefix}"]
    assert instance["virtual_router_id"] == int(variables.get("vrrp_virtual_router_id", 51))
    assert instance["preempt"] is True
    [track] = read_config(host)["track_scripts"]
    assert track["name"] in instance["track_scripts"]
    assert track["http_get"] == f"https://{variables['agenda_host_ip']}/v1/health"
    assert track["cafile"] == "/etc/agenda/pki/ca.crt"


def test_the_daemon_reports_a_settled_state_and_exports_metrics(host):
    [instance] = vrrpd_status(host)["instances"]
    assert instance["state"] in ("MASTER", "BACKUP"), instance
    assert instance["master_address"], "a settled instance knows its master"
    assert instance["holds_vips"] == (instance["state"] == "MASTER")
    assert instance["counters"]["adverts_sent" if instance["state"] == "MASTER" else "adverts_received"] > 0
    probe = host.run(
        "/opt/agenda/venv/bin/python -c 'import urllib.request, yaml; "
        f'a = yaml.safe_load(open("{CONFIG}"))["status_addr"]; '
        'print(urllib.request.urlopen("http://" + a + "/metrics", timeout=5).read().decode())\''
    )
    assert probe.rc == 0, probe.stderr
    assert f'agenda_vrrp_state{{instance="{instance["name"]}"}}' in probe.stdout


# ---------------------------------------------------------------------- from the controller, once


def test_exactly_one_host_holds_the_vip():
    holders = vip_holders()
    assert len(holders) == 1, f"hosts holding the VIP {vip()}: {holders}"
    [name] = holders
    assert name in group_hosts("gateways")


def test_one_master_holds_the_vip_and_every_other_gateway_is_backup():
    gateways = group_hosts("gateways")
    statuses = {name: vrrpd_status(host(name))["instances"][0] for name in gateways}
    states = {name: status["state"] for name, status in statuses.items()}
    masters = [name for name, state in states.items() if state == "MASTER"]
    assert len(masters) == 1, states
    assert sorted(states.values()) == ["BACKUP"] * (len(gateways) - 1) + ["MASTER"]
    assert list(vip_holders()) == masters
    # Every backup names the master's address; priorities descend in the order of the group.
    master_ip = host_vars(masters[0])["agenda_host_ip"]
    assert {statuses[name]["master_address"] for name in gateways} == {master_ip}
    priorities = [statuses[name]["base_priority"] for name in gateways]
    assert priorities == sorted(priorities, reverse=True)
    assert len(set(priorities)) == len(priorities)
    # Undisturbed, with preemption, the master is the host of the highest priority.
    assert statuses[masters[0]]["base_priority"] == max(priorities)


def test_the_gateway_answers_at_the_vip_with_the_deployment_ca():
    health = requests.get(f"{vip_url()}/v1/health", timeout=10, **public_tls())
    assert health.status_code == 200
    assert health.json()["service"] == "gateway"
