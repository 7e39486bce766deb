"""``agenda-dev`` (``make dev``): the whole stack on loopback until Ctrl-C.

Five DB members, two User Service instances, one Group Service and the gateway on ``--port``, with
TLS unless ``--no-tls``. Data, credentials and logs live in ``--dir`` and are kept across runs unless
``--fresh``. A bad flag, a port in use or an unusable directory is one line on stderr and exit status 2;
a process that fails to start (or dies later) is reported with its log and exit status 1; SIGINT,
SIGTERM or SIGHUP stop everything and exit 0.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Final, NoReturn

from agenda.devstack.stack import DB_MEMBERS, DevStack, DevStackError, Interrupted, SetupError

__all__ = ["DEFAULT_DIR", "DEFAULT_PORT", "build_parser", "main", "port_number", "ready_message"]

PROG: Final = "agenda-dev"
DEFAULT_DIR: Final = Path(".cache/dev")
DEFAULT_PORT: Final = 8443
USERS_INSTANCES: Final = 2
GROUPS_INSTANCES: Final = 1
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXAMPLE_CREDENTIALS: Final = '{"username": "ada", "password": "correct horse battery"}'


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line naming the problem (argparse's default adds the whole usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def port_number(text: str) -> int:
    """A TCP port, 0 meaning any free one."""
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0-65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=PROG,
        description="Run the whole Agenda stack on 127.0.0.1 as plain processes until Ctrl-C.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        metavar="DIR",
        help=f"data, credentials, config and logs, kept across runs (default: {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"the gateway's port on 127.0.0.1; 0 picks a free one (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--no-tls", action="store_true", help="plain HTTP everywhere (the default is TLS with a throwaway CA)"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="wipe DIR first: new data, keys and certificates"
    )
    return parser


def _curl(ca_file: Path | None, *args: str) -> str:
    words = ["curl", *(["--cacert", str(ca_file)] if ca_file else []), *args]
    return " ".join(shlex.quote(word) for word in words)


def ready_message(stack: DevStack, seconds: float) -> str:
    """What the developer needs once the stack answers: where it is, how to try it, how to stop it."""
    base = stack.gateway_url
    json_post = ("-H", "Content-Type: application/json", "-d", EXAMPLE_CREDENTIALS)
    bearer = '-H "Authorization: Bearer $TOKEN"'  # double quotes: the shell expands $TOKEN
    json_extract = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"
    lines = [
        f"Agenda dev stack ready in {seconds:.1f} s ({'TLS' if stack.tls else 'plain HTTP, no TLS'}).",
        "",
        f"  gateway   {base}",
    ]
    if stack.ca_file is not None:
        lines.append(f"  CA file   {stack.ca_file}")
    lines += [
        f"  logs      {stack.logs_dir}/<process>.log",
        f"  state     {stack.directory} (data, keys, certificates: kept across runs; --fresh starts over)",
        "",
        "  process   URL",
    ]
    lines += [f"  {name:<9} {stack.url(name)}" for name in stack.names]
    if stack.client_cert is not None:
        cert, key = (shlex.quote(path) for path in stack.client_cert)
        lines.append(
            f"  (every process but the gateway requires a client certificate: --cert {cert} --key {key})"
        )
    lines += [
        "",
        "Try it:",
        "  " + _curl(stack.ca_file, f"{base}/v1/health"),
        "  " + _curl(stack.ca_file, *json_post, f"{base}/v1/auth/register"),
        "  TOKEN=$("
        + _curl(stack.ca_file, "-s", *json_post, f"{base}/v1/auth/login")
        + f" | {json_extract})",
        f"  {_curl(stack.ca_file)} {bearer} {shlex.quote(base + '/v1/me')}",
        "",
        "Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agenda-dev``; returns the exit status."""
    args = build_parser().parse_args(argv)
    stop_requested = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        # Only set a flag: raising here could land between starting a child and recording it.
        stop_requested.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
    try:
        return _run(args, stop_requested)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(message: str) -> None:
    print(message, flush=True)  # flushed: `make dev > file` must show progress as it happens


def _run(args: argparse.Namespace, stop_requested: threading.Event) -> int:
    began = time.monotonic()
    try:
        stack = DevStack(
            args.dir,
            tls=not args.no_tls,
            gateway_port=args.port,
            users_instances=USERS_INSTANCES,
            groups_instances=GROUPS_INSTANCES,
            fresh=args.fresh,
            interrupt=stop_requested,
        )
    except SetupError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    status = 0
    try:
        _say(
            f"{PROG}: starting {DB_MEMBERS} DB members, {USERS_INSTANCES} User Service instances, "
            f"{GROUPS_INSTANCES} Group Service and the gateway in {stack.directory} ..."
        )
        stack.start()
        _say(ready_message(stack, time.monotonic() - began))
        exited = stack.watch()
        if exited is not None:
            print(f"{PROG}: {stack.exit_report(exited)}", file=sys.stderr)
            status = 1
    except Interrupted:
        pass
    except DevStackError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        status = 1
    finally:
        _say(f"{PROG}: stopping ...")
        stack.stop()
        _say(f"{PROG}: stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
