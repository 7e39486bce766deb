"""Real TLS handshakes against a throwaway CA: trust, mutual TLS and peer identity."""

import datetime as dt
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agenda.common.config import ConfigError
from agenda.common.http import HttpClient, Unavailable
from agenda.common.tls import client_context, peer_identity, server_context

HANDSHAKE_TIMEOUT = 10.0  # only bounds a hang if the code under test is broken


@dataclass(frozen=True)
class Pair:
    cert: str
    key: str


@dataclass(frozen=True)
class Pki:
    ca: str
    other_ca: str
    server: Pair
    client: Pair
    rogue_client: Pair  # signed by other_ca
    expired: Pair


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> None:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    directory: Path,
    stem: str,
    cn: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    is_ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    expired: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Pair]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    not_after = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=1)
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        assert issuer_cert is not None
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert, key, Pair(str(cert_path), str(key_path))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key, ca = _issue(directory, "ca", "Agenda Test CA", None, is_ca=True)
    other_cert, other_key, other = _issue(directory, "other-ca", "Other CA", None, is_ca=True)
    localhost = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    *_, server = _issue(directory, "server", "db-1.agenda", (ca_cert, ca_key), sans=localhost)
    *_, client = _issue(
        directory, "client", "user-service", (ca_cert, ca_key), sans=[x509.DNSName("users.agenda")]
    )
    *_, rogue = _issue(directory, "rogue", "user-service", (other_cert, other_key))
    *_, expired = _issue(directory, "expired", "old", (ca_cert, ca_key), expired=True, sans=localhost)
    return Pki(ca.cert, other.cert, server, client, rogue, expired)


@dataclass
class Outcome:
    server_peer: dict | None = None
    server_error: BaseException | None = None
    client_received: bytes = b""
    client_error: BaseException | None = None


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "localhost") -> Outcome:
    """Run both ends over a socketpair. The server sends b"ok" only after its handshake succeeded.

    Under TLS 1.3 the client's handshake completes before the server has judged the client
    certificate, so the client's success is decided by whether it receives b"ok".
    """
    outcome = Outcome()
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(HANDSHAKE_TIMEOUT)
    client_sock.settimeout(HANDSHAKE_TIMEOUT)

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                outcome.server_peer = tls.getpeercert()
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            outcome.server_error = exc
        finally:
            server_sock.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname=hostname) as tls:
            outcome.client_received = tls.recv(2)
    except (ssl.SSLError, OSError) as exc:
        outcome.client_error = exc
    finally:
        client_sock.close()
        thread.join(HANDSHAKE_TIMEOUT)
    assert not thread.is_alive()
    return outcome


def test_client_trusting_the_ca_connects(pki: Pki) -> None:
    outcome = handshake(server_context(pki.server.cert, pki.server.key), client_context(pki.ca))
    assert outcome.client_error is None
    assert outcome.client_received == b"ok"
    assert outcome.server_peer is None  # no client certificate was asked for


def test_ip_address_san_verifies(pki: Pki) -> None:
    outcome = handshake(server_context(pki.server.cert, pki.server.key), client_context(pki.ca), "127.0.0.1")
    assert outcome.client_received == b"ok"


def test_client_trusting_another_ca_fails(pki: Pki) -> None:
    outcome = handshake(server_context(pki.server.cert, pki.server.key), client_context(pki.other_ca))
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert outcome.client_received == b""


def test_hostname_mismatch_fails_unless_disabled(pki: Pki) -> None:
    server = server_context(pki.server.cert, pki.server.key)
    outcome = handshake(server, client_context(pki.ca), "db-9.elsewhere")
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    outcome = handshake(server, client_context(pki.ca, check_hostname=False), "db-9.elsewhere")
    assert outcome.client_received == b"ok"


def test_mtls_refuses_client_without_certificate(pki: Pki) -> None:
    server = server_context(pki.server.cert, pki.server.key, pki.ca, require_client_cert=True)
    outcome = handshake(server, client_context(pki.ca))
    assert isinstance(outcome.server_error, ssl.SSLError)
    assert outcome.client_received == b""


def test_mtls_refuses_client_certificate_from_another_ca(pki: Pki) -> None:
    server = server_context(pki.server.cert, pki.server.key, pki.ca, require_client_cert=True)
    outcome = handshake(server, client_context(pki.ca, pki.rogue_client.cert, pki.rogue_client.key))
    assert isinstance(outcome.server_error, ssl.SSLError)
    assert outcome.client_received == b""


def test_mtls_accepts_ca_signed_client_and_names_it(pki: Pki) -> None:
    server = server_context(pki.server.cert, pki.server.key, pki.ca, require_client_cert=True)
    outcome = handshake(server, client_context(pki.ca, pki.client.cert, pki.client.key))
    assert outcome.server_error is None
    assert outcome.client_received == b"ok"
    assert peer_identity(outcome.server_peer) == "user-service"


def test_optional_client_certificate_when_ca_given_without_requirement(pki: Pki) -> None:
    server = server_context(pki.server.cert, pki.server.key, pki.ca)
    anonymous = handshake(server, client_context(pki.ca))
    assert anonymous.client_received == b"ok"
    assert peer_identity(anonymous.server_peer) is None
    identified = handshake(server, client_context(pki.ca, pki.client.cert, pki.client.key))
    assert peer_identity(identified.server_peer) == "user-service"


def test_protocol_floor_is_tls_1_2(pki: Pki) -> None:
    server = server_context(pki.server.cert, pki.server.key)
    client = client_context(pki.ca)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert client_context(pki.ca, check_hostname=False).verify_mode == ssl.CERT_REQUIRED
    # Only the project CA is trusted, never the system store.
    assert client.cert_store_stats()["x509_ca"] == 1


def test_peer_identity_fallbacks() -> None:
    assert peer_identity(None) is None
    assert peer_identity({}) is None  # what getpeercert() gives for an unverified peer
    san_only = {"subject": ((("organizationName", "Agenda"),),), "subjectAltName": (("DNS", "gw.agenda"),)}
    assert peer_identity(san_only) == "gw.agenda"
    assert peer_identity({"subject": ((("commonName", "db-1"),),)}) == "db-1"


# ---------------------------------------------------------------------------------------------------
# Configuration errors name the file and the key


def test_missing_files_are_named(pki: Pki, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError) as info:
        server_context(missing, pki.server.key)
    assert str(info.value) == f"tls.cert: file does not exist: {missing}"
    with pytest.raises(ConfigError, match=r"^tls\.key: file does not exist"):
        server_context(pki.server.cert, missing)
    with pytest.raises(ConfigError, match=r"^tls\.ca: file does not exist"):
        client_context(missing)
    with pytest.raises(ConfigError, match=r"^peer_tls\.ca: "):
        client_context(missing, config_key="peer_tls")
    with pytest.raises(ConfigError, match=r"^tls\.cert: not a regular file"):
        server_context(str(tmp_path), pki.server.key)


def test_garbage_files_are_named(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(ConfigError, match=r"^tls\.cert: no PEM certificate found"):
        server_context(str(garbage), pki.server.key)
    with pytest.raises(ConfigError, match=r"^tls\.key: no PEM private key found"):
        server_context(pki.server.cert, str(garbage))
    with pytest.raises(ConfigError, match=r"^tls\.ca: no PEM certificate found"):
        client_context(str(garbage))


def test_key_not_matching_certificate(pki: Pki) -> None:
    with pytest.raises(ConfigError) as info:
        server_context(pki.server.cert, pki.client.key)
    assert info.value.key == "tls.key"
    assert "does not match certificate" in info.value.reason


def test_encrypted_key_is_refused(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(Path(pki.server.key).read_bytes(), password=None)
    encrypted = tmp_path / "enc.key"
    _write_key(encrypted, key, password=b"pw")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^tls\.key: .*encrypted"):
        server_context(pki.server.cert, str(encrypted))


def test_expired_certificate_is_refused(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"^tls\.cert: certificate .* expired on"):
        server_context(pki.expired.cert, pki.expired.key)


def test_mtls_without_ca_and_half_client_identity(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"^tls\.ca: a CA file is required"):
        server_context(pki.server.cert, pki.server.key, require_client_cert=True)
    with pytest.raises(ConfigError, match=r"^tls\.key: .*together"):
        client_context(pki.ca, cert_file=pki.client.cert)


# ---------------------------------------------------------------------------------------------------
# The HTTP client over mutual TLS


class _WhoAmI(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (peer_identity(self.connection.getpeercert()) or "anonymous").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mtls_url(pki: Pki) -> Iterator[str]:
    ctx = server_context(pki.server.cert, pki.server.key, pki.ca, require_client_cert=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WhoAmI)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_client_presents_its_certificate(pki: Pki, mtls_url: str) -> None:
    with HttpClient([mtls_url], verify=pki.ca, cert=(pki.client.cert, pki.client.key), retries=0) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.text == "user-service"


def test_http_client_without_certificate_is_refused(pki: Pki, mtls_url: str) -> None:
    with HttpClient([mtls_url], verify=pki.ca, retries=0) as client, pytest.raises(Unavailable) as info:
        client.get("/")
    assert isinstance(info.value.__cause__, requests.exceptions.RequestException)
