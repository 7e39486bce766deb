"""The whole Agenda stack on loopback as plain processes: five DB members, the services, one gateway.

Every part is the real program (``python -m agenda.<service>.cli --config FILE``) in its own process and
session, so a test can SIGKILL or SIGSTOP one of them and Ctrl-C in a terminal reaches only the
launcher, which then stops its children in order. Settings go in per-process YAML files (mode 0600,
they hold secrets) rather than on the command line, where ``ps`` would show them.

The stack directory holds everything and survives a run, so data, keys, certificates, secrets and the
internal ports stay the same from one run to the next (a DB member's Raft identity is its address)::

    .agenda-dev         lock file; also marks the directory as one this module may wipe
    tls/                ca.crt, node.crt, node.key (with TLS)
    keys/               signing.pem, signing.pub (access tokens)
    secrets.json        gateway and cluster secrets
    ports.json          the internal ports (the gateway's comes from the caller)
    config/NAME.yaml    logs/NAME.log    data/dbN/
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import requests
import yaml

from agenda.devstack.pki import (
    TlsFiles,
    load_or_create_secrets,
    tls_files_usable,
    write_loopback_tls,
    write_private,
    write_token_keys,
)
from agenda.gateway.cli import ENV_PREFIX as GATEWAY_ENV_PREFIX
from agenda.groups.cli import ENV_PREFIX as GROUPS_ENV_PREFIX
from agenda.users.cli import ENV_PREFIX as USERS_ENV_PREFIX

__all__ = [
    "DB_MEMBERS",
    "LOOPBACK",
    "DevStack",
    "DevStackError",
    "Interrupted",
    "SetupError",
    "free_ports",
]

LOOPBACK: Final = "127.0.0.1"
DB_MEMBERS: Final = 5
SIGNING_KEY_ID: Final = "k1"
READY_TIMEOUT: Final = 120.0  # generous: nine Python processes starting at once on a small machine
STOP_GRACE: Final = 10.0  # seconds between SIGTERM and SIGKILL
REAP_TIMEOUT: Final = 10.0
POLL_INTERVAL: Final = 0.2
MARKER: Final = ".agenda-dev"
MODULES: Final = {
    "db": "agenda.db.cli",
    "users": "agenda.users.cli",
    "groups": "agenda.groups.cli",
    "gateway": "agenda.gateway.cli",
    "gossip": "agenda.gossip.cli",
}
# A developer's shell may carry a deployment's AGENDA_USERS_* settings; they would override the
# stack's config files, so children never see them.
_SERVICE_ENV_PREFIXES: Final = tuple(
    f"{prefix}_" for prefix in (USERS_ENV_PREFIX, GROUPS_ENV_PREFIX, GATEWAY_ENV_PREFIX)
)


class DevStackError(Exception):
    """The stack (or a restarted process) did not come up; the message says why, with log tails."""


class SetupError(DevStackError):
    """Found before any process starts: a port in use, a directory that cannot be used."""


class Interrupted(DevStackError):  # noqa: N818 - reads as the condition callers handle
    """The interrupt event was set while the stack was starting."""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1 that were free a moment ago (held together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def check_port(port: int, purpose: str) -> None:
    """SetupError unless a server could listen on 127.0.0.1:`port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The servers set SO_REUSEADDR too, so a port left in TIME_WAIT by the last run counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise SetupError(f"cannot listen on {LOOPBACK}:{port} for {purpose}: {exc.strerror}") from None


def _claim_directory(directory: Path, *, fresh: bool) -> int:
    """Lock `directory` (created if needed) for this stack; with `fresh`, empty it first. Returns the fd."""
    marker = directory / MARKER
    try:
        if directory.exists() and not marker.exists() and any(directory.iterdir()):
            raise SetupError(f"{directory} has files not made by agenda-dev; choose a new or empty directory")
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SetupError(f"cannot use {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SetupError(f"{directory} is in use by another running agenda-dev") from None
    if fresh:
        for entry in directory.iterdir():
            if entry.name == MARKER:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    return fd


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


@dataclass
class _Process:
    name: str
    kind: str
    url: str
    config: Path
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    ready_file: Path | None = None  # no HTTP: ready once this file exists (a gossip member's view)

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", MODULES[self.kind], "--config", str(self.config)]

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class DevStack:
    """Five DB members (unless `db_urls` names an existing cluster), User and Group Services, a gateway.

    Construction prepares the directory (lock, credentials, config files) and checks the ports;
    :meth:`start` launches the processes and waits, bounded, until every one answers ``/v1/health``
    (a DB member only does once a leader with a quorum exists). Use it as a context manager, or call
    :meth:`stop`, which ends exactly the processes this object started. Setting `interrupt` (from a
    signal handler, say) makes a pending :meth:`start` raise :class:`Interrupted` and :meth:`watch`
    return.

    With `tls` every listener is HTTPS and every backend (DB members included) requires a client
    certificate from the stack's CA; `db_urls` given as http:// URLs leave the DB link plain.
    `settings` adds config keys per kind of process (``db``, ``users``, ``groups``, ``gateway``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        tls: bool = True,
        gateway_port: int = 0,
        db_urls: Sequence[str] | None = None,
        users_instances: int = 2,
        groups_instances: int = 1,
        gossip: bool = False,
        gateway_secret: str | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        fresh: bool = False,
        interrupt: threading.Event | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        if users_instances < 1 or groups_instances < 1:
            raise ValueError("the stack needs at least one User Service and one Group Service instance")
        self.directory = Path(directory).absolute()
        self.tls = tls
        self.ready_timeout = ready_timeout
        self._interrupt = interrupt if interrupt is not None else threading.Event()
        self._settings = settings or {}
        self._processes: dict[str, _Process] = {}
        self._http = requests.Session()
        self._http.trust_env = False  # no proxies, no REQUESTS_CA_BUNDLE: loopback and our CA only
        self._env = {
            key: value for key, value in os.environ.items() if not key.startswith(_SERVICE_ENV_PREFIXES)
        }
        self._env["PYTHONUNBUFFERED"] = "1"  # log lines reach the file when written, not when flushed
        self._lock_fd: int | None = _claim_directory(self.directory, fresh=fresh)
        try:
            self._prepare(gateway_port, db_urls, users_instances, groups_instances, gateway_secret, gossip)
        except OSError as exc:
            self._release()
            raise SetupError(f"cannot prepare {self.directory}: {exc}") from exc
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------------------------------- set-up

    def _prepare(
        self,
        gateway_port: int,
        db_urls: Sequence[str] | None,
        users_instances: int,
        groups_instances: int,
        gateway_secret: str | None,
        gossip: bool,
    ) -> None:
        db_names = [f"db{index + 1}" for index in range(DB_MEMBERS)] if db_urls is None else []
        users_names = [f"users{index + 1}" for index in range(users_instances)]
        groups_names = [f"groups{index + 1}" for index in range(groups_instances)]
        port_names = [f"{name}.{role}" for name in db_names for role in ("raft", "api")]
        gossip_names = (
            [f"{name}-gossip" for name in (*users_names, *groups_names, "gateway")] if gossip else []
        )
        ports = self._internal_ports([*port_names, *users_names, *groups_names, *gossip_names])
        if gateway_port == 0:
            (gateway_port,) = free_ports(1)
        check_port(gateway_port, "the gateway")

        scheme = "https" if self.tls else "http"
        self.tls_files: TlsFiles | None = None
        if self.tls:
            self.tls_files = TlsFiles.in_directory(self.directory / "tls")
            if not tls_files_usable(self.tls_files):
                write_loopback_tls(self.tls_files.ca.parent)
        self.ca_file: Path | None = self.tls_files.ca if self.tls_files else None
        self.client_cert: tuple[str, str] | None = (
            (str(self.tls_files.cert), str(self.tls_files.key)) if self.tls_files else None
        )
        self._http.verify = str(self.ca_file) if self.ca_file else True
        self._http.cert = self.client_cert
        self.signing_key_path = self.directory / "keys" / "signing.pem"
        self.public_key_path = self.directory / "keys" / "signing.pub"
        if not (self.signing_key_path.is_file() and self.public_key_path.is_file()):
            write_token_keys(self.signing_key_path, self.public_key_path)
        stored = load_or_create_secrets(self.directory / "secrets.json", ("gateway_secret", "cluster_secret"))
        self.gateway_secret = gateway_secret or stored["gateway_secret"]
        self.cluster_secret = stored["cluster_secret"]

        db_api = {name: f"{LOOPBACK}:{ports[f'{name}.api']}" for name in db_names}
        db_raft = {name: f"{LOOPBACK}:{ports[f'{name}.raft']}" for name in db_names}
        self.db_urls = list(db_urls) if db_urls is not None else [f"{scheme}://{db_api[n]}" for n in db_names]
        self.users_urls = [f"{scheme}://{LOOPBACK}:{ports[name]}" for name in users_names]
        self.groups_urls = [f"{scheme}://{LOOPBACK}:{ports[name]}" for name in groups_names]
        self.gateway_url = f"{scheme}://{LOOPBACK}:{gateway_port}"

        for name in db_names:
            peers = [f"{other}={db_raft[other]},{db_api[other]}" for other in db_names if other != name]
            self._add(
                name,
                "db",
                f"{scheme}://{db_api[name]}",
                node_id=name,
                raft_addr=db_raft[name],
                api_addr=db_api[name],
                data_dir=str(self.directory / "data" / name),
                peers=peers,
                cluster_secret=self.cluster_secret,
                tls=self._tls_section(),
            )
        backend = {"db_urls": self.db_urls, "gateway_secret": self.gateway_secret, "tls": self._tls_section()}
        signing = {"signing_key": str(self.signing_key_path), "key_id": SIGNING_KEY_ID}
        for kind, names, urls, extra in (
            ("users", users_names, self.users_urls, signing),
            ("groups", groups_names, self.groups_urls, {}),
        ):
            for name, url in zip(names, urls, strict=True):
                self._add(name, kind, url, listen=url.partition("://")[2], **backend, **extra)
        self.gossip_view: Path | None = None
        if gossip:
            instances = [*zip(users_names, self.users_urls, strict=True)]
            instances += zip(groups_names, self.groups_urls, strict=True)
            self.gossip_view = self._add_gossip(gossip_names, ports, dict(instances))
        self._add(
            "gateway",
            "gateway",
            self.gateway_url,
            listen=f"{LOOPBACK}:{gateway_port}",
            users_urls=self.users_urls,
            groups_urls=self.groups_urls,
            **({"gossip_view": str(self.gossip_view)} if self.gossip_view else {}),
            public_keys=[f"{SIGNING_KEY_ID}={self.public_key_path}"],
            gateway_secret=self.gateway_secret,
            tls=self._tls_section(with_ca=False),  # the public listener asks for no client certificate
            backend_tls=self._tls_section(),
        )

    def _add_gossip(self, names: list[str], ports: Mapping[str, int], urls: Mapping[str, str]) -> Path:
        """A gossip member beside every service instance and the gateway; the gateway's view's path.

        Each member's seeds are all the others (any one that is up lets it join); an instance's member
        watches its instance's /v1/health and carries its URL. The key ring is generated once and kept."""
        keys = self.directory / "gossip.keys"
        if not keys.is_file():
            write_private(keys, base64.b64encode(os.urandom(32)) + b"\n")
        addresses = {name: f"{LOOPBACK}:{ports[name]}" for name in names}
        views = self.directory / "gossip"
        views.mkdir(parents=True, exist_ok=True)
        for name in names:
            instance = name.removesuffix("-gossip")
            service = instance.rstrip("0123456789")
            settings: dict[str, Any] = {
                "name": instance,
                "bind": addresses[name],
                "seeds": [address for other, address in addresses.items() if other != name],
                "keys_file": str(keys),
                "label": "agenda-dev",
                "service": service,
                "view_file": str(views / f"{instance}.json"),
            }
            if instance in urls:
                settings |= {
                    "api_url": urls[instance],
                    "health_url": urls[instance] + "/v1/health",
                    "health_tls": self._tls_section(),
                }
            self._add(name, "gossip", "", **settings)
            self._processes[name].ready_file = views / f"{instance}.json"
        return views / "gateway.json"

    def _internal_ports(self, names: list[str]) -> dict[str, int]:
        """The ports of the last run when it had the same processes (and they are free), else new ones."""
        path = self.directory / "ports.json"
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if isinstance(stored, dict) and sorted(stored) == sorted(names):
            ports = {name: int(port) for name, port in stored.items()}
        else:
            ports = dict(zip(names, free_ports(len(names)), strict=True))
            path.write_text(json.dumps(ports, indent=2) + "\n", encoding="utf-8")
        for name, port in ports.items():
            check_port(port, name)
        return ports

    def _tls_section(self, *, with_ca: bool = True) -> dict[str, Any]:
        if self.tls_files is None:
            return {"enabled": False}
        section: dict[str, Any] = {"enabled": True, "cert": str(self.tls_files.cert)}
        section["key"] = str(self.tls_files.key)
        if with_ca:
            section["ca"] = str(self.tls_files.ca)
        return section

    def _add(self, process_name: str, kind: str, url: str, **settings: Any) -> None:
        """Write the process's config file (the caller's `settings` for its kind win) and record it."""
        name = process_name
        config = {**settings, "log_format": "plain", **self._settings.get(kind, {})}
        path = self.directory / "config" / f"{name}.yaml"
        write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
        self._processes[name] = _Process(name, kind, url, path, self.directory / "logs" / f"{name}.log")

    # ------------------------------------------------------------------------------------ running

    @property
    def names(self) -> list[str]:
        """Every process of the stack, in start order (DB members, services, gateway)."""
        return list(self._processes)

    def url(self, name: str) -> str:
        return self._processes[name].url

    def log_path(self, name: str) -> Path:
        return self._processes[name].log

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    def pid(self, name: str) -> int | None:
        popen = self._processes[name].popen
        return popen.pid if popen is not None else None

    def running(self, name: str) -> bool:
        return self._processes[name].running

    def start(self) -> DevStack:
        """Launch every process and wait until all answer; DevStackError (with log tails) otherwise."""
        if any(process.popen is not None for process in self._processes.values()):
            raise DevStackError("this stack was already started")
        if self._lock_fd is None:
            raise DevStackError("this stack was stopped; make a new DevStack")
        for process in self._processes.values():
            self._spawn(process, new_log=True)
        self._wait_ready(list(self._processes.values()), self.ready_timeout)
        return self

    def __enter__(self) -> DevStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, process: _Process, *, new_log: bool) -> None:
        process.log.parent.mkdir(parents=True, exist_ok=True)
        with process.log.open("wb" if new_log else "ab") as log:
            process.popen = subprocess.Popen(  # noqa: S603 - our interpreter, our module, our config file
                process.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self.directory,
                start_new_session=True,
            )

    def _healthy(self, process: _Process) -> bool:
        if process.ready_file is not None:
            return process.ready_file.is_file()
        try:
            return self._http.get(process.url + "/v1/health", timeout=2.0).status_code == 200
        except requests.RequestException:
            return False

    def _wait_ready(self, processes: list[_Process], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = processes
        while True:
            for process in pending:
                if not process.running:
                    raise DevStackError(self._exit_report(process))
            pending = [process for process in pending if not self._healthy(process)]
            if not pending:
                return
            if time.monotonic() >= deadline:
                names = [process.name for process in pending]
                raise DevStackError(
                    f"not ready after {timeout:g} s: {', '.join(names)} never answered /v1/health\n"
                    + self.logs(names)
                )
            if self._interrupt.wait(POLL_INTERVAL):
                raise Interrupted("interrupted while starting")

    def _exit_report(self, process: _Process) -> str:
        status = process.popen.returncode if process.popen is not None else None
        how = (
            f"was killed by {signal.Signals(-status).name}" if status and status < 0 else f"exited ({status})"
        )
        return f"{process.name} {how}; its log ends with:\n" + self.logs([process.name])

    def logs(self, names: Sequence[str] | None = None, lines: int = 30) -> str:
        """The last `lines` of each named process's log (every process by default), with headers."""
        out = []
        for name in names if names is not None else self._processes:
            path = self._processes[name].log
            out.append(f"----- {name} ({path}) -----")
            out.extend(_tail(path, lines))
        return "\n".join(out)

    def watch(self) -> str | None:
        """Block until the interrupt event is set (None) or a process exits (its name, a report ready)."""
        while not self._interrupt.wait(POLL_INTERVAL * 5):
            for process in self._processes.values():
                if not process.running:
                    return process.name
        return None

    def exit_report(self, name: str) -> str:
        return self._exit_report(self._processes[name])

    # ------------------------------------------------------------------------------ failure tests

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to one process (SIGSTOP/SIGCONT to freeze and thaw); a SIGKILLed one is reaped."""
        process = self._processes[name]
        if process.popen is None or not process.running:
            raise DevStackError(f"{name} is not running")
        process.popen.send_signal(sig)
        if sig == signal.SIGKILL:
            process.popen.wait(timeout=REAP_TIMEOUT)

    def restart(self, name: str, timeout: float | None = None) -> None:
        """Start one process again (SIGKILLing it first if it still runs) and wait until it answers."""
        process = self._processes[name]
        if process.running:
            self.kill(name)
        self._spawn(process, new_log=False)
        self._wait_ready([process], timeout if timeout is not None else self.ready_timeout)

    # ------------------------------------------------------------------------------------ stopping

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every running process (gateway first), SIGKILL what is left after `grace` seconds."""
        running = [p.popen for p in reversed(self._processes.values()) if p.popen is not None and p.running]
        for popen in running:
            with contextlib.suppress(ProcessLookupError):
                popen.terminate()
                popen.send_signal(signal.SIGCONT)  # a SIGSTOPped process acts on SIGTERM once resumed
        deadline = time.monotonic() + grace
        for popen in running:
            try:
                popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=REAP_TIMEOUT)
        self._release()

    def _release(self) -> None:
        self._http.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None
