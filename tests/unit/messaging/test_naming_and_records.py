"""Channel names and the strict parsing of the primary's record (pure functions)."""

from __future__ import annotations

import pytest

from agenda.messaging import MalformedRecord, PrimaryRecord, parse_record, user_channel

GOOD = {"name": "10.0.0.5:6379", "host": "10.0.0.5", "port": 6379, "epoch": 3}


def test_user_channel_is_the_prefix_and_the_id() -> None:
    assert user_channel("0f3a9c") == "notifications:0f3a9c"
    assert user_channel("a") != user_channel("b")


@pytest.mark.parametrize(
    "bad", ["", " ", "a b", "x\n", "user*", "us?r", "[a]", "a:b", "tab\there", "\x00", 7, None, "x" * 257]
)
def test_user_channel_rejects_ids_that_would_misroute(bad: object) -> None:
    with pytest.raises(ValueError, match="user id"):
        user_channel(bad)  # type: ignore[arg-type]


def test_a_good_record_parses_from_the_object_or_its_json_text() -> None:
    expected = PrimaryRecord(name="10.0.0.5:6379", host="10.0.0.5", port=6379, epoch=3)
    assert parse_record(GOOD) == expected
    assert parse_record('{"name": "10.0.0.5:6379", "host": "10.0.0.5", "port": 6379, "epoch": 3}') == expected
    assert str(expected) == "10.0.0.5:6379 (epoch 3)"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "expected a JSON object, got NoneType"),
        ([GOOD], "expected a JSON object, got list"),
        ("not json", "not a JSON object"),
        ({"name": "h:1", "host": "h", "port": 1}, "missing field(s) epoch"),
        ({}, "missing field(s) epoch, host, name, port"),
        ({**GOOD, "name": ""}, "'name' must be a non-empty string"),
        ({**GOOD, "host": 5}, "'host' must be"),
        ({**GOOD, "host": "a b"}, "'host' must be"),
        ({**GOOD, "port": "6379"}, "'port' must be an integer in 1..65535, got '6379'"),
        ({**GOOD, "port": 0}, "'port' must be an integer"),
        ({**GOOD, "port": 65536}, "'port' must be an integer"),
        ({**GOOD, "port": True}, "'port' must be an integer"),
        ({**GOOD, "epoch": -1}, "'epoch' must be a non-negative integer"),
        ({**GOOD, "epoch": 1.5}, "'epoch' must be a non-negative integer"),
    ],
)
def test_a_malformed_record_says_which_key_and_what_is_wrong(value: object, says: str) -> None:
    with pytest.raises(MalformedRecord) as caught:
        parse_record(value, key="/system/redis/primary")
    assert str(caught.value).startswith("/system/redis/primary: ")
    assert says in str(caught.value)
    assert isinstance(caught.value, ValueError)
