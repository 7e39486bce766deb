"""Deployment mode: the gateway serves HTTPS and reaches the User Service over mutual TLS.

A throwaway CA issues the certificates; the User Service refuses a TLS client without a certificate
from that CA before any HTTP happens, and a whole register/login/me round trip works over TLS.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .conftest import GATEWAY_SECRET, Stack, _poll, _ports, _spawn


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[str, str]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".crt")
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)


def _issue(
    cn: str, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None
) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca[1].subject if ca else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
    )
    if ca is None:
        usage = dict.fromkeys(
            ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False
        )
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca[1].public_key()), critical=False
        )
    return key, builder.sign(ca[0] if ca else key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_stack(
    stack: Stack, db_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("tls")
    ca = _issue("agenda-test-ca", None)
    ca_path = root / "ca.crt"
    ca_path.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    users_cert, users_key = _write(root / "users", *_issue("users", ca))
    gw_cert, gw_key = _write(root / "gateway", *_issue("gateway", ca))
    users_port, gateway_port = _ports(2)
    tls_env = Stack(
        root, stack.signing_key, f"https://127.0.0.1:{gateway_port}", [f"https://127.0.0.1:{users_port}"]
    )
    signing = stack.root / "signing.pem"
    public = stack.root / "public.pem"
    argv = ["agenda.users.cli", "--listen", f"127.0.0.1:{users_port}", "--signing-key", str(signing)]
    argv += ["--gateway-secret", GATEWAY_SECRET, "--log-format", "plain"]
    argv += ["--tls-cert", users_cert, "--tls-key", users_key, "--tls-ca", str(ca_path)]
    for member in db_cluster.members.values():
        argv += ["--db-url", member.url]
    _spawn(tls_env, "users1", argv)
    config = root / "gateway.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{gateway_port}\n"
        f"users_urls: [https://127.0.0.1:{users_port}]\n"
        f"public_keys: ['k1={public}']\n"
        f"gateway_secret: {GATEWAY_SECRET}\n"
        f"tls: {{cert: {gw_cert}, key: {gw_key}}}\n"
        f"backend_tls: {{cert: {gw_cert}, key: {gw_key}, ca: {ca_path}}}\n"
        "log_format: plain\n"
    )
    _spawn(tls_env, "gateway", ["agenda.gateway.cli", "--config", str(config)])
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides `verify`
    session.verify = str(ca_path)
    client_cert = (gw_cert, gw_key)

    def up() -> bool:
        for proc in tls_env.procs.values():
            assert proc.poll() is None, f"a service exited early:\n{tls_env.logs()}"
        users = session.get(f"https://127.0.0.1:{users_port}/v1/health", cert=client_cert, timeout=2)
        gateway = session.get(tls_env.gateway_url + "/v1/health", timeout=2)
        return users.status_code == 200 and gateway.status_code == 200

    try:
        _poll(up, 20.0, "the TLS services", (requests.RequestException,))
        yield {
            "env": tls_env,
            "session": session,
            "users": f"https://127.0.0.1:{users_port}",
            "ca": str(ca_path),
        }
    finally:
        session.close()
        tls_env.stop()


def test_backend_refuses_tls_clients_without_a_ca_signed_certificate(tls_stack: dict[str, Any]) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_stack["users"] + "/v1/health", verify=tls_stack["ca"], timeout=5)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_stack["users"] + "/v1/health", timeout=5)  # its certificate is from no public CA


def test_round_trip_through_https_gateway_and_mtls_backend(tls_stack: dict[str, Any]) -> None:
    session, base = tls_stack["session"], tls_stack["env"].gateway_url
    name = f"tls{uuid.uuid4().hex[:8]}"
    credentials = {"username": name, "password": "correct horse battery"}
    assert session.post(base + "/v1/auth/register", json=credentials, timeout=30).status_code == 201
    token = session.post(base + "/v1/auth/login", json=credentials, timeout=30).json()["access_token"]
    me = session.get(base + "/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert me.status_code == 200
    assert me.json()["username"] == name
