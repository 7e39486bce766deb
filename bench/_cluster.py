"""Process management and the two five-member clusters (etcd and agenda-db) on 127.0.0.1.

Every child runs in its own session (process group), is recorded by a :class:`Reaper` and is SIGKILLed
by the reaper's cleanup (registered with atexit, and run on SIGINT/SIGTERM/SIGHUP, which are turned into
:class:`Interrupted`). On Linux children also get PR_SET_PDEATHSIG=SIGKILL, so even a SIGKILLed
benchmark does not leave clusters behind. Every wait is a bounded poll that fails with a
:class:`BenchError` naming the member and quoting the tail of its log.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from base64 import b64encode
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

__all__ = [
    "AgendaCluster",
    "BenchError",
    "Cluster",
    "EtcdCluster",
    "Interrupted",
    "Member",
    "Reaper",
    "TlsPaths",
    "WriteSpec",
    "agenda_importable",
    "clean_env",
    "etcd_version",
    "free_ports",
    "http_json",
    "loopback_pki",
    "run_under_reaper",
    "scrub_proxy_environment",
    "wait_until",
]

HOST = "127.0.0.1"
T = TypeVar("T")

# No proxy may ever see our 127.0.0.1 traffic (urllib, requests in agenda's forwarder, Go tools).
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(RuntimeError):
    """The benchmark cannot go on (a member did not start, a tool failed...)."""


class Interrupted(SystemExit):
    """SIGINT/SIGTERM/SIGHUP arrived: unwind (finally blocks stop the clusters) and exit 128+signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for children: no proxy settings, no ETCD_*/ETCDCTL_* overrides."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in _PROXY_VARS and not k.startswith(("ETCD_", "ETCDCTL_"))
    }
    env.update(extra or {})
    return env


def scrub_proxy_environment() -> None:
    """Drop proxy settings from this process's own environment.

    For children that copy ``os.environ`` themselves rather than taking :func:`clean_env` (the dev
    stack's services), so that none of their 127.0.0.1 traffic can be sent to a proxy.
    """
    for name in [name for name in os.environ if name.lower() in _PROXY_VARS]:
        del os.environ[name]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel considers free right now (bound together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(predicate: Callable[[], T | None], timeout: float, interval: float = 0.1) -> T | None:
    """Poll ``predicate`` (exceptions count as "not yet") until truthy or ``timeout``; None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError, urllib.error.URLError):
            value = predicate()
            if value:
                return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def http_json(method: str, url: str, body: Any = None, timeout: float = 2.0) -> tuple[int, Any]:
    """A small JSON request without proxies; returns (status, decoded body or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http://127.0.0.1 only
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def log_tail(path: Path, lines: int = 15) -> str:
    """The last `lines` of a log, indented for an error message (or why it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n    ".join(text.splitlines()[-lines:]) or "(empty log)"


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Reaper:
    """Owns every child process and temporary directory; :meth:`cleanup` is idempotent."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._dirs: list[Path] = []
        self._lock = threading.Lock()
        self.keep_dirs = False

    def install(self) -> None:
        atexit.register(self.cleanup)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    @staticmethod
    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    def mkdtemp(self, prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        with self._lock:
            self._dirs.append(path)
        return path

    def spawn(self, argv: Sequence[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - argv is built by this program
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_set_pdeathsig if sys.platform == "linux" else None,
            )
        with self._lock:
            self._procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float, env: dict[str, str]) -> tuple[int, str, str]:
        """Run a short-lived tool in its own process group; killed (whole group) on timeout or signal."""
        proc = subprocess.Popen(  # noqa: S603 - argv is built by this program
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            preexec_fn=_set_pdeathsig if sys.platform == "linux" else None,
        )
        with self._lock:
            self._procs.append(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            raise BenchError(f"{argv[0]} did not finish within {timeout:.0f} s (killed)") from None
        finally:
            self.kill(proc)
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Signal the child's whole process group (it is its session leader), then reap it (bounded)."""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        with self._lock:
            if proc in self._procs and proc.returncode is not None:
                self._procs.remove(proc)

    def cleanup(self) -> None:
        # A second Ctrl-C must not interrupt the cleanup itself.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signum, signal.SIG_IGN)
        with self._lock:
            procs, self._procs = list(self._procs), []
            dirs, self._dirs = list(self._dirs), []
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for path in dirs:
            if self.keep_dirs:
                print(f"kept {path}", file=sys.stderr)
            else:
                shutil.rmtree(path, ignore_errors=True)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError):
                signal.signal(signum, signal.SIG_DFL)


@dataclass
class Member:
    name: str
    ports: tuple[int, int]  # (peer/raft port, client/api port)
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_port(self) -> int:
        return self.ports[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass(frozen=True)
class TlsPaths:
    """A CA certificate and one certificate and key it signed (for 127.0.0.1), as agenda-db reads them."""

    ca: Path
    cert: Path
    key: Path


def loopback_pki(python: str, reaper: Reaper, directory: Path) -> TlsPaths:
    """A throwaway CA and loopback certificate written by the dev stack's helper, run with ``python``
    (the interpreter that runs agenda-db: the benchmark itself need not import agenda)."""
    code = (
        "import sys; from pathlib import Path; from agenda.devstack.pki import write_loopback_tls; "
        "f = write_loopback_tls(Path(sys.argv[1])); print(f.ca, f.cert, f.key)"
    )
    status, out, err = reaper.run([python, "-c", code, str(directory)], timeout=60, env=clean_env())
    if status != 0:
        raise BenchError(f"cannot write a loopback PKI with {python}: {(err or out).strip()[-400:]}")
    ca, cert, key = out.split()
    return TlsPaths(Path(ca), Path(cert), Path(key))


@dataclass(frozen=True)
class WriteSpec:
    """One single-key request as hey (and, for a write, the failover writer) sends it; ``body`` may be
    empty (a GET)."""

    method: str
    path: str
    body: bytes


class Cluster(ABC):
    """Five members on 127.0.0.1 with ephemeral ports and data dirs under ``root``."""

    system = "?"
    health_timeout = 20.0

    def __init__(self, reaper: Reaper, root: Path, size: int = 5) -> None:
        self.reaper = reaper
        self.root = root
        ports = free_ports(2 * size)
        self.members = [
            Member(
                name=self.member_name(i),
                ports=(ports[2 * i], ports[2 * i + 1]),
                data_dir=root / f"{self.member_name(i)}.data",
                log_path=root / f"{self.member_name(i)}.log",
            )
            for i in range(size)
        ]

    # ---- per-system pieces

    @abstractmethod
    def member_name(self, index: int) -> str: ...

    @abstractmethod
    def command(self, member: Member) -> list[str]: ...

    @abstractmethod
    def is_healthy(self, member: Member) -> bool: ...

    @abstractmethod
    def find_leader(self) -> Member | None:
        """The current leader as seen by the running members, or None when there is none (yet)."""

    @abstractmethod
    def write_spec(self, key: str, value: str) -> WriteSpec: ...

    @abstractmethod
    def read_spec(self, key: str) -> WriteSpec:
        """A linearizable read of `key`, as the system's clients read by default."""

    @property
    def leader_method(self) -> str:
        return "?"

    # ---- shared lifecycle

    def env(self) -> dict[str, str]:
        return clean_env()

    def spawn(self, member: Member) -> None:
        if member.running:
            raise BenchError(f"{self.system} member {member.name} is already running")
        member.proc = self.reaper.spawn(self.command(member), member.log_path, self.env())

    def start(self) -> None:
        for member in self.members:
            self.spawn(member)
        self.wait_healthy()

    def wait_healthy(self, timeout: float | None = None) -> Member:
        """Every member healthy and a leader known; returns the leader. Bounded, fails naming the member."""
        timeout = self.health_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for number, member in enumerate(self.members, start=1):
            while not self._healthy_or_dead(member):
                if time.monotonic() >= deadline:
                    raise BenchError(
                        f"{self.system} member {number} ({member.name}) did not become healthy in "
                        f"{timeout:.0f} s; log tail:\n    {log_tail(member.log_path)}"
                    )
                time.sleep(0.1)
        leader = wait_until(self.find_leader, max(1.0, deadline - time.monotonic()))
        if leader is None:
            raise BenchError(f"{self.system}: no leader found within {timeout:.0f} s")
        return leader

    def _healthy_or_dead(self, member: Member) -> bool:
        if member.proc is None or member.proc.poll() is not None:
            code = None if member.proc is None else member.proc.returncode
            raise BenchError(
                f"{self.system} member {member.name} exited (status {code}) before becoming healthy; "
                f"log tail:\n    {log_tail(member.log_path)}"
            )
        try:
            return self.is_healthy(member)
        except (OSError, ValueError, KeyError, urllib.error.URLError):
            return False

    def kill(self, member: Member) -> None:
        if member.proc is not None:
            self.reaper.kill(member.proc, signal.SIGKILL)

    def stop(self) -> None:
        for member in self.members:
            self.kill(member)

    def by_port(self, port: int) -> Member | None:
        return next((m for m in self.members if m.client_port == port), None)


# ---------------------------------------------------------------------------------------------- etcd


class EtcdCluster(Cluster):
    system = "etcd"

    def __init__(
        self,
        reaper: Reaper,
        root: Path,
        size: int = 5,
        *,
        election_ms: int | None = None,
        heartbeat_ms: int | None = None,
    ) -> None:
        self.election_ms = election_ms  # None: etcd's defaults (1000 ms election, 100 ms heartbeat)
        self.heartbeat_ms = heartbeat_ms
        super().__init__(reaper, root, size)

    def member_name(self, index: int) -> str:
        return f"e{index + 1}"

    def command(self, member: Member) -> list[str]:
        peer_port, client_port = member.ports
        initial = ",".join(f"{m.name}=http://{HOST}:{m.ports[0]}" for m in self.members)
        # No --unsafe-no-fsync: etcd fsyncs its WAL on every commit batch (its default).
        argv = [
            "etcd",
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", f"http://{HOST}:{client_port}",
            "--advertise-client-urls", f"http://{HOST}:{client_port}",
            "--listen-peer-urls", f"http://{HOST}:{peer_port}",
            "--initial-advertise-peer-urls", f"http://{HOST}:{peer_port}",
            "--initial-cluster", initial,
            "--initial-cluster-token", f"bench-{os.getpid()}-{self.members[0].ports[0]}",
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        if self.election_ms is not None:
            argv += ["--election-timeout", str(self.election_ms)]
        if self.heartbeat_ms is not None:
            argv += ["--heartbeat-interval", str(self.heartbeat_ms)]
        return argv

    def is_healthy(self, member: Member) -> bool:
        status, body = http_json("GET", f"{member.base_url}/health", timeout=2.0)
        return status == 200 and isinstance(body, dict) and body.get("health") in ("true", True)

    @property
    def leader_method(self) -> str:
        return "etcdctl endpoint status -w json"

    def find_leader(self) -> Member | None:
        live = [m for m in self.members if m.running]
        if not live:
            return None
        endpoints = ",".join(f"{HOST}:{m.client_port}" for m in live)
        _code, out, _err = self.reaper.run(
            ["etcdctl", "--endpoints", endpoints, "--dial-timeout", "2s", "--command-timeout", "3s",
             "endpoint", "status", "-w", "json"],
            timeout=15,
            env=clean_env({"ETCDCTL_API": "3"}),
        )  # fmt: skip
        if not out.strip():
            return None
        try:
            statuses = json.loads(out)
        except ValueError:
            return None
        for entry in statuses:
            status = entry.get("Status", {})
            if status.get("leader") and status.get("header", {}).get("member_id") == status.get("leader"):
                port = int(str(entry.get("Endpoint", "")).rsplit(":", 1)[-1])
                return self.by_port(port)
        return None

    def write_spec(self, key: str, value: str) -> WriteSpec:
        body = {"key": b64encode(key.encode()).decode(), "value": b64encode(value.encode()).decode()}
        return WriteSpec("POST", "/v3/kv/put", json.dumps(body).encode())

    def read_spec(self, key: str) -> WriteSpec:
        # The JSON gateway's range, as `etcdctl get`: linearizable unless "serializable" is asked for.
        body = {"key": b64encode(key.encode()).decode()}
        return WriteSpec("POST", "/v3/kv/range", json.dumps(body).encode())


# --------------------------------------------------------------------------------------- agenda-db


class AgendaCluster(Cluster):
    system = "agenda"
    health_timeout = 30.0

    def __init__(
        self,
        reaper: Reaper,
        root: Path,
        size: int = 5,
        python: str = sys.executable,
        raft_tls: TlsPaths | None = None,
    ) -> None:
        self.python = python
        self.raft_tls = raft_tls  # Raft over mutual TLS with these files; the HTTP API stays plain (hey)
        super().__init__(reaper, root, size)

    def member_name(self, index: int) -> str:
        return f"n{index + 1}"

    def command(self, member: Member) -> list[str]:
        raft_port, api_port = member.ports
        argv = [
            self.python, "-m", "agenda.db.cli",
            "--node-id", member.name,
            "--raft-addr", f"{HOST}:{raft_port}",
            "--api-addr", f"{HOST}:{api_port}",
            "--data-dir", str(member.data_dir),
        ]  # fmt: skip
        for other in self.members:
            if other is not member:
                argv += ["--peer", f"{other.name}={HOST}:{other.ports[0]},{HOST}:{other.ports[1]}"]
        argv.append("--no-tls")  # fsync stays on: it is agenda-db's default
        if self.raft_tls is not None:
            tls = self.raft_tls
            argv += [
                "--raft-tls",
                "--tls-cert",
                str(tls.cert),
                "--tls-key",
                str(tls.key),
                "--tls-ca",
                str(tls.ca),
            ]
        return argv

    def env(self) -> dict[str, str]:
        return clean_env({"PYTHONUNBUFFERED": "1"})

    def is_healthy(self, member: Member) -> bool:
        status, _ = http_json("GET", f"{member.base_url}/v1/health", timeout=2.0)
        return status == 200

    @property
    def leader_method(self) -> str:
        return "GET /v1/cluster"

    def find_leader(self) -> Member | None:
        for member in self.members:
            if not member.running:
                continue
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                status, body = http_json("GET", f"{member.base_url}/v1/cluster", timeout=2.0)
                if status == 200 and isinstance(body, dict) and body.get("leader"):
                    leader_id = body["leader"]
                    for info in body.get("members", []):
                        if info.get("id") == leader_id and info.get("api"):
                            port = int(str(info["api"]).rsplit(":", 1)[-1])
                            found = self.by_port(port)
                            if found is not None and found.running:
                                return found
                    found = next((m for m in self.members if m.name == leader_id), None)
                    if found is not None and found.running:
                        return found
        return None

    def write_spec(self, key: str, value: str) -> WriteSpec:
        return WriteSpec("PUT", f"/v1/kv/{key}", json.dumps({"value": value}).encode())

    def read_spec(self, key: str) -> WriteSpec:
        return WriteSpec("GET", f"/v1/kv/{key}", b"")  # linearizable unless ?consistency=stale


def etcd_version(reaper: Reaper) -> str:
    code, out, _ = reaper.run(["etcd", "--version"], timeout=10, env=clean_env())
    first = out.splitlines()[0] if out else ""
    return first.split(":", 1)[-1].strip() if code == 0 and first else "unknown"


def agenda_importable(python: str, reaper: Reaper) -> tuple[bool, str]:
    """Can ``python -m agenda.db.cli`` start? (imports the module in a child: catches half-written files)."""
    code, out, err = reaper.run(
        [python, "-c", "import agenda.db.cli as m; assert callable(m.main)"], timeout=60, env=clean_env()
    )
    return code == 0, (err or out).strip()[-600:]


def run_under_reaper(prog: str, keep_tmp: bool, body: Callable[[Reaper], int]) -> int:
    """A benchmark's main body with a :class:`Reaper` installed: errors are one line and exit 1, a
    signal exits 128 + its number, and every child and temporary directory is cleaned up either way."""
    reaper = Reaper()
    reaper.keep_dirs = keep_tmp
    reaper.install()
    try:
        return body(reaper)
    except BenchError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"{prog}: interrupted by signal {exc.signum}, cleaning up", file=sys.stderr)
        return 128 + exc.signum
    finally:
        reaper.cleanup()


def report_missing_tools(
    prog: str, missing: Sequence[str], packages: Mapping[str, str], install_line: str
) -> int:
    """Say which tools are missing and how to install them (the benchmarks never install anything); 2."""
    debian = sorted({packages[tool] for tool in missing})
    print(
        f"{prog}: missing tool(s): {', '.join(missing)} (Debian packages: {', '.join(debian)}).\n"
        f"Install them with:\n    {install_line}",
        file=sys.stderr,
    )
    return 2
