"""The protocol's messages and their wire form: compact JSON arrays, decoded strictly.

A packet is ``[1, sender, [message, ...]]``: the codec version, the sending member's name, and one or
more messages: the packet's own message (a ping, an ack...) first, then the updates piggybacked on it.
Each message is an array led by its tag::

    ["ping", seq, target]                       probe; `target` names the member meant to answer
    ["ping-req", seq, target, target_addr]      ask the receiver to probe `target` for us
    ["ack", seq]                                the answer to a ping (or relayed ping) `seq`
    ["nack", seq]                               a relay's "the target did not answer me either"
    ["alive", name, addr, incarnation, [service, api_url, version, state]]
    ["suspect", name, incarnation, accuser]
    ["dead", name, incarnation, accuser]        accuser == name: the member left
    ["sync", join, reply, [[name, addr, incarnation, status, [meta...]], ...]]   push/pull

Arrays instead of objects: half the bytes, so more updates fit in one datagram, and no duplicate keys
to rule on. Decoding rejects anything that is not exactly this shape: an unknown tag, a missing or
extra field, a float, a boolean where an integer belongs, a negative or oversized integer, an
oversized string, more messages than a packet may hold. The packet is decoded whole before any of it
is acted on, so a malformed packet changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from agenda.gossip.member import MAX_INCARNATION, Meta, Status

__all__ = [
    "MAX_DATAGRAM",
    "MAX_STREAM",
    "VERSION",
    "Ack",
    "Alive",
    "Dead",
    "DecodeError",
    "IndirectPing",
    "MemberState",
    "Message",
    "Nack",
    "Packet",
    "Ping",
    "PushPull",
    "Suspect",
    "check_meta",
    "decode_packet",
    "encode_message",
    "encode_packet",
    "join_packet",
    "packet_overhead",
]

VERSION: Final = 1
MAX_DATAGRAM: Final = 65_507  # the largest UDP payload; the sender's budget is far smaller
MAX_STREAM: Final = 16 * 1024 * 1024  # one push/pull: about 60,000 members with full metadata
MAX_MESSAGES: Final = 512
MAX_MEMBERS: Final = 100_000
MAX_NAME: Final = 128
MAX_ADDR: Final = 262  # "[" + 255-character host + "]:" + 5-digit port
MAX_META_FIELD: Final = 128
MAX_URL: Final = 512
_SEPARATORS: Final = (",", ":")


class DecodeError(ValueError):
    """The bytes are not a packet of this protocol; the node drops it and counts it."""


@dataclass(frozen=True)
class Ping:
    seq: int
    target: str


@dataclass(frozen=True)
class IndirectPing:
    seq: int
    target: str
    target_addr: str


@dataclass(frozen=True)
class Ack:
    seq: int


@dataclass(frozen=True)
class Nack:
    seq: int


@dataclass(frozen=True)
class Alive:
    name: str
    addr: str
    incarnation: int
    meta: Meta


@dataclass(frozen=True)
class Suspect:
    name: str
    incarnation: int
    accuser: str


@dataclass(frozen=True)
class Dead:
    name: str
    incarnation: int
    accuser: str


@dataclass(frozen=True)
class MemberState:
    """One member as a push/pull carries it."""

    name: str
    addr: str
    incarnation: int
    status: Status
    meta: Meta


@dataclass(frozen=True)
class PushPull:
    """A full-state exchange: the initiator's state, answered (``reply``) with the receiver's."""

    join: bool
    reply: bool
    members: tuple[MemberState, ...]


Message = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead | PushPull


@dataclass(frozen=True)
class Packet:
    sender: str
    messages: tuple[Message, ...]


# Encoding -------------------------------------------------------------------------------------------


def _meta_wire(meta: Meta) -> list[str]:
    return [meta.service, meta.api_url, meta.version, meta.state]


def _wire(message: Message) -> list[Any]:
    match message:
        case Ping(seq, target):
            return ["ping", seq, target]
        case IndirectPing(seq, target, target_addr):
            return ["ping-req", seq, target, target_addr]
        case Ack(seq):
            return ["ack", seq]
        case Nack(seq):
            return ["nack", seq]
        case Alive(name, addr, incarnation, meta):
            return ["alive", name, addr, incarnation, _meta_wire(meta)]
        case Suspect(name, incarnation, accuser):
            return ["suspect", name, incarnation, accuser]
        case Dead(name, incarnation, accuser):
            return ["dead", name, incarnation, accuser]
        case PushPull(join, reply, members):
            states = [[m.name, m.addr, m.incarnation, m.status.value, _meta_wire(m.meta)] for m in members]
            return ["sync", join, reply, states]
    raise TypeError(f"not a message: {message!r}")


def encode_message(message: Message) -> bytes:
    """One message's wire form, to be joined into a packet by :func:`join_packet`."""
    return json.dumps(_wire(message), separators=_SEPARATORS, ensure_ascii=False).encode()


def join_packet(sender: str, encoded: list[bytes]) -> bytes:
    """A packet from already-encoded messages: the sender fills a datagram by their exact sizes."""
    head = json.dumps(sender, ensure_ascii=False).encode()
    return b"[%d,%s,[%s]]" % (VERSION, head, b",".join(encoded))


def packet_overhead(sender: str) -> int:
    """The bytes a packet adds around its messages (the separating commas excepted)."""
    return len(join_packet(sender, []))


def encode_packet(packet: Packet) -> bytes:
    return join_packet(packet.sender, [encode_message(m) for m in packet.messages])


# Decoding -------------------------------------------------------------------------------------------


def _fail(why: str) -> NoReturn:
    raise DecodeError(why)


def _reject_constant(token: str) -> NoReturn:
    _fail(f"{token} is not a protocol value")


def _reject_float(token: str) -> NoReturn:
    _fail(f"a float ({token[:20]}) is not a protocol value")


def _int(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INCARNATION:
        _fail(f"{what}: not an integer in 0..2**63-1")
    return value


def _bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        _fail(f"{what}: not a boolean")
    return value


def _str(value: object, what: str, limit: int, *, empty: bool = False) -> str:
    if type(value) is not str or len(value) > limit or (not value and not empty):
        _fail(f"{what}: not a string of {0 if empty else 1}..{limit} characters")
    return value


def _list(value: object, what: str, length: int | None = None, limit: int | None = None) -> list[Any]:
    if type(value) is not list:
        _fail(f"{what}: not an array")
    if length is not None and len(value) != length:
        _fail(f"{what}: {len(value)} fields, expected {length}")
    if limit is not None and len(value) > limit:
        _fail(f"{what}: more than {limit} entries")
    return value


def _meta(value: object) -> Meta:
    service, api_url, version, state = _list(value, "meta", 4)
    return Meta(
        service=_str(service, "meta.service", MAX_META_FIELD, empty=True),
        api_url=_str(api_url, "meta.api_url", MAX_URL, empty=True),
        version=_str(version, "meta.version", MAX_META_FIELD, empty=True),
        state=_str(state, "meta.state", MAX_META_FIELD, empty=True),
    )


def _name(value: object, what: str = "name") -> str:
    return _str(value, what, MAX_NAME)


def _addr(value: object, what: str = "addr") -> str:
    return _str(value, what, MAX_ADDR)


_STATUSES: Final = {s.value: s for s in Status}


def _member_state(value: object) -> MemberState:
    name, addr, incarnation, status, meta = _list(value, "member", 5)
    if type(status) is not str or status not in _STATUSES:
        _fail("member.status: unknown")
    incarnation = _int(incarnation, "incarnation")
    return MemberState(_name(name), _addr(addr), incarnation, _STATUSES[status], _meta(meta))


def _ping(f: list[Any]) -> Message:
    return Ping(_int(f[0], "seq"), _name(f[1], "target"))


def _ping_req(f: list[Any]) -> Message:
    return IndirectPing(_int(f[0], "seq"), _name(f[1], "target"), _addr(f[2], "target_addr"))


def _ack(f: list[Any]) -> Message:
    return Ack(_int(f[0], "seq"))


def _nack(f: list[Any]) -> Message:
    return Nack(_int(f[0], "seq"))


def _alive(f: list[Any]) -> Message:
    return Alive(_name(f[0]), _addr(f[1]), _int(f[2], "incarnation"), _meta(f[3]))


def _suspect(f: list[Any]) -> Message:
    return Suspect(_name(f[0]), _int(f[1], "incarnation"), _name(f[2], "accuser"))


def _dead(f: list[Any]) -> Message:
    return Dead(_name(f[0]), _int(f[1], "incarnation"), _name(f[2], "accuser"))


def _sync(f: list[Any]) -> Message:
    states = _list(f[2], "members", limit=MAX_MEMBERS)
    return PushPull(_bool(f[0], "join"), _bool(f[1], "reply"), tuple(_member_state(s) for s in states))


# tag -> (number of fields after the tag, decoder)
_DECODERS: Final[dict[str, tuple[int, Callable[[list[Any]], Message]]]] = {
    "ping": (2, _ping),
    "ping-req": (3, _ping_req),
    "ack": (1, _ack),
    "nack": (1, _nack),
    "alive": (4, _alive),
    "suspect": (3, _suspect),
    "dead": (3, _dead),
    "sync": (3, _sync),
}


def _message(value: object) -> Message:
    fields = _list(value, "message")
    if not fields or type(fields[0]) is not str or fields[0] not in _DECODERS:
        _fail("message: unknown tag")
    arity, decode = _DECODERS[fields[0]]
    if len(fields) != arity + 1:
        _fail(f"{fields[0]}: {len(fields) - 1} fields, expected {arity}")
    return decode(fields[1:])


def decode_packet(data: bytes, *, limit: int = MAX_DATAGRAM) -> Packet:
    """The packet in ``data``, or :class:`DecodeError`; nothing else escapes, whatever the bytes."""
    if len(data) > limit:
        _fail(f"{len(data)} bytes, more than {limit}")
    try:
        text = data.decode("utf-8")
        raw = json.loads(text, parse_constant=_reject_constant, parse_float=_reject_float)
    except DecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DecodeError(f"not JSON: {type(exc).__name__}") from None
    version, sender, messages = _list(raw, "packet", 3)
    if type(version) is not int or version != VERSION:
        _fail(f"codec version {version!r}, expected {VERSION}")
    decoded = tuple(_message(m) for m in _list(messages, "messages", limit=MAX_MESSAGES))
    if not decoded:
        _fail("an empty packet")
    return Packet(_name(sender, "sender"), decoded)


def check_meta(meta: Meta) -> None:
    """Refuse, at the source, metadata the receivers' decoder would reject."""
    for what, value, limit in (
        ("service", meta.service, MAX_META_FIELD),
        ("api_url", meta.api_url, MAX_URL),
        ("version", meta.version, MAX_META_FIELD),
        ("state", meta.state, MAX_META_FIELD),
    ):
        if not isinstance(value, str) or len(value) > limit:
            raise ValueError(f"meta.{what} must be a string of at most {limit} characters")
