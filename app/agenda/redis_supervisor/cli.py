"""`agenda-redis-supervisor`: run the supervisor, check its configuration, show its status.

agenda-redis-supervisor [--config PATH] [run]            in the foreground (systemd runs it so)
agenda-redis-supervisor [--config PATH] check-config     exit 0, or 2 with
                                                         "redis-supervisor: config: <key>: <reason>"
agenda-redis-supervisor [--config PATH] status [--json]  what the running supervisor reports
"""

from __future__ import annotations

import argparse
import json
import sys

from agenda.common.config import Config, ConfigError
from agenda.common.logs import configure_logging
from agenda.common.status_http import fetch_status
from agenda.redis_supervisor import config as supervisor_config

EXIT_USAGE = 2


def _fail(message: str) -> int:
    print(f"redis-supervisor: {message}", file=sys.stderr)
    return EXIT_USAGE


def _run(cfg: Config) -> int:
    from agenda.redis_supervisor.daemon import Supervisor, install_signal_handlers

    configure_logging("agenda-redis-supervisor", cfg.log_level, json=cfg.log_format == "json")
    supervisor = Supervisor(cfg)
    install_signal_handlers(supervisor)
    supervisor.run()
    return 0


def _status(cfg: Config, as_json: bool) -> int:
    if not cfg.status_addr:
        return _fail("status_addr is empty in the configuration: the supervisor serves no status")
    try:
        status = fetch_status(cfg.status_addr)
    except (OSError, ValueError) as exc:
        host, port = cfg.status_addr
        return _fail(f"no supervisor answers at {host}:{port} ({exc})")
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    role = "acting" if status["acting"] else f"standby (lock held by {status['lock_holder'] or 'nobody'})"
    print(f"{status['name']}: {role}; {status['summary']}")
    if status["waiting"]:
        print(f"  waiting: {status['waiting']}")
    if status["recorded"]:
        recorded = status["recorded"]
        print(f"  recorded primary {recorded['name']} epoch {recorded['epoch']}")
    for server in status["servers"]:
        state = server["role"] or "unreachable"
        if server["role"] == "slave":
            state = f"replica of {server['master']} (link {'up' if server['link_up'] else 'down'})"
        print(f"  {server['name']}: {state}, offset {server['offset']}, priority {server['priority']}")
    print(f"  failovers {status['failovers']}; last {status['last_failover'] or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agenda-redis-supervisor", description="keeps one Redis primary, recorded in the DB Service"
    )
    parser.add_argument(
        "--config",
        help=f"YAML file (default ${supervisor_config.CONFIG_ENV} or {supervisor_config.DEFAULT_CONFIG_PATH})",  # noqa: E501
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the supervisor in the foreground (the default)")
    commands.add_parser("check-config", help="validate the configuration file")
    status = commands.add_parser("status", help="what the running supervisor sees and does")
    status.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = supervisor_config.load(supervisor_config.config_path(args.config))
    except ConfigError as exc:
        return _fail(f"config: {exc}")
    except OSError as exc:
        return _fail(f"config: {exc}")
    if args.command == "check-config":
        print("redis-supervisor: configuration OK")
        return 0
    if args.command == "status":
        return _status(cfg, args.json)
    return _run(cfg)
