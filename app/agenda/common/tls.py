"""TLS contexts for servers and clients, with file problems reported as ConfigError at start.

Every service-to-service link in Agenda is TLS, and links that carry identity (the gateway calling a
service, DB nodes calling each other) are mutual TLS against the project's own CA. The system trust
store is never loaded: a certificate from a public CA must not be able to impersonate a cluster node.

Certificates and keys are checked with `cryptography` before OpenSSL sees them, because OpenSSL's
errors ("[SSL] PEM lib") do not say which file is wrong. Error keys are `<config_key>.cert`,
`<config_key>.key` and `<config_key>.ca` so they line up with a service's `tls:` config section.
"""

from __future__ import annotations

import datetime as _dt
import os
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from agenda.common.config import ConfigError, read_file

__all__ = ["client_context", "peer_identity", "server_context"]

StrPath = str | os.PathLike[str]


def _check_certificates(key: str, path: StrPath, *, leaf: bool) -> x509.Certificate:
    try:
        certs = x509.load_pem_x509_certificates(read_file(key, path))
    except ValueError:
        raise ConfigError(key, f"no PEM certificate found in {path}") from None
    if not leaf:
        return certs[0]
    # An expired or not-yet-valid certificate fails every handshake later with a vaguer error.
    now = _dt.datetime.now(_dt.UTC)
    cert = certs[0]
    if cert.not_valid_after_utc < now:
        raise ConfigError(key, f"certificate in {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
    if cert.not_valid_before_utc > now:
        raise ConfigError(
            key, f"certificate in {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z"
        )
    return cert


def _check_private_key(key: str, path: StrPath) -> PrivateKeyTypes:
    data = read_file(key, path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # Services start unattended; nobody is there to type a passphrase.
        reason = f"private key in {path} is encrypted; services need an unencrypted key"
        raise ConfigError(key, reason) from None
    except ValueError:
        raise ConfigError(key, f"no PEM private key found in {path}") from None


def _spki(public_key: Any) -> bytes:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return public_key.public_bytes(der, spki)


def _load_chain(ctx: ssl.SSLContext, cert_file: StrPath, key_file: StrPath, config_key: str) -> None:
    cert = _check_certificates(f"{config_key}.cert", cert_file, leaf=True)
    private_key = _check_private_key(f"{config_key}.key", key_file)
    if _spki(cert.public_key()) != _spki(private_key.public_key()):
        reason = f"private key {key_file} does not match certificate {cert_file}"
        raise ConfigError(f"{config_key}.key", reason)
    try:
        ctx.load_cert_chain(os.fspath(cert_file), os.fspath(key_file))
    except ssl.SSLError as exc:
        raise ConfigError(f"{config_key}.cert", f"cannot load {cert_file} with {key_file}: {exc}") from None


def _load_ca(ctx: ssl.SSLContext, ca_file: StrPath, config_key: str) -> None:
    _check_certificates(f"{config_key}.ca", ca_file, leaf=False)
    try:
        ctx.load_verify_locations(cafile=os.fspath(ca_file))
    except ssl.SSLError as exc:
        raise ConfigError(f"{config_key}.ca", f"cannot load CA bundle {ca_file}: {exc}") from None


def _harden(ctx: ssl.SSLContext) -> None:
    # The ciphers of a fresh SSLContext are already Python's vetted defaults (same as
    # create_default_context); only the protocol floor and compression need setting.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION


def server_context(
    cert_file: StrPath,
    key_file: StrPath,
    ca_file: StrPath | None = None,
    require_client_cert: bool = False,
    *,
    config_key: str = "tls",
) -> ssl.SSLContext:
    """Context for a TLS listener; with `require_client_cert` it is mutual TLS against `ca_file` only.

    With `ca_file` but without `require_client_cert`, a client certificate is optional but verified
    when offered, so a service can accept both anonymous and identified callers.
    """
    if require_client_cert and ca_file is None:
        raise ConfigError(f"{config_key}.ca", "a CA file is required when client certificates are required")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(ctx, cert_file, key_file, config_key)
    if ca_file is not None:
        _load_ca(ctx, ca_file, config_key)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(
    ca_file: StrPath,
    cert_file: StrPath | None = None,
    key_file: StrPath | None = None,
    check_hostname: bool = True,
    *,
    config_key: str = "tls",
) -> ssl.SSLContext:
    """Context for a TLS client that trusts only `ca_file`; pass cert and key to present an identity.

    The server certificate is always verified; `check_hostname=False` only drops the name check (for
    peers addressed by an IP that is not in their certificate), never the chain check.
    """
    if (cert_file is None) != (key_file is None):
        missing = "key" if key_file is None else "cert"
        raise ConfigError(f"{config_key}.{missing}", "client certificate and key must be given together")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_ca(ctx, ca_file, config_key)
    if cert_file is not None and key_file is not None:
        _load_chain(ctx, cert_file, key_file, config_key)
    return ctx


def peer_identity(cert: dict[str, Any] | None) -> str | None:
    """Identity of a verified peer from `SSLSocket.getpeercert()`: its CN, else its first DNS SAN.

    `getpeercert()` returns an empty dict when the certificate was not verified, which yields None,
    so an unverified peer never gets an identity.
    """
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName" and value:
                return str(value)
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS" and value:
            return str(value)
    return None
