"""The gunicorn factories read their settings from the file their environment variable names."""

import os
from pathlib import Path

import pytest
import yaml

from agenda.common.config import ConfigError
from agenda.groups import cli as groups_cli

SECRET = "0123456789abcdef-secret"


def test_factory_loads_the_file_named_by_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "groups.yml"
    settings = {"db_urls": ["http://127.0.0.1:1"], "gateway_secret": SECRET, "tls": {"enabled": False}}
    config.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("AGENDA_GROUPS_CONFIG", str(config))

    app = groups_cli.wsgi()

    assert app.name == "agenda.groups"
    # Set aside while loading only: a re-executed gunicorn must find it again.
    assert os.environ["AGENDA_GROUPS_CONFIG"] == str(config)


def test_factory_still_refuses_an_unknown_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "groups.yml"
    config.write_text(yaml.safe_dump({"db_urls": ["http://127.0.0.1:1"], "gateway_secret": SECRET}))
    monkeypatch.setenv("AGENDA_GROUPS_CONFIG", str(config))
    monkeypatch.setenv("AGENDA_GROUPS_LISTENN", "127.0.0.1:1")

    with pytest.raises(ConfigError) as info:
        groups_cli.wsgi()

    assert info.value.key == "AGENDA_GROUPS_LISTENN"
