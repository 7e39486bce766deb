"""Raft over mutual TLS: the contexts, the non-blocking socket pysyncobj reads and writes, the identity
check on a dialler's claimed address, the refusal log, and the transport's policy built on them.

Handshakes here are real (loopback sockets, certificates from the dev stack's PKI helpers); the process
level - clusters, a member of another CA, a plaintext client - is tests/integration/db/test_raft_tls.py.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agenda.common.config import ConfigError
from agenda.db.rafttls import (
    RaftTls,
    RefusalLog,
    TlsSocket,
    certificate_names,
    claimed_host,
    handshake_reason,
    raft_tls_contexts,
)
from agenda.db.transport import DurableTransport
from agenda.devstack.pki import TlsFiles, write_loopback_tls

DEADLINE = 10.0


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_loopback_tls(tmp_path_factory.mktemp("deployment"))


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A certificate for the same names (127.0.0.1, localhost) from another CA."""
    return write_loopback_tls(tmp_path_factory.mktemp("foreign"))


def contexts(files: TlsFiles) -> RaftTls:
    return raft_tls_contexts(files.cert, files.key, files.ca)


@dataclass
class Pair:
    """The two ends of one TCP connection on loopback, each wrapped for TLS, not yet handshaken."""

    dialler: TlsSocket
    acceptor: TlsSocket
    raw: list[ssl.SSLSocket]

    def handshake(self) -> None:
        """Drive both ends' non-blocking handshakes to completion (or the first failure, raised)."""
        pending = {self.dialler: self.raw[0], self.acceptor: self.raw[1]}
        deadline = time.monotonic() + DEADLINE
        while pending:
            assert time.monotonic() < deadline, "handshake did not finish"
            for tls in list(pending):
                try:
                    tls.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                del pending[tls]
            if pending:
                select.select(list(pending.values()), [], [], 0.05)


@pytest.fixture
def pair_of() -> Iterator[object]:
    opened: list[socket.socket] = []

    def make(dialler: RaftTls, acceptor: RaftTls, server_hostname: str = "127.0.0.1") -> Pair:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            dial = socket.create_connection(listener.getsockname())
            accepted, _ = listener.accept()
        opened.extend((dial, accepted))
        dial.setblocking(False)
        accepted.setblocking(False)
        raw_dial = dialler.client.wrap_socket(
            dial, server_hostname=server_hostname, do_handshake_on_connect=False
        )
        raw_accepted = acceptor.server.wrap_socket(accepted, server_side=True, do_handshake_on_connect=False)
        opened.extend((raw_dial, raw_accepted))
        return Pair(TlsSocket(raw_dial), TlsSocket(raw_accepted), [raw_dial, raw_accepted])

    yield make
    for sock in opened:
        sock.close()


def receive(tls: TlsSocket, size: int) -> bytes:
    """Read exactly ``size`` bytes the way pysyncobj does: recv until EAGAIN, wait for the socket, again."""
    data = b""
    deadline = time.monotonic() + DEADLINE
    while len(data) < size:
        assert time.monotonic() < deadline, f"only {len(data)} of {size} bytes arrived"
        try:
            chunk = tls.recv(min(65536, size - len(data)))
        except BlockingIOError:
            select.select([tls.fileno()], [], [], 0.05)
            continue
        assert chunk, "the peer closed the connection"
        data += chunk
    return data


# ------------------------------------------------------------------------------------------ contexts


def test_contexts_require_a_client_certificate_and_check_the_server_name(deployment: TlsFiles) -> None:
    tls = contexts(deployment)
    assert tls.server.verify_mode == ssl.CERT_REQUIRED
    assert tls.client.verify_mode == ssl.CERT_REQUIRED
    assert tls.client.check_hostname is True
    assert tls.server.num_tickets == 0


def test_unusable_files_name_the_key(deployment: TlsFiles, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = {
        "tls.cert": (junk, deployment.key, deployment.ca),
        "tls.key": (deployment.cert, junk, deployment.ca),
        "tls.ca": (deployment.cert, deployment.key, junk),
    }
    for key, files in cases.items():
        with pytest.raises(ConfigError) as info:
            raft_tls_contexts(*files)
        assert info.value.key == key


# ------------------------------------------------------------------------------------------ handshakes


def test_members_of_one_ca_handshake_and_see_each_others_certificate(deployment: TlsFiles, pair_of) -> None:
    pair = pair_of(contexts(deployment), contexts(deployment))
    pair.handshake()
    for end in (pair.dialler, pair.acceptor):
        assert certificate_names(end.getpeercert(), "127.0.0.1")


def test_a_certificate_of_another_ca_is_refused_by_the_acceptor(
    deployment: TlsFiles, foreign: TlsFiles, pair_of, tmp_path: Path
) -> None:
    # The intruder trusts our CA too, so it is the acceptor's check of its certificate that refuses it.
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(foreign.ca.read_bytes() + deployment.ca.read_bytes())
    intruder = raft_tls_contexts(foreign.cert, foreign.key, bundle)
    pair = pair_of(intruder, contexts(deployment))
    with pytest.raises(ssl.SSLError) as info:
        pair.handshake()
    # Whichever end noticed first, the acceptor's handshake cannot succeed (not merely unfinished).
    with pytest.raises(ssl.SSLError) as refused:
        pair.acceptor.do_handshake()
    assert not isinstance(refused.value, (ssl.SSLWantReadError, ssl.SSLWantWriteError))
    assert "(_ssl.c" not in handshake_reason(info.value)


def test_a_member_of_another_ca_is_refused_by_the_dialler(
    deployment: TlsFiles, foreign: TlsFiles, pair_of
) -> None:
    pair = pair_of(contexts(deployment), contexts(foreign))
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        pair.handshake()
    assert handshake_reason(info.value).startswith("certificate verify failed: ")


def test_the_dialler_checks_the_name_it_dialled(deployment: TlsFiles, pair_of) -> None:
    # The loopback certificate names 127.0.0.1 and localhost, not 127.0.0.2.
    pair = pair_of(contexts(deployment), contexts(deployment), server_hostname="127.0.0.2")
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        pair.handshake()
    assert "127.0.0.2" in handshake_reason(info.value)


def test_plain_tcp_to_a_tls_acceptor_is_a_protocol_error(deployment: TlsFiles) -> None:
    tls = contexts(deployment)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as plain:
            accepted, _ = listener.accept()
            with tls.server.wrap_socket(accepted, server_side=True, do_handshake_on_connect=False) as raw:
                plain.sendall(b"\x00\x00\x00\x10plain pysyncobj frame")
                raw.settimeout(DEADLINE)
                with pytest.raises(ssl.SSLError) as info:
                    raw.do_handshake()
    assert handshake_reason(info.value) == "[SSL: WRONG_VERSION_NUMBER] wrong version number"


# ------------------------------------------------------------------------------------------ TlsSocket


def test_incomplete_records_are_eagain_and_decrypted_bytes_are_pending(deployment: TlsFiles, pair_of) -> None:
    pair = pair_of(contexts(deployment), contexts(deployment))
    pair.handshake()
    with pytest.raises(BlockingIOError) as info:
        pair.acceptor.recv(100)  # nothing sent yet: OpenSSL wants to read, pysyncobj must see EAGAIN
    assert info.value.errno == errno.EAGAIN
    payload = bytes(range(256)) * 40  # 10 KiB: one TLS record
    assert pair.dialler.send(payload) == len(payload)
    head = receive(pair.acceptor, 100)
    # The rest of the record is decrypted and buffered in OpenSSL: poll() on the socket would not say so.
    assert pair.acceptor.pending() == len(payload) - 100
    assert head + receive(pair.acceptor, len(payload) - 100) == payload


def test_a_full_send_buffer_is_eagain_and_the_same_buffer_is_sent_later(
    deployment: TlsFiles, pair_of
) -> None:
    pair = pair_of(contexts(deployment), contexts(deployment))
    pair.handshake()
    chunk = bytes(1 << 20)
    sent_whole = 0
    refused: BlockingIOError | None = None
    for _ in range(64):  # nobody reads: the kernel buffers fill up
        try:
            sent_whole += pair.dialler.send(chunk)
        except BlockingIOError as exc:
            refused = exc
            break
    assert refused is not None
    assert refused.errno == errno.EAGAIN
    # pysyncobj keeps its buffer and offers the same bytes again once writable; OpenSSL then finishes it.
    total = sent_whole + len(chunk)
    received = 0
    deadline = time.monotonic() + DEADLINE
    done = False
    while received < total:
        assert time.monotonic() < deadline, f"{received} of {total} bytes arrived"
        if not done:
            try:
                assert pair.dialler.send(chunk) == len(chunk)
                done = True
            except BlockingIOError:
                pass
        try:
            received += len(pair.acceptor.recv(1 << 16))
        except BlockingIOError:
            select.select([pair.acceptor.fileno()], [pair.dialler.fileno()], [], 0.05)
    assert done
    assert received == total


def test_the_peer_closing_reads_as_empty(deployment: TlsFiles, pair_of) -> None:
    pair = pair_of(contexts(deployment), contexts(deployment))
    pair.handshake()
    pair.dialler.close()
    deadline = time.monotonic() + DEADLINE
    while True:
        assert time.monotonic() < deadline
        try:
            assert pair.acceptor.recv(100) == b""
            break
        except BlockingIOError:
            select.select([pair.acceptor.fileno()], [], [], 0.05)


# ------------------------------------------------------------------------------------------ pure parts


def test_claimed_host() -> None:
    assert claimed_host("127.0.0.1:7001") == "127.0.0.1"
    assert claimed_host("db1.lan:7001") == "db1.lan"
    assert claimed_host("[::1]:7001") == "::1"
    assert claimed_host("::1:7001") == "::1"  # pysyncobj's own form: split at the last colon
    for bad in ("readonly", "h:", ":7001", "h:port", ""):
        assert claimed_host(bad) is None


SANS = {
    "subject": ((("commonName", "db-host"),),),
    "subjectAltName": (
        ("DNS", "db1.Lan"),
        ("IP Address", "10.0.0.5"),
        ("IP Address", "FD00:0:0:0:0:0:0:1\n"),
    ),
}


def test_certificate_names_matches_ip_sans_to_ips_and_dns_sans_to_names() -> None:
    assert certificate_names(SANS, "10.0.0.5")
    assert certificate_names(SANS, "fd00::1")  # IPv6 compared as addresses, whatever the spelling
    assert certificate_names(SANS, "DB1.lan.")
    assert not certificate_names(SANS, "10.0.0.6")
    assert not certificate_names(SANS, "db-host")  # the CN is not a SAN
    assert not certificate_names(SANS, "x.db1.lan")
    assert not certificate_names({"subjectAltName": (("DNS", "10.0.0.5"),)}, "10.0.0.5")
    assert not certificate_names({"subjectAltName": (("DNS", "*.lan"),)}, "db1.lan")  # no wildcards
    assert not certificate_names({}, "10.0.0.5")  # what getpeercert() gives for an unverified peer
    assert not certificate_names(None, "10.0.0.5")


def test_handshake_reason_for_plain_os_errors() -> None:
    assert handshake_reason(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")) == (
        "Connection reset by peer"
    )
    assert handshake_reason(ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:992)")) == (
        "EOF occurred in violation of protocol"
    )


def test_refusal_log_logs_the_first_then_one_per_interval_with_the_count_held_back() -> None:
    refusals = RefusalLog(interval=10.0)
    assert refusals.report("10.0.0.9", 100.0) == 0
    assert refusals.report("10.0.0.9", 100.5) is None
    assert refusals.report("10.0.0.9", 109.9) is None
    assert refusals.report("10.0.0.8", 101.0) == 0  # hosts are independent
    assert refusals.report("10.0.0.9", 110.0) == 2
    assert refusals.report("10.0.0.9", 111.0) is None
    assert refusals.report("10.0.0.9", 125.0) == 1


def test_refusal_log_forgets_everything_past_its_bound() -> None:
    refusals = RefusalLog(interval=10.0)
    for n in range(1024):
        assert refusals.report(f"h{n}", 0.0) == 0
    assert refusals.report("h0", 1.0) is None
    assert refusals.report("new", 1.0) == 0  # the 1025th host: the table starts over
    assert refusals.report("h0", 2.0) == 0


# ------------------------------------------------------------------------------------------ transport


def bare_transport() -> DurableTransport:
    """The transport's TLS policy without pysyncobj or sockets (it needs neither)."""
    link = object.__new__(DurableTransport)
    link.tls_refused_links = 0
    link._refusal_log = RefusalLog()
    return link


def test_a_dialler_may_only_claim_an_address_on_a_host_its_certificate_names(
    deployment: TlsFiles, pair_of
) -> None:
    pair = pair_of(contexts(deployment), contexts(deployment))
    pair.handshake()
    certificate = pair.acceptor.getpeercert()
    link = bare_transport()
    assert link.identity_allowed("127.0.0.1:7001", certificate)
    assert link.identity_allowed("localhost:7001", certificate)
    assert not link.identity_allowed("10.0.0.7:7001", certificate)  # another host's member
    assert not link.identity_allowed("readonly", certificate)  # pysyncobj's read-only members
    assert not link.identity_allowed("127.0.0.1:7001", {})


def test_refused_links_are_all_counted_and_logged_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    link = bare_transport()
    with caplog.at_level(logging.WARNING, logger="agenda.db.transport"):
        for port in range(40000, 40005):
            link.tls_refused(f"10.0.0.9:{port}", "certificate verify failed: unable to get local issuer")
        link.tls_refused("127.0.0.1:7003", "no TLS handshake within 1.5 s")
    assert link.tls_refused_links == 6
    logged = [(r.getMessage(), r.peer, r.reason) for r in caplog.records]
    assert logged == [
        ("raft TLS link refused", "10.0.0.9:40000", "certificate verify failed: unable to get local issuer"),
        ("raft TLS link refused", "127.0.0.1:7003", "no TLS handshake within 1.5 s"),
    ]
