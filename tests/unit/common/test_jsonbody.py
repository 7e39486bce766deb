"""The one strict JSON body parser: what JSON is not, and what is too deep, is a JSONBodyError."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenda.common.jsonbody import MAX_DEPTH, JSONBodyError, depth, loads


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"a": [1, 2.5, null, true]}', {"a": [1, 2.5, None, True]}),
        ('"caf\u00e9"', "caf\u00e9"),
        ('{"a": 1}'.encode("utf-16"), {"a": 1}),  # any JSON encoding, as json.loads accepts
        (("[" * MAX_DEPTH + "]" * MAX_DEPTH).encode(), nested(MAX_DEPTH)),  # the limit itself passes
    ],
)
def test_valid_json_parses(raw: bytes | str, value: object) -> None:
    assert loads(raw) == value


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"NaN", "NaN is not JSON"),
        (b'{"a": Infinity}', "Infinity is not JSON"),
        (b"[-Infinity]", "-Infinity is not JSON"),
        (b"{nope", "Expecting property name"),
        (b"", "Expecting value"),
        (b"\xff\xfe\x00\xd8", "utf-16"),
        (b"[" * 200_000, "nested deeper than 64 levels"),  # json's own RecursionError
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper than 64 levels"),
        (b'{"a": ' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), "nested deeper than 64 levels"),
    ],
)
def test_refusals_are_json_body_errors_naming_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(JSONBodyError) as info:
        loads(raw)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)  # callers that expect ValueError still catch it


def test_depth_is_measured_without_recursion() -> None:
    assert depth(1) == 0
    assert depth([]) == 1
    assert depth({"a": [{"b": []}]}) == 4
    assert depth(nested(100_000)) == 100_000  # far beyond the interpreter's recursion limit


def _depth_by_every_node(value: object) -> int:
    """depth() as it was written before (every node pushed), to check the faster walk against."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            level += 1
            stack.extend((child, level) for child in node.values())
        elif isinstance(node, list):
            level += 1
            stack.extend((child, level) for child in node)
        deepest = max(deepest, level)
    return deepest


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=30,
)


@given(json_values)
def test_depth_counts_what_every_node_walk_counted(value: object) -> None:
    assert depth(value) == _depth_by_every_node(value)


@pytest.mark.parametrize("raw", [b'{"title": "x\\ud800"}', b'{"\\uDFFF": 1}', b'["\\udc00\\ud800"]'])
def test_a_lone_surrogate_is_not_unicode(raw: bytes) -> None:
    with pytest.raises(JSONBodyError, match="lone surrogate"):
        loads(raw)


def test_a_surrogate_pair_is_one_character() -> None:
    assert loads(b'{"t": "\\ud83d\\ude00", "u": "\\\\ud800"}') == {"t": "\U0001f600", "u": "\\ud800"}
