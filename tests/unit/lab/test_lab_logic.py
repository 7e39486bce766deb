"""The lab's pure logic: the inventory's shape and the subnet collision rule."""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]


def load(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inventory = load("inventories/lab/hosts.py", "lab_inventory")
check_subnet = load("lab/check_subnet.py", "lab_check_subnet")


def test_default_lab_is_two_hosts_with_three_and_two_raft_nodes():
    inv = inventory.build({})
    hosts = inv["_meta"]["hostvars"]
    assert sorted(hosts) == ["agenda1", "agenda2"]
    assert hosts["agenda1"]["agenda_host_ip"] == "192.168.56.11"
    assert hosts["agenda2"]["agenda_host_ip"] == "192.168.56.12"
    assert [hosts[h]["raft_db_node_count"] for h in ("agenda1", "agenda2")] == [3, 2]
    assert [hosts[h]["raft_db_member_ids"] for h in ("agenda1", "agenda2")] == [
        ["db1", "db2", "db3"],
        ["db4", "db5"],
    ]
    assert inv["all"]["vars"]["agenda_vip"] == "192.168.56.100"
    for group in ("gateways", "services", "redis", "raft"):
        assert inv[group]["hosts"] == ["agenda1", "agenda2"]


def test_three_hosts_spread_five_raft_nodes_without_a_majority_on_one():
    hosts = inventory.build({"LAB_HOSTS": "3"})["_meta"]["hostvars"]
    counts = [hosts[f"agenda{i}"]["raft_db_node_count"] for i in (1, 2, 3)]
    assert counts == [2, 2, 1]
    ids = [hosts[f"agenda{i}"]["raft_db_member_ids"] for i in (1, 2, 3)]
    assert ids == [["db1", "db2"], ["db3", "db4"], ["db5"]]
    assert sum(counts) == 5


def test_subnet_moves_every_address():
    inv = inventory.build({"LAB_SUBNET": "10.77.3.0/24"})
    assert inv["_meta"]["hostvars"]["agenda2"]["ansible_host"] == "10.77.3.12"
    assert inv["all"]["vars"]["agenda_vip"] == "10.77.3.100"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"LAB_HOSTS": "one"}, "LAB_HOSTS"),
        ({"LAB_HOSTS": "1"}, "LAB_HOSTS"),
        ({"LAB_HOSTS": "10"}, "LAB_HOSTS"),
        ({"LAB_SUBNET": "10.0.0.0/16"}, "LAB_SUBNET"),
        ({"LAB_SUBNET": "not-a-net"}, "LAB_SUBNET"),
    ],
)
def test_bad_lab_settings_are_refused_naming_the_variable(environ, named):
    with pytest.raises(inventory.LabConfigError, match=named):
        inventory.build(environ)


SUBNET = ipaddress.IPv4Network("192.168.56.0/24")


def test_free_subnet_has_no_collision():
    table = [
        {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
        {"dst": "192.0.2.0/24", "dev": "eth0"},
    ]
    assert check_subnet.collisions(SUBNET, table, set()) == []


def test_route_through_the_labs_own_bridge_is_not_a_collision():
    table = [{"dst": "192.168.56.0/24", "dev": "br-0123456789ab"}]
    assert check_subnet.collisions(SUBNET, table, {"br-0123456789ab"}) == []


@pytest.mark.parametrize(
    "route",
    [
        {"dst": "192.168.56.0/24", "dev": "eth1"},
        {"dst": "192.168.0.0/16", "dev": "tun0", "gateway": "10.8.0.1"},
        {"dst": "192.168.56.40", "dev": "wg0"},
    ],
)
def test_overlapping_route_elsewhere_is_a_collision_naming_the_route(route):
    found = check_subnet.collisions(SUBNET, [route], {"br-0123456789ab"})
    assert len(found) == 1
    assert route["dev"] in found[0]
    assert route["dst"] in found[0]
