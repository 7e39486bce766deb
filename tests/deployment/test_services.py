"""The User Service, Group Service and API gateway as deployed: hardened units, private
configuration, each half of the token key pair where it belongs, mutual TLS to the backends, and a
round trip through each host's gateway with nothing but the deployment CA, as `curl --cacert` does.
Non-disruptive: safe against any running deployment (it only adds accounts with unique names)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deployment.support import (
    PKI_DIR,
    SPECS,
    gateway_urls,
    group_hosts,
    host,
    public_tls,
    services_on,
    tls_settings,
)

testinfra_hosts = SPECS

BACKENDS = ("users", "groups")
TIMEOUT = 30  # password hashing on a busy 2-core host is slow; nothing here measures time
HARDENING = {
    "User": "agenda",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
}


def config_path(service: str) -> str:
    return f"/etc/agenda/{service}/{service}.yml"


def read_config(target: Any, service: str) -> dict[str, Any]:
    with target.sudo():
        return yaml.safe_load(target.file(config_path(service)).content_string)


def unit_properties(target: Any, service: str, *names: str) -> dict[str, str]:
    flags = " ".join(f"-p {name}" for name in names)
    output = target.check_output(f"systemctl show {flags} agenda-{service}")
    return dict(line.split("=", 1) for line in output.splitlines())


def public_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(serialization.Encoding.PEM, spki)


# ------------------------------------------------------------------------------------ on each host


def test_each_service_runs_under_a_hardened_unit_as_the_service_user(host):
    services = services_on(host)
    assert services, "the inventory gives this host no service"
    for service in services:
        unit = host.service(f"agenda-{service}")
        assert unit.is_running, service
        assert unit.is_enabled, service
        props = unit_properties(host, service, *HARDENING, "MainPID")
        assert {name: props[name] for name in HARDENING} == HARDENING, service
        status = host.file(f"/proc/{props['MainPID']}/status").content_string
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert fields["Uid"].split()[1] != "0", f"agenda-{service} runs as root"
        # No privilege at all, the gateway included: systemd binds port 443 and passes the socket in.
        assert int(fields["CapEff"], 16) == 0, service
        assert int(fields["CapBnd"], 16) == 0, service
        # The listening socket is systemd's, so that a restart queues connections instead of refusing
        # them: systemd (pid 1) and the service's gunicorn hold the one listener on the service's port.
        socket_unit = host.service(f"agenda-{service}.socket")
        assert socket_unit.is_running, service
        assert socket_unit.is_enabled, service
        assert f"agenda-{service}.socket" in unit_properties(host, service, "Requires")["Requires"]
        port = read_config(host, service)["listen"].rsplit(":", 1)[1]
        with host.sudo():
            holders = host.check_output(f"ss -Hltnp 'sport = :{port}'")
        assert len(holders.splitlines()) == 1, f"{service}: one listener on port {port}: {holders}"
        assert "pid=1," in holders, f"{service}: systemd does not hold port {port}: {holders}"
        assert f"pid={props['MainPID']}," in holders, f"{service}: gunicorn does not hold {port}: {holders}"


def test_configuration_is_private_and_the_gateway_secret_stays_off_the_command_line(host):
    secrets = set()
    for service in services_on(host):
        for path, mode in ((config_path(service), 0o640), (f"/etc/agenda/{service}/gunicorn.conf.py", 0o640)):
            file = host.file(path)
            assert (file.user, file.group, file.mode) == ("root", "agenda", mode), path
        secrets.add(read_config(host, service)["gateway_secret"])
    assert len(secrets) == 1, "the gateway and the backends must share one gateway secret"
    secret = secrets.pop()
    assert len(secret) >= 16
    assert secret not in host.check_output("ps -eo args")
    assert secret not in host.check_output("systemctl show -p Environment agenda-*")


def test_a_renewed_certificate_restarts_what_presents_it(host):
    """Services and DB members read their certificate once, at start; the checksum of the current
    certificate in their settings is what makes a renewal change them and restart them."""
    with host.sudo():
        checksum = host.check_output("sha256sum /etc/agenda/pki/host.crt").split()[0]
        settings = [f"/etc/agenda/{service}/gunicorn.conf.py" for service in services_on(host)]
        settings += host.check_output("ls /etc/agenda/db/*.yml 2>/dev/null || true").split()
        assert settings
        for path in settings:
            assert f"Host certificate: {checksum} " in host.file(path).content_string, path


def test_the_signing_key_is_on_user_service_hosts_only(host):
    services = services_on(host)
    controller_public = next(PKI_DIR.glob("token-*.pub")).read_bytes()
    if "users" in services:
        config = read_config(host, "users")
        key = host.file(config["signing_key"])
        assert (key.user, key.group, key.mode) == ("root", "agenda", 0o640)
        with host.sudo():
            private = key.content
        assert public_pem(private) == controller_public
        assert Path(config["signing_key"]).name == f"token-{config['key_id']}.key"
    else:
        assert not host.file("/etc/agenda/users").exists
    with host.sudo():
        holders = host.run("grep -rl 'PRIVATE KEY' /etc/agenda --exclude-dir=pki").stdout.split()
    assert holders == ([config["signing_key"]] if "users" in services else [])
    if "gateway" in services:
        gateway = read_config(host, "gateway")
        assert "signing_key" not in gateway
        assert "PRIVATE" not in yaml.safe_dump(gateway)
        [(kid, path)] = [item.split("=", 1) for item in gateway["public_keys"]]
        assert path.endswith(f"token-{kid}.pub")
        assert host.file(path).content == controller_public


# ---------------------------------------------------------------------- from the controller, once


def backend_urls() -> list[tuple[str, str]]:
    """(service, base URL) of every backend instance, from the address each one's config says."""
    urls = []
    for name in group_hosts("services"):
        for service in BACKENDS:
            urls.append((service, f"https://{read_config(host(name), service)['listen']}"))
    return urls


def test_backends_accept_only_clients_with_a_certificate_from_the_deployment_ca():
    internal = tls_settings()
    for service, url in backend_urls():
        health = requests.get(f"{url}/v1/health", timeout=TIMEOUT, **internal)
        assert health.json()["service"] == service
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/v1/health", verify=internal["verify"], timeout=TIMEOUT)
        # Even a client with a certificate gets nothing but /v1/health without the gateway secret.
        identity = {"X-Agenda-User": "someone"}
        refused = requests.get(f"{url}/v1/me", headers=identity, timeout=TIMEOUT, **internal)
        assert refused.status_code == 403
        assert refused.headers["Content-Type"] == "application/problem+json"


class Client:
    """A user of one gateway, holding nothing but the deployment CA, like `curl --cacert ca.crt`."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.verify = public_tls()["verify"]
        self.session.trust_env = False

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.base}{path}", timeout=TIMEOUT, **kwargs)

    def login(self, username: str, password: str) -> None:
        grant = self.call("POST", "/v1/auth/login", json={"username": username, "password": password})
        assert grant.status_code == 200, grant.text
        self.session.headers["Authorization"] = f"Bearer {grant.json()['access_token']}"


def new_account(client: Client) -> tuple[str, str]:
    username, password = f"check-{uuid.uuid4().hex[:12]}", "deployment check pass"
    created = client.call("POST", "/v1/auth/register", json={"username": username, "password": password})
    assert created.status_code == 201, created.text
    return username, password


def tomorrow(title: str) -> tuple[dict[str, str], dict[str, str]]:
    """An hour-long event starting a day from now, and a query span around it."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    event = {"title": title, "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
    span = {"from": (start - timedelta(hours=1)).isoformat(), "to": (start + timedelta(hours=2)).isoformat()}
    return event, span


@pytest.mark.parametrize("base", gateway_urls())
def test_round_trip_through_the_gateway_with_the_ca_only(base):
    client = Client(base)
    assert client.call("GET", "/v1/health").json()["backends"] == ["groups", "users"]
    username, password = new_account(client)
    client.login(username, password)
    assert client.call("GET", "/v1/me").json()["username"] == username

    event, span = tomorrow("Deployment check")
    created = client.call("POST", "/v1/events", json=event)
    assert created.status_code == 201, created.text
    listed = client.call("GET", "/v1/events", params=span)
    assert listed.status_code == 200, listed.text
    assert created.json()["id"] in [event["id"] for event in listed.json()["events"]]
    calendar = client.call("GET", "/v1/calendar.ics")
    assert calendar.headers["Content-Type"].startswith("text/calendar")
    assert "SUMMARY:Deployment check" in calendar.text


def test_every_gateway_serves_the_same_accounts_and_agendas():
    bases = gateway_urls()
    if len(bases) < 2:
        pytest.skip("one gateway")
    first, last = Client(bases[0]), Client(bases[-1])
    username, password = new_account(first)
    last.login(username, password)
    event, span = tomorrow("Across gateways")
    created = last.call("POST", "/v1/events", json=event)
    assert created.status_code == 201, created.text
    first.login(username, password)
    listed = first.call("GET", "/v1/events", params=span).json()["events"]
    assert [event["id"] for event in listed] == [created.json()["id"]]
