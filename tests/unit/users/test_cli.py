"""Configuration of agenda-users and agenda-gateway: bad settings fail at start naming the key."""

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agenda.common.config import ConfigError
from agenda.gateway import cli as gateway_cli
from agenda.users import cli as users_cli

SECRET = "0123456789abcdef-secret"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def users_argv(private: Path, *extra: str) -> list[str]:
    base = ["--db-url", "http://127.0.0.1:1", "--signing-key", str(private), "--gateway-secret", SECRET]
    return [*base, "--no-tls", *extra]


def test_users_config_loads_and_builds_an_app(keys: tuple[Path, Path]) -> None:
    cfg = users_cli.load(users_argv(keys[0], "--token-ttl", "600"))
    assert cfg.token_ttl == 600
    assert SECRET not in repr(cfg)
    app = users_cli.build_app(cfg)
    assert app.config["MAX_CONTENT_LENGTH"] > 0


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["--db-url", "ftp://x"], "db_urls"),
        (["--token-ttl", "5"], "token_ttl"),
        (["--listen", "nohost"], "listen"),
        (["--gateway-secret", "short"], "gateway_secret"),
        (["--signing-key", "/nonexistent.pem"], "signing_key"),
    ],
)
def test_users_bad_settings_name_the_key(keys: tuple[Path, Path], argv: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        users_cli.load([*users_argv(keys[0]), *argv])
    assert info.value.key == key


def test_users_tls_needs_files_and_main_exits_2(
    keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--db-url", "http://127.0.0.1:1", "--signing-key", str(keys[0]), "--gateway-secret", SECRET]
    with pytest.raises(ConfigError) as info:
        users_cli.load(argv)
    assert info.value.key == "tls.cert"
    assert users_cli.main(argv) == 2
    assert "tls.cert" in capsys.readouterr().err


def test_users_signing_key_must_be_a_private_key(
    keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert users_cli.main(users_argv(keys[1])) == 2
    assert "signing_key" in capsys.readouterr().err


def test_users_config_file_is_read(keys: tuple[Path, Path], tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(
        f"db_urls: [http://127.0.0.1:1]\nsigning_key: {keys[0]}\ngateway_secret: {SECRET}\n"
        "tls: {enabled: false}\nbogus: 1\n"
    )
    with pytest.raises(ConfigError) as info:
        users_cli.load(["--config", str(path)])
    assert info.value.key == "bogus"


def gateway_argv(public: Path, *extra: str) -> list[str]:
    base = ["--users-url", "http://127.0.0.1:1", "--public-key", f"k1={public}", "--gateway-secret", SECRET]
    return [*base, "--no-tls", *extra]


def test_gateway_config_loads_and_builds_an_app(keys: tuple[Path, Path]) -> None:
    cfg = gateway_cli.load(gateway_argv(keys[1], "--login-limit", "3"))
    assert cfg.public_keys == (("k1", str(keys[1])),)
    app = gateway_cli.build_app(cfg)
    assert app.test_client().get("/v1/health").status_code == 200


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["--public-key", "nokid"], "public_keys"),
        (["--public-key", "k1=/missing.pem"], "public_keys"),
        (["--login-limit", "0"], "login_limit"),
        (["--users-url", "nope"], "users_urls"),
    ],
)
def test_gateway_bad_settings_name_the_key(keys: tuple[Path, Path], argv: list[str], key: str) -> None:
    base = gateway_argv(keys[1])
    if argv[0] in ("--public-key", "--users-url"):
        index = base.index(argv[0])
        base[index + 1] = argv[1]
        argv = []
    with pytest.raises(ConfigError) as info:
        gateway_cli.load([*base, *argv])
    assert info.value.key == key


def test_gateway_public_key_must_be_ed25519_public(
    keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = gateway_argv(keys[0])
    assert gateway_cli.main(argv) == 2
    assert "public_keys" in capsys.readouterr().err
