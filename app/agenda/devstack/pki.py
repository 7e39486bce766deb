"""Throwaway credentials for a stack on loopback: a CA, one certificate, a token key pair, secrets.

For development and tests only; deployments get theirs from the ``pki`` Ansible role. On loopback
every process is the same host (127.0.0.1, localhost) and every one of them is both a TLS server and
a TLS client (the gateway calls the services, the services call the DB, the DB members call each
other), so a single certificate with serverAuth and clientAuth serves them all. The CA's private key
is never written: once the certificate is issued, nothing else can be signed by that CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "LOOPBACK_DNS_NAMES",
    "LOOPBACK_IPS",
    "Issued",
    "TlsFiles",
    "issue_ca",
    "issue_certificate",
    "load_or_create_secrets",
    "tls_files_usable",
    "write_certificate",
    "write_loopback_tls",
    "write_private",
    "write_private_key",
    "write_token_keys",
]

LOOPBACK_DNS_NAMES: Final = ("localhost",)
LOOPBACK_IPS: Final = ("127.0.0.1",)
# Certificates start being valid a little in the past, so a clock a few minutes behind still accepts them.
_BACKDATE: Final = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Issued:
    """A private key and the certificate issued for it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class TlsFiles:
    """Where a stack's TLS material lives: the CA certificate and the one certificate and key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> TlsFiles:
        return cls(ca=directory / "ca.crt", cert=directory / "node.crt", key=directory / "node.key")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, digital_signature: bool, key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def issue_ca(common_name: str, *, days: int = 30) -> Issued:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue_certificate(
    ca: Issued,
    common_name: str,
    *,
    days: int = 30,
    dns_names: Sequence[str] = LOOPBACK_DNS_NAMES,
    ip_addresses: Sequence[str] = LOOPBACK_IPS,
) -> Issued:
    """An end-entity certificate signed by `ca`, good for TLS servers and clients alike."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by its owner only, from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # os.open's mode applies only to a file it creates
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> None:
    """PKCS#8 PEM, unencrypted (services start unattended), mode 0600."""
    encoding, private_format = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    write_private(path, key.private_bytes(encoding, private_format, serialization.NoEncryption()))


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_loopback_tls(directory: Path, *, days: int = 30) -> TlsFiles:
    """A new CA and one loopback certificate+key in `directory` (the CA's key is not kept)."""
    files = TlsFiles.in_directory(directory)
    ca = issue_ca("agenda-dev-ca", days=days)
    node = issue_certificate(ca, "agenda-dev", days=days)
    write_certificate(files.ca, ca.cert)
    write_certificate(files.cert, node.cert)
    write_private_key(files.key, node.key)
    return files


def tls_files_usable(files: TlsFiles, *, margin: dt.timedelta = dt.timedelta(days=1)) -> bool:
    """True when all three files exist and the certificate stays valid for at least `margin`."""
    if not all(path.is_file() for path in (files.ca, files.cert, files.key)):
        return False
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    except ValueError:
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > margin


def write_token_keys(private_path: Path, public_path: Path) -> None:
    """A new Ed25519 key pair for access tokens: the User Service signs, the gateway verifies."""
    key = Ed25519PrivateKey.generate()
    write_private_key(private_path, key)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_or_create_secrets(path: Path, names: Sequence[str]) -> dict[str, str]:
    """The secrets stored in `path` (JSON, mode 0600), adding a random one for every name missing."""
    stored: dict[str, str] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = {}  # a damaged file is replaced: these secrets only matter to this stack
        if isinstance(loaded, dict):
            stored = {name: value for name, value in loaded.items() if isinstance(value, str) and value}
    missing = [name for name in names if name not in stored]
    for name in missing:
        stored[name] = secrets.token_urlsafe(32)
    if missing:
        write_private(path, json.dumps(stored, indent=2).encode())
    return stored
