"""Raft traffic over mutual TLS: the two contexts, the socket pysyncobj's connections read and write, and
the checks a link must pass before it carries a Raft message.

What is protected. With ``raft_tls`` on (the default whenever the member's ``tls`` is on), every Raft
link - AppendEntries, votes, snapshots, our pings and ReadIndex stamps, pysyncobj's admin commands on
the Raft port - runs inside TLS 1.2+ with the member's own certificate (``tls.cert``/``tls.key``, the
same files as the HTTP API), verified both ways against the deployment's CA (``tls.ca``) and nothing else:

* the member that *accepts* a link requires a client certificate signed by that CA, and once the dialler
  names itself (pysyncobj's first message is its Raft address) the host of that address must be one of
  the certificate's subjectAltNames (an IP address SAN for an IP, a DNS SAN for a name; no wildcards).
  A host's certificate thus speaks only for the members on that host, and pysyncobj's ``readonly``
  members (which the DB never uses, and which would be sent the log) are refused.
* the member that *dials* checks the answering certificate against the host it dialled, the way the
  HTTP API's clients check a server (``check_hostname``, IP SANs matched for an IP).

The deployment's certificates carry exactly these names: the ``pki`` role issues each host one for its
inventory name, its ``agenda_host_ip`` (the host of every Raft address the ``raft_db`` role writes), the
VIP and 127.0.0.1; the dev stack's single loopback certificate names 127.0.0.1 and localhost.

What a member with a certificate from another CA (or none, or a plain-TCP client) sees: its links
never get past the handshake. Accepted, the handshake fails on the member's side (its certificate is
not verifiable); dialled - which only happens once it is in the configuration - its certificate fails
the dialler's check. It therefore never learns a term, a leader or an entry, and cannot vote. The
members close each such link, count it (``raft_tls_refused`` in ``/metrics``) and log ``raft TLS link
refused`` with the peer and the reason (the first per peer host, then at most one per
:data:`REFUSAL_LOG_INTERVAL`). A handshake that does not finish within ``connection_timeout`` is refused
the same way, so a silent client cannot hold a connection open.

pysyncobj's ``cluster_secret`` (its password) may still be set: it then encrypts inside TLS, as defence
in depth; it is no longer the only protection. The pysyncobj side of all this - where a connection is
built, when the handshake runs - is in :mod:`agenda.db.pysyncobj_adapter`.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from agenda.common.tls import client_context, server_context

__all__ = [
    "REFUSAL_LOG_INTERVAL",
    "RaftTls",
    "RefusalLog",
    "TlsSocket",
    "certificate_names",
    "claimed_host",
    "handshake_reason",
    "raft_tls_contexts",
]

REFUSAL_LOG_INTERVAL: Final = 10.0
"""Seconds between two logged refusals from one peer host (each is counted all the same)."""

# The peer hosts whose refusals are remembered; a member that sees more forgets them all (it only costs
# a log line per host too many).
_MAX_REMEMBERED_HOSTS: Final = 1024
_SSL_SOURCE_SUFFIX: Final = re.compile(r"\s*\(_ssl\.c:\d+\)$")


@dataclass(frozen=True, slots=True)
class RaftTls:
    """The contexts of one member's Raft links: ``server`` for the links it accepts (a client certificate
    of the deployment CA is required), ``client`` for those it dials (the member answering is verified
    against the host dialled)."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def raft_tls_contexts(
    cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str], ca_file: str | os.PathLike[str]
) -> RaftTls:
    """Both contexts from the member's ``tls`` files; :class:`ConfigError` naming ``tls.<file>`` when one
    is unusable (the same checks and keys as the HTTP API's)."""
    server = server_context(cert_file, key_file, ca_file, require_client_cert=True)
    # TLS 1.3 servers send session tickets after every handshake; members never resume a session.
    server.num_tickets = 0
    client = client_context(ca_file, cert_file, key_file, check_hostname=True)
    return RaftTls(server=server, client=client)


class TlsSocket:
    """A non-blocking :class:`ssl.SSLSocket` that behaves as pysyncobj's connection expects a socket to.

    pysyncobj retries a send or a receive that raised ``EAGAIN`` at the next poll event and closes the
    connection on any other error; OpenSSL instead says "want read" or "want write" when a record is
    incomplete, which would close a healthy link. Those become ``EAGAIN`` here, and a TLS end of stream
    (close_notify, or the peer's TCP close) becomes the empty read pysyncobj treats as a hang-up.
    """

    __slots__ = ("_sock",)

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock

    def do_handshake(self) -> None:
        """One non-blocking handshake step: ``SSLWantReadError``/``SSLWantWriteError`` until it is done."""
        self._sock.do_handshake()

    def send(self, data: bytes) -> int:
        try:
            return self._sock.send(data)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError(errno.EAGAIN, "TLS record not sent yet") from None

    def recv(self, size: int) -> bytes:
        try:
            return self._sock.recv(size)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError(errno.EAGAIN, "no complete TLS record yet") from None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""

    def pending(self) -> int:
        """Plaintext OpenSSL has already decrypted: the kernel no longer has it, so poll() will not say so."""
        return self._sock.pending()

    def getpeercert(self) -> dict[str, Any] | None:
        return self._sock.getpeercert()

    def getsockopt(self, level: int, option: int) -> int:
        return self._sock.getsockopt(level, option)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


def claimed_host(address: str) -> str | None:
    """The host of a Raft address ``HOST:PORT`` (``[v6]:PORT`` too), or None when it is not one."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or None


def certificate_names(cert: Mapping[str, Any] | None, host: str) -> bool:
    """Whether a verified peer certificate (``SSLSocket.getpeercert()``) names ``host`` in its
    subjectAltNames: an IP address SAN equal to an IP ``host``, or a DNS SAN equal (case-insensitive, no
    wildcards) to a name. An unverified certificate (an empty dict) names nothing."""
    if not cert:
        return False
    try:
        wanted_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        wanted_ip = None
    wanted_name = host.rstrip(".").lower()
    for kind, value in cert.get("subjectAltName", ()):
        if wanted_ip is not None and kind == "IP Address":
            try:
                if ipaddress.ip_address(str(value).strip()) == wanted_ip:
                    return True
            except ValueError:
                continue
        elif wanted_ip is None and kind == "DNS" and str(value).rstrip(".").lower() == wanted_name:
            return True
    return False


def handshake_reason(exc: BaseException) -> str:
    """A one-line reason for a failed handshake, as OpenSSL words it, without the C source location."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return _SSL_SOURCE_SUFFIX.sub("", str(exc)) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class RefusalLog:
    """Which refused links to log: a foreign member redials every ``connection_retry_time``, and each of
    its attempts must not be a log line. The first refusal from a peer host is logged, then at most one
    per ``interval``, saying how many were held back in between."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self._interval = interval
        self._logged_at: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def report(self, host: str, now: float) -> int | None:
        """A refusal from ``host`` at ``now``: None to hold it back, else log it, with the number held back
        since the last one logged."""
        last = self._logged_at.get(host)
        if last is not None and now - last < self._interval:
            self._held[host] = self._held.get(host, 0) + 1
            return None
        if last is None and len(self._logged_at) >= _MAX_REMEMBERED_HOSTS:
            self._logged_at.clear()
            self._held.clear()
        self._logged_at[host] = now
        return self._held.pop(host, 0)
