"""The codec: every message round-trips; anything else, however malformed, is one DecodeError."""

from __future__ import annotations

import json
import random

import pytest

from agenda.gossip.member import Meta, Status
from agenda.gossip.messages import (
    MAX_MESSAGES,
    MAX_NAME,
    Ack,
    Alive,
    Dead,
    DecodeError,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    Packet,
    Ping,
    PushPull,
    Suspect,
    check_meta,
    decode_packet,
    encode_message,
    encode_packet,
    join_packet,
    packet_overhead,
)

META = Meta(service="users", api_url="http://10.0.0.1:8001", version="1.4.2", state="serving")
EVERY_MESSAGE: list[Message] = [
    Ping(1, "n2"),
    IndirectPing(2**63 - 1, "n3", "10.0.0.3:7946"),
    Ack(0),
    Nack(17),
    Alive("n1", "10.0.0.1:7946", 4, META),
    Alive("ñødé", "[fe80::1]:7946", 0, Meta()),
    Suspect("n2", 3, "n1"),
    Dead("n2", 3, "n2"),
    PushPull(join=True, reply=False, members=()),
    PushPull(
        join=False,
        reply=True,
        members=(
            MemberState("n1", "10.0.0.1:7946", 2, Status.ALIVE, META),
            MemberState("n2", "10.0.0.2:7946", 0, Status.LEFT, Meta(state="draining")),
        ),
    ),
]


def raw(value: object) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    packet = Packet("n1", (message,))
    assert decode_packet(encode_packet(packet), limit=1 << 20) == packet


def test_a_packet_carries_its_message_then_the_piggybacked_updates_in_order() -> None:
    packet = Packet("n1", (Ping(5, "n2"), Alive("n3", "a:1", 1, META), Suspect("n4", 0, "n1")))
    data = encode_packet(packet)
    assert decode_packet(data) == packet
    # join_packet assembles the same bytes from pre-encoded messages, and its overhead is exact.
    assert join_packet("n1", [encode_message(m) for m in packet.messages]) == data
    parts = [encode_message(m) for m in packet.messages]
    assert len(data) == packet_overhead("n1") + sum(len(p) for p in parts) + len(parts) - 1


def test_the_wire_form_is_compact_json_arrays() -> None:
    assert encode_packet(Packet("n1", (Ping(7, "n2"),))) == b'[1,"n1",[["ping",7,"n2"]]]'
    assert encode_message(Dead("n2", 3, "n2")) == b'["dead","n2",3,"n2"]'


GOOD_ALIVE = ["alive", "n1", "a:1", 1, ["s", "u", "v", "serving"]]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",  # not UTF-8
        b'{"v": 1}',
        raw([]),
        raw([1, "n1"]),
        raw([2, "n1", [["ack", 1]]]),  # another codec version
        raw([True, "n1", [["ack", 1]]]),  # a boolean is not the version 1
        raw([1, "", [["ack", 1]]]),  # an empty sender
        raw([1, "x" * (MAX_NAME + 1), [["ack", 1]]]),
        raw([1, "n1", []]),  # no message at all
        raw([1, "n1", [["ack", 1]] * (MAX_MESSAGES + 1)]),
        raw([1, "n1", "ack"]),
        raw([1, "n1", [["hello", 1]]]),  # unknown tag
        raw([1, "n1", [[1, 1]]]),
        raw([1, "n1", [[]]]),
        raw([1, "n1", [["ack"]]]),  # a field missing
        raw([1, "n1", [["ack", 1, 2]]]),  # a field too many
        raw([1, "n1", [["ack", -1]]]),
        raw([1, "n1", [["ack", 2**63]]]),
        raw([1, "n1", [["ack", True]]]),  # bool is an int in Python, not in this protocol
        raw([1, "n1", [["ack", "1"]]]),
        b'[1,"n1",[["ack",1.0]]]',  # floats are never protocol values
        b'[1,"n1",[["ack",NaN]]]',
        b'[1,"n1",[["ack",Infinity]]]',
        b'[1,"n1",[["ack",' + b"9" * 5000 + b"]]]",  # beyond Python's int-from-text limit
        b"[" * 100_000 + b"]" * 100_000,  # deep nesting: RecursionError inside json
        raw([1, "n1", [["ping", 1, ""]]]),  # an empty target
        raw([1, "n1", [["alive", "n1", "a:1", 1, ["s", "u", "v"]]]]),  # meta of three fields
        raw([1, "n1", [["alive", "n1", "a:1", 1, ["s", "u", "v", 4]]]]),
        raw([1, "n1", [["alive", "n1", "a:1", 1, {"service": "s"}]]]),
        raw([1, "n1", [["alive", "n1", "a:1", 1, ["s", "u" * 513, "v", "x"]]]]),
        raw([1, "n1", [["alive", "n1", "", 1, ["s", "u", "v", "x"]]]]),  # an empty address
        raw([1, "n1", [["suspect", "n2", 1, None]]]),
        raw([1, "n1", [["sync", 1, False, []]]]),  # join must be a boolean
        raw([1, "n1", [["sync", True, False, [["n1", "a:1", 0, "zombie", ["", "", "", ""]]]]]]),
        raw([1, "n1", [["sync", True, False, [["n1", "a:1", 0, ["alive"], ["", "", "", ""]]]]]]),
        raw([1, "n1", [["sync", True, False, [["n1", "a:1", 0, "alive"]]]]]),
        raw([1, "n1", [GOOD_ALIVE, ["ack", -5]]]),  # one bad message spoils the whole packet
    ],
)
def test_anything_malformed_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_packet(payload, limit=1 << 22)


def test_a_packet_over_the_limit_is_refused_before_parsing() -> None:
    data = raw([1, "n1", [GOOD_ALIVE]])
    assert decode_packet(data, limit=len(data)).sender == "n1"
    with pytest.raises(DecodeError, match="more than"):
        decode_packet(data, limit=len(data) - 1)


def test_random_mutations_never_escape_as_anything_but_decode_error() -> None:
    """Flip, drop and insert bytes of valid packets: each result decodes or is a DecodeError."""
    rng = random.Random(7)  # noqa: S311 - a reproducible fuzz, not a secret
    seeds = [encode_packet(Packet("n1", (m, Alive("n9", "h:1", 1, META)))) for m in EVERY_MESSAGE]
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            op = rng.randrange(3)
            if op == 0:
                data[i] = rng.randrange(256)
            elif op == 1:
                del data[i]
            else:
                data.insert(i, rng.choice(b'[]",0123456789-.etruflsa\\'))
        try:
            decode_packet(bytes(data), limit=1 << 20)
        except DecodeError:
            outcomes["refused"] += 1
        else:
            outcomes["decoded"] += 1
    assert outcomes["refused"] > 2000  # the mutations mostly break it, and were all caught
    assert outcomes["decoded"] > 0  # (some mutate a string's content: still a valid packet)


def test_metadata_the_receivers_would_refuse_is_refused_at_the_source() -> None:
    check_meta(META)
    with pytest.raises(ValueError, match="api_url"):
        check_meta(Meta(api_url="u" * 513))
    with pytest.raises(ValueError, match="state"):
        check_meta(Meta(state="s" * 129))
