"""agenda-gossip as deployed: a hardened member beside every service instance, every view complete, the
gateways routing by theirs, and the key ring private. Non-disruptive: it reads, it changes nothing."""

from __future__ import annotations

import json
from typing import Any

from deployment.support import PKI_DIR, SERVICES, SPECS, gateway_urls, group_hosts, services_on
from deployment.test_services import Client, new_account

testinfra_hosts = SPECS

GOSSIP = "/opt/agenda/venv/bin/agenda-gossip"


def expected_members() -> set[str]:
    return {f"{name}-{service}" for service, group in SERVICES.items() for name in group_hosts(group)}


def members(target: Any, service: str) -> dict[str, Any]:
    shown = target.run(f"{GOSSIP} --config /etc/agenda/{service}/gossip.yml members --json")
    assert shown.rc == 0, shown.stderr
    return json.loads(shown.stdout)


def test_every_member_runs_hardened_beside_its_service(host: Any) -> None:
    for service in services_on(host):
        unit = host.service(f"agenda-{service}-gossip")
        assert unit.is_running
        assert unit.is_enabled
        shown = host.run(
            f"systemctl show agenda-{service}-gossip.service -p User -p NoNewPrivileges -p ProtectSystem"
            " -p CapabilityBoundingSet -p PartOf"
        ).stdout
        properties = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        assert properties["User"] == "agenda"
        assert properties["NoNewPrivileges"] == "yes"
        assert properties["ProtectSystem"] == "strict"
        assert properties["CapabilityBoundingSet"] == ""
        assert properties["PartOf"] == f"agenda-{service}.service"
        keys = host.file(f"/etc/agenda/{service}/gossip.keys")
        assert (keys.user, keys.group, keys.mode) == ("root", "agenda", 0o640)
    if "gateway" in services_on(host):
        config = host.file("/etc/agenda/gateway/gateway.yml").content_string
        assert "gossip_view: /run/agenda-gateway-gossip/view.json" in config
        assert host.file("/run/agenda-gateway-gossip/view.json").mode == 0o644


def test_every_view_lists_every_member_alive_and_serving(host: Any) -> None:
    wanted = expected_members()
    for service in services_on(host):
        view = members(host, service)
        assert view["age_s"] < 10, "the view file is stale: is the member running?"
        rows = {m["name"]: m for m in view["members"]}
        assert set(rows) == wanted, service
        for name, member in rows.items():
            assert (member["status"], member["state"]) == ("alive", "serving"), (service, name, member)
            assert member["version"], name
            if not name.endswith("-gateway"):
                assert member["api_url"].startswith("https://"), name


def test_each_gateway_shows_its_view_to_the_operators_token_only() -> None:
    token = (PKI_DIR / "admin-token").read_text().strip()
    for base in gateway_urls():
        client = Client(base)
        shown = client.call("GET", "/v1/cluster/services", headers={"Authorization": f"Bearer {token}"})
        assert shown.status_code == 200, shown.text
        rows = {m["name"]: m for m in shown.json()["members"]}
        assert set(rows) == expected_members(), base
        assert all(isinstance(m["incarnation"], int) for m in rows.values())
        client.login(*new_account(client))  # a user's token does not open it
        assert client.call("GET", "/v1/cluster/services").status_code == 401
