"""The hub's pure parts: which user a channel is, which messages are records, and a listener's queue."""

from __future__ import annotations

import json

from agenda.messaging.hub import RESYNC, Listener, decode_message, user_of_channel


def test_user_of_channel_reads_the_user_of_a_notifications_channel() -> None:
    assert user_of_channel("notifications:alice") == "alice"
    assert user_of_channel(b"notifications:bob") == "bob"


def test_user_of_channel_refuses_other_names() -> None:
    assert user_of_channel("notifications:") is None
    assert user_of_channel("other:alice") is None
    assert user_of_channel(b"\xff\xfe") is None


def test_decode_message_accepts_a_record_with_id_and_cursor() -> None:
    record = {"id": "n1", "cursor": "00000000000000000001.n1", "user": "alice"}
    assert decode_message(json.dumps(record)) == record
    assert decode_message(json.dumps(record).encode()) == record


def test_decode_message_refuses_garbage() -> None:
    assert decode_message(b"not json") is None
    assert decode_message(b"\xff") is None
    assert decode_message("[1, 2]") is None
    assert decode_message(json.dumps({"id": "n1"})) is None
    assert decode_message(json.dumps({"id": 1, "cursor": "c"})) is None


def test_listener_returns_items_in_order_and_none_when_idle() -> None:
    closed: list[Listener] = []
    listener = Listener("alice", closed.append, size=4)
    listener.put({"id": "a"})
    listener.put({"id": "b"})
    assert listener.get(0.01) == {"id": "a"}
    assert listener.get(0.01) == {"id": "b"}
    assert listener.get(0.01) is None
    with listener:
        pass
    assert closed == [listener]


def test_a_full_listener_drops_what_it_holds_for_a_resync() -> None:
    listener = Listener("alice", lambda _: None, size=2)
    for name in "abc":
        listener.put({"id": name})
    assert listener.overflowed == 1
    assert listener.get(0.01) is RESYNC  # the stream reads what it lost from the DB instead
    assert listener.get(0.01) is None
