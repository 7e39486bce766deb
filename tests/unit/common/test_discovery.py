"""The view-file contract between the gossip daemon and the gateway: format, validation, routing rules,
and the cached, failure-tolerant reader. Clocks and stat are injected: no sleeps."""

import json
import logging
import os
import stat as stat_module
from pathlib import Path
from typing import Any

import pytest

from agenda.common.discovery import (
    Discovery,
    StaticDiscovery,
    ViewFileDiscovery,
    ViewMember,
    read_view,
    routable,
    write_view,
)

LOGGER = "agenda.common.discovery"


def member(name: str, **overrides: Any) -> ViewMember:
    fields: dict[str, Any] = {
        "name": name,
        "addr": f"10.0.0.{len(name)}:7946",
        "incarnation": 0,
        "status": "alive",
        "service": "users",
        "api_url": f"http://{name}:8080",
        "version": "1.0",
        "state": "serving",
    }
    fields.update(overrides)
    return ViewMember(**fields)


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


class CountingStat:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Any) -> os.stat_result:
        self.calls += 1
        return os.stat(path)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


# --- write_view / read_view ------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "view.json"
    members = [member("users-1"), member("gw-1", service="gateway", api_url="", status="suspect")]
    write_view(path, "gw-1", members, now=lambda: 1234.5)
    assert read_view(path) == ("gw-1", 1234.5, tuple(members))
    document = json.loads(path.read_text())
    assert document["format"] == 1
    assert document["members"][0]["addr"] == "10.0.0.7:7946"


def test_write_is_readable_by_others_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "view.json"
    write_view(path, "a", [member("a")])
    write_view(path, "a", [member("a"), member("b")])  # replaces the existing file
    assert stat_module.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["view.json"]
    assert len(read_view(path)[2]) == 2


def test_failed_write_removes_its_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep").write_text("x")  # a non-empty directory: os.replace cannot replace it
    with pytest.raises(IsADirectoryError):
        write_view(target, "a", [member("a")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]


def valid_document() -> dict[str, Any]:
    return {
        "format": 1,
        "member": "gw-1",
        "written": 100.0,
        "members": [
            {
                "name": f"users-{i}",
                "addr": f"10.0.0.{i}:7946",
                "incarnation": 3,
                "status": "alive",
                "service": "users",
                "api_url": f"https://users-{i}:8443/api",
                "version": "1.0",
                "state": "serving",
            }
            for i in range(3)
        ],
    }


def set_member(index: int, key: str, value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        doc["members"][index][key] = value

    return mutate


def drop_member_key(index: int, key: str) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        del doc["members"][index][key]

    return mutate


def set_top(key: str, value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        doc[key] = value

    return mutate


def drop_top(key: str) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        del doc[key]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (set_top("format", 2), r"^format must be 1, got 2"),
        (set_top("format", True), r"^format must be 1, got True"),
        (drop_top("format"), r"^format is missing"),
        (set_top("member", ""), r"^member must be a non-empty string"),
        (set_top("member", 7), r"^member must be a non-empty string"),
        (drop_top("member"), r"^member is missing"),
        (set_top("written", "yesterday"), r"^written must be a finite number"),
        (set_top("written", float("inf")), r"^written must be a finite number"),
        (set_top("written", -1), r"^written must be a finite number"),
        (drop_top("written"), r"^written is missing"),
        (set_top("members", {}), r"^members must be a list"),
        (drop_top("members"), r"^members is missing"),
        (
            set_member(1, "status", "zombie"),
            r"^members\[1\]\.status must be one of alive, suspect, dead, left",
        ),
        (set_member(2, "name", ""), r"^members\[2\]\.name must be a non-empty string"),
        (set_member(2, "name", "users-0"), r"^members\[2\]\.name 'users-0' duplicates members\[0\]"),
        (set_member(0, "addr", "no-port"), r"^members\[0\]\.addr must be 'host:port'"),
        (set_member(0, "addr", "h:70000"), r"^members\[0\]\.addr must be 'host:port'"),
        (set_member(0, "incarnation", -1), r"^members\[0\]\.incarnation must be an integer >= 0"),
        (set_member(0, "incarnation", 1.5), r"^members\[0\]\.incarnation must be an integer >= 0"),
        (set_member(0, "incarnation", True), r"^members\[0\]\.incarnation must be an integer >= 0"),
        (set_member(1, "service", None), r"^members\[1\]\.service must be a string"),
        (set_member(1, "version", 1), r"^members\[1\]\.version must be a string"),
        (set_member(1, "state", ["serving"]), r"^members\[1\]\.state must be a string"),
        (set_member(2, "api_url", "ftp://users-2"), r"^members\[2\]\.api_url must be '' or an http\(s\)"),
        (set_member(2, "api_url", "users-2:8080"), r"^members\[2\]\.api_url must be '' or an http\(s\)"),
        (drop_member_key(1, "state"), r"^members\[1\]\.state is missing"),
    ],
)
def test_every_validation_error_names_the_key(tmp_path: Path, mutate: Any, message: str) -> None:
    document = valid_document()
    mutate(document)
    path = tmp_path / "view.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message):
        read_view(path)


def test_a_member_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    document = valid_document()
    document["members"][1] = "users-1"
    path = tmp_path / "view.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"^members\[1\] must be an object"):
        read_view(path)


@pytest.mark.parametrize(
    ("text", "message"), [("{not json", "not valid JSON"), ("[]", "view must be a JSON object")]
)
def test_a_file_that_is_not_a_view_object_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "view.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_view(path)


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    """A writer may add a field without a format change; older readers must keep working."""
    document = valid_document()
    document["datacenter"] = "east"
    document["members"][0]["weight"] = 3
    path = tmp_path / "view.json"
    path.write_text(json.dumps(document))
    assert read_view(path)[2][0].name == "users-0"


def test_a_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_view(tmp_path / "absent.json")


# --- routable ----------------------------------------------------------------------------------------


def test_routable_takes_alive_serving_members_of_the_service_sorted_by_name() -> None:
    members = [
        member("users-c"),
        member("users-a"),
        member("users-b", state="draining"),
        member("users-d", status="dead"),
        member("users-e", status="left"),
        member("users-f", status="suspect"),
        member("groups-a", service="groups"),
        member("users-g", api_url=""),
    ]
    assert routable(members, "users") == ("http://users-a:8080", "http://users-c:8080")
    assert routable(members, "groups") == ("http://groups-a:8080",)


def test_routable_falls_back_to_suspect_serving_members_only_when_none_is_alive() -> None:
    members = [
        member("users-b", status="suspect"),
        member("users-a", status="suspect"),
        member("users-c", status="suspect", state="draining"),
        member("users-d", status="dead"),
        member("users-e", status="alive", state="draining"),
    ]
    assert routable(members, "users") == ("http://users-a:8080", "http://users-b:8080")
    assert routable([*members, member("users-z")], "users") == ("http://users-z:8080",)


def test_routable_never_returns_dead_left_or_draining() -> None:
    members = [
        member("a", status="dead"),
        member("b", status="left"),
        member("c", state="draining"),
        member("d", status="suspect", state="starting"),
    ]
    assert routable(members, "users") == ()
    assert routable([], "users") == ()


# --- StaticDiscovery ---------------------------------------------------------------------------------


def test_static_discovery() -> None:
    static = StaticDiscovery(["http://a:1", "http://b:2"])
    assert static.urls() == ("http://a:1", "http://b:2")
    assert isinstance(static, Discovery)
    with pytest.raises(TypeError, match="list of URLs"):
        StaticDiscovery("http://a:1")


# --- ViewFileDiscovery -------------------------------------------------------------------------------


def test_reads_the_view_and_rereads_it_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "view.json"
    clock = FakeClock()
    write_view(path, "gw", [member("users-1"), member("groups-1", service="groups")])
    discovery = ViewFileDiscovery(path, "users", clock=clock, wall=lambda: 0.0)
    assert isinstance(discovery, Discovery)
    assert discovery.urls() == ("http://users-1:8080",)

    write_view(path, "gw", [member("users-2"), member("users-1", status="dead")])
    clock.now += 0.1
    assert discovery.urls() == ("http://users-2:8080",)


def test_does_not_stat_again_within_min_interval(tmp_path: Path) -> None:
    path = tmp_path / "view.json"
    write_view(path, "gw", [member("users-1")])
    clock, stat = FakeClock(), CountingStat()
    discovery = ViewFileDiscovery(path, "users", min_interval=1.0, clock=clock, stat=stat)
    assert discovery.urls() == ("http://users-1:8080",)
    assert stat.calls == 1

    write_view(path, "gw", [member("users-2")])
    reads_before = clock.reads
    for _ in range(5):
        clock.now += 0.125  # binary fractions: the sums below are exact
        assert discovery.urls() == ("http://users-1:8080",)  # the change is not seen yet
    assert stat.calls == 1
    assert clock.reads - reads_before == 5  # one clock read per call, nothing else

    clock.now += 0.375  # exactly min_interval since the last check
    assert discovery.urls() == ("http://users-2:8080",)
    assert stat.calls == 2


def test_does_not_reread_when_inode_mtime_and_size_are_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "view.json"
    write_view(path, "gw", [member("users-1")])
    frozen = os.stat(path)
    clock = FakeClock()
    discovery = ViewFileDiscovery(path, "users", min_interval=0, clock=clock, stat=lambda _p: frozen)
    assert discovery.urls() == ("http://users-1:8080",)
    write_view(path, "gw", [member("users-2")])  # content changed, but stat says it did not
    assert discovery.urls() == ("http://users-1:8080",)


def test_keeps_the_last_good_list_on_a_malformed_or_missing_file_and_warns_once_per_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    path = tmp_path / "view.json"
    clock = FakeClock()
    write_view(path, "gw", [member("users-1")])
    discovery = ViewFileDiscovery(path, "users", fallback=["http://static:1"], clock=clock, wall=lambda: 0.0)
    assert discovery.urls() == ("http://users-1:8080",)

    path.write_text('{"format": 1, "member": "gw"')
    for _ in range(3):
        clock.now += 1
        assert discovery.urls() == ("http://users-1:8080",)
    assert len(warnings(caplog)) == 1
    assert "malformed" in warnings(caplog)[0]
    assert "keeping the last good list" in warnings(caplog)[0]

    path.unlink()
    for _ in range(3):
        clock.now += 1
        assert discovery.urls() == ("http://users-1:8080",)
    assert len(warnings(caplog)) == 2
    assert "cannot stat" in warnings(caplog)[1]

    write_view(path, "gw", [member("users-3")])
    clock.now += 1
    assert discovery.urls() == ("http://users-3:8080",)

    path.unlink()  # the same problem as before, but after a recovery: worth a new warning
    clock.now += 1
    assert discovery.urls() == ("http://users-3:8080",)
    assert len(warnings(caplog)) == 3


def test_uses_the_fallback_before_a_first_good_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "view.json"
    clock = FakeClock()
    discovery = ViewFileDiscovery(path, "users", fallback=["http://static:1"], clock=clock, wall=lambda: 0.0)
    assert discovery.urls() == ("http://static:1",)
    assert discovery.written is None

    path.write_text("garbage")
    clock.now += 1
    assert discovery.urls() == ("http://static:1",)
    assert "using the fallback" in warnings(caplog)[-1]

    write_view(path, "gw", [member("users-1")], now=lambda: 50.0)
    clock.now += 1
    assert discovery.urls() == ("http://users-1:8080",)
    assert discovery.written == 50.0


def test_without_fallback_nothing_is_returned_before_a_good_read(tmp_path: Path) -> None:
    assert ViewFileDiscovery(tmp_path / "absent.json", "users").urls() == ()


def test_a_stale_view_is_still_used_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "view.json"
    clock, wall = FakeClock(), FakeClock(1000.0)
    write_view(path, "gw", [member("users-1")], now=lambda: 1000.0)
    discovery = ViewFileDiscovery(path, "users", stale_after=10.0, clock=clock, wall=wall)
    assert discovery.urls() == ("http://users-1:8080",)
    assert warnings(caplog) == []

    wall.now = 1011.0
    for _ in range(3):
        clock.now += 1
        assert discovery.urls() == ("http://users-1:8080",)
    assert len(warnings(caplog)) == 1
    assert "old" in warnings(caplog)[0]

    write_view(path, "gw", [member("users-1")], now=lambda: 1011.0)  # the daemon is back
    clock.now += 1
    discovery.urls()
    assert len(warnings(caplog)) == 1

    wall.now = 1030.0  # and stops again
    clock.now += 1
    assert discovery.urls() == ("http://users-1:8080",)
    assert len(warnings(caplog)) == 2


def test_a_view_with_no_routable_instance_returns_an_empty_list(tmp_path: Path) -> None:
    """Empty, not the fallback: the caller (HttpClient) decides what to do without instances."""
    path = tmp_path / "view.json"
    write_view(path, "gw", [member("users-1", state="draining")])
    discovery = ViewFileDiscovery(path, "users", fallback=["http://static:1"], wall=lambda: 0.0)
    assert discovery.urls() == ()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="list of URLs"):
        ViewFileDiscovery(tmp_path / "v.json", "users", fallback="http://a:1")
    with pytest.raises(ValueError, match="must be >= 0"):
        ViewFileDiscovery(tmp_path / "v.json", "users", min_interval=-1)
