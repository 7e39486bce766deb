"""molecule/shared/hosts_config.py: the N-host Molecule base config derived from the two-host one."""

from __future__ import annotations

import pytest
import yaml

from .test_lab_logic import REPO, load

hosts_config = load("molecule/shared/hosts_config.py", "molecule_hosts_config")
BASE = yaml.safe_load((REPO / ".config" / "molecule" / "config.yml").read_text())


def test_three_hosts_spread_the_members_so_that_none_holds_a_majority() -> None:
    config = hosts_config.config_for(3, BASE)
    names = [p["name"] for p in config["platforms"]]
    assert names == ["agenda1", "agenda2", "agenda3"]
    host_vars = config["provisioner"]["inventory"]["host_vars"]
    assert [host_vars[n]["raft_db_member_ids"] for n in names] == [["db1", "db2"], ["db3", "db4"], ["db5"]]
    assert all(host_vars[n]["raft_db_node_count"] == len(host_vars[n]["raft_db_member_ids"]) for n in names)
    addresses = [p["networks"][0]["ipv4_address"] for p in config["platforms"]]
    assert [a.rsplit(".", 1)[1] for a in addresses] == ["11", "12", "13"]
    assert [host_vars[n]["agenda_host_ip"] for n in names] == addresses


def test_added_hosts_are_in_every_group_and_the_base_is_left_alone() -> None:
    config = hosts_config.config_for(4, BASE)
    groups = {tuple(p["groups"]) for p in config["platforms"]}
    assert groups == {tuple(BASE["platforms"][0]["groups"])}
    # The network is declared by the base's hosts only; the added ones just join it.
    assert ["docker_networks" in p for p in config["platforms"][2:]] == [False, False]
    assert len(BASE["platforms"]) == 2


@pytest.mark.parametrize("count", [0, 2, 10])
def test_a_count_outside_three_to_nine_is_refused(count: int) -> None:
    with pytest.raises(ValueError, match="3 to 9"):
        hosts_config.config_for(count, BASE)
