"""AES-GCM under a key ring (seal with the first, open with any) and the replay guard."""

from __future__ import annotations

import itertools

import pytest

from agenda.gossip.keyring import OVERHEAD, AuthError, Keyring, ReplayGuard

K1, K2, K3 = b"1" * 32, b"2" * 16, b"3" * 24
T = 1_700_000_000.0


def counter_nonces() -> object:
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def test_seal_then_open_gives_back_the_packet_its_nonce_and_time() -> None:
    ring = Keyring([K1], nonces=counter_nonces())  # type: ignore[arg-type]
    sealed = ring.seal(b"hello", T + 0.25)
    assert len(sealed) == len(b"hello") + OVERHEAD
    assert b"hello" not in sealed  # encrypted, not only authenticated
    nonce, sent_at, packet = ring.open(sealed)
    assert (nonce, sent_at, packet) == ((1).to_bytes(12, "big"), T + 0.25, b"hello")
    assert ring.seal(b"hello", T) != ring.seal(b"hello", T)  # a fresh nonce every time


def test_a_packet_sealed_under_a_key_outside_the_ring_does_not_open() -> None:
    sealed = Keyring([K2]).seal(b"p", T)
    with pytest.raises(AuthError):
        Keyring([K1]).open(sealed)


def test_the_cluster_label_is_authenticated() -> None:
    sealed = Keyring([K1], label="prod").seal(b"p", T)
    assert Keyring([K1], label="prod").open(sealed)[2] == b"p"
    with pytest.raises(AuthError):
        Keyring([K1], label="staging").open(sealed)


def test_every_flipped_bit_is_caught() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(b"a packet", T)
    for i in range(len(sealed)):
        for bit in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[i] ^= bit
            with pytest.raises(AuthError):
                ring.open(bytes(tampered))


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01" + b"\x00" * (OVERHEAD - 2), b"\x02" + b"\x00" * 64])
def test_short_or_foreign_bytes_are_an_auth_error(data: bytes) -> None:
    with pytest.raises(AuthError):
        Keyring([K1]).open(data)


def test_keys_are_rotated_in_three_rounds_without_a_member_going_deaf() -> None:
    """Old ring [K1]; add K2 everywhere; make it first everywhere; drop K1. At each step a member on
    the previous ring and one on the next understand each other both ways."""
    steps = [[K1], [K1, K2], [K2, K1], [K2]]
    for before, after in itertools.pairwise(steps):
        old, new = Keyring(before), Keyring(after)
        assert new.open(old.seal(b"x", T))[2] == b"x"
        assert old.open(new.seal(b"x", T))[2] == b"x"
    # Skipping the middle round would not work: that is why it exists.
    with pytest.raises(AuthError):
        Keyring([K1]).open(Keyring([K2, K1]).seal(b"x", T))


def test_the_ring_refuses_bad_keys() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Keyring([])
    with pytest.raises(ValueError, match="16, 24 or 32"):
        Keyring([b"short"])
    with pytest.raises(ValueError, match="twice"):
        Keyring([K1, K1])
    ring = Keyring([K1], label="l")
    rotated = ring.rotated([K3, K1])
    assert rotated.keys == (K3, K1)
    assert rotated.label == "l"


# ------------------------------------------------------------------------------ replay guard


def test_a_nonce_is_accepted_once() -> None:
    guard = ReplayGuard(window=30.0)
    assert guard.admit(b"n1", T, T) is None
    assert guard.admit(b"n1", T, T + 1) == "replay"
    assert guard.admit(b"n2", T, T + 1) is None


@pytest.mark.parametrize(
    ("sent_at", "verdict"), [(T - 30.0, None), (T - 30.001, "stale"), (T + 30.0, None), (T + 31, "stale")]
)
def test_only_packets_sent_within_the_window_either_way_are_accepted(
    sent_at: float, verdict: str | None
) -> None:
    assert ReplayGuard(window=30.0).admit(b"n", sent_at, T) == verdict


def test_a_nonce_is_forgotten_once_a_replay_would_be_stale_anyway() -> None:
    guard = ReplayGuard(window=30.0)
    for i in range(100):
        assert guard.admit(bytes([i]), T + i * 0.1, T + i * 0.1) is None
    assert len(guard) == 100
    guard.admit(b"late", T + 40.0, T + 40.0)
    assert len(guard) == 1 + sum(1 for i in range(100) if T + i * 0.1 >= T + 10.0)
    # The forgotten ones cannot come back: they are outside the window now.
    assert guard.admit(bytes([0]), T, T + 40.0) == "stale"


def test_at_capacity_the_oldest_is_forgotten_and_nothing_that_old_is_accepted_any_more() -> None:
    guard = ReplayGuard(window=30.0, capacity=3)
    for i, nonce in enumerate([b"a", b"b", b"c"]):
        assert guard.admit(nonce, T + i, T + 5) is None
    assert guard.admit(b"d", T + 3, T + 5) is None  # "a" (sent at T) forgotten to make room
    assert len(guard) == 3
    assert guard.admit(b"a", T, T + 5) == "stale"  # so its replay is refused as too old, not accepted
    assert guard.admit(b"e", T + 0.5, T + 5) == "stale"  # and so is anything sent before it
    assert guard.admit(b"b", T + 1, T + 5) == "replay"
