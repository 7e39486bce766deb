"""What every HTTP service's command line shares: settings fields, flags and their checks.

Each service (users, groups, gateway) adds its own fields and flags; these are the ones they have
in common, so a flag or a check means the same thing everywhere.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from agenda.common.config import Config, ConfigError, Field, Section, existing_file, parse_hostport
from agenda.common.logs import configure_logging

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


def require_tls_files(cfg: Config, section: str = "tls", files: tuple[str, ...] = TLS_FILES) -> None:
    """With TLS on, every file is needed: fail at start naming the missing key."""
    if cfg[f"{section}.enabled"]:
        for file in files:
            if cfg[f"{section}.{file}"] is None:
                raise ConfigError(
                    f"{section}.{file}", "required when TLS is enabled (or disable it with --no-tls)"
                )


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
    return build_app(cfg)


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
