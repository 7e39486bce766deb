"""agenda-groups configuration: bad settings fail at start naming the key."""

import pytest

from agenda.common.config import ConfigError
from agenda.groups import cli

BASE = ["--db-url", "http://127.0.0.1:1", "--gateway-secret", "0123456789abcdef-x"]


def test_loads_and_builds() -> None:
    cfg = cli.load([*BASE, "--no-tls"])
    assert cli.build_app(cfg).test_client().get("/v1/health").status_code == 200


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["--no-tls", "--db-url", "x"], "db_urls"),
        (["--no-tls", "--gateway-secret", "short"], "gateway_secret"),
        ([], "tls.cert"),
        (["--no-tls", "--listen", "127.0.0.1:99999"], "listen"),
    ],
)
def test_bad_settings_name_the_key(argv: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        cli.load([*BASE, *argv])
    assert info.value.key == key


def test_main_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(BASE) == 2
    assert "tls.cert" in capsys.readouterr().err
