"""Configuration must fail at start, naming the key, and never echo secrets."""

import copy
from pathlib import Path

import pytest

from agenda.common.config import (
    REQUIRED,
    Config,
    ConfigError,
    Field,
    Section,
    existing_file,
    load_config,
    parse_bool,
    parse_hostport,
)

SCHEMA = [
    Field("api_addr", str, default="127.0.0.1:8000", validator=parse_hostport),
    Field("workers", int, default=2, min=1, max=64),
    Field("ratio", float, default=0.5, min=0.0, max=1.0),
    Field("debug", bool, default=False),
    Field("peers", list[str], default=[]),
    Field("log_level", str, default="INFO", choices=["DEBUG", "INFO", "WARNING"]),
    Field("jwt_secret", str, secret=True),
    Section(
        "tls",
        [
            Field("cert", str, validator=existing_file),
            Field("ca", str, default=None),
        ],
    ),
]


@pytest.fixture
def cert_file(tmp_path: Path) -> str:
    path = tmp_path / "cert.pem"
    path.write_text("not really a cert")
    return str(path)


def base(cert_file: str) -> dict:
    return {"jwt_secret": "s3cr3t-value", "tls": {"cert": cert_file}}


def load(data: dict, environ: dict | None = None, **kwargs: object) -> Config:
    return load_config(SCHEMA, data=data, env_prefix="AGENDA_DB", environ=environ or {}, **kwargs)


def test_defaults_and_attribute_access(cert_file: str) -> None:
    cfg = load(base(cert_file))
    assert cfg.api_addr == ("127.0.0.1", 8000)
    assert cfg.workers == 2
    assert cfg.debug is False
    assert cfg.peers == ()
    assert cfg.tls.cert == cert_file
    assert cfg.tls.ca is None
    assert cfg["tls.cert"] == cert_file
    assert "tls.cert" in cfg
    assert "tls.nope" not in cfg


def test_config_is_frozen(cert_file: str) -> None:
    cfg = load(base(cert_file))
    with pytest.raises(AttributeError):
        cfg.workers = 3
    with pytest.raises(AttributeError, match="no config key 'nope'"):
        _ = cfg.nope


def test_yaml_file_then_dict_then_env_precedence(tmp_path: Path, cert_file: str) -> None:
    path = tmp_path / "db.yaml"
    path.write_text(f"workers: 4\nratio: 0.25\njwt_secret: x\ntls:\n  cert: {cert_file}\n")
    cfg = load_config(
        SCHEMA,
        path=path,
        data={"ratio": 0.75},
        env_prefix="AGENDA_DB",
        environ={"AGENDA_DB_WORKERS": "8", "OTHER_WORKERS": "99"},
    )
    assert cfg.workers == 8
    assert cfg.ratio == 0.75
    assert cfg.tls.cert == cert_file


def test_env_coercion_including_nested_keys(tmp_path: Path, cert_file: str) -> None:
    other = tmp_path / "other.pem"
    other.write_text("x")
    cfg = load(
        base(cert_file),
        {
            "AGENDA_DB_API_ADDR": "[::1]:9000",
            "AGENDA_DB_DEBUG": "yes",
            "AGENDA_DB_PEERS": "a:1, b:2,,c:3",
            "AGENDA_DB_RATIO": "1",
            "AGENDA_DB_TLS__CERT": str(other),
        },
    )
    assert cfg.api_addr == ("::1", 9000)
    assert cfg.debug is True
    assert cfg.peers == ("a:1", "b:2", "c:3")
    assert cfg.ratio == 1.0
    assert cfg.tls.cert == str(other)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("No", False),
    ],
)
def test_parse_bool(text: str, expected: bool) -> None:
    assert parse_bool(text) is expected


def test_missing_required_key_is_named(cert_file: str) -> None:
    with pytest.raises(ConfigError) as info:
        load({"tls": {"cert": cert_file}})
    assert info.value.key == "jwt_secret"
    assert str(info.value) == "jwt_secret: required key is missing"


def test_missing_nested_required_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^tls\.cert: required key is missing"):
        load({"jwt_secret": "x"})


def test_unknown_key_suggests_the_close_one(cert_file: str) -> None:
    data = base(cert_file) | {"wokers": 3}
    with pytest.raises(ConfigError) as info:
        load(data)
    assert info.value.key == "wokers"
    assert "did you mean 'workers'?" in str(info.value)


def test_unknown_nested_key_is_named_with_full_path(cert_file: str) -> None:
    data = base(cert_file)
    data["tls"]["cret"] = "x"
    with pytest.raises(ConfigError, match=r"^tls\.cret: unknown key \(did you mean 'cert'\?\)"):
        load(data)


def test_unknown_env_var_with_prefix_is_rejected(cert_file: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(base(cert_file), {"AGENDA_DB_WORKRES": "3"})
    assert info.value.key == "AGENDA_DB_WORKRES"
    assert "AGENDA_DB_WORKERS" in info.value.reason


def test_env_var_naming_a_section_is_rejected(cert_file: str) -> None:
    with pytest.raises(ConfigError, match=r"^tls: AGENDA_DB_TLS names a section"):
        load(base(cert_file), {"AGENDA_DB_TLS": "x"})


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"workers": "many"}, "workers", "expected an integer"),
        ({"workers": True}, "workers", "expected an integer"),
        ({"workers": 1.5}, "workers", "expected an integer"),
        ({"workers": 0}, "workers", "must be >= 1"),
        ({"workers": 65}, "workers", "must be <= 64"),
        ({"ratio": 1.5}, "ratio", "must be <= 1.0"),
        ({"ratio": "nan"}, "ratio", "finite number"),
        ({"debug": "maybe"}, "debug", "expected a boolean"),
        ({"debug": 2}, "debug", "expected a boolean"),
        ({"peers": "a,b"}, "peers", None),  # a string is a valid comma list, not an error
        ({"peers": {"a": 1}}, "peers", "expected list of string"),
        ({"peers": ["a", 1]}, "peers", "item 1: expected a string"),
        ({"log_level": "TRACE"}, "log_level", "must be one of 'DEBUG', 'INFO', 'WARNING'"),
        ({"api_addr": "localhost"}, "api_addr", "expected host:port"),
        ({"api_addr": "::1:80"}, "api_addr", "IPv6 addresses must be bracketed"),
        ({"api_addr": 8000}, "api_addr", "quote it in YAML"),
        ({"tls": "cert.pem"}, "tls", "expected a mapping"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(
    cert_file: str, data: dict, key: str, fragment: str | None
) -> None:
    merged = base(cert_file) | data
    if fragment is None:
        load(merged)
        return
    with pytest.raises(ConfigError) as info:
        load(merged)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert fragment in info.value.reason


def test_env_error_says_which_variable(cert_file: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(base(cert_file), {"AGENDA_DB_WORKERS": "lots"})
    assert info.value.key == "workers"
    assert "AGENDA_DB_WORKERS" in info.value.reason


def test_existing_file_validator_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError) as info:
        load({"jwt_secret": "x", "tls": {"cert": str(missing)}})
    assert str(info.value) == f"tls.cert: file does not exist: {missing}"
    with pytest.raises(ConfigError, match="not a regular file"):
        load({"jwt_secret": "x", "tls": {"cert": str(tmp_path)}})


def test_secrets_never_appear_in_repr_str_as_dict_or_errors(cert_file: str) -> None:
    cfg = load(base(cert_file))
    assert cfg.jwt_secret == "s3cr3t-value"  # still usable by the service
    for text in (repr(cfg), str(cfg), str(cfg.as_dict())):
        assert "s3cr3t-value" not in text
        assert "***" in text
    assert cfg.as_dict(reveal_secrets=True)["jwt_secret"] == "s3cr3t-value"

    schema = [Field("pin", int, secret=True)]
    with pytest.raises(ConfigError) as info:
        load_config(schema, data={"pin": "hunter2"})
    assert "hunter2" not in str(info.value)


def test_yaml_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file does not exist"):
        load_config(SCHEMA, path=tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SCHEMA, path=bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("workers: 1\nworkers: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'workers'"):
        load_config(SCHEMA, path=dup)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="must contain a mapping"):
        load_config(SCHEMA, path=scalar)


def test_empty_yaml_section_means_defaults(tmp_path: Path) -> None:
    schema = [Section("tls", [Field("ca", str, default=None)])]
    path = tmp_path / "c.yaml"
    path.write_text("tls:\n")
    assert load_config(schema, path=path).tls.ca is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("db-1.agenda.internal:443", ("db-1.agenda.internal", 443)),
        ("[::1]:80", ("::1", 80)),
        ("[fe80::1]:65535", ("fe80::1", 65535)),
    ],
)
def test_parse_hostport_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("127.0.0.1", "expected host:port"),
        (":80", "expected host:port"),
        ("host:http", "port must be a number"),
        ("host:0", "between 1 and 65535"),
        ("host:70000", "between 1 and 65535"),
        ("[::1]80", "expected [ipv6]:port"),
        ("[nothex]:80", "not a valid IPv6 address"),
        ("bad host:80", "not a valid host name"),
    ],
)
def test_parse_hostport_rejects_naming_the_key(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_hostport(text, key="gateway.listen")
    assert info.value.key == "gateway.listen"
    assert fragment in info.value.reason


def test_parse_hostport_port_zero_for_listeners() -> None:
    assert parse_hostport("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)


def test_schema_mistakes_fail_when_declared() -> None:
    with pytest.raises(TypeError, match="unsupported type"):
        Field("x", dict)
    with pytest.raises(TypeError, match="min/max"):
        Field("x", str, min=1)
    with pytest.raises(ValueError, match="snake_case"):
        Field("Bad-Name", str)
    with pytest.raises(ValueError, match="clashes"):
        Field("as_dict", str)
    with pytest.raises(ValueError, match="duplicate"):
        Section("s", [Field("a", str), Field("a", int)])
    assert Field("x", str).required
    assert Field("x", str).default is REQUIRED


def test_config_error_copies_with_key_and_reason() -> None:
    err = copy.deepcopy(ConfigError("tls.cert", "gone"))  # uses __reduce__, like pickling
    assert (err.key, err.reason, str(err)) == ("tls.cert", "gone", "tls.cert: gone")


def test_section_schema_and_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENDA_T_PORT", "81")
    schema = Section("svc", [Field("port", int, default=80)])
    assert load_config(schema, env_prefix="AGENDA_T").port == 81
