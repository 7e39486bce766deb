"""SectionList: a list of mappings sharing one schema, each item checked and named by its index."""

import json
from pathlib import Path

import pytest

from agenda.common.config import Config, ConfigError, Field, Section, SectionList, load_config

ITEM = [
    Field("name", str),
    Field("priority", int, default=100, min=1, max=255),
    Field("peers", list[str], default=()),
    Field("token", str, default="", secret=True),
    Section("timers", [Field("interval", float, default=1.0, min=0.01)]),
]

SCHEMA = [
    Field("log_level", str, default="info"),
    SectionList("instances", ITEM, min_items=1, max_items=3),
    SectionList("scripts", [Field("name", str)]),
]


def load(data: dict, environ: dict | None = None, **kwargs: object) -> Config:
    return load_config(SCHEMA, data=data, env_prefix="AGENDA_T", environ=environ or {}, **kwargs)


def refused(data: dict, environ: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(data, environ)
    return info.value


def two() -> dict:
    return {"instances": [{"name": "a"}, {"name": "b", "priority": 7, "peers": ["x", "y"]}]}


def test_items_load_as_a_tuple_of_configs_with_defaults() -> None:
    cfg = load(two())
    assert isinstance(cfg.instances, tuple)
    assert all(isinstance(item, Config) for item in cfg.instances)
    first, second = cfg.instances
    assert (first.name, first.priority, first.peers, first.timers.interval) == ("a", 100, (), 1.0)
    assert (second.name, second.priority, second.peers) == ("b", 7, ("x", "y"))
    assert cfg.scripts == ()  # an absent list is its (empty) default
    assert cfg["instances"][1].priority == 7
    hash(cfg)


def test_null_list_is_empty() -> None:
    assert load({**two(), "scripts": None}).scripts == ()


def test_default_items_are_loaded_through_the_schema() -> None:
    schema = [
        SectionList("scripts", [Field("name", str), Field("fall", int, default=1)], default=[{"name": "a"}])
    ]
    cfg = load_config(schema, data={})
    assert cfg.scripts[0].name == "a"
    assert cfg.scripts[0].fall == 1


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("instances:\n  - name: a\n  - name: b\n    timers:\n      interval: 0.5\n")
    cfg = load_config(SCHEMA, path=path)
    assert [i.name for i in cfg.instances] == ["a", "b"]
    assert cfg.instances[1].timers.interval == 0.5


# ---------------------------------------------------------------- errors name the item by its index


@pytest.mark.parametrize(
    ("patch", "key", "fragment"),
    [
        ({"priority": 0}, "instances.1.priority", ">= 1"),
        ({"priority": 256}, "instances.1.priority", "<= 255"),
        ({"priority": "high"}, "instances.1.priority", "integer"),
        ({"peers": 3}, "instances.1.peers", "list"),
        ({"prio": 1}, "instances.1.prio", "did you mean 'priority'?"),
        ({"timers": {"interval": 0}}, "instances.1.timers.interval", ">= 0.01"),
        ({"timers": {"intervall": 1}}, "instances.1.timers.intervall", "did you mean 'interval'?"),
        ({"timers": 5}, "instances.1.timers", "mapping"),
    ],
)
def test_errors_are_keyed_by_index(patch: dict, key: str, fragment: str) -> None:
    data = two()
    data["instances"][1].update(patch)
    error = refused(data)
    assert error.key == key
    assert fragment in error.reason
    assert str(error).startswith(f"{key}: ")


def test_missing_required_key_in_an_item() -> None:
    error = refused({"instances": [{"name": "a"}, {"priority": 5}]})
    assert error.key == "instances.1.name"
    assert "missing" in error.reason


def test_the_first_bad_item_is_reported() -> None:
    error = refused({"instances": [{"name": "a", "priority": 0}, {"name": "b", "priority": 0}]})
    assert error.key == "instances.0.priority"


@pytest.mark.parametrize("item", ["a", 3, ["name", "a"], True])
def test_an_item_that_is_not_a_mapping(item: object) -> None:
    error = refused({"instances": [{"name": "a"}, item]})
    assert error.key == "instances.1"
    assert "mapping" in error.reason


@pytest.mark.parametrize("value", ["a", 3, {"name": "a"}])
def test_a_list_that_is_not_a_list(value: object) -> None:
    error = refused({"instances": value})
    assert error.key == "instances"
    assert "list" in error.reason


def test_min_items() -> None:
    error = refused({})
    assert error.key == "instances"
    assert "at least 1" in error.reason
    assert refused({"instances": []}).key == "instances"
    assert refused({"instances": None}).key == "instances"


def test_max_items() -> None:
    error = refused({"instances": [{"name": str(i)} for i in range(4)]})
    assert error.key == "instances"
    assert "at most 3" in error.reason
    assert len(load({"instances": [{"name": str(i)} for i in range(3)]}).instances) == 3


def test_secrets_inside_items_are_masked() -> None:
    data = two()
    data["instances"][0]["token"] = "s3cr3t-value"
    cfg = load(data)
    assert cfg.instances[0].token == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(cfg)
    assert "s3cr3t-value" not in str(cfg)
    data["instances"][0]["token"] = 123456789
    error = refused(data)
    assert error.key == "instances.0.token"
    assert "123456789" not in str(error)


def test_as_dict_is_plain_and_masks_secrets_inside_items() -> None:
    data = two()
    data["instances"][0]["token"] = "s3cr3t-value"
    plain = load(data).as_dict()
    text = json.dumps(plain)  # plain means JSON-serialisable: no Config objects left inside
    assert "s3cr3t-value" not in text
    assert plain["instances"][1]["priority"] == 7
    assert plain["instances"][1]["timers"] == {"interval": 1.0}
    assert load(data).as_dict(reveal_secrets=True)["instances"][0]["token"] == "s3cr3t-value"


# ---------------------------------------------------------------- environment variables cannot reach lists


@pytest.mark.parametrize(
    "name",
    [
        "AGENDA_T_INSTANCES",
        "AGENDA_T_INSTANCES__0__PRIORITY",
        "AGENDA_T_INSTANCES__1__NAME",
        "AGENDA_T_SCRIPTS",
    ],
)
def test_env_vars_cannot_reach_into_a_list(name: str) -> None:
    error = refused(two(), {name: "5"})
    assert error.key == name
    assert "unknown environment variable" in error.reason


def test_env_vars_still_set_plain_fields_next_to_lists() -> None:
    cfg = load(two(), {"AGENDA_T_LOG_LEVEL": "debug"})
    assert cfg.log_level == "debug"
    assert cfg.instances[1].priority == 7


def test_dict_data_replaces_a_file_list_whole(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("instances:\n  - name: a\n  - name: b\n")
    cfg = load_config(SCHEMA, path=path, data={"instances": [{"name": "c"}]})
    assert [i.name for i in cfg.instances] == ["c"]


# ---------------------------------------------------------------- schema mistakes


def test_schema_mistakes_fail_when_declared() -> None:
    with pytest.raises(ValueError, match="snake_case"):
        SectionList("Instances", [Field("name", str)])
    with pytest.raises(ValueError, match="duplicate"):
        SectionList("instances", [Field("name", str), Field("name", int)])
    with pytest.raises(ValueError, match="duplicate"):
        load_config([Field("instances", str), SectionList("instances", [Field("name", str)])], data={})
    with pytest.raises(ValueError, match="clashes"):
        SectionList("as_dict", [Field("name", str)])


def test_a_section_may_hold_a_list() -> None:
    schema = [Section("vrrp", [SectionList("instances", [Field("name", str)], min_items=1)])]
    cfg = load_config(schema, data={"vrrp": {"instances": [{"name": "a"}]}})
    assert cfg["vrrp.instances"][0].name == "a"
    with pytest.raises(ConfigError) as info:
        load_config(schema, data={"vrrp": {"instances": [{"nam": "a"}]}})
    assert info.value.key == "vrrp.instances.0.nam"
    with pytest.raises(ConfigError) as info:
        load_config(schema, data={"vrrp": {}})
    assert info.value.key == "vrrp.instances"
