"""What every HTTP service's command line shares: settings fields, flags and their checks, and serving.

Each service (users, groups, gateway) adds its own fields and flags; these are the ones they have
in common, so a flag or a check means the same thing everywhere.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Final, Generic, TypeVar

from agenda.common.config import (
    Config,
    ConfigError,
    Field,
    Section,
    existing_file,
    load_config,
    parse_hostport,
)
from agenda.common.logs import configure_logging

T = TypeVar("T")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TLS_FILES: Final = ("cert", "key", "ca")


def hostport_validator(value: str) -> None:
    parse_hostport(value)


def urls_validator(value: tuple[str, ...]) -> None:
    """Every item an http(s) URL; an empty list is accepted (see :func:`required_urls_validator`)."""
    for index, url in enumerate(value):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"item {index} must be an http(s):// URL, got {url!r}")


def required_urls_validator(value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("at least one URL is required")
    urls_validator(value)


def tls_section(name: str = "tls", *, files: tuple[str, ...] = TLS_FILES, help: str = "") -> Section:
    """``enabled`` (default on) plus the PEM files a listener or client needs."""
    fields = [Field("enabled", bool, default=True)]
    fields += [Field(file, str, default=None, validator=existing_file) for file in files]
    return Section(name, fields, help=help)


def client_tls(section: Any) -> tuple[bool | str, tuple[str, str] | None]:
    """``(verify, cert)`` for an `HttpClient` from a TLS section: our CA and certificate when enabled.

    Disabled, the URLs are plain http:// and neither matters (verify stays on, the safe default).
    """
    if not section.enabled:
        return True, None
    return section.ca, (section.cert, section.key)


def redis_section() -> Section:
    """The ``redis`` settings of a service that publishes the notifications it stores (users, groups).

    Off by default. On, the service finds the Redis primary through the DB's record and publishes
    every committed notification there in the background; TLS (on by default) presents the service's
    own ``tls.cert``/``tls.key`` to Redis and checks Redis against ``tls.ca``.
    """
    fields = [
        Field("enabled", bool, default=False, help="publish committed notifications on Redis"),
        Field("username", str, default=None, help="the service's Redis ACL user"),
        Field("password", str, default=None, secret=True),
        Field("tls", bool, default=True, help="TLS to Redis with the service's tls.cert, tls.key, tls.ca"),
        Field("publish_deadline", float, default=3.0, min=0.1, max=60.0, help="seconds per message"),
        Field("queue_size", int, default=10_000, min=1, max=1_000_000, help="messages waiting at most"),
    ]
    return Section("redis", fields, help="live notifications over Redis Pub/Sub")


def require_redis_settings(cfg: Config) -> None:
    """With ``redis.enabled``: the credentials, and for TLS to Redis the service's TLS files."""
    if "redis" not in cfg or not cfg.redis.enabled:
        return
    for name in ("username", "password"):
        if not cfg.redis[name]:
            raise ConfigError(f"redis.{name}", "required when redis.enabled is true")
    if cfg.redis.tls:
        for file in TLS_FILES:
            if cfg.tls[file] is None:
                raise ConfigError(f"tls.{file}", "required for TLS to Redis (or set redis.tls to false)")


class PerProcess(Generic[T]):
    """``make()``, built on first use in each process.

    gunicorn loads the application once in its master (preload_app) and forks the workers from it.
    Threads do not survive a fork, and a lock or a pooled connection a thread held at that moment
    stays held in the child: whatever starts threads (the Redis locator's watch, the announcer's
    queue) must be built in the worker that uses it, never in the master.
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._value = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value

    @property
    def built(self) -> T | None:
        """What this process built, if it built anything yet."""
        return self._value


class _Announce:
    """The stores' `announce`: hands notes to this process's announcer (`messaging.get()`: the
    locator and the announcer, built on the first note)."""

    def __init__(self, messaging: PerProcess[tuple[Any, Any]]) -> None:
        self.messaging = messaging

    def __call__(self, notes: Any) -> None:
        self.messaging.get()[1](notes)


def notification_announcer(db: Any, cfg: Config) -> tuple[Any, Callable[[], None] | None]:
    """``(announce, close)`` for the stores from ``cfg.redis``: ``(None, None)`` when it is disabled.

    `announce` hands notes to an `agenda.messaging.Announcer` over a `Publisher` to the primary a
    `RedisLocator` finds through `db`, built in each worker process on its first note (`PerProcess`);
    `close` (for `on_shutdown`) drains it, bounded, and stops the locator.
    """
    if not cfg.redis.enabled:
        return None, None
    from agenda.messaging import Announcer, Publisher, RedisLocator

    settings = cfg.redis
    files: dict[str, Any] = {}
    if settings.tls:
        files = {"ssl_ca_certs": cfg.tls.ca, "ssl_certfile": cfg.tls.cert, "ssl_keyfile": cfg.tls.key}

    def build() -> tuple[Any, Any]:
        locator = RedisLocator(db, username=settings.username, password=settings.password, **files)
        publisher = Publisher(locator, deadline=settings.publish_deadline)
        return locator, Announcer(publisher, queue_size=settings.queue_size)

    messaging = PerProcess(build)
    announce = _Announce(messaging)

    def close() -> None:
        # Bounded tightly: while a worker stops, new connections wait in the listening socket's
        # queue, and what is still queued here is stored in the DB (streams read it from there).
        if messaging.built is not None:
            locator, announcer = messaging.built
            announcer.close(timeout=min(1.0, settings.publish_deadline))
            locator.close(join_timeout=0.2)  # its watch thread is a daemon in a DB long poll

    return announce, close


def on_shutdown(app: Any, closer: Callable[[], None] | None) -> None:
    """Run `closer` (None: nothing) when the service stops serving `app` (`serve`, a gunicorn exit)."""
    if closer is not None:
        app.extensions.setdefault(_SHUTDOWN, []).append(closer)


def shutdown(app: Any) -> None:
    """Run `app`'s closers, newest first, once; one that fails is logged and the others still run."""
    closers = app.extensions.pop(_SHUTDOWN, [])
    for closer in reversed(closers):
        try:
            closer()
        except Exception:
            logging.getLogger(__name__).exception("a shutdown step failed")


_SHUTDOWN: Final = "agenda.shutdown"


def log_fields() -> list[Field]:
    return [
        Field("log_level", str, default="INFO", choices=LOG_LEVELS),
        Field("log_format", str, default="json", choices=("json", "plain")),
    ]


def add_common_arguments(parser: argparse.ArgumentParser, *, tls_flags: bool = True) -> None:
    """--config, --listen, --gateway-secret, --no-tls [--tls-cert/--tls-key/--tls-ca], logging."""
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--listen", metavar="HOST:PORT")
    parser.add_argument("--gateway-secret", metavar="S", help="prefer the config file: argv is visible in ps")
    parser.add_argument("--no-tls", action="store_true", help="plain HTTP (tests and labs only)")
    if tls_flags:
        for file in TLS_FILES:
            parser.add_argument(f"--tls-{file}", metavar="FILE")
    parser.add_argument("--log-level")
    parser.add_argument("--log-format", choices=("json", "plain"))


def common_overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """Settings given as flags: the named ones that were set, logging, and the ``tls`` section."""
    data: dict[str, Any] = {}
    for name in (*names, "listen", "gateway_secret", "log_format"):
        if getattr(args, name, None) is not None:
            data[name] = getattr(args, name)
    if args.log_level is not None:
        data["log_level"] = args.log_level.upper()
    tls: dict[str, Any] = {}
    if args.no_tls:
        tls["enabled"] = False
    for file in TLS_FILES:
        if getattr(args, f"tls_{file}", None) is not None:
            tls[file] = getattr(args, f"tls_{file}")
    if tls:
        data["tls"] = tls
    return data


def backend_fields(listen: str) -> list[Field]:
    """The settings every backend service has: where it listens, the DB members, the gateway's secret."""
    return [
        Field("listen", str, default=listen, validator=hostport_validator, help="HOST:PORT to serve on"),
        Field(
            "db_urls", list[str], validator=required_urls_validator, help="API base URL of every DB member"
        ),
        Field("gateway_secret", str, secret=True, help="shared secret the gateway sends on every request"),
    ]


def backend_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags every backend service has (see `add_common_arguments`) plus ``--db-url``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_common_arguments(parser)
    parser.add_argument("--db-url", action="append", metavar="URL", help="repeat per DB member")
    return parser


def load_backend_config(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    schema: Sequence[Field | Section],
    env_prefix: str,
    names: tuple[str, ...] = (),
) -> Config:
    """A backend's settings: the --config file, then flags (`names` are its own), then the environment.

    Checked as every backend's are: TLS files present when TLS is on, a long enough gateway secret,
    and (for a service with a ``redis`` section) what Redis needs when it is enabled.
    """
    args = parser.parse_args(argv)
    data = common_overrides(args, names)
    if args.db_url:
        data["db_urls"] = list(args.db_url)
    cfg = load_config(schema, path=args.config, data=data, env_prefix=env_prefix)
    require_tls_files(cfg)
    require_gateway_secret(cfg)
    require_redis_settings(cfg)
    return cfg


def require_tls_files(
    cfg: Config,
    section: str = "tls",
    files: tuple[str, ...] = TLS_FILES,
    *,
    enabled: bool | None = None,
    reason: str = "required when TLS is enabled (or disable it with --no-tls)",
) -> None:
    """With TLS on (`enabled`, else the section's own switch), every file is needed: fail at start
    naming the missing key."""
    if cfg[f"{section}.enabled"] if enabled is None else enabled:
        for file in files:
            if cfg[f"{section}.{file}"] is None:
                raise ConfigError(f"{section}.{file}", reason)


def require_gateway_secret(cfg: Config) -> None:
    if len(cfg.gateway_secret) < 16:
        raise ConfigError("gateway_secret", "must have at least 16 characters")


def configure_service_logging(name: str, cfg: Config) -> None:
    configure_logging(name, cfg.log_level, json=cfg.log_format == "json")
    if cfg.log_level != "DEBUG":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)


def wsgi_app(
    name: str, env_var: str, load: Callable[[list[str]], Config], build_app: Callable[[Config], Any]
) -> Any:
    """A gunicorn factory's body: settings from the file named by ``env_var`` (plus the environment)."""
    # ``env_var`` carries the service's settings prefix but names the file rather than overriding a
    # setting, and load_config refuses unknown variables with that prefix: hide it while loading.
    path = os.environ.pop(env_var, None)
    try:
        cfg = load(["--config", path] if path else [])
    finally:
        if path is not None:
            os.environ[env_var] = path
    configure_logging(name, cfg.log_level, json=cfg.log_format == "json")
    app = build_app(cfg)
    if app.extensions.get(_SHUTDOWN):
        atexit.register(shutdown, app)  # a gunicorn worker exits through sys.exit
    return app


def run_service(
    name: str,
    argv: Sequence[str] | None,
    load: Callable[[Sequence[str] | None], Config],
    build_app: Callable[[Config], Any],
    serve: Callable[[Any, Config, str], int],
) -> int:
    """A service's entry point: a configuration error is one line naming the key and exit status 2."""
    try:
        cfg = load(argv)
        app = build_app(cfg)
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_service_logging(name, cfg)
    return serve(app, cfg, name)


def serve(app: Any, cfg: Config, name: str) -> int:
    """Serve a backend's `app` on cfg.listen (mutual TLS when cfg.tls.enabled) until SIGTERM/SIGINT.

    Then (or when it cannot serve) runs the app's `on_shutdown` closers.
    """
    from agenda.common.tls import server_context

    try:
        ssl_context = None
        if cfg.tls.enabled:
            try:
                ssl_context = server_context(cfg.tls.cert, cfg.tls.key, cfg.tls.ca, require_client_cert=True)
            except ConfigError as exc:
                print(f"{name}: configuration error: {exc}", file=sys.stderr)
                return 2
        else:
            logging.getLogger(name).warning("TLS is disabled: plain HTTP, trusting the gateway secret alone")
        return serve_wsgi(app, cfg.listen, ssl_context, name)
    finally:
        shutdown(app)


def serve_wsgi(app: Any, listen: str, ssl_context: ssl.SSLContext | None, name: str) -> int:
    """Serve `app` on `listen` until SIGTERM/SIGINT (threaded, keep-alive connections); exit status.

    Keep-alive matters twice here: the gateway reuses its mutual-TLS connections to the backends, and
    clients reuse theirs to the gateway, instead of paying a TLS handshake for every request.
    """
    from agenda.common.httpserver import make_keepalive_server

    log = logging.getLogger(name)
    host, port = parse_hostport(listen)
    try:
        server = make_keepalive_server(host, port, app, ssl_context=ssl_context)
    except OSError as exc:
        log.error("cannot listen on %s: %s", listen, exc)
        return 1
    log.info("%s listening on %s", name, listen)
    return serve_until_signalled(server, log)


def serve_until_signalled(
    server: Any, log: logging.Logger, *, cleanup: Callable[[], None] | None = None
) -> int:
    """Serve `server` (already bound) until SIGTERM/SIGINT, then close it and run `cleanup`; exit status 0.

    For a process that binds before it starts other machinery and must stop that machinery after the
    server (agenda-db binds its API port before starting Raft, and stops the node last).
    """

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        # shutdown() waits for serve_forever to return: it must not run on the thread serving.
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if cleanup is not None:
            cleanup()
    return 0
