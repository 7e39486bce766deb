"""The VIP lab: N throwaway containers on a Docker network of their own, each able to run agenda-vrrpd
(from this checkout's source) or Debian's keepalived, and each answering HTTPS with its own host name,
so that "the VIP answers from host X" can be observed from this machine.

Used by the failover benchmark (bench/vip.py), the keepalived interop test (tests/interop/) and the
fixture capture (bench/vip_capture.py)::

    with VipLab(REPO, hosts=2) as lab:
        for host in lab.hosts:
            lab.configure(host, "keepalived", advert_int=0.1)
            lab.start(host)
        lab.wait_holders(expected="h1", timeout=10)
        t0 = lab.kill(lab.host("h1"))            # the whole host dies (docker kill)
        ...

What it does, and what it never does:

* Docker: ``lab/ensure-docker.sh`` starts an engine when none answers.
* Image ``agenda-viplab:<hash>``: FROM the lab's base image (``lab/build-image.sh``; $VIPLAB_BASE_IMAGE,
  else ``agenda-base:latest``, waited for while a build is visibly running), plus Debian's keepalived and
  tcpdump and a virtualenv holding the daemon's three dependencies from wheels that pip downloads here
  (the hosts never reach a package index). Rebuilt only when its recipe (Dockerfile, the HTTPS server,
  the wheels, the base image's id) changes.
* Network: a bridge network of this run's own on ``$VIPLAB_SUBNET`` (default 192.168.58.0/24; .56 is the
  Vagrant lab, .57 Molecule's). Host N is ``.10+N``, the VIP ``.100``. The run refuses to start when the
  subnet is already routed anywhere (``lab/check_subnet.py``'s rule). Traffic goes only to those hosts.
* Containers ``agenda-viplab-<pid>-<n>-hN``: ``sleep infinity`` as PID 1, caps NET_ADMIN and NET_RAW,
  ``app/`` bind-mounted read-only on PYTHONPATH (``python -m agenda.vrrp`` runs from source), a
  directory of this run bind-mounted at /viplab (configs, logs: they survive a ``docker kill``).
  Processes start with ``docker exec -d``; no systemd.
* Cleanup: :meth:`VipLab.close` (also from ``atexit``, with Ctrl-C ignored while it runs) removes the
  containers, the network and the run directory. Everything carries the label
  ``agenda-viplab.owner=<pid>.<start time>``; a later run removes what a dead owner left behind.
* Every wait is a bounded poll that fails with a :class:`~bench._cluster.BenchError` quoting the hosts'
  addresses and log tails.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import datetime
import errno
import hashlib
import http.client
import importlib.util
import ipaddress
import itertools
import json
import os
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from bench._cluster import BenchError, clean_env
from bench.vip_util import (
    DEFAULT_SUBNET,
    IMPLEMENTATIONS,
    host_address,
    keepalived_conf,
    parse_ip_addr_json,
    priority_for,
    vip_address,
    vrrpd_config,
)

__all__ = ["Host", "VipLab", "build_image", "owner_token", "resolve_base_image"]

REPO = Path(__file__).resolve().parent.parent
LABEL = "agenda-viplab.owner"
PREFIX = "agenda-viplab"
IMAGE_REPO = "agenda-viplab"
INTERFACE = "eth0"
WHEELS = ("netifaces-plus==0.12.5", "pyroute2==0.9.7", "pyyaml==6.0.4")
_WHEEL_GLOBS = ("netifaces_plus-0.12.5-*.whl", "pyroute2-0.9.7-*.whl", "pyyaml-6.0.4-*.whl")
# Debian 12's interpreter, the hosts' platform.
_PIP_PLATFORM = [
    "--only-binary=:all:", "--python-version", "3.11.2", "--implementation", "cp",
    "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
]
_CONTAINER_PATH = "/opt/viplab/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DOCKERFILE = """\
FROM {base}
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      keepalived tcpdump >/dev/null \\
 && apt-get clean
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/viplab/venv \\
 && /opt/viplab/venv/bin/pip install --quiet --disable-pip-version-check --no-index \\
      --find-links /tmp/wheels {wheels} \\
 && rm -rf /tmp/wheels
COPY https_server.py /opt/viplab/https_server.py
ENV PYTHONPATH=/opt/viplab/app PYTHONUNBUFFERED=1 PATH={path}
CMD ["sleep", "infinity"]
"""
# Each host answers GET with its own host name over HTTPS (the run's throwaway CA). Stdlib only.
_HTTPS_SERVER = '''\
"""HTTPS on :443 answering every GET with this host's name (the VIP lab's witness)."""
import http.server
import socket
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (socket.gethostname() + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self):
        conn, addr = self.socket.accept()
        conn.settimeout(5)
        return context.wrap_socket(conn, server_side=True), addr

    def handle_error(self, request, client_address):
        pass


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server = Server(("0.0.0.0", 443), Handler)
print("serving", flush=True)
server.serve_forever()
'''

_run_numbers = itertools.count(1)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ docker CLI


def docker(*args: str, timeout: float = 60, check: bool = True, input_text: str | None = None) -> str:
    """Run the docker CLI (bounded); stdout, or BenchError naming the command and its stderr."""
    try:
        proc = subprocess.run(  # noqa: S603 - argv built here
            ["docker", *args],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(),
            input=input_text,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"`docker {' '.join(args[:3])} ...` did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit status {proc.returncode}"
        raise BenchError(f"`docker {' '.join(args[:4])} ...` failed: {reason}")
    return proc.stdout


def ensure_docker(repo: Path = REPO) -> None:
    script = repo / "lab" / "ensure-docker.sh"
    try:
        proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=180, check=False)  # noqa: S603
    except subprocess.TimeoutExpired:
        raise BenchError(f"{script} did not finish within 180 s") from None
    if proc.returncode != 0:
        raise BenchError(f"no Docker engine: {proc.stderr.strip() or proc.stdout.strip()}")


def _image_id(ref: str) -> str | None:
    out = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False).strip()
    return out or None


def _build_running() -> bool:
    """Is lab/build-image.sh running right now (another session building the base image)?"""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if b"build-image.sh" in (entry / "cmdline").read_bytes():
                    return True
    return False


def resolve_base_image(wait: float = 1200.0, log: Callable[[str], None] = _say) -> str:
    """$VIPLAB_BASE_IMAGE, else ``agenda-base:latest`` (waited for, bounded, while a build runs)."""
    wanted = os.environ.get("VIPLAB_BASE_IMAGE") or "agenda-base:latest"
    if _image_id(wanted):
        return wanted
    if not _build_running():
        raise BenchError(f"base image {wanted} not found: run `make image` (lab/build-image.sh) first")
    log(f"viplab: waiting (at most {wait:.0f} s) for lab/build-image.sh to produce {wanted} ...")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _image_id(wanted):
            return wanted
        if not _build_running() and not _image_id(wanted):
            raise BenchError(f"lab/build-image.sh ended without producing {wanted}")
        time.sleep(5)
    raise BenchError(f"base image {wanted} did not appear within {wait:.0f} s")


def _wheelhouse(repo: Path, log: Callable[[str], None]) -> Path:
    """The daemon's dependencies as wheels for the hosts' Python (downloaded once, kept in .cache)."""
    folder = repo / ".cache" / "viplab-wheels"
    if all(list(folder.glob(pattern)) for pattern in _WHEEL_GLOBS):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    log(f"viplab: downloading wheels {', '.join(WHEELS)} into {folder}")
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            *_PIP_PLATFORM, "-d", str(folder), *WHEELS]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)  # noqa: S603
    except subprocess.TimeoutExpired:
        raise BenchError("pip download of the daemon's wheels did not finish within 300 s") from None
    missing = [p for p in _WHEEL_GLOBS if not list(folder.glob(p))]
    if proc.returncode != 0 or missing:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BenchError(f"pip download failed (missing {missing}): {' | '.join(tail)}")
    return folder


def build_image(repo: Path = REPO, base: str | None = None, log: Callable[[str], None] = _say) -> str:
    """The lab hosts' image, ``agenda-viplab:<recipe hash>``; built only when the recipe changed."""
    base = base or resolve_base_image(log=log)
    base_id = _image_id(base)
    if base_id is None:
        raise BenchError(f"base image {base} not found")
    wheels = sorted(p for pattern in _WHEEL_GLOBS for p in _wheelhouse(repo, log).glob(pattern))
    dockerfile = _DOCKERFILE.format(base=base, wheels=" ".join(WHEELS), path=_CONTAINER_PATH)
    digest = hashlib.sha256()
    for part in (dockerfile.replace(base, base_id), _HTTPS_SERVER):
        digest.update(part.encode())
    for wheel in wheels:
        digest.update(wheel.name.encode() + hashlib.sha256(wheel.read_bytes()).digest())
    tag = f"{IMAGE_REPO}:{digest.hexdigest()[:12]}"
    if _image_id(tag):
        return tag
    log(f"viplab: building {tag} FROM {base} (keepalived, tcpdump, a venv with the daemon's wheels) ...")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agenda-viplab-build-") as context:
        root = Path(context)
        (root / "Dockerfile").write_text(dockerfile)
        (root / "https_server.py").write_text(_HTTPS_SERVER)
        (root / "wheels").mkdir()
        for wheel in wheels:
            shutil.copy2(wheel, root / "wheels" / wheel.name)
        docker("build", "--quiet", "--label", "agenda-viplab.image=1", "-t", tag, str(root), timeout=1200)
    log(f"viplab: built {tag} in {time.monotonic() - started:.0f} s")
    return tag


# ----------------------------------------------------------------------------------- ownership


def _start_time(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()[19]  # field 22: start time in clock ticks since boot


def owner_token(pid: int | None = None) -> str:
    """``<pid>.<start time>``: names the process that owns lab resources (a reused pid does not match)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{_start_time(pid)}"


def _owner_alive(token: str) -> bool:
    pid_text, _, started = token.partition(".")
    if not pid_text.isdigit():
        return False
    return _start_time(int(pid_text)) == started


def remove_stale(log: Callable[[str], None] = _say) -> None:
    """Remove containers, networks and run folders of a lab whose owning process is gone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}-*"):
        with contextlib.suppress(OSError):
            if folder.is_dir() and not _owner_alive((folder / "owner").read_text().strip()):
                log(f"viplab: removing {folder} left by an earlier run")
                shutil.rmtree(folder, ignore_errors=True)
    template = f'{{{{.ID}}}} {{{{.Label "{LABEL}"}}}}'
    rows = docker("ps", "-a", "--filter", f"label={LABEL}", "--format", template)
    dead = [cid for cid, _, token in (r.partition(" ") for r in rows.splitlines()) if not _owner_alive(token)]
    if dead:
        log(f"viplab: removing {len(dead)} container(s) left by an earlier run")
        docker("rm", "-f", *dead, timeout=120, check=False)
    for net_id in docker("network", "ls", "-q", "--filter", f"label={LABEL}").split():
        token = docker("network", "inspect", "--format", f'{{{{index .Labels "{LABEL}"}}}}', net_id,
                       check=False).strip()
        if token and not _owner_alive(token):
            log(f"viplab: removing network {net_id[:12]} left by an earlier run")
            docker("network", "rm", net_id, check=False)


def _check_subnet_module(repo: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("lab_check_subnet", repo / "lab" / "check_subnet.py")
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {repo / 'lab' / 'check_subnet.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refuse_routed_subnet(repo: Path, subnet: ipaddress.IPv4Network) -> None:
    found = _check_subnet_module(repo).collisions(subnet, _check_subnet_module(repo).routes(), set())
    if found:
        raise BenchError(
            f"refusing to start: VIPLAB_SUBNET {subnet} is already routed here ({'; '.join(found)}). "
            "Set VIPLAB_SUBNET to a free /24, e.g. VIPLAB_SUBNET=192.168.59.0/24"
        )


# ------------------------------------------------------------------------------------------ TLS


def _write_tls(folder: Path, addresses: Sequence[str], names: Sequence[str]) -> None:
    """A throwaway CA and one server certificate for every host address, VIP and host name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agenda-viplab throwaway CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.IPv4Address(a)) for a in addresses]
    sans += [x509.DNSName(n) for n in names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agenda-viplab host")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


# --------------------------------------------------------------------------------- docker kill


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _docker_socket() -> str | None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    path = host.removeprefix("unix://")
    return path if host.startswith("unix://") and os.path.exists(path) else None


def _kill_container(name: str) -> float:
    """SIGKILL the container (its whole PID namespace). Returns the monotonic time just before the
    request: through the engine's socket it costs a millisecond or two, where the CLI costs ~50 ms."""
    path = _docker_socket()
    if path is None:
        started = time.monotonic()
        docker("kill", name)
        return started
    conn = _UnixHTTPConnection(path, timeout=30)
    try:
        started = time.monotonic()
        conn.request("POST", f"/containers/{name}/kill?signal=KILL")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 204:
        raise BenchError(f"docker kill {name}: {response.status} {body.decode(errors='replace').strip()}")
    return started


# ------------------------------------------------------------------------------------------ lab


@dataclass
class Host:
    index: int
    name: str
    container: str
    address: str
    dir: Path  # this run's folder for the host, bind-mounted at /viplab
    impl: str | None = None
    priority: int = 0
    advert_int: float = 1.0
    alive: bool = False

    def __str__(self) -> str:
        return self.name


class VipLab:
    """N hosts on a network of this run's own; see the module's docstring."""

    def __init__(
        self,
        repo: Path = REPO,
        *,
        hosts: int = 2,
        subnet: str | None = None,
        vrid: int = 51,
        vip_count: int = 1,
        image: str | None = None,
        keep: bool = False,
        log: Callable[[str], None] = _say,
    ) -> None:
        if not 1 <= hosts <= 9:
            raise BenchError(f"hosts must be 1..9, got {hosts}")
        self.repo = repo
        try:
            self.subnet = ipaddress.IPv4Network(subnet or os.environ.get("VIPLAB_SUBNET") or DEFAULT_SUBNET)
            host_address(self.subnet, 1)
        except ValueError as exc:
            raise BenchError(f"VIPLAB_SUBNET: {exc}") from None
        self.vrid = vrid
        self.vips = [vip_address(self.subnet, n) for n in range(vip_count)]
        self.vip = self.vips[0]
        self.image = image
        self.keep = keep
        self.log = log
        self.owner = owner_token()
        run = f"{os.getpid()}-{next(_run_numbers)}"
        self.network = f"{PREFIX}-{run}"
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{run}-"))
        (self.root / "owner").write_text(self.owner + "\n")
        atexit.register(self.close)
        self.hosts = [
            Host(
                index=i,
                name=f"h{i}",
                container=f"{PREFIX}-{run}-h{i}",
                address=host_address(self.subnet, i),
                dir=self.root / f"h{i}",
                priority=priority_for(i),
            )
            for i in range(1, hosts + 1)
        ]
        self._opened = False
        self._closed = False
        self._children: list[subprocess.Popen[bytes]] = []
        self._client_context: ssl.SSLContext | None = None

    # ---- lifecycle

    def __enter__(self) -> VipLab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> VipLab:
        ensure_docker(self.repo)
        self.image = self.image or build_image(self.repo, log=self.log)
        remove_stale(self.log)
        refuse_routed_subnet(self.repo, self.subnet)
        gateway = str(self.subnet.network_address + 1)
        docker("network", "create", "--driver", "bridge", "--subnet", str(self.subnet), "--gateway", gateway,
               "--label", f"{LABEL}={self.owner}", self.network)
        self._opened = True
        names = [h.name for h in self.hosts]
        _write_tls(self.root / "tls", [h.address for h in self.hosts] + self.vips, names)
        context = ssl.create_default_context(cafile=str(self.root / "tls" / "ca.crt"))
        self._client_context = context
        for host in self.hosts:
            host.dir.mkdir(parents=True, exist_ok=True)
        self.parallel(self.create, self.hosts)
        return self

    def close(self) -> None:
        """Remove every container and the network of this run, and its folder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous[signum] = signal.signal(signum, signal.SIG_IGN)
        try:
            for child in self._children:
                if child.poll() is None:
                    child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=5)
            with contextlib.suppress(BenchError):
                ids = docker("ps", "-aq", "--filter", f"label={LABEL}={self.owner}", timeout=60).split()
                if ids:
                    docker("rm", "-f", *ids, timeout=120, check=False)
            if self._opened:
                for _ in range(10):  # an endpoint can linger for a moment after its container
                    with contextlib.suppress(BenchError):
                        docker("network", "rm", self.network, timeout=60)
                        break
                    left = docker("network", "ls", "-q", "--filter", f"name=^{self.network}$", check=False)
                    if not left.strip():
                        break
                    time.sleep(0.5)
            if self.keep:
                self.log(f"viplab: kept {self.root}")
            else:
                shutil.rmtree(self.root, ignore_errors=True)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            atexit.unregister(self.close)

    # ---- hosts

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if name in (host.name, host.container, host.address):
                return host
        raise KeyError(name)

    def create(self, host: Host) -> None:
        """Start the host's container and its HTTPS witness; returns once it answers at its address."""
        docker(
            "run", "-d", "--name", host.container, "--hostname", host.name,
            "--network", self.network, "--ip", host.address,
            "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
            "--label", f"{LABEL}={self.owner}",
            "-v", f"{self.repo / 'app'}:/opt/viplab/app:ro",
            "-v", f"{host.dir}:/viplab",
            "-v", f"{self.root / 'tls'}:/viplab-tls:ro",
            str(self.image),
        )
        host.alive = True
        self._exec_bg(host, ["python3", "/opt/viplab/https_server.py", "/viplab-tls/server.crt",
                             "/viplab-tls/server.key"], "https")
        if not self.poll(lambda: self.probe(host.address, connect_timeout=0.2) == host.name, 15):
            raise BenchError(
                f"{host.name}'s HTTPS witness did not answer within 15 s: {self.tail(host, 'https')}"
            )

    def kill(self, host: Host) -> float:
        """The whole host dies (``docker kill``). Returns the monotonic instant the kill was requested."""
        started = _kill_container(host.container)
        host.alive = False
        return started

    def recreate(self, host: Host, *, start: bool = True) -> None:
        """A fresh container for ``host`` (same name and address); starts its implementation again."""
        docker("rm", "-f", host.container, timeout=120)
        host.alive = False
        self.create(host)
        if start and host.impl:
            self.start(host)

    def reset(self) -> None:
        """Every host recreated (fresh network namespaces, nothing running)."""
        self.parallel(lambda h: self.recreate(h, start=False), self.hosts)

    def parallel(self, fn: Callable[[Host], Any], hosts: Sequence[Host]) -> list[Any]:
        """``fn`` on every host at once (docker calls are slow, hosts independent); results in order."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            return list(pool.map(fn, hosts))

    # ---- processes inside a host

    def exec(self, host: Host, argv: Sequence[str], timeout: float = 30, check: bool = True) -> str:
        return docker("exec", host.container, *argv, timeout=timeout, check=check)

    def _exec_bg(self, host: Host, argv: Sequence[str], name: str) -> None:
        """``docker exec -d``: the process's pid goes to /viplab/<name>.pid, its output to <name>.log."""
        with (host.dir / f"{name}.log").open("a") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n")
        script = f'echo $$ > /viplab/{name}.pid; exec "$@" >> /viplab/{name}.log 2>&1'
        docker("exec", "-d", host.container, "sh", "-c", script, "sh", *argv)

    def configure(
        self,
        host: Host,
        impl: str,
        *,
        advert_int: float = 1.0,
        priority: int | None = None,
        vips: Sequence[str] | None = None,
        version: int = 3,
        unicast: bool = False,
        log_level: str = "info",
    ) -> None:
        """Write the host's config for ``impl`` ("ours" or "keepalived"); :meth:`start` runs it."""
        if impl not in IMPLEMENTATIONS:
            raise BenchError(f"unknown implementation {impl!r}")
        host.impl = impl
        host.priority = priority if priority is not None else host.priority
        host.advert_int = advert_int
        vips = list(vips) if vips is not None else [self.vip]
        peers = [h.address for h in self.hosts if h is not host] if unicast else []
        if impl == "keepalived":
            text = keepalived_conf(
                router_id=host.name, interface=INTERFACE, vrid=self.vrid, priority=host.priority,
                advert_int=advert_int, vips=vips, prefixlen=self.subnet.prefixlen, version=version,
                unicast_src=host.address if unicast else None, unicast_peers=peers,
            )
            (host.dir / "keepalived.conf").write_text(text)
        else:
            config = vrrpd_config(
                interface=INTERFACE, vrid=self.vrid, priority=host.priority, advert_int=advert_int,
                vips=vips, prefixlen=self.subnet.prefixlen, log_level=log_level, unicast_peers=peers,
            )
            (host.dir / "vrrpd.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def command(self, host: Host) -> list[str]:
        if host.impl == "keepalived":
            return ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp",
                    "--use-file", "/viplab/keepalived.conf"]
        return ["python", "-m", "agenda.vrrp", "--config", "/viplab/vrrpd.yml", "run"]

    def start(self, host: Host, timeout: float = 15) -> None:
        """Start the configured implementation; returns once it runs (ours: once `status` answers)."""
        if host.impl is None:
            raise BenchError(f"{host.name}: configure() it first")
        self._exec_bg(host, self.command(host), host.impl)
        def ready() -> bool:
            return self.status(host) is not None if host.impl == "ours" else self.running(host)

        if not self.poll(ready, timeout, interval=0.1):
            raise BenchError(f"{host.name}: {host.impl} did not come up within {timeout:.0f} s: "
                             f"{self.tail(host, host.impl)}")

    def running(self, host: Host) -> bool:
        if not host.alive or host.impl is None:
            return False
        out = self.exec(host, ["sh", "-c", f"kill -0 $(cat /viplab/{host.impl}.pid) 2>/dev/null && echo up"],
                        check=False)
        return out.strip() == "up"

    def signal(self, host: Host, sig: str = "TERM") -> None:
        self.exec(host, ["sh", "-c", f"kill -{sig} $(cat /viplab/{host.impl}.pid)"])

    def stop(self, host: Host, sig: str = "TERM", timeout: float = 15) -> None:
        """Signal the implementation (orderly stop by default) and wait until its process is gone."""
        self.signal(host, sig)
        if not self.poll(lambda: not self.running(host), timeout, interval=0.1):
            raise BenchError(f"{host.name}: {host.impl} still runs {timeout:.0f} s after SIG{sig}")

    def status(self, host: Host) -> dict[str, Any] | None:
        """agenda-vrrpd's ``status --json`` (None when it does not answer)."""
        out = docker("exec", host.container, "python", "-m", "agenda.vrrp", "--config", "/viplab/vrrpd.yml",
                     "status", "--json", timeout=20, check=False)
        try:
            data = json.loads(out)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    # ---- observing

    def addresses(self, host: Host) -> list[str]:
        return parse_ip_addr_json(self.exec(host, ["ip", "-j", "-4", "addr", "show", "dev", INTERFACE]))

    def holders(self, vip: str | None = None) -> list[str]:
        """Names of the live hosts whose interface holds ``vip`` (every host asked)."""
        vip = vip or self.vip
        live = [h for h in self.hosts if h.alive]
        found = self.parallel(lambda h: vip in self.addresses(h), live)
        return [h.name for h, holds in zip(live, found, strict=True) if holds]

    def wait_holders(self, expected: str | None = None, timeout: float = 15, settle: float = 0.0) -> str:
        """Until exactly one host holds the VIP (``expected`` if given), unchanged for ``settle`` s."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        since: float | None = None
        while True:
            with contextlib.suppress(BenchError):
                seen = self.holders()
                if len(seen) == 1 and (expected is None or seen[0] == expected):
                    since = since if since is not None else time.monotonic()
                    if time.monotonic() - since >= settle:
                        return seen[0]
                else:
                    since = None
            if time.monotonic() >= deadline:
                want = expected or "exactly one host"
                raise BenchError(f"VIP {self.vip}: wanted {want}, held by {seen or 'nobody'} after "
                                 f"{timeout:.0f} s; {self.describe()}")
            time.sleep(0.05)

    def probe(self, address: str | None = None, *, connect_timeout: float = 0.05,
              io_timeout: float = 1.0) -> str | None:
        """One HTTPS GET (certificate checked against the run's CA); the answering host's name or None."""
        address = address or self.vip
        try:
            sock = socket.create_connection((address, 443), timeout=connect_timeout)
        except OSError:
            return None
        return self._https_get(sock, address, io_timeout)

    def _https_get(self, sock: socket.socket, address: str, io_timeout: float) -> str | None:
        """GET / over an already connected socket (closed here); the host name in the answer or None."""
        if self._client_context is None:
            raise BenchError("the lab is not open")
        try:
            sock.setblocking(True)
            sock.settimeout(io_timeout)
            with self._client_context.wrap_socket(sock, server_hostname=address) as tls:
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while len(data) < 4096:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        except (OSError, ssl.SSLError):
            return None
        finally:
            sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or head.split(b" ", 2)[1:2] != [b"200"]:
            return None
        return body.decode(errors="replace").strip() or None

    def first_answer(self, *, exclude: str, started: float, limit: float, connect_timeout: float = 0.05,
                     spacing: float = 0.01, io_timeout: float = 1.0) -> tuple[float | None, str | None, int]:
        """Probe the VIP until a host other than ``exclude`` answers an HTTPS GET, or ``limit`` seconds
        after ``started`` (a monotonic instant). Returns (seconds since ``started``, host, attempts).

        A new connection attempt starts every ``spacing`` seconds, each given ``connect_timeout`` to
        connect, so up to connect_timeout/spacing attempts are in flight: a SYN lost to a dead host's
        MAC (before the new master's gratuitous ARP) costs one attempt, not the resolution, which stays
        ``spacing`` instead of ``connect_timeout``.
        """
        selector = selectors.DefaultSelector()
        pending: dict[socket.socket, float] = {}
        attempts = 0
        next_start = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now - started >= limit:
                    return None, None, attempts
                if now >= next_start:
                    next_start = now + spacing
                    attempts += 1
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    if sock.connect_ex((self.vip, 443)) in (0, errno.EINPROGRESS):
                        selector.register(sock, selectors.EVENT_WRITE)
                        pending[sock] = now + connect_timeout
                    else:
                        sock.close()
                wake = min([next_start, *pending.values()])
                for key, _ in selector.select(timeout=max(0.0, wake - time.monotonic())):
                    sock = typing.cast(socket.socket, key.fileobj)
                    selector.unregister(sock)
                    del pending[sock]
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                        sock.close()
                        continue
                    answer = self._https_get(sock, self.vip, io_timeout)
                    if answer is not None and answer != exclude:
                        return time.monotonic() - started, answer, attempts
                now = time.monotonic()
                for sock, deadline in list(pending.items()):
                    if now >= deadline:
                        selector.unregister(sock)
                        del pending[sock]
                        sock.close()
        finally:
            for sock in pending:
                sock.close()
            selector.close()

    def wait_answer(self, expected: str, timeout: float = 10) -> None:
        if not self.poll(lambda: self.probe(connect_timeout=0.2) == expected, timeout, interval=0.05):
            raise BenchError(f"the VIP did not answer from {expected} within {timeout:.0f} s "
                             f"(last answer: {self.probe(connect_timeout=0.2)}); {self.describe()}")

    def tail(self, host: Host, name: str, lines: int = 12) -> str:
        try:
            text = (host.dir / f"{name}.log").read_text(errors="replace")
        except OSError as exc:
            return f"(no {name} log: {exc})"
        return f"{host.name}/{name}.log: " + " | ".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        """Every live host's addresses and the tail of its implementation's log (for error messages)."""
        parts = []
        for host in self.hosts:
            if not host.alive:
                parts.append(f"{host.name}: dead")
                continue
            try:
                addrs = ",".join(self.addresses(host))
            except BenchError as exc:
                addrs = f"? ({exc})"
            log = self.tail(host, host.impl, 6) if host.impl else ""
            parts.append(f"{host.name} ({host.impl}) addrs {addrs}; {log}")
        return "\n  ".join(["hosts:", *parts])

    # ---- capture

    def capture(self, host: Host, bpf: str, count: int = 0, timeout: float = 30) -> Capture:
        """Start tcpdump on the host's interface (returns once it listens). :meth:`Capture.wait` gives the
        pcap bytes of at most ``count`` (0: any number of) matching frames seen within ``timeout``
        seconds; :meth:`Capture.stop` ends it earlier."""
        name = f"capture-{next(_run_numbers)}"
        command = ["timeout", str(int(timeout)), "tcpdump", "-i", INTERFACE, "-n", "-U", "--immediate-mode",
                   *(["-c", str(count)] if count else []), "-w", f"/viplab/{name}.pcap", bpf]
        wrapper = f'echo $$ > /viplab/{name}.pid; exec "$@"'
        argv = ["docker", "exec", host.container, "sh", "-c", wrapper, "sh", *command]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env())  # noqa: S603
        self._children.append(proc)
        listening = threading.Event()
        lines: list[str] = []

        def read() -> None:
            for raw in proc.stderr or ():
                line = raw.decode(errors="replace").strip()
                lines.append(line)
                if "listening on" in line:
                    listening.set()

        threading.Thread(target=read, daemon=True).start()
        if not listening.wait(15):
            proc.kill()
            raise BenchError(f"tcpdump on {host.name} did not start listening: {' | '.join(lines)}")
        files = (host.dir / f"{name}.pcap", host.dir / f"{name}.pid")
        return Capture(proc, host, *files, timeout, lines, command)

    # ---- helpers

    @staticmethod
    def poll(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
        """Until ``predicate()`` (a BenchError counts as "not yet") or ``timeout`` s: True if it held."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(BenchError):
                if predicate():
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)


@dataclass
class Capture:
    proc: subprocess.Popen[bytes]  # the `docker exec` client
    host: Host
    path: Path
    pid_path: Path
    timeout: float
    stderr: list[str]
    command: list[str]  # as run inside the host

    def stop(self) -> bytes:
        """SIGTERM tcpdump (through `timeout`, which passes it on): it flushes and ends; the pcap bytes."""
        with contextlib.suppress(OSError, ValueError, BenchError):
            pid = int(self.pid_path.read_text().strip())
            docker("exec", self.host.container, "kill", "-TERM", str(pid), timeout=20, check=False)
        return self.wait()

    def wait(self) -> bytes:
        try:
            self.proc.wait(timeout=self.timeout + 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise BenchError(f"tcpdump did not end within {self.timeout + 15:.0f} s") from None
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise BenchError(f"tcpdump wrote no capture ({' | '.join(self.stderr)}): {exc}") from None
