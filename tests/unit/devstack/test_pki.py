"""The throwaway credentials of a dev stack: what the certificate allows, where the keys go."""

import datetime as dt
import ipaddress
import json
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from agenda.common.tokens import load_private_key, load_public_key
from agenda.devstack.pki import (
    TlsFiles,
    issue_ca,
    issue_certificate,
    load_or_create_secrets,
    tls_files_usable,
    write_certificate,
    write_loopback_tls,
    write_token_keys,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_certificate_names_loopback_and_serves_both_ends_of_a_tls_link() -> None:
    ca = issue_ca("test-ca")
    cert = issue_certificate(ca, "node").cert
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature
    assert not key_usage.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca.cert)  # raises when the signature or the issuer name is wrong


def test_the_ca_signs_leaf_certificates_only_and_outlives_them() -> None:
    ca = issue_ca("test-ca", days=2)
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    assert ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    leaf = issue_certificate(ca, "node", days=30).cert
    assert leaf.not_valid_after_utc <= ca.cert.not_valid_after_utc
    assert leaf.not_valid_before_utc < dt.datetime.now(dt.UTC)


def test_loopback_tls_files_keep_the_private_key_private_and_the_ca_key_nowhere(tmp_path: Path) -> None:
    files = write_loopback_tls(tmp_path)
    assert files == TlsFiles.in_directory(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ca.crt", "node.crt", "node.key"]
    assert _mode(files.key) == 0o600
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def test_tls_files_are_replaced_when_missing_or_about_to_expire(tmp_path: Path) -> None:
    files = TlsFiles.in_directory(tmp_path)
    assert not tls_files_usable(files)
    write_loopback_tls(tmp_path)
    assert tls_files_usable(files)
    ca = issue_ca("short-lived", days=1)
    write_certificate(files.cert, issue_certificate(ca, "node", days=1).cert)
    assert not tls_files_usable(files, margin=dt.timedelta(days=2))
    files.cert.write_text("not a certificate")
    assert not tls_files_usable(files)


def test_token_keys_are_a_matching_ed25519_pair(tmp_path: Path) -> None:
    private, public = tmp_path / "keys" / "signing.pem", tmp_path / "keys" / "signing.pub"
    write_token_keys(private, public)
    assert _mode(private) == 0o600
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert load_private_key(str(private)).public_key().public_bytes(*raw) == load_public_key(
        str(public)
    ).public_bytes(*raw)


def test_secrets_are_random_kept_and_completed(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    first = load_or_create_secrets(path, ("a",))
    assert len(first["a"]) >= 32
    assert _mode(path) == 0o600
    both = load_or_create_secrets(path, ("a", "b"))
    assert both["a"] == first["a"]
    assert both["b"] != both["a"]
    assert json.loads(path.read_text()) == both
    path.write_text("{damaged")
    assert load_or_create_secrets(path, ("a",))["a"] != first["a"]
