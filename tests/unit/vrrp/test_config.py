"""agenda-vrrpd's configuration: the contract's sample loads; every mistake is refused naming its key."""

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from agenda.common.config import ConfigError
from agenda.vrrp import cli
from agenda.vrrp import config as vrrp_config

# The sample from /tmp/vrrp/CONTRACT.md, verbatim.
SAMPLE = """\
log_level: info                 # debug | info | warning | error
status_addr: 127.0.0.1:9110     # HTTP on this address: GET /status (JSON), GET /metrics (Prometheus text)
track_scripts:                  # keepalived's vrrp_script
  - name: gateway
    script: "/opt/agenda/venv/bin/agenda-vrrpd check-http https://192.168.56.11/v1/health --cafile /etc/agenda/tls/ca.crt"
    interval: 1.0               # seconds between runs
    timeout: 2.0                # a run taking longer counts as failed (killed)
    fall: 2                     # consecutive failures to become failed
    rise: 2                     # consecutive successes to become OK
    weight: 0                   # 0: failure puts instances tracking it in FAULT; >0 added while OK; <0 added while failed
instances:
  - name: VI_1
    interface: eth1
    virtual_router_id: 51       # 1..255
    priority: 150               # 1..255 (255 = address owner)
    advert_int: 1.0             # seconds, 0.01..40.95 (VRRPv3 centiseconds)
    virtual_ipaddress: ["192.168.56.100/24"]   # "A.B.C.D" (=/32) or "A.B.C.D/len"
    preempt: true
    preempt_delay: 0            # seconds
    unicast_src_ip: ""          # default: the interface's primary IPv4
    unicast_peers: []           # non-empty: send adverts by unicast to these instead of 224.0.0.18
    track_scripts: [gateway]
    notify_master: ""           # keepalived-style commands ("" = none); run in order, never overlapping, with notify_timeout
    notify_backup: ""
    notify_fault: ""
    notify_stop: ""
    notify: ""                  # generic: called with INSTANCE <name> <STATE> <priority> appended
    notify_timeout: 10
    garp_master_delay: 5        # second gratuitous-ARP burst this long after becoming master (0 = none)
    garp_master_repeat: 5       # gratuitous ARPs per burst
    garp_master_refresh: 0      # re-send a burst every N seconds while master (0 = never)
"""  # noqa: E501

MINIMAL: dict[str, Any] = {
    "instances": [
        {
            "name": "VI_1",
            "interface": "eth1",
            "virtual_router_id": 51,
            "virtual_ipaddress": ["192.168.56.100"],
        }
    ]
}


def write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "vrrpd.yml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def sample() -> dict[str, Any]:
    return yaml.safe_load(SAMPLE)


def refused(tmp_path: Path, data: dict[str, Any] | str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        vrrp_config.load(write(tmp_path, data))
    return info.value


# ---------------------------------------------------------------- good configurations


def test_the_contract_sample_loads(tmp_path: Path) -> None:
    cfg = vrrp_config.load(write(tmp_path, SAMPLE))
    assert cfg.log_level == "info"
    assert cfg.status_addr == ("127.0.0.1", 9110)
    (script,) = cfg.track_scripts
    assert script.name == "gateway"
    assert script.script.startswith("/opt/agenda/venv/bin/agenda-vrrpd check-http https://")
    assert (script.interval, script.timeout, script.fall, script.rise, script.weight) == (1.0, 2.0, 2, 2, 0)
    (inst,) = cfg.instances
    assert inst.name == "VI_1"
    assert inst.interface == "eth1"
    assert inst.virtual_router_id == 51
    assert inst.priority == 150
    assert inst.advert_int == 1.0
    assert inst.virtual_ipaddress == ("192.168.56.100/24",)
    assert inst.preempt is True
    assert inst.preempt_delay == 0.0
    assert inst.unicast_src_ip == ""
    assert list(inst.unicast_peers) == []
    assert inst.track_scripts == ("gateway",)
    assert inst.notify_master == inst.notify == ""
    assert inst.notify_timeout == 10.0
    assert (inst.garp_master_delay, inst.garp_master_repeat, inst.garp_master_refresh) == (5.0, 5, 0.0)


def test_defaults(tmp_path: Path) -> None:
    cfg = vrrp_config.load(write(tmp_path, MINIMAL))
    assert cfg.log_level == "info"
    assert cfg.status_addr == ("127.0.0.1", 9110)
    assert cfg.track_scripts == ()
    (inst,) = cfg.instances
    assert inst.priority == 100
    assert inst.advert_int == 1.0
    assert inst.preempt is True
    assert inst.track_scripts == ()
    assert inst.garp_master_delay == 5.0


def test_load_from_data_without_a_file() -> None:
    cfg = vrrp_config.load(data=copy.deepcopy(MINIMAL))
    assert cfg.instances[0].virtual_router_id == 51


def test_boundaries_accepted(tmp_path: Path) -> None:
    data = copy.deepcopy(MINIMAL)
    data["instances"][0].update(virtual_router_id=255, priority=255, advert_int=40.95)
    data["instances"].append(
        {
            "name": "VI_2",
            "interface": "eth1",
            "virtual_router_id": 1,
            "priority": 1,
            "advert_int": 0.01,
            "virtual_ipaddress": ["10.0.0.1", "10.0.0.2/8"],
            "unicast_src_ip": "192.168.56.11",
            "unicast_peers": ["192.168.56.12"],
            "notify_master": "/usr/local/bin/notify 'a b' \"c\"",
        }
    )
    cfg = vrrp_config.load(write(tmp_path, data))
    assert [i.virtual_router_id for i in cfg.instances] == [255, 1]
    assert cfg.instances[1].advert_int == 0.01


def test_same_vrid_on_two_interfaces_is_fine(tmp_path: Path) -> None:
    data = copy.deepcopy(MINIMAL)
    data["instances"].append({**data["instances"][0], "name": "VI_2", "interface": "eth2"})
    assert len(vrrp_config.load(write(tmp_path, data)).instances) == 2


def test_empty_status_addr_disables_the_status_server(tmp_path: Path) -> None:
    assert not vrrp_config.load(write(tmp_path, {**MINIMAL, "status_addr": ""})).status_addr


@pytest.mark.parametrize("peers", [None, [], ["192.168.56.12"]])
def test_list_values_load_as_tuples(tmp_path: Path, peers: list[str] | None) -> None:
    # The common loader promises tuples ("so the loaded configuration is truly immutable"), also when
    # a validator runs: an empty list (or the default) must not come back as a mutable [].
    data = copy.deepcopy(MINIMAL)
    if peers is not None:
        data["instances"][0]["unicast_peers"] = peers
    cfg = vrrp_config.load(write(tmp_path, data))
    inst = cfg.instances[0]
    for key in ("virtual_ipaddress", "unicast_peers", "track_scripts"):
        assert isinstance(inst[key], tuple), f"instances.0.{key} = {inst[key]!r}"
    hash(cfg)  # a frozen Config hashes; a list inside it does not


def test_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vrrp_config.CONFIG_ENV, raising=False)
    assert vrrp_config.config_path() == "/etc/agenda/vrrp/vrrpd.yml"
    monkeypatch.setenv(vrrp_config.CONFIG_ENV, "/srv/x.yml")
    assert vrrp_config.config_path() == "/srv/x.yml"
    assert vrrp_config.config_path("/srv/y.yml") == "/srv/y.yml"


# ---------------------------------------------------------------- refused, naming the key


def with_instance(**changes: Any) -> dict[str, Any]:
    data = sample()
    data["instances"][0].update(changes)
    return data


def with_track(**changes: Any) -> dict[str, Any]:
    data = sample()
    data["track_scripts"][0].update(changes)
    return data


def test_a_track_script_may_be_an_in_process_get(tmp_path: Path) -> None:
    url = "https://192.168.56.11/v1/health"
    cfg = vrrp_config.load(write(tmp_path, with_track(script="", http_get=url, cafile="/etc/ca.crt")))
    assert (cfg.track_scripts[0].http_get, cfg.track_scripts[0].cafile) == (url, "/etc/ca.crt")
    assert cfg.track_scripts[0].script == ""


def without_instance_key(key: str) -> dict[str, Any]:
    data = sample()
    del data["instances"][0][key]
    return data


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"log_level": "info"}, "instances", "at least 1"),
        ({**MINIMAL, "instances": []}, "instances", "at least 1"),
        ({**MINIMAL, "instances": "VI_1"}, "instances", "list"),
        ({**MINIMAL, "instances": {"name": "VI_1"}}, "instances", "list"),
        ({**MINIMAL, "instances": ["VI_1"]}, "instances.0", "mapping"),
        (without_instance_key("virtual_router_id"), "instances.0.virtual_router_id", "missing"),
        (without_instance_key("interface"), "instances.0.interface", "missing"),
        (without_instance_key("virtual_ipaddress"), "instances.0.virtual_ipaddress", "missing"),
        (with_instance(virtual_router_id=0), "instances.0.virtual_router_id", ">= 1"),
        (with_instance(virtual_router_id=256), "instances.0.virtual_router_id", "<= 255"),
        (with_instance(virtual_router_id="fifty"), "instances.0.virtual_router_id", "integer"),
        (with_instance(priority=0), "instances.0.priority", ">= 1"),
        (with_instance(priority=256), "instances.0.priority", "<= 255"),
        (with_instance(advert_int=0.001), "instances.0.advert_int", ">= 0.01"),
        (with_instance(advert_int=41), "instances.0.advert_int", "<= 40.95"),
        (with_instance(virtual_ipaddress=["192.168.56.300"]), "instances.0.virtual_ipaddress", "IPv4"),
        (with_instance(virtual_ipaddress=["fe80::1"]), "instances.0.virtual_ipaddress", "IPv4"),
        (with_instance(virtual_ipaddress=["192.168.56.100/33"]), "instances.0.virtual_ipaddress", "IPv4"),
        (with_instance(virtual_ipaddress=[]), "instances.0.virtual_ipaddress", "at least one"),
        (
            with_instance(virtual_ipaddress=["192.168.56.100", "192.168.56.100"]),
            "instances.0.virtual_ipaddress",
            "twice",
        ),
        (
            with_instance(virtual_ipaddress=["192.168.56.100/24", "192.168.56.100/32"]),
            "instances.0.virtual_ipaddress",
            "twice",
        ),
        (with_instance(unicast_src_ip="192.168.56"), "instances.0.unicast_src_ip", ""),
        (with_instance(unicast_peers=["peer"]), "instances.0.unicast_peers", ""),
        (with_instance(preempt="maybe"), "instances.0.preempt", "boolean"),
        (with_instance(track_scripts=["gateway", "db"]), "instances.0.track_scripts", "'db'"),
        (with_instance(notify_master="/bin/notify 'unclosed"), "instances.0.notify_master", "quotation"),
        (with_instance(notify='"'), "instances.0.notify", "quotation"),
        (with_instance(notify_fault="   "), "instances.0.notify_fault", "empty"),
        ({**sample(), "status_addr": "localhost"}, "status_addr", "host:port"),
        ({**sample(), "status_addr": "127.0.0.1:99999"}, "status_addr", "65535"),
        ({**sample(), "status_addr": "127.0.0.1:http"}, "status_addr", "number"),
        ({**sample(), "log_level": "verbose"}, "log_level", "one of"),
        (with_track(script=""), "track_scripts.0.script", "exactly one of script and http_get"),
        (with_track(http_get="https://192.168.56.11/v1/health"), "track_scripts.0.script", "exactly one"),
        (with_track(script="", http_get="ftp://192.168.56.11/"), "track_scripts.0.http_get", "http://"),
        (with_track(script="", http_get="https:///v1/health"), "track_scripts.0.http_get", "URL"),
        (
            with_track(script="", http_get="http://192.168.56.11/v1/health", cafile="/etc/ca.crt"),
            "track_scripts.0.cafile",
            "https",
        ),
    ],
)
def test_refused_naming_the_key(tmp_path: Path, data: dict[str, Any], key: str, reason: str) -> None:
    error = refused(tmp_path, data)
    assert error.key == key, error
    assert reason in error.reason, error
    assert str(error).startswith(f"{key}: ")


def test_unknown_instance_key_with_a_suggestion(tmp_path: Path) -> None:
    data = sample()
    data["instances"][0]["virtual_router"] = 51
    error = refused(tmp_path, data)
    assert error.key == "instances.0.virtual_router"
    assert "unknown key" in error.reason
    assert "did you mean 'virtual_router_id'?" in error.reason


def test_unknown_top_level_key_with_a_suggestion(tmp_path: Path) -> None:
    data = sample()
    data["instance"] = data.pop("instances")
    error = refused(tmp_path, data)
    assert error.key == "instance"
    assert "did you mean 'instances'?" in error.reason


def test_unknown_track_script_key(tmp_path: Path) -> None:
    data = sample()
    data["track_scripts"][0]["weigth"] = 10
    error = refused(tmp_path, data)
    assert error.key == "track_scripts.0.weigth"
    assert "did you mean 'weight'?" in error.reason


def test_duplicate_instance_name(tmp_path: Path) -> None:
    data = sample()
    data["instances"].append({**data["instances"][0], "virtual_router_id": 52})
    error = refused(tmp_path, data)
    assert error.key == "instances.1.name"
    assert "duplicate" in error.reason
    assert "VI_1" in error.reason


def test_same_vrid_twice_on_one_interface(tmp_path: Path) -> None:
    data = sample()
    data["instances"].append(
        {**data["instances"][0], "name": "VI_2", "virtual_ipaddress": ["192.168.56.101"]}
    )
    error = refused(tmp_path, data)
    assert error.key == "instances.1.virtual_router_id"
    assert "instances.0" in error.reason
    assert "51" in error.reason
    assert "eth1" in error.reason


def test_duplicate_track_script_name(tmp_path: Path) -> None:
    data = sample()
    data["track_scripts"].append(dict(data["track_scripts"][0]))
    error = refused(tmp_path, data)
    assert error.key == "track_scripts.1.name"


def test_errors_in_a_later_item_name_its_index(tmp_path: Path) -> None:
    data = sample()
    data["instances"].append(
        {"name": "VI_2", "interface": "eth1", "virtual_router_id": 52, "virtual_ipaddress": ["10.0.0.1"]}
    )
    data["instances"].append({**data["instances"][1], "name": "VI_3", "virtual_router_id": 53, "priority": 0})
    error = refused(tmp_path, data)
    assert error.key == "instances.2.priority"


def test_track_script_bounds(tmp_path: Path) -> None:
    for field, value in [("fall", 0), ("rise", 0), ("weight", 254), ("weight", -254), ("interval", 0)]:
        data = sample()
        data["track_scripts"][0][field] = value
        assert refused(tmp_path, data).key == f"track_scripts.0.{field}"
    data = sample()
    data["track_scripts"][0]["script"] = "check 'unclosed"
    assert refused(tmp_path, data).key == "track_scripts.0.script"


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        vrrp_config.load(tmp_path / "missing.yml")
    assert refused(tmp_path, "instances: [\n").key == ""
    assert refused(tmp_path, "- a list\n").key == ""
    # Duplicate keys are refused rather than silently resolved (last wins) by PyYAML.
    assert "duplicate key" in refused(tmp_path, SAMPLE + "log_level: debug\n").reason


# ---------------------------------------------------------------- the CLI's check-config


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SAMPLE)
    assert cli.main(["--config", str(path), "check-config"]) == 0
    assert "1 instance(s), OK" in capsys.readouterr().out


def test_check_config_refused_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, with_instance(priority=256))
    assert cli.main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("vrrpd: config: instances.0.priority: ")
