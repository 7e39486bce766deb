"""The DB Service as deployed: members under systemd, private configuration, one cluster across
hosts over mutual TLS. Non-disruptive: safe against any running deployment."""

from __future__ import annotations

import uuid

import pytest
import requests

from deployment.support import SPECS, db_client, db_members, tls_settings

testinfra_hosts = SPECS


@pytest.fixture
def local_members(host):
    name = host.ansible.get_variables()["inventory_hostname"]
    return [m for m in db_members() if m["host"] == name]


def test_each_member_runs_under_systemd_as_the_service_user(host, local_members):
    assert local_members, "the inventory gives this host no DB member"
    for member in local_members:
        unit = host.service(f"agenda-db@{member['id']}")
        assert unit.is_running
        assert unit.is_enabled
        assert host.check_output(f"systemctl show -p User --value agenda-db@{member['id']}") == "agenda"


def test_member_configuration_is_private_and_the_secret_stays_off_the_command_line(host, local_members):
    for member in local_members:
        config = host.file(f"/etc/agenda/db/{member['id']}.yml")
        assert (config.user, config.group, config.mode) == ("root", "agenda", 0o640)
        with host.sudo():
            secret_line = [line for line in config.content_string.splitlines() if "cluster_secret" in line]
        assert len(secret_line) == 1
        secret = secret_line[0].split(":", 1)[1].strip().strip('"')
        assert len(secret) >= 32
        assert secret not in host.check_output("ps -eo args")


def test_cluster_spans_the_hosts_with_every_member_reachable_and_one_leader():
    members = db_members()
    settings = tls_settings()
    views = [requests.get(f"{m['url']}/v1/cluster", timeout=5, **settings).json() for m in members]
    assert {m["id"] for m in views[0]["members"]} == {m["id"] for m in members}
    assert len({view["leader"] for view in views}) == 1
    assert views[0]["leader"] in {m["id"] for m in members}
    assert all(member["reachable"] for member in views[0]["members"])


def test_write_through_one_host_is_read_linearizably_on_another():
    members = db_members()
    first, last = members[0], members[-1]
    assert first["host"] != last["host"]
    key = f"checks/{uuid.uuid4()}"
    with db_client([first["url"]]) as writer, db_client([last["url"]]) as reader:
        writer.put(key, {"written_on": first["host"]})
        assert reader.get(key)["value"] == {"written_on": first["host"]}
        writer.delete(key)


def test_api_refuses_a_client_without_a_certificate():
    member = db_members()[0]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{member['url']}/v1/health", verify=tls_settings()["verify"], timeout=5)
