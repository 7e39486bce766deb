"""Every packet sealed with AES-GCM under a key ring, and opened at most once within a time window.

Wire form of a sealed packet::

    version (1 byte, 0x01) | nonce (12 bytes) | AES-GCM(sent_at_ms (8 bytes, big-endian) | packet) | tag (16)

The additional authenticated data is the version byte and the cluster label, so a packet of another
cluster (or another protocol version) that happens to share a key does not open here.

Key ring, as memberlist's: the first key seals, every key is tried to open. A key is rotated without
restarting anyone in three rounds, each rolled out to every member before the next: add the new key
at the end of every ring (everyone can now open it), move it first (everyone seals with it, and
members not yet moved still open it), drop the old key.

Nonces are 96 random bits. Every member shares the key, so the number of packets sealed under one key
counts across the cluster; NIST SP 800-38D caps random nonces at 2**32 messages per key (a 50-member
cluster sending about 1,000 packets a second reaches it in about 50 days): rotate well before that.

Replay protection (:class:`ReplayGuard`), which plain UDP gossip needs because an attacker who cannot
read a packet can still resend it: ``sent_at`` is sealed with the packet, and a packet is accepted
only if it was sent within ``window`` seconds of the receiver's wall clock (either way: the members'
clocks must agree within the window, which NTP gives many times over) and its nonce has not been
accepted before. The nonces accepted are remembered until their packet leaves the window, when a
replay would be refused as stale anyway. So a captured packet can be neither replayed later (stale)
nor replayed now (seen): at most the original is acted on, once. The memory is bounded: at
``capacity`` remembered nonces the oldest is forgotten and nothing sent before it is accepted any
more, which trades a shorter window for memory rather than reopening the replay. Only authenticated
packets are remembered, so an attacker without a key cannot fill it.

The membership itself resists replays (every claim carries an incarnation, and an old claim loses to
a newer one), but the probes do not: a replayed ack could vouch for a member that has since died
(sequence numbers start again with each process), and a replayed ping-req makes members probe on an
attacker's behalf. Nothing here needs the guard for the network's own reordering or duplicates: the
protocol tolerates those by design.
"""

from __future__ import annotations

import heapq
import os
import struct
from collections.abc import Callable, Sequence
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["OVERHEAD", "AuthError", "Keyring", "Rejection", "ReplayGuard"]

_VERSION: Final = b"\x01"
_NONCE: Final = 12
_TAG: Final = 16
_STAMP: Final = struct.Struct(">Q")
OVERHEAD: Final = len(_VERSION) + _NONCE + _TAG + _STAMP.size  # 37 bytes on every packet
KEY_SIZES: Final = frozenset({16, 24, 32})

Rejection = Literal["stale", "replay"]


class AuthError(ValueError):
    """No key of the ring opens the packet (or it is not a sealed packet at all)."""


class Keyring:
    """AES-GCM keys, the first one sealing. Immutable: rotate by building a new ring."""

    def __init__(
        self,
        keys: Sequence[bytes],
        *,
        label: str = "",
        nonces: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        for key in keys:
            if len(key) not in KEY_SIZES:
                raise ValueError(f"an AES key is 16, 24 or 32 bytes, not {len(key)}")
        if len(set(keys)) != len(keys):
            raise ValueError("the same key twice in the ring")
        self._keys = tuple(bytes(k) for k in keys)
        self._ciphers = tuple(AESGCM(k) for k in self._keys)
        self._aad = _VERSION + label.encode()
        self.label = label
        # Injected so a simulation is reproducible; a real member keeps os.urandom.
        self._nonces = nonces

    @property
    def keys(self) -> tuple[bytes, ...]:
        return self._keys

    def rotated(self, keys: Sequence[bytes]) -> Keyring:
        """The same ring with other keys (same label and nonce source)."""
        return Keyring(keys, label=self.label, nonces=self._nonces)

    def seal(self, packet: bytes, sent_at: float) -> bytes:
        """``packet`` encrypted and authenticated under the first key, stamped with ``sent_at`` (wall, s)."""
        nonce = self._nonces(_NONCE)
        stamp = _STAMP.pack(max(0, round(sent_at * 1000)))
        return _VERSION + nonce + self._ciphers[0].encrypt(nonce, stamp + packet, self._aad)

    def open(self, data: bytes) -> tuple[bytes, float, bytes]:
        """``(nonce, sent_at, packet)`` from a sealed packet, or :class:`AuthError`."""
        if len(data) < OVERHEAD or data[:1] != _VERSION:
            raise AuthError("not a sealed packet")
        nonce, body = data[1 : 1 + _NONCE], data[1 + _NONCE :]
        for cipher in self._ciphers:
            try:
                plain = cipher.decrypt(nonce, body, self._aad)
            except InvalidTag:
                continue
            (stamp,) = _STAMP.unpack_from(plain)
            return nonce, stamp / 1000, plain[_STAMP.size :]
        raise AuthError("no key of the ring opens it")


class ReplayGuard:
    """Accepts each (authenticated) nonce once, and only within ``window`` seconds of its sending."""

    def __init__(self, window: float, capacity: int = 32_768) -> None:
        if window <= 0 or capacity < 1:
            raise ValueError("window must be positive and capacity at least 1")
        self.window = window
        self.capacity = capacity
        self._seen: set[bytes] = set()
        self._by_age: list[tuple[float, bytes]] = []  # heap of (sent_at, nonce)
        self._floor = float("-inf")  # nothing sent at or before this is accepted (capacity evictions)

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, nonce: bytes, sent_at: float, now: float) -> Rejection | None:
        """None, and the nonce is remembered; or why the packet must be dropped. ``now`` is wall time."""
        horizon = now - self.window
        if not horizon <= sent_at <= now + self.window or sent_at <= self._floor:
            return "stale"
        while self._by_age and self._by_age[0][0] < horizon:
            self._seen.discard(heapq.heappop(self._by_age)[1])
        if nonce in self._seen:
            return "replay"
        if len(self._seen) >= self.capacity:
            if sent_at <= self._by_age[0][0]:
                return "stale"  # older than all we remember: it would be the one forgotten
            while len(self._seen) >= self.capacity:
                oldest, forgotten = heapq.heappop(self._by_age)
                self._seen.discard(forgotten)
                self._floor = max(self._floor, oldest)
        self._seen.add(nonce)
        heapq.heappush(self._by_age, (sent_at, nonce))
        return None
