"""Real multi-process clusters for integration tests (127.0.0.1 only, ephemeral ports, tmp data dirs).

`db_cluster` starts five `python -m agenda.db.cli` processes once per session; the function-scoped
`cluster` fixture hands it to a test after making sure every member runs (restarting any the previous
test killed, resuming any it stopped) and reports healthy; `make_cluster` starts clusters of their own
for tests that change the membership, plain or (``tls=``) with mutual TLS on the API and Raft links.
Every wait is a bounded poll; whatever happens, teardown SIGKILLs every process these fixtures started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from agenda.common.http import HttpClient, Unavailable
from agenda.devstack.pki import TlsFiles
from agenda.devstack.stack import free_ports

CLUSTER_SIZE = 5
SECRET = "integration-test-secret"


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, message: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned) or fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
        except (requests.RequestException, Unavailable, OSError, ValueError, KeyError) as exc:
            value, last_exc = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message} (last error: {last_exc!r})")
        time.sleep(interval)


@dataclass
class Member:
    node_id: str
    raft_port: int
    api_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False
    peer_ids: tuple[str, ...] | None = None  # its --peer flags; None: every other member of the cluster
    tls: TlsFiles | None = None  # its certificate, key and CA (API and Raft); None: plain HTTP and TCP
    raft_host: str = "127.0.0.1"  # pysyncobj dials the members whose address sorts below its own

    @property
    def raft_addr(self) -> str:
        return f"{self.raft_host}:{self.raft_port}"

    @property
    def api_addr(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.api_addr}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    root: Path
    members: dict[str, Member] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()  # more agenda-db flags, the same for every member
    _clients: dict[tuple[str, float], HttpClient] = field(default_factory=dict)
    tls: TlsFiles | None = None  # every member's, unless a test gives one its own

    @classmethod
    def create(
        cls,
        root: Path,
        size: int = CLUSTER_SIZE,
        extra_args: Sequence[str] = (),
        tls: TlsFiles | None = None,
    ) -> Cluster:
        ports = free_ports(2 * size)
        cluster = cls(root, extra_args=tuple(extra_args), tls=tls)
        for i in range(size):
            node_id = f"db{i + 1}"
            cluster.members[node_id] = Member(
                node_id=node_id,
                raft_port=ports[2 * i],
                api_port=ports[2 * i + 1],
                data_dir=root / node_id,
                log_path=root / f"{node_id}.log",
                tls=tls,
            )
        return cluster

    # ------------------------------------------------------------------------------------ processes

    def command(self, member: Member) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "agenda.db.cli",
            "--node-id",
            member.node_id,
            "--raft-addr",
            member.raft_addr,
            "--api-addr",
            member.api_addr,
            "--data-dir",
            str(member.data_dir),
            *self.tls_flags(member),
            "--cluster-secret",
            SECRET,
            "--log-format",
            "plain",
            *self.extra_args,
        ]
        peer_ids = member.peer_ids
        if peer_ids is None:
            peer_ids = tuple(node_id for node_id in self.members if node_id != member.node_id)
        for other in (self.members[node_id] for node_id in peer_ids):
            argv += ["--peer", f"{other.node_id}={other.raft_addr},{other.api_addr}"]
        return argv

    @staticmethod
    def tls_flags(member: Member) -> list[str]:
        """Mutual TLS with the member's files (Raft over TLS follows), or plain HTTP and plain Raft."""
        if member.tls is None:
            return ["--no-tls"]
        return [
            "--tls-cert",
            str(member.tls.cert),
            "--tls-key",
            str(member.tls.key),
            "--tls-ca",
            str(member.tls.ca),
        ]

    def add_member(self, node_id: str) -> Member:
        """A new member (not started yet) whose --peer flags name every current member.

        The current members keep the --peer flags they had, as they would when a member is added at run
        time: from now on each member's flags are fixed, whatever joins or leaves later.
        """
        for member in self.members.values():
            if member.peer_ids is None:
                member.peer_ids = tuple(other for other in self.members if other != member.node_id)
        raft_port, api_port = free_ports(2)
        member = Member(
            node_id=node_id,
            raft_port=raft_port,
            api_port=api_port,
            data_dir=self.root / node_id,
            log_path=self.root / f"{node_id}.log",
            peer_ids=tuple(self.members),
            tls=self.tls,
        )
        self.members[node_id] = member
        return member

    def start(self, node_id: str) -> None:
        member = self.members[node_id]
        assert not member.running, f"{node_id} is already running"
        log = member.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        member.proc = subprocess.Popen(
            self.command(member), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        member.stopped = False

    def start_all(self) -> None:
        for node_id in self.members:
            if not self.members[node_id].running:
                self.start(node_id)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the member; for SIGKILL also reap it (bounded)."""
        member = self.members[node_id]
        assert member.proc is not None, f"{node_id} was never started"
        assert member.running, f"{node_id} is not running"
        member.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            member.stopped = True
        elif sig == signal.SIGCONT:
            member.stopped = False
        elif sig == signal.SIGKILL:
            member.proc.wait(timeout=10)
            member.stopped = False

    def restart(self, node_id: str) -> None:
        member = self.members[node_id]
        if member.running:
            if member.stopped:
                self.kill(node_id, signal.SIGCONT)
            self.kill(node_id, signal.SIGKILL)
        self.start(node_id)

    def kill_all(self) -> None:
        for member in self.members.values():
            if member.proc is not None and member.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    member.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    member.proc.wait(timeout=10)

    # --------------------------------------------------------------------------------------- HTTP

    def url(self, node_id: str) -> str:
        return self.members[node_id].url

    def http(self, node_id: str, timeout: float = 8.0) -> HttpClient:
        """A client pinned to one member, no retries (tests want to see each member's own answer)."""
        key = (node_id, timeout)
        if key not in self._clients:
            tls = self.members[node_id].tls  # trusting what the member trusts, with its certificate
            self._clients[key] = HttpClient(
                [self.url(node_id)],
                retries=0,
                timeout=(1.0, timeout),
                verify=str(tls.ca) if tls else True,
                cert=(str(tls.cert), str(tls.key)) if tls else None,
            )
        return self._clients[key]

    def request(self, node_id: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        timeout = kwargs.pop("client_timeout", 8.0)
        return self.http(node_id, timeout).request(method, path, **kwargs)

    def running_ids(self) -> list[str]:
        return [m.node_id for m in self.members.values() if m.running and not m.stopped]

    def healthy(self, node_id: str) -> bool:
        try:
            return self.request(node_id, "GET", "/v1/health", client_timeout=1.0).status_code == 200
        except Unavailable:
            return False

    def wait_healthy(self, node_ids: list[str] | None = None, timeout: float = 30.0) -> None:
        ids = node_ids if node_ids is not None else list(self.members)
        wait_until(lambda: all(self.healthy(n) for n in ids), timeout, 0.1, f"health of {ids}")

    def leader(self, among: list[str] | None = None, timeout: float = 20.0) -> str:
        """The leader that every running member in ``among`` agrees on (bounded poll)."""
        ids = among if among is not None else self.running_ids()

        def agreed() -> str | None:
            views = set()
            for node_id in ids:
                response = self.request(node_id, "GET", "/v1/cluster", client_timeout=1.0)
                views.add(response.json()["leader"])
            if len(views) == 1:
                (leader,) = views
                return leader if leader in ids else None
            return None

        return wait_until(agreed, timeout, 0.1, f"agreement on a leader among {ids}")

    def followers(self, leader: str) -> list[str]:
        return [n for n in self.running_ids() if n != leader]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def tail_logs(self, lines: int = 40) -> str:
        out = []
        for member in self.members.values():
            if member.log_path.exists():
                text = member.log_path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"----- {member.node_id} ({member.log_path}) -----")
                out.extend(text)
        return "\n".join(out)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash.setdefault(_FAILED, True)
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def db_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster.create(tmp_path_factory.mktemp("db-cluster"))
    try:
        cluster.start_all()
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.close()
        cluster.kill_all()


@pytest.fixture
def cluster(db_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The session cluster with all five members running and healthy."""
    for member in db_cluster.members.values():
        if member.running and member.stopped:
            db_cluster.kill(member.node_id, signal.SIGCONT)
        if not member.running:
            db_cluster.start(member.node_id)
    db_cluster.wait_healthy()
    yield db_cluster
    if request.node.stash.get(_FAILED, False):
        print(db_cluster.tail_logs())  # shown by pytest for the failed test


@pytest.fixture
def make_cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Cluster]]:
    """Start a cluster of its own for a test that reconfigures it (`db_cluster` must stay as it is);
    ``extra_args`` are agenda-db flags given to every member."""
    made: list[Cluster] = []

    def make(size: int, extra_args: Sequence[str] = (), tls: TlsFiles | None = None) -> Cluster:
        cluster = Cluster.create(tmp_path_factory.mktemp("own-cluster"), size, extra_args, tls)
        made.append(cluster)
        cluster.start_all()
        cluster.wait_healthy(timeout=60)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            if request.node.stash.get(_FAILED, False):
                print(cluster.tail_logs())
            cluster.close()
            cluster.kill_all()


@pytest.fixture
def ports() -> Callable[[int], list[int]]:
    """`free_ports`, as a fixture (test modules cannot import conftest)."""
    return free_ports


@pytest.fixture
def wait() -> Callable[..., Any]:
    """The bounded-polling helper, as a fixture (test modules cannot import conftest)."""
    return wait_until


# ------------------------------------------------------------------------------------------- Redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@dataclass
class RedisServer:
    """One real `redis-server` on loopback, in its own directory, without persistence.

    ``users`` (name -> password, every command, key and channel) become ``--user`` directives, and the
    first of them also authenticates replication; ``default_off`` turns the passwordless default user
    off, so only those users get in. ``client()`` then logs in as the first user unless told otherwise.
    """

    port: int
    dir: Path
    users: dict[str, str] = field(default_factory=dict)
    default_off: bool = False
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    _clients: dict[tuple[str | None, str | None], redis.Redis] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def client(self, username: str | None = None, password: str | None = None) -> redis.Redis:
        """A client (one per credentials, reused until the process is killed or restarted)."""
        if username is None and self.default_off and self.users:
            username, password = next(iter(self.users.items()))
        if (username, password) in self._clients:
            return self._clients[username, password]
        client = redis.Redis(
            self.host,
            self.port,
            username=username,
            password=password,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
        )
        self._clients[username, password] = client
        return client

    def command(self, replicaof: RedisServer | None) -> list[str]:
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", self.host, "--dir", str(self.dir)]
        argv += ["--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"]
        # No 5 s wait before a full sync (the default diskless delay): replicas link at once.
        argv += ["--logfile", str(self.log_path), "--repl-diskless-sync-delay", "0"]
        for user, password in self.users.items():
            argv += ["--user", user, "on", f">{password}", "~*", "&*", "+@all"]
        if self.users:
            user, password = next(iter(self.users.items()))
            argv += ["--masteruser", user, "--masterauth", password]
        if self.default_off:
            argv += ["--user", "default", "off"]
        if replicaof is not None:
            argv += ["--replicaof", replicaof.host, str(replicaof.port)]
        return argv

    def start(self, replicaof: RedisServer | None = None) -> None:
        """Start (or restart, same port and directory) and wait until it answers PING."""
        assert not self.running, f"redis {self.name} is already running"
        self._close_clients()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.command(replicaof),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        probe = self.client()

        def up() -> bool:
            if not self.running:
                pytest.fail(f"redis {self.name} exited: {self.tail_log()}")
            return _pings(probe)

        wait_until(up, 10.0, 0.02, f"redis {self.name} to answer PING")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None, f"redis {self.name} was never started"
        assert self.running, f"redis {self.name} is not running"
        self.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.proc.wait(timeout=10)
            self._close_clients()  # their connections are dead: the next client() starts afresh

    def _close_clients(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def close(self) -> None:
        self._close_clients()
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def tail_log(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def redis_servers(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., list[RedisServer]]]:
    """``make(n, *, primary_first=True, users=None, default_off=False)``: n running Redis servers.

    With ``primary_first`` the first is a primary and the others its replicas, linked before ``make``
    returns; without it every server starts as a primary of its own. All are killed at teardown.
    """
    if not Path(REDIS_SERVER).exists():
        # Never skipped: CI installs it (.ci/run), and a missing server must not pass as a green run.
        pytest.fail("redis-server is not installed: apt-get install redis-server")
    made: list[RedisServer] = []

    def make(
        n: int, *, primary_first: bool = True, users: dict[str, str] | None = None, default_off: bool = False
    ) -> list[RedisServer]:
        root = tmp_path_factory.mktemp("redis")
        servers = [
            RedisServer(port, root / f"r{i}", dict(users or {}), default_off)
            for i, port in enumerate(free_ports(n))
        ]
        made.extend(servers)
        for i, server in enumerate(servers):
            server.start(servers[0] if primary_first and i else None)
        if primary_first:
            for replica in servers[1:]:
                info = replica.client()
                wait_until(
                    lambda info=info: info.info("replication").get("master_link_status") == "up",
                    15.0,
                    0.05,
                    f"replica {replica.name} to link",
                )
        return servers

    try:
        yield make
    finally:
        for server in made:
            if request.node.stash.get(_FAILED, False):
                print(f"----- redis {server.name} -----\n{server.tail_log()}")
            server.close()
