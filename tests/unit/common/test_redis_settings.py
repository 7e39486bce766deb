"""The ``redis`` settings of agenda-users and agenda-groups: off by default, checked at start when on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import flask
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import agenda.messaging
from agenda.common.config import Config, ConfigError
from agenda.common.service import shutdown
from agenda.groups import cli as groups_cli
from agenda.messaging import Announcer
from agenda.users import cli as users_cli

SECRET = "0123456789abcdef-secret"


@pytest.fixture
def signing_key(tmp_path: Path) -> Path:
    path = tmp_path / "k.pem"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


@pytest.fixture(params=["users", "groups"])
def service(request: pytest.FixtureRequest, signing_key: Path, tmp_path: Path) -> Callable[..., Any]:
    """``service() -> (load, build, stores)`` for one service; ``load(settings)`` writes its config file."""

    def load(settings: dict[str, Any]) -> Config:
        base: dict[str, Any] = {"db_urls": ["http://127.0.0.1:1"], "gateway_secret": SECRET}
        if request.param == "users":
            base["signing_key"] = str(signing_key)
        path = tmp_path / "service.yaml"
        path.write_text(yaml.safe_dump({**base, **settings}))
        cli = users_cli if request.param == "users" else groups_cli
        return cli.load(["--config", str(path)])

    def build(cfg: Config) -> flask.Flask:
        cli = users_cli if request.param == "users" else groups_cli
        return cli.build_app(cfg)

    def stores(app: flask.Flask) -> list[Any]:
        """Every store the app's views use."""
        if request.param == "users":
            return [app.extensions["agenda.users"].store]
        deps = app.extensions["agenda.groups"]
        return [deps.groups, deps.events]

    return lambda: (load, build, stores)


class FakeLocator:
    """Stands for `RedisLocator`: records how it was made and whether it was closed (no DB, no Redis)."""

    made: ClassVar[list[FakeLocator]] = []

    def __init__(self, db: Any, **kwargs: Any) -> None:
        self.db, self.kwargs, self.closed = db, kwargs, False
        FakeLocator.made.append(self)

    def close(self, join_timeout: float = 2.0) -> None:
        self.closed = True


@pytest.fixture
def locators(monkeypatch: pytest.MonkeyPatch) -> list[FakeLocator]:
    FakeLocator.made = []
    monkeypatch.setattr(agenda.messaging, "RedisLocator", FakeLocator)
    return FakeLocator.made


NO_TLS = {"tls": {"enabled": False}}
REDIS = {"enabled": True, "username": "agenda-users", "password": "redis-secret-1"}


def test_disabled_by_default_builds_the_stores_as_before(service: Any, locators: list) -> None:
    load, build, stores = service()
    cfg = load(NO_TLS)
    assert cfg.redis.enabled is False
    app = build(cfg)
    assert all(store.announce is None for store in stores(app))
    assert "agenda.shutdown" not in app.extensions
    assert locators == []


@pytest.mark.parametrize("missing", ["username", "password"])
def test_enabled_needs_credentials(service: Any, missing: str) -> None:
    load, _build, _stores = service()
    redis = {k: v for k, v in REDIS.items() if k != missing}
    with pytest.raises(ConfigError) as info:
        load({**NO_TLS, "redis": {**redis, "tls": False}})
    assert info.value.key == f"redis.{missing}"


def test_tls_to_redis_is_on_by_default_and_needs_the_services_files(service: Any) -> None:
    load, _build, _stores = service()
    with pytest.raises(ConfigError) as info:
        load({**NO_TLS, "redis": REDIS})
    assert info.value.key == "tls.cert"
    assert "redis.tls" in info.value.reason


def test_the_password_is_a_secret(service: Any) -> None:
    load, _build, _stores = service()
    cfg = load({**NO_TLS, "redis": {**REDIS, "tls": False}})
    assert "redis-secret-1" not in repr(cfg)
    assert cfg.redis.password == "redis-secret-1"


def test_enabled_builds_an_announcer_for_every_store_and_closes_it_on_shutdown(
    service: Any, locators: list, tmp_path: Path
) -> None:
    load, build, stores = service()
    files = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "ca")}
    for path in files.values():
        path.write_text("PEM\n")  # only named here; the locator reads them when it connects
    tls = {"enabled": False, **{name: str(path) for name, path in files.items()}}
    cfg = load({"tls": tls, "redis": {**REDIS, "publish_deadline": 1.5, "queue_size": 7}})
    app = build(cfg)
    assert locators == []  # built in the worker that announces first, never in gunicorn's master
    announce = stores(app)[0].announce
    _, announcer = announce.messaging.get()
    (locator,) = locators
    assert locator.kwargs == {
        "username": "agenda-users",
        "password": "redis-secret-1",
        "ssl_ca_certs": str(files["ca"]),
        "ssl_certfile": str(files["cert"]),
        "ssl_keyfile": str(files["key"]),
    }
    assert isinstance(announcer, Announcer)
    assert all(store.announce is announce for store in stores(app))  # one queue per service
    assert all(store.db is locator.db for store in stores(app))  # found through the service's DB client
    assert announcer.queue_size == 7
    assert announcer._publisher.deadline == 1.5
    shutdown(app)
    assert locator.closed
    announcer([])  # closed: takes nothing (and does not raise)
    shutdown(app)  # once only


def test_plain_redis_without_tls_files(service: Any, locators: list) -> None:
    load, build, _stores = service()
    app = build(load({**NO_TLS, "redis": {**REDIS, "tls": False}}))
    _stores(app)[0].announce.messaging.get()
    (locator,) = locators
    assert "ssl_certfile" not in locator.kwargs
    shutdown(app)


def test_environment_overrides_reach_the_section(service: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    load, _build, _stores = service()
    monkeypatch.setenv("AGENDA_USERS_REDIS__ENABLED", "true")
    monkeypatch.setenv("AGENDA_GROUPS_REDIS__ENABLED", "true")
    with pytest.raises(ConfigError) as info:
        load(NO_TLS)
    assert info.value.key == "redis.username"


def test_serving_ends_with_the_shutdown_steps(
    service: Any, locators: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agenda.common import service as common_service

    load, build, stores = service()
    cfg = load({**NO_TLS, "redis": {**REDIS, "tls": False}})
    app = build(cfg)
    stores(app)[0].announce.messaging.get()
    monkeypatch.setattr(common_service, "serve_wsgi", lambda *_args: 0)  # "served until SIGTERM"
    assert common_service.serve(app, cfg, "agenda-test") == 0
    assert locators[0].closed


def test_a_gunicorn_worker_runs_them_at_exit(
    service: Any, locators: list, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from agenda.common import service as common_service

    registered: list[Any] = []
    monkeypatch.setattr(common_service.atexit, "register", lambda *args: registered.append(args))
    load, build, stores = service()
    cfg = load({**NO_TLS, "redis": {**REDIS, "tls": False}})
    app = common_service.wsgi_app("agenda-test", "AGENDA_TEST_CONFIG", lambda _argv: cfg, build)
    stores(app)[0].announce.messaging.get()
    assert registered == [(shutdown, app)]
    shutdown(app)
    assert locators[0].closed


def test_what_starts_threads_is_built_once_per_process_and_again_after_a_fork():
    """gunicorn forks its workers from a master that loaded the app: the announcer must be built in
    the worker (threads and held locks do not survive a fork)."""
    import os

    from agenda.common.service import PerProcess

    built: list[int] = []

    def make() -> int:
        built.append(os.getpid())
        return len(built)

    per_process = PerProcess(make)
    assert per_process.built is None
    assert per_process.get() == 1
    assert per_process.get() == 1  # once per process
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: nothing inherited, built again on first use
        os.close(read_end)
        os.write(write_end, f"{per_process.built} {per_process.get()} {built[-1] == os.getpid()}".encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        report = reader.read()
    os.waitpid(child, 0)
    assert report == "None 2 True"
    assert per_process.get() == 1  # the parent keeps its own
